"""Mock LLM upstream speaking the OpenAI and Anthropic wire formats.

Used by tests, the demo and benchmarks as a fast, deterministic stand-in for real providers:
token usage is computed from the request bytes, the reply is ``"tok0 tok1 ..."``, and latency,
streaming speed and faults (error statuses, hangs, dropped connections) are settable at runtime
through a small JSON control API under ``/_mock`` (never affected by faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from costwarden.mock import formats as fmt

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
HANG_SECONDS = 3600.0
"""How long ``fault_timeout`` hangs (far longer than any client timeout; ends on shutdown)."""

_FLOAT_FIELDS = frozenset({"latency_ms", "ttft_ms", "tokens_per_second", "fault_rate"})
_INT_FIELDS = frozenset(
    {"output_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens"}
)
_BOOL_FIELDS = frozenset({"vary_output", "fault_timeout", "fault_drop"})
_OPT_INT_FIELDS = frozenset({"fault_status", "fault_drop_mid_stream_after", "fault_retry_after"})
_LIST_FIELDS = frozenset({"fault_models"})
CONFIG_FIELDS: frozenset[str] = (
    _FLOAT_FIELDS | _INT_FIELDS | _BOOL_FIELDS | _OPT_INT_FIELDS | _LIST_FIELDS
)


@dataclass
class MockState:
    """Runtime-settable behaviour of the mock plus its request counters and recordings."""

    latency_ms: float = 0.0
    ttft_ms: float = 0.0
    tokens_per_second: float = 0.0
    output_tokens: int = 20
    vary_output: bool = False
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    fault_status: int | None = None
    fault_rate: float = 1.0
    fault_timeout: bool = False
    fault_drop: bool = False
    fault_drop_mid_stream_after: int | None = None
    # Faults hit only requests for these models (all models when empty): one mock can then
    # stand in for a failing provider and a healthy fallback at once.
    fault_models: list[str] = field(default_factory=list)
    fault_retry_after: int | None = None  # Retry-After seconds sent with faulted 429s

    requests: int = field(default=0, init=False)
    by_path: dict[str, int] = field(default_factory=dict, init=False)
    in_flight: int = field(default=0, init=False)
    faults: int = field(default=0, init=False)
    last: dict[str, JSON] = field(default_factory=dict, init=False, repr=False)
    _fault_seq: int = field(default=0, init=False, repr=False)

    def config(self) -> JSON:
        """The current configuration (all settable fields)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in CONFIG_FIELDS}

    def update(self, **changes: Any) -> JSON:
        """Validate and apply a partial config update atomically; returns the full config."""
        clean: JSON = {}
        for name, value in changes.items():
            if name not in CONFIG_FIELDS:
                raise ValueError(f"unknown mock config field: {name!r}")
            clean[name] = _validate(name, value)
        for name, value in clean.items():
            setattr(self, name, value)
        self._fault_seq = 0
        return self.config()

    def reset(self) -> None:
        """Restore default config and zero all counters and recordings."""
        defaults = MockState()
        for name in CONFIG_FIELDS:
            setattr(self, name, getattr(defaults, name))
        self.requests = self.in_flight = self.faults = self._fault_seq = 0
        self.by_path.clear()
        self.last.clear()

    def stats(self) -> JSON:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "in_flight": self.in_flight,
            "faults": self.faults,
        }

    def last_request(self, path: str) -> JSON | None:
        """``{"body": ..., "headers": {...}}`` of the last request received on ``path``."""
        return self.last.get(path)

    def _fault_active(self) -> bool:
        return bool(
            self.fault_status
            or self.fault_timeout
            or self.fault_drop
            or self.fault_drop_mid_stream_after is not None
        )

    def take_fault(self, model: Any = None) -> bool:
        """Whether this request is faulted; deterministic: rate 0.5 faults every other one."""
        if not self._fault_active():
            return False
        if self.fault_models and model not in self.fault_models:
            return False
        n = self._fault_seq
        self._fault_seq += 1
        rate = self.fault_rate
        hit = int(n * rate) - int((n - 1) * rate) > 0 if n else rate > 0
        if hit:
            self.faults += 1
        return hit

    def target_tokens(self, messages: Any) -> int:
        if self.vary_output:
            return fmt.vary_target(messages, self.output_tokens)
        return self.output_tokens


