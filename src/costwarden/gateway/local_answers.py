"""Answers the gateway gives itself, at $0, without an upstream's: the route's degraded
template when no candidate answered, an agent session's clean stop, and a response cache hit.
Each is committed (ledger row, event) before the client gets it, as every answer is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter

from costwarden.budgets.enforcer import Reservation
from costwarden.core.errors import NoHealthyDeployment
from costwarden.core.records import LedgerRecord
from costwarden.gateway import degraded
from costwarden.gateway.asgi import JSON, send_bytes
from costwarden.gateway.cache import CacheHit, hit_response
from costwarden.gateway.failover import Exhausted
from costwarden.gateway.responses import SSE_HEADERS, wants_usage
from costwarden.gateway.sessions import SessionStop
from costwarden.gateway.state import RequestState
from costwarden.routing.chains import Route

Commit = Callable[[LedgerRecord, Reservation | None], Awaitable[None]]


async def exhausted(call: RequestState, route: Route, exhausted: Exhausted, commit: Commit) -> None:
    """No candidate answered: the degraded template, else the error that says why."""
    record = call.record
    tried = "; ".join(exhausted.reasons) or "no candidate"
    template = route.degraded
    if template is None or call.endpoint == "embeddings":
        record.status = "upstream_error"  # failing or open: the upstream side is down
        if exhausted.refusal is not None and not exhausted.attempted:
            record.status = "blocked"
            raise exhausted.refusal
        if exhausted.last is not None and len(route.candidates) == 1:
            raise exhausted.last  # one deployment, one error: the error contract's own
        raise NoHealthyDeployment(f"no deployment of {route.model!r} can serve: {tried}")
    record.status = "degraded"
    record.http_status = 200
    record.provider = None
    record.served_model = None
    record.error = tried[:500]
    record.latency_ms = record.overhead_ms = (perf_counter() - call.t0) * 1000
    await commit(record, None)
    headers = [
        (b"content-type", SSE_HEADERS[0][1] if call.stream else JSON),
        (b"x-request-id", record.request_id.encode()),
        (b"x-costwarden-model", route.model.encode()),
        (b"x-costwarden-degraded", b"true"),
        (b"x-costwarden-cost-usd", b"0"),
    ]
    if call.stream:
        body = degraded.stream(
            call.wire, route.model, template.content, include_usage=wants_usage(call.payload)
        )
        headers.append(SSE_HEADERS[1])
    else:
        body = degraded.unary(call.wire, route.model, template.content)
    await send_bytes(call.send, 200, body, headers)

async def session_stop(call: RequestState, stop: SessionStop, commit: Commit) -> None:
    """An agent session's budget reached, answered as a clean completion at $0."""
    record = call.record
    record.status = "session_stopped"
    record.http_status = 200
    record.provider = None
    record.served_model = None
    record.error = stop.reason
    record.latency_ms = record.overhead_ms = (perf_counter() - call.t0) * 1000
    await commit(record, None)
    model = str(call.payload.get("model") or "")
    headers = [
        (b"content-type", SSE_HEADERS[0][1] if call.stream else JSON),
        (b"x-request-id", record.request_id.encode()),
        (b"x-costwarden-cost-usd", b"0"),
        (b"x-costwarden-session-stop", stop.reason.encode()),
        (b"x-costwarden-session-state", stop.state.encode()),
    ]
    if call.stream:
        body = degraded.stream(
            call.wire, model, stop.message, include_usage=wants_usage(call.payload),
            tag="session-stop",
        )  # fmt: skip
        headers.append(SSE_HEADERS[1])
    else:
        body = degraded.unary(call.wire, model, stop.message, tag="session-stop")
    await send_bytes(call.send, 200, body, headers)


async def cache_hit(call: RequestState, hit: CacheHit, commit: Commit) -> None:
    """The answer from the response cache: no reservation, nothing charged, the avoided
    cost recorded as ``saved_usd``."""
    headers = hit_response(call, hit)
    record = call.record
    record.latency_ms = record.overhead_ms = (perf_counter() - call.t0) * 1000
    headers.append((b"x-costwarden-overhead-ms", f"{record.overhead_ms:.3f}".encode()))
    if call.security_status is not None:  # what the scan made of the request, as on a miss
        headers.append((b"x-costwarden-security-status", call.security_status.encode()))
    await commit(record, None)
    await send_bytes(call.send, 200, hit.body, headers)
