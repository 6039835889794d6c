"""One OpenTelemetry span per request, with the GenAI semantic-convention attributes.

Spans are built from the request's final ledger record, after the fact and off the request
path: :meth:`RequestSpans.observe` (called where the record is committed) only appends the
record to a bounded queue; a background task turns what is queued into spans every
``interval`` seconds, each with the request's own start and end time, and the SDK's batch
processor exports them from its own thread. Building a span in the SDK costs several
microseconds, so doing it inline would cost the request path more than everything else the
record step does; with tracing off, nothing is queued at all. When the exporter cannot keep
up, the queue keeps the newest ``capacity`` records and counts the rest in ``dropped``.

Attributes (OpenTelemetry GenAI conventions, plus the gateway's own under ``costwarden.``):
``gen_ai.operation.name`` (chat / embeddings / models), ``gen_ai.provider.name`` and
``gen_ai.system``, ``gen_ai.request.model``, ``gen_ai.response.model``,
``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``, ``gen_ai.usage.cached_tokens``
(as ``gen_ai.usage.cache_read.input_tokens``), ``http.response.status_code``, ``error.type``
(the ledger status, when not success), and ``costwarden.request_id``, ``costwarden.org_id``,
``costwarden.key_id``, ``costwarden.status``, ``costwarden.cost_usd`` (exact decimal string),
``costwarden.overhead_ms``, ``costwarden.ttft_ms``. Never a prompt, a key or a credential.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from costwarden.core.records import LedgerRecord
from costwarden.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

_OPERATIONS = {
    "chat.completions": "chat",
    "messages": "chat",
    "embeddings": "embeddings",
    "models": "models",
}


def span_attributes(record: LedgerRecord) -> dict[str, Any]:
    """The span's attributes for ``record`` (see the module docstring)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": _OPERATIONS.get(record.endpoint, record.endpoint),
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
        "http.response.status_code": record.http_status,
        "costwarden.request_id": record.request_id,
        "costwarden.status": record.status,
        "costwarden.cost_usd": str(record.cost_usd),
        "costwarden.cost_estimated": record.cost_estimated,
        "costwarden.overhead_ms": round(record.overhead_ms, 3),
        "costwarden.streamed": record.streamed,
    }
    optional = {
        "gen_ai.provider.name": record.provider,
        "gen_ai.system": record.provider,
        "gen_ai.request.model": record.requested_model,
        "gen_ai.response.model": record.served_model,
        "costwarden.org_id": record.org_id,
        "costwarden.project_id": record.project_id,
        "costwarden.key_id": record.key_id,
        "costwarden.session_id": record.session_id,
        "costwarden.ttft_ms": None if record.ttft_ms is None else round(record.ttft_ms, 3),
    }
    attributes.update((k, v) for k, v in optional.items() if v is not None)
    if record.status != "success":
        attributes["error.type"] = record.status
    return attributes


class RequestSpans:
    """Queues committed records and turns them into spans in the background."""

    def __init__(
        self, provider: TracerProvider, *, interval: float = 1.0, capacity: int = 10_000
    ) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("costwarden")
        self.interval = interval
        self._queue: collections.deque[LedgerRecord] = collections.deque(maxlen=capacity)
        self._task: asyncio.Task[None] | None = None
        self.queued = 0
        self.spans = 0

    @property
    def dropped(self) -> int:
        return self.queued - self.spans - len(self._queue)

    def observe(self, record: LedgerRecord) -> None:
        """Called with each request's final record: one append, nothing else."""
        self.queued += 1
        self._queue.append(record)

    def emit(self) -> int:
        """Spans for everything queued; how many."""
        count = 0
        queue = self._queue
        while queue:
            record = queue.popleft()
            start = int(record.ts.timestamp() * 1e9)
            name = f"{_OPERATIONS.get(record.endpoint, record.endpoint)} " + (
                record.requested_model or "unknown"
            )
            span = self._tracer.start_span(
                name,
                kind=SpanKind.CLIENT,
                start_time=start,
                attributes=span_attributes(record),
            )
            if record.status not in ("success", "degraded"):
                span.set_status(Status(StatusCode.ERROR, record.status))
            span.end(end_time=start + int(record.latency_ms * 1e6))
            count += 1
        self.spans += count
        return count

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="costwarden-otel-spans")

    async def close(self) -> None:
        """Span what is left, then flush and shut the exporter down (in a thread: it may
        wait on the network)."""
        await cancel_and_wait((self._task,))
        self._task = None
        self.emit()
        await asyncio.to_thread(self._provider.shutdown)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.emit()
            except Exception as exc:  # noqa: BLE001 - tracing must never take the gateway down
                logger.warning("building spans failed: %s", type(exc).__name__)