def _validate(name: str, value: Any) -> Any:
    if name in _LIST_FIELDS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{name} must be a list of model names")
        return list(value)
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a boolean")
        return value
    if value is None and name in _OPT_INT_FIELDS:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    if name in _FLOAT_FIELDS:
        if name == "fault_rate" and value > 1:
            raise ValueError("fault_rate must be within [0, 1]")
        return float(value)
    if value != int(value):
        raise ValueError(f"{name} must be an integer")
    if name == "fault_status":
        if value == 0:
            return None
        if not 400 <= value <= 599:
            raise ValueError("fault_status must be an HTTP error status (400-599)")
    return int(value)


STATE_KEY = web.AppKey("costwarden_mock_state", MockState)
_SHUTDOWN_KEY = web.AppKey("costwarden_mock_shutdown", asyncio.Event)
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_ID_PREFIX = secrets.token_hex(4)
_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}mock{_ID_PREFIX}{next(_ids):012d}"


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error(provider: str, status: int, message: str | None = None) -> web.Response:
    return _json(fmt.error_body(provider, status, message), status)


def _drop(request: web.BaseRequest) -> None:
    """Close the TCP connection; aiohttp then fails to write the reply and just logs access."""
    transport = request.transport
    if transport is not None:
        transport.close()


@dataclass(slots=True)
class _Call:
    body: JSON
    output_override: int | None
    drop_after: int | None


_Inner = Callable[[web.Request, MockState, _Call], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _header_int(request: web.Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw))
    except ValueError:
        raise ValueError(f"invalid {name} header: {raw!r}") from None


_OVERRIDE_HEADERS = ("x-mock-fault-status", "x-mock-latency-ms", "x-mock-output-tokens")


def _upstream(provider: str, inner: _Inner) -> _Handler:
    """Wrap a /v1 handler with counting, recording, per-request overrides, latency and faults."""

    async def handler(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        path = request.path
        state.requests += 1
        state.by_path[path] = state.by_path.get(path, 0) + 1
        state.in_flight += 1
        try:
            raw = await request.read() if request.body_exists else b""
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body, bad_json = raw.decode("utf-8", "replace"), True
            headers = request.headers
            state.last[path] = {"body": body, "headers": {k.lower(): v for k, v in headers.items()}}
            latency = state.latency_ms
            forced = output_override = None
            if any(h in headers for h in _OVERRIDE_HEADERS):
                try:
                    forced = _header_int(request, "x-mock-fault-status")
                    lat = _header_int(request, "x-mock-latency-ms")
                    output_override = _header_int(request, "x-mock-output-tokens")
                except ValueError as exc:
                    return _error(provider, 400, str(exc))
                if lat is not None:
                    latency = float(lat)
                if forced:
                    state.faults += 1
            model = request.match_info.get("model")  # in the path (Gemini, Bedrock), or:
            if model is None and isinstance(body, dict):
                model = body.get("model")
            faulted = state.take_fault(model)
            if faulted and state.fault_timeout:
                await _hang(request.app)
                return _error(provider, 504, "mock upstream hang ended by shutdown")
            if faulted and state.fault_drop:
                _drop(request)
                return web.Response()
            if latency > 0:
                await asyncio.sleep(latency / 1000.0)
            status = forced or (state.fault_status if faulted else None)
            if status:
                error = _error(provider, status)
                if status == 429 and state.fault_retry_after is not None:
                    error.headers["retry-after"] = str(state.fault_retry_after)
                return error
            if bad_json:
                return _error(provider, 400, "We could not parse the JSON body of your request.")
            if request.method == "POST" and not isinstance(body, dict):
                return _error(provider, 400, "Request body must be a JSON object.")
            drop_after = state.fault_drop_mid_stream_after if faulted else None
            call = _Call(body if isinstance(body, dict) else {}, output_override, drop_after)
            return await inner(request, state, call)
        finally:
            state.in_flight -= 1

    return handler


async def _hang(app: web.Application) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app[_SHUTDOWN_KEY].wait(), HANG_SECONDS)


