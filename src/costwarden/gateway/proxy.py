"""The metered proxy: one request from the client's bytes to the ledger row.

authenticate -> read and validate the body -> route -> rate limits and budget reservation
(refused here: 402/429, nothing reaches the provider) -> upstream call -> relay (streamed or
not) while metering -> price -> settle the reservation -> ledger row -> response. The ledger
row is handed to the writer *before* the last byte reaches the client, so a response the
client received always has its row (in durable mode the row is committed by then).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from random import getrandbits
from time import perf_counter, time, time_ns
from typing import Any

import orjson

from costwarden.budgets.enforcer import Enforcer, Reservation
from costwarden.budgets.limits import Principal
from costwarden.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    ModelNotFound,
    UpstreamError,
    UpstreamTimeout,
)
from costwarden.gateway.asgi import JSON, Receive, Scope, Send, read_body, send_bytes
from costwarden.gateway.auth import KeyCache, key_from_headers
from costwarden.gateway.errors import error_body
from costwarden.gateway.upstream import Response, UpstreamClient
from costwarden.gateway.validate import principal_fields, validate_payload
from costwarden.pricing import TokenUsage
from costwarden.providers.base import Deployment, StreamMeter, estimate_tokens
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.records import LedgerRecord

logger = logging.getLogger(__name__)

# path -> (endpoint, wire format of the route)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "/v1/chat/completions": ("chat.completions", "openai"),
    "/v1/embeddings": ("embeddings", "openai"),
    "/v1/messages": ("messages", "anthropic"),
}
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _Disconnect:
    """Watches ``receive`` for the client going away and cancels the relay when it does."""

    def __init__(self, receive: Receive) -> None:
        self.happened = False
        self.done = False
        self._relay = asyncio.current_task()
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.done and self._relay is not None:
            self.happened = True
            self._relay.cancel()

    def stop(self) -> None:
        self.done = True
        self._task.cancel()


class Proxy:
    def __init__(
        self,
        *,
        routes: dict[str, list[Deployment]],
        keys: KeyCache,
        ledger: LedgerWriter,
        enforcer: Enforcer,
        max_body_bytes: int,
        durable: bool,
        clock: Callable[[], float] = time,
    ) -> None:
        self.routes = routes
        self.keys = keys
        self.ledger = ledger
        self.enforcer = enforcer
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self.durable = durable
        self.client: UpstreamClient | None = None

    async def start(self) -> None:
        self.client = UpstreamClient()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    # ------------------------------------------------------------------ entry

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = perf_counter()
        endpoint, wire = ENDPOINTS[scope["path"]]
        request_id = new_request_id()
        headers: dict[bytes, bytes] = dict(scope["headers"])
        record: LedgerRecord | None = None
        reservation: Reservation | None = None
        try:
            record = self._authenticate(headers, request_id, endpoint)
            body = await read_body(receive, headers, self.max_body_bytes)
            payload = validate_payload(endpoint, body)
            end_user, session_id, tags = principal_fields(endpoint, payload, headers)
            record.end_user, record.session_id, record.tags = end_user, session_id, tags
            model: str = payload["model"]
            record.requested_model = model
            deployment = self._route(model, wire)
            record.provider = deployment.adapter.name
            record.served_model = deployment.model
            stream = endpoint != "embeddings" and payload.get("stream") is True
            record.streamed = stream
            wants_usage = _wants_usage(payload)  # before prepare() asks upstream for usage
            reservation = await self._reserve(record, deployment, endpoint, len(body), payload)
            changed = self._prepare(deployment, endpoint, payload, stream)
            if reservation is not None and reservation.out_tokens is not None:
                _cap_output(endpoint, payload, reservation.out_tokens)
                changed = True
            upstream_body = orjson.dumps(payload) if changed else body
            if stream:
                await self._relay_stream(
                    send,
                    receive,
                    record,
                    deployment,
                    endpoint,
                    wire,
                    payload,
                    upstream_body,
                    t0,
                    headers,
                    wants_usage,
                    reservation,
                )
            else:
                await self._relay_unary(
                    send, record, deployment, endpoint, upstream_body, t0, headers, reservation
                )
        except GatewayError as exc:
            if isinstance(exc, _Refused):
                record = exc.record
            if record is not None:
                record.http_status = exc.status
                record.error = exc.message[:500]
                record.latency_ms = (perf_counter() - t0) * 1000
                record.overhead_ms = record.latency_ms
                await self._commit(record, reservation)
            await self._send_error(send, wire, exc, request_id)
        except Exception:
            # A bug must still give the client a well-formed error and keep the usage row.
            logger.exception("%s: internal error", request_id)
            if record is not None:
                record.status = "gateway_error"
                record.http_status = 500
                record.latency_ms = (perf_counter() - t0) * 1000
                await self._commit(record, reservation)
            await self._send_error(send, wire, GatewayError("internal gateway error"), request_id)

    # ------------------------------------------------------------------ stages

    def _authenticate(
        self, headers: dict[bytes, bytes], request_id: str, endpoint: str
    ) -> LedgerRecord:
        token = key_from_headers(headers)
        if token is None:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        key = self.keys.lookup(token)
        if key is None:
            raise AuthenticationFailed("invalid API key")
        record = LedgerRecord(
            request_id=request_id,
            ts=datetime.fromtimestamp(self.clock(), UTC),
            endpoint=endpoint,
            status="client_error",
            http_status=400,
            org_id=key.org_id,
            project_id=key.project_id,
            key_id=key.id,
        )
        if key.revoked:
            record.status = "auth_error"
            record.http_status = 401
            raise _Refused(record, AuthenticationFailed("this API key has been revoked"))
        return record

    def _route(self, model: str, wire: str) -> Deployment:
        deployments = self.routes.get(model)
        if not deployments:
            available = sorted(self.routes)
            raise ModelNotFound(
                f"model {model!r} is not served by this gateway; available: "
                + ", ".join(available),
                param="model",
                extra={"available": available},
            )
        deployment = deployments[0]
        if deployment.adapter.wire != wire:
            other = (
                "/v1/messages"
                if deployment.adapter.wire == "anthropic"
                else ("/v1/chat/completions")
            )
            raise BadRequest(
                f"model {model!r} is served in the {deployment.adapter.wire} format; "
                f"call {other} for it",
                param="model",
            )
        return deployment

    async def _reserve(
        self,
        record: LedgerRecord,
        deployment: Deployment,
        endpoint: str,
        body_len: int,
        payload: dict[str, Any],
    ) -> Reservation | None:
        if self.enforcer.book.empty:
            return None  # no limit anywhere: skip building the principal
        assert record.org_id is not None and record.key_id is not None
        principal = Principal(
            record.org_id,
            record.project_id,
            record.key_id,
            record.end_user,
            record.session_id,
            record.tags,
        )
        try:
            return await self.enforcer.reserve(
                record.request_id, principal, deployment, endpoint, body_len, payload
            )
        except GatewayError:
            record.status = "blocked"
            raise

    @staticmethod
    def _prepare(
        deployment: Deployment, endpoint: str, payload: dict[str, Any], stream: bool
    ) -> bool:
        changed = deployment.adapter.prepare(endpoint, payload, stream)
        if payload["model"] != deployment.model:
            payload["model"] = deployment.model
            changed = True
        return changed

    # ------------------------------------------------------------------ upstream

    async def _open(
        self,
        deployment: Deployment,
        endpoint: str,
        body: bytes,
        headers: dict[bytes, bytes],
        record: LedgerRecord,
    ) -> Response:
        assert self.client is not None, "Proxy.start() was not awaited"
        adapter = deployment.adapter
        try:
            return await self.client.post(
                adapter.url(endpoint),
                adapter.headers(headers).items(),
                body,
                timeout=adapter.timeout,
                connect_timeout=adapter.connect_timeout,
            )
        except TimeoutError:
            record.status = "upstream_error"
            raise UpstreamTimeout(f"upstream {adapter.name} did not answer in time") from None
        except OSError as exc:
            record.status = "upstream_error"
            raise UpstreamError(
                f"upstream {adapter.name} connection failed ({type(exc).__name__})"
            ) from None

    async def _upstream_failed(
        self, resp: Response, deployment: Deployment, record: LedgerRecord
    ) -> GatewayError:
        record.status = "upstream_error"
        name = deployment.adapter.name
        try:
            raw = await resp.read()
        except (OSError, TimeoutError):
            raw = b""
        message = _scrub(_upstream_message(raw), deployment.adapter.secrets())
        if resp.status in (401, 403):
            # The client's key was fine; ours was not. The provider's text may quote it.
            return UpstreamError(
                f"upstream {name} rejected the gateway's credentials (status {resp.status})"
            )
        if resp.status < 500:
            return _PassThrough(resp.status, message, raw, resp.headers.get("retry-after"))
        return UpstreamError(f"upstream {name} returned {resp.status}: {message}")

    async def _relay_unary(
        self,
        send: Send,
        record: LedgerRecord,
        deployment: Deployment,
        endpoint: str,
        body: bytes,
        t0: float,
        headers: dict[bytes, bytes],
        reservation: Reservation | None,
    ) -> None:
        t_up = perf_counter()
        resp = await self._open(deployment, endpoint, body, headers, record)
        try:
            if resp.status >= 400:
                raise await self._upstream_failed(resp, deployment, record)
            try:
                raw = await resp.read()
            except TimeoutError:
                record.status = "upstream_error"
                raise UpstreamTimeout(
                    f"upstream {deployment.adapter.name} did not answer in time"
                ) from None
            except OSError as exc:
                record.status = "upstream_error"
                raise UpstreamError(
                    f"upstream {deployment.adapter.name} dropped the connection "
                    f"({type(exc).__name__})"
                ) from None
        finally:
            resp.release()
        upstream_ms = (perf_counter() - t_up) * 1000
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            record.status = "upstream_error"
            raise UpstreamError(
                f"upstream {deployment.adapter.name} sent a response that is not JSON"
            ) from None
        usage = deployment.adapter.usage_from_body(endpoint, obj)
        _bill(record, deployment, usage, estimated=False)
        record.status = "success"
        record.http_status = 200
        record.latency_ms = (perf_counter() - t0) * 1000
        record.overhead_ms = max(0.0, record.latency_ms - upstream_ms)
        await self._commit(record, reservation)
        out_headers = _usage_headers(record)
        if reservation is not None:
            out_headers.extend(reservation.headers())
        await send_bytes(send, 200, raw, out_headers)

    async def _relay_stream(
        self,
        send: Send,
        receive: Receive,
        record: LedgerRecord,
        deployment: Deployment,
        endpoint: str,
        wire: str,
        payload: dict[str, Any],
        body: bytes,
        t0: float,
        headers: dict[bytes, bytes],
        client_wants_usage: bool,
        reservation: Reservation | None,
    ) -> None:
        t_up = perf_counter()
        resp = await self._open(deployment, endpoint, body, headers, record)
        if resp.status >= 400:
            try:
                raise await self._upstream_failed(resp, deployment, record)
            finally:
                resp.release()
        meter = deployment.adapter.stream_meter(client_wants_usage=client_wants_usage)
        upstream_ms = (perf_counter() - t_up) * 1000
        overhead_ms = (perf_counter() - t0) * 1000 - upstream_ms
        start_headers = [*_SSE_HEADERS, *_id_headers(record)]
        start_headers.append((b"x-costwarden-overhead-ms", f"{overhead_ms:.3f}".encode()))
        if reservation is not None:
            start_headers.extend(reservation.headers())
        watcher = _Disconnect(receive)
        tail = b""
        try:
            await send({"type": "http.response.start", "status": 200, "headers": start_headers})
            tail = await self._pump(resp, meter, send, record, t0)
            record.status = "success"
            record.http_status = 200
        except asyncio.CancelledError:
            if not watcher.happened:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            record.status = "cancelled"
            record.http_status = 499
            record.error = "client disconnected mid-stream"
        except (OSError, TimeoutError) as exc:
            record.status = "upstream_error"
            record.http_status = 502
            record.error = f"upstream stream broke ({type(exc).__name__})"
            tail = _stream_error_event(wire, record.error)
        except Exception:
            logger.exception("%s: internal error while relaying a stream", record.request_id)
            record.status = "gateway_error"
            record.http_status = 500
            record.error = "internal gateway error while relaying the stream"
            tail = _stream_error_event(wire, record.error)
        finally:
            watcher.stop()
            resp.close()  # aborts the upstream call if it is still generating
        usage = meter.usage if meter.finished else None
        if usage is None:
            prompt = estimate_tokens([payload.get("messages"), payload.get("system")])
            _bill(record, deployment, meter.estimated_usage(prompt), estimated=True)
        else:
            _bill(record, deployment, usage, estimated=False)
        record.latency_ms = (perf_counter() - t0) * 1000
        record.overhead_ms = max(0.0, overhead_ms)
        await self._commit(record, reservation)
        if record.status != "cancelled":
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _pump(
        self,
        resp: Response,
        meter: StreamMeter,
        send: Send,
        record: LedgerRecord,
        t0: float,
    ) -> bytes:
        """Relay whole events as they arrive; returns any unterminated trailing bytes."""
        buffer = b""
        async for chunk in resp.chunks():
            buffer += chunk
            cut = buffer.rfind(b"\n\n")
            if cut < 0:
                continue
            out = meter.feed(buffer[: cut + 2])
            buffer = buffer[cut + 2 :]
            if out:
                if record.ttft_ms is None and meter.content_events:
                    record.ttft_ms = (perf_counter() - t0) * 1000
                await send({"type": "http.response.body", "body": out, "more_body": True})
        return meter.feed(buffer + b"\n\n") if buffer.strip() else b""

    # ------------------------------------------------------------------ finishing

    async def _commit(self, record: LedgerRecord, reservation: Reservation | None) -> None:
        if reservation is not None:
            await self.enforcer.settle(reservation, record)
        if self.durable:
            await self.ledger.submit_durable(record)
        else:
            self.ledger.submit(record)

    async def _send_error(self, send: Send, wire: str, exc: GatewayError, rid: str) -> None:
        if isinstance(exc, _Refused):
            exc = exc.error
        headers = [(b"content-type", JSON), (b"x-request-id", rid.encode())]
        headers.extend((k.encode(), v.encode()) for k, v in exc.headers.items())
        if isinstance(exc, _PassThrough):
            body = exc.raw if exc.raw else error_body(wire, exc)
        else:
            body = error_body(wire, exc)
        if exc.status >= 500:
            logger.warning("%s %s: %s", rid, exc.status, exc.message)
        await send_bytes(send, exc.status, body, headers)


def new_request_id() -> str:
    """``req_`` + 48 bits of milliseconds + 48 random bits, in hex: unique and time-ordered.

    Time-ordered because the id is the ledger's primary key: random ids scattered each
    batch of inserts over the whole index (a dirtied page per row, and about 55 µs of
    system time per request on SQLite in the benchmark), ordered ids append at its end.
    """
    return f"req_{time_ns() // 1_000_000:012x}{getrandbits(48):012x}"


class _Refused(GatewayError):
    """A refusal decided after the ledger record exists (so the row is still written)."""

    def __init__(self, record: LedgerRecord, error: GatewayError) -> None:
        super().__init__(error.message)
        self.record = record
        self.error = error
        self.status = error.status


class _PassThrough(GatewayError):
    """An upstream 4xx (other than auth) is the client's own error: relay it as it came."""

    def __init__(self, status: int, message: str, raw: bytes, retry_after: str | None) -> None:
        super().__init__(message, headers={"retry-after": retry_after} if retry_after else None)
        self.status = status
        self.type = "invalid_request_error" if status != 429 else "rate_limit_exceeded"
        self.raw = raw