async def _stream(
    request: web.Request,
    state: MockState,
    call: _Call,
    head: bytes,
    token_events: Iterable[bytes],
    n_tokens: int,
    tail: bytes,
) -> web.StreamResponse:
    """Send an SSE stream: head events, one event per token (paced), tail events."""
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    drop_after = call.drop_after
    try:
        await resp.prepare(request)
        await resp.write(head)
        if state.ttft_ms > 0:
            await asyncio.sleep(state.ttft_ms / 1000.0)
        tps = state.tokens_per_second
        gap = 1.0 / tps if tps > 0 else 0.0
        for i, event in enumerate(token_events):
            if i == drop_after:
                _drop(request)
                return resp
            if gap and i:
                await asyncio.sleep(gap)
            await resp.write(event)
        if drop_after is not None and drop_after == n_tokens:
            _drop(request)
            return resp
        await resp.write(tail)
        await resp.write_eof()
    except ConnectionError:
        logger.debug("client disconnected during stream on %s", request.path)
    return resp


def _output_len(
    body: JSON, state: MockState, call: _Call, cap_keys: tuple[str, ...]
) -> tuple[int, bool]:
    """(output tokens, capped-by-max-tokens) for a request."""
    target = call.output_override
    if target is None:
        target = state.target_tokens(body.get("messages"))
    target = max(0, target)
    for key in cap_keys:
        cap = body.get(key)
        if isinstance(cap, int) and not isinstance(cap, bool):
            cap = max(0, cap)
            return min(cap, target), cap < target
    return target, False


def _check_chat(provider: str, body: JSON) -> web.Response | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error(provider, 400, "model: field required (you must provide a model parameter)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(provider, 400, "messages: field required (non-empty list)")
    return None


async def _chat(request: web.Request, state: MockState, call: _Call) -> web.StreamResponse:
    body = call.body
    invalid = _check_chat("openai", body)
    if invalid is not None:
        return invalid
    model: str = body["model"]
    prompt = fmt.prompt_tokens(body)
    cached = min(state.cached_tokens, prompt)
    cid = _new_id("chatcmpl-")
    stream = body.get("stream") is True
    opts = body.get("stream_options")
    include_usage = isinstance(opts, dict) and opts.get("include_usage") is True
    tool_name = fmt.pick_tool(body, "openai")
    if tool_name is not None:
        call_id = _new_id("call_")
        usage = fmt.openai_usage(prompt, fmt.TOOL_OUTPUT_TOKENS, cached, 0)
        if not stream:
            return _json(
                fmt.openai_completion(cid, model, None, (call_id, tool_name), "tool_calls", usage)
            )
        chunks = fmt.OpenAIChunks(cid, model, include_usage)
        tail = chunks.finish("tool_calls") + (chunks.usage(usage) if include_usage else b"")
        return await _stream(
            request,
            state,
            call,
            chunks.tool_start(call_id, tool_name),
            [chunks.tool_args(f) for f in fmt.TOOL_ARGUMENT_FRAGMENTS],
            fmt.TOOL_OUTPUT_TOKENS,
            tail + fmt.SSE_DONE,
        )
    total, capped = _output_len(body, state, call, ("max_completion_tokens", "max_tokens"))
    reasoning = min(state.reasoning_tokens, total)
    visible = total - reasoning
    finish = "length" if capped else "stop"
    # ``n`` choices, each as long as one answer, every one billed (as OpenAI does).
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 128 else 1
    usage = fmt.openai_usage(prompt, total * choices, cached, reasoning * choices)
    if not stream:
        text = fmt.reply_text(visible)
        return _json(fmt.openai_completion(cid, model, text, None, finish, usage, choices))
    each = [fmt.OpenAIChunks(cid, model, include_usage, i) for i in range(choices)]
    tail = b"".join(c.finish(finish) for c in each)
    tail += each[0].usage(usage) if include_usage else b""
    return await _stream(
        request,
        state,
        call,
        b"".join(c.role() for c in each),
        map(each[0].content, range(visible))
        if choices == 1
        else (b"".join(c.content(i) for c in each) for i in range(visible)),
        visible,
        tail + fmt.SSE_DONE,
    )


async def _embeddings(request: web.Request, state: MockState, call: _Call) -> web.StreamResponse:
    body = call.body
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _error("openai", 400, "you must provide a model parameter")
    items = fmt.embedding_items(body.get("input"))
    if items is None:
        return _error("openai", 400, "input must be a string, list of strings or token list")
    dims = body.get("dimensions")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 4096:
        dims = fmt.EMBEDDING_DIMS
    as_b64 = body.get("encoding_format") == "base64"
    return _json(fmt.embeddings_body(items, model, dims, as_b64))


async def _models(request: web.Request, state: MockState, call: _Call) -> web.StreamResponse:
    return _json(fmt.MODELS_BODY)


async def _messages(request: web.Request, state: MockState, call: _Call) -> web.StreamResponse:
    body = call.body
    invalid = _check_chat("anthropic", body)
    if invalid is not None:
        return invalid
    model: str = body["model"]
    prompt = fmt.prompt_tokens(body)
    mid = _new_id("msg_")
    tool_name = fmt.pick_tool(body, "anthropic")
    tool = (_new_id("toolu_"), tool_name) if tool_name is not None else None
    if tool is not None:
        total, stop = fmt.TOOL_OUTPUT_TOKENS, "tool_use"
    else:
        total, capped = _output_len(body, state, call, ("max_tokens",))
        stop = "max_tokens" if capped else "end_turn"
    usage = fmt.anthropic_usage(prompt, total, state.cached_tokens, state.cache_write_tokens)
    if body.get("stream") is not True:
        text = None if tool is not None else fmt.reply_text(total)
        return _json(orjson.dumps(fmt.anthropic_message(mid, model, text, tool, stop, usage)))
    tail = fmt.ANTHROPIC_BLOCK_STOP + fmt.anthropic_message_delta(stop, total) + fmt.ANTHROPIC_STOP
    start = fmt.anthropic_message_start(mid, model, usage)
    if tool is not None:
        head = start + fmt.anthropic_tool_start(*tool) + fmt.ANTHROPIC_PING
        events: Iterable[bytes] = [fmt.anthropic_json_delta(f) for f in fmt.TOOL_ARGUMENT_FRAGMENTS]
    else:
        head = start + fmt.ANTHROPIC_TEXT_START + fmt.ANTHROPIC_PING
        events = map(fmt.anthropic_text_delta, range(total))
    return await _stream(request, state, call, head, events, total, tail)


async def _count_tokens(request: web.Request, state: MockState, call: _Call) -> web.StreamResponse:
    invalid = _check_chat("anthropic", call.body)
    if invalid is not None:
        return invalid
    return _json(orjson.dumps({"input_tokens": fmt.prompt_tokens(call.body)}))


# --------------------------------------------------------------------------- control API


def _control_json(payload: Any, status: int = 200) -> web.Response:
    return _json(orjson.dumps(payload), status)


async def _get_config(request: web.Request) -> web.StreamResponse:
    return _control_json(request.app[STATE_KEY].config())


async def _post_config(request: web.Request) -> web.StreamResponse:
    try:
        changes = orjson.loads(await request.read() or b"{}")
        if not isinstance(changes, dict):
            raise ValueError("config update must be a JSON object")
        config = request.app[STATE_KEY].update(**changes)
    except (ValueError, orjson.JSONDecodeError) as exc:
        return _control_json({"error": str(exc)}, 400)
    logger.debug("mock config updated: %s", changes)
    return _control_json(config)


async def _get_stats(request: web.Request) -> web.StreamResponse:
    return _control_json(request.app[STATE_KEY].stats())


async def _post_reset(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.reset()
    return _control_json(state.config())


async def _get_last(request: web.Request) -> web.StreamResponse:
    path = request.query.get("path", "/v1/chat/completions")
    last = request.app[STATE_KEY].last_request(path)
    if last is None:
        return _control_json({"error": f"no request recorded for {path}"}, 404)
    return _control_json(last)


async def _health(request: web.Request) -> web.StreamResponse:
    return _control_json({"status": "ok"})


async def _on_shutdown(app: web.Application) -> None:
    app[_SHUTDOWN_KEY].set()  # release requests hanging in fault_timeout


def create_mock_app(state: MockState | None = None) -> web.Application:
    """The mock upstream aiohttp application (state shared with the caller if given)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state if state is not None else MockState()
    app[_SHUTDOWN_KEY] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/chat/completions", _upstream("openai", _chat))
    app.router.add_post("/v1/embeddings", _upstream("openai", _embeddings))
    app.router.add_get("/v1/models", _upstream("openai", _models))
    app.router.add_post("/v1/messages", _upstream("anthropic", _messages))
    app.router.add_post("/v1/messages/count_tokens", _upstream("anthropic", _count_tokens))
    from costwarden.mock import azure, bedrock, gemini  # the other formats: a module each

    for method, path, provider, inner in (
        *azure.routes(_chat, _embeddings, _models), *gemini.routes(_stream), *bedrock.routes()
    ):
        app.router.add_route(method, path, _upstream(provider, inner))
    app.router.add_get("/_mock/config", _get_config)
    app.router.add_post("/_mock/config", _post_config)
    app.router.add_get("/_mock/stats", _get_stats)
    app.router.add_post("/_mock/reset", _post_reset)
    app.router.add_get("/_mock/last", _get_last)
    app.router.add_get("/_mock/health", _health)
    return app


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True, slots=True)
class MockServer:
    """A running mock upstream (yielded by :func:`serve_mock`)."""

    base_url: str
    state: MockState
    host: str
    port: int


def _runner(app: web.Application) -> web.AppRunner:
    # No access log (benchmark baseline); cancel handlers whose client went away.
    return web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2.0)


@asynccontextmanager
async def serve_mock(
    host: str = "127.0.0.1", port: int = 0, state: MockState | None = None
) -> AsyncIterator[MockServer]:
    """Serve the mock on ``host:port`` (0 = free port) for the duration of the block."""
    state = state if state is not None else MockState()
    runner = _runner(create_mock_app(state))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        real_port = int(runner.addresses[0][1])
        url_host = f"[{host}]" if ":" in host else host
        yield MockServer(f"http://{url_host}:{real_port}", state, host, real_port)
    finally:
        await runner.cleanup()


async def run_mock(host: str, port: int, state: MockState | None = None) -> None:
    """Serve the mock until cancelled, then shut down cleanly."""
    async with serve_mock(host, port, state) as mock:
        logger.info("mock LLM upstream listening on %s", mock.base_url)
        await asyncio.Event().wait()


async def _main(host: str, port: int) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await run_mock(host, port)
    except asyncio.CancelledError:
        logger.info("mock LLM upstream stopped")


def main_mock(host: str = "127.0.0.1", port: int = 8090) -> None:
    """Blocking entry point (CLI ``costwarden mock-upstream``); exits cleanly on Ctrl-C/SIGTERM."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_main(host, port))
    except KeyboardInterrupt:
        logger.info("mock LLM upstream interrupted")