def _bill(
    record: LedgerRecord, deployment: Deployment, usage: TokenUsage, *, estimated: bool
) -> None:
    record.input_tokens = usage.input_tokens
    record.cached_input_tokens = usage.cached_input_tokens
    record.cache_write_tokens = usage.cache_write_tokens
    record.output_tokens = usage.output_tokens
    record.reasoning_tokens = usage.reasoning_tokens
    record.cost_usd = deployment.rates.cost(usage)
    record.cost_estimated = estimated


def _id_headers(record: LedgerRecord) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-request-id", record.request_id.encode()),
        (b"x-costwarden-model", (record.served_model or "").encode()),
        (b"x-costwarden-provider", (record.provider or "").encode()),
    ]


def _usage_headers(record: LedgerRecord) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", JSON),
        *_id_headers(record),
        (b"x-costwarden-cost-usd", format(record.cost_usd, "f").encode()),
        (b"x-costwarden-input-tokens", str(record.input_tokens).encode()),
        (b"x-costwarden-output-tokens", str(record.output_tokens).encode()),
        (b"x-costwarden-cached-tokens", str(record.cached_input_tokens).encode()),
        (b"x-costwarden-overhead-ms", f"{record.overhead_ms:.3f}".encode()),
    ]


def _cap_output(endpoint: str, payload: dict[str, Any], tokens: int) -> None:
    """Send the budget's output cap in the field the client used (or the current one)."""
    if endpoint == "messages":
        payload["max_tokens"] = tokens
        return
    present = [k for k in ("max_tokens", "max_completion_tokens") if k in payload]
    for key in present or ["max_completion_tokens"]:
        payload[key] = tokens


def _wants_usage(payload: dict[str, Any]) -> bool:
    options = payload.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _upstream_message(raw: bytes) -> str:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace") or "no error message"
    error = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    return raw[:200].decode("utf-8", "replace")


def _scrub(text: str, secrets_: list[str]) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _stream_error_event(wire: str, message: str) -> bytes:
    if wire == "anthropic":
        data = orjson.dumps({"type": "error", "error": {"type": "api_error", "message": message}})
        return b"event: error\ndata: " + data + b"\n\n"
    data = orjson.dumps({"error": {"message": message, "type": "upstream_error"}})
    return b"data: " + data + b"\n\n"
