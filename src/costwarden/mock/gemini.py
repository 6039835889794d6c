"""Google Gemini's paths on the mock (the Generative Language API, ``v1beta``).

``models/{model}:generateContent``, ``:streamGenerateContent`` (``?alt=sse``: events framed
``data: {...}\\r\\n\\r\\n`` as Google frames them; without it, the JSON array Google sends
then), ``:batchEmbedContents``, ``:embedContent`` and the model list, behind the checks
Google makes before it answers: a key in ``x-goog-api-key`` (or the ``key`` query
parameter), else a 403 in Google's error shape.

Answers are sized like the OpenAI and Anthropic handlers' (:mod:`costwarden.mock.formats`):
prompt tokens from the request's bytes, ``output_tokens`` word tokens (``vary_output``, a
per-request ``x-mock-output-tokens``), capped by ``generationConfig.maxOutputTokens``; a
question about the weather with tools declared is answered with a call of the first one.
The state's ``cached_tokens`` and ``reasoning_tokens`` come back as ``usageMetadata``'s
``cachedContentTokenCount`` (inside ``promptTokenCount``, as Google counts it) and
``thoughtsTokenCount`` (outside ``candidatesTokenCount``). Faults, latency and recording
come from the server's ``_upstream`` wrapper, which reads the model from the path.

The server's handlers are passed in (``routes``), not imported: the server imports this
module, and modules of a package must not import each other both ways.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web

from costwarden.mock import formats as fmt

JSON = dict[str, Any]
# (request, state, call) -> response, as the server's handlers are.
Inner = Callable[[web.Request, Any, Any], Awaitable[web.StreamResponse]]
# The server's paced SSE sender: (request, state, call, head, token events, tokens, tail).
Stream = Callable[
    [web.Request, Any, Any, bytes, Iterable[bytes], int, bytes], Awaitable[web.StreamResponse]
]

PREFIX = "/v1beta/models/{model}"
MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-embedding-001")
_TOOL_ARGS: JSON = orjson.loads(fmt.TOOL_ARGUMENTS)
_NO_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


def routes(stream: Stream) -> list[tuple[str, str, str, Inner]]:
    """(method, path, error format, handler) for each Gemini endpoint."""

    async def stream_generate(
        request: web.Request, state: Any, call: Any
    ) -> web.StreamResponse:
        return await _stream_generate(request, state, call, stream)

    return [
        ("POST", PREFIX + ":generateContent", "gemini", _checked(_generate)),
        ("POST", PREFIX + ":streamGenerateContent", "gemini", _checked(stream_generate)),
        ("POST", PREFIX + ":batchEmbedContents", "gemini", _checked(_batch_embed)),
        ("POST", PREFIX + ":embedContent", "gemini", _checked(_embed)),
        ("GET", "/v1beta/models", "gemini", _checked(_models)),
    ]


def error(status: int, code: str, message: str) -> web.Response:
    """An error in Google's shape: ``{"error": {"code", "message", "status"}}``."""
    body = orjson.dumps({"error": {"code": status, "message": message, "status": code}})
    return web.Response(body=body, status=status, content_type="application/json")


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _checked(inner: Inner) -> Inner:
    async def handler(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
        if not request.headers.get("x-goog-api-key") and not request.query.get("key"):
            return error(403, "PERMISSION_DENIED", _NO_CALLER)
        return await inner(request, state, call)

    return handler


# --------------------------------------------------------------------------- generation


def _text_bytes(parts: Any) -> int:
    """UTF-8 bytes of the parts' text, function calls' arguments and function results."""
    total = 0
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            total += len(part["text"].encode("utf-8", "surrogatepass"))
        for key, inner in (("functionCall", "args"), ("functionResponse", "response")):
            found = part.get(key)
            if isinstance(found, dict) and found.get(inner) is not None:
                total += len(orjson.dumps(found[inner]))
    return total


def prompt_tokens(body: JSON) -> int:
    """Deterministic prompt tokens of a ``GenerateContentRequest`` (system and tools too)."""
    total = 0
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            total += _text_bytes(content.get("parts"))
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        total += _text_bytes(system.get("parts"))
    if body.get("tools"):
        total += len(orjson.dumps(body["tools"]))
    return fmt.tokens_for_bytes(total)


def _pick_tool(body: JSON) -> str | None:
    """The tool to call, chosen as the OpenAI and Anthropic handlers choose it."""
    names: list[JSON] = []
    for tool in body.get("tools") or []:
        declarations = tool.get("functionDeclarations") if isinstance(tool, dict) else None
        for decl in declarations if isinstance(declarations, list) else []:
            if isinstance(decl, dict):
                names.append({"name": decl.get("name")})
    config = body.get("toolConfig")
    calling = config.get("functionCallingConfig") if isinstance(config, dict) else None
    mode = calling.get("mode") if isinstance(calling, dict) else None
    last = (body.get("contents") or [None])[-1]
    parts = last.get("parts") if isinstance(last, dict) else None
    texts = [
        {"type": "text", "text": p["text"]}
        for p in parts or []
        if isinstance(p, dict) and isinstance(p.get("text"), str)
    ]
    role = last.get("role") if isinstance(last, dict) else None
    view = {
        "tools": names,
        "tool_choice": {"type": "none"} if mode == "NONE" else None,
        "messages": [{"role": role or "user", "content": texts}],
    }
    return fmt.pick_tool(view, "anthropic")


def usage_metadata(prompt: int, visible: int, thoughts: int, cached: int) -> JSON:
    meta: JSON = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": prompt + visible + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        meta["cachedContentTokenCount"] = cached
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


class _Answer:
    """What one generation request gets: a tool call or ``visible`` word tokens, the finish
    reason and the usage; and its chunks, as JSON or as SSE events."""

    def __init__(self, request: web.Request, state: Any, call: Any) -> None:
        body: JSON = call.body
        self.model: str = request.match_info["model"]
        self.rid = secrets.token_urlsafe(16)
        prompt = prompt_tokens(body)
        cached = min(state.cached_tokens, prompt)
        self.tool = _pick_tool(body)
        if self.tool is not None:
            visible, thoughts, self.finish = fmt.TOOL_OUTPUT_TOKENS, 0, "STOP"
        else:
            target = call.output_override
            if target is None:
                target = state.target_tokens(body.get("contents"))
            total = max(0, target)
            config = body.get("generationConfig")
            cap = config.get("maxOutputTokens") if isinstance(config, dict) else None
            capped = isinstance(cap, int) and not isinstance(cap, bool) and 0 <= cap < total
            if capped:
                total = cap
            thoughts = min(state.reasoning_tokens, total)
            visible = total - thoughts
            self.finish = "MAX_TOKENS" if capped else "STOP"
        self.visible = visible
        self.usage = usage_metadata(prompt, visible, thoughts, cached)
        # What every chunk but the last reports, as Google does: the prompt so far.
        self.partial = {"promptTokenCount": prompt, "totalTokenCount": prompt}

    def _response(self, parts: list[JSON], finish: str | None, usage: JSON) -> JSON:
        candidate: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.rid,
        }

    def _call_part(self) -> JSON:
        return {"functionCall": {"name": self.tool, "args": _TOOL_ARGS}}

    def whole(self) -> JSON:
        """The ``GenerateContentResponse`` of a unary call."""
        if self.tool is not None:
            return self._response([self._call_part()], self.finish, self.usage)
        return self._response([{"text": fmt.reply_text(self.visible)}], self.finish, self.usage)

    def chunks(self) -> list[JSON]:
        """The stream's responses: one per token (a call comes whole), then the last."""
        if self.tool is not None:
            head = [self._response([self._call_part()], None, self.partial)]
        else:
            head = [
                self._response([{"text": token}], None, self.partial)
                for token in fmt.reply_tokens(self.visible)
            ]
        return [*head, self._response([{"text": ""}], self.finish, self.usage)]


def _sse(payload: JSON) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def _invalid(body: JSON) -> web.Response | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        message = "* GenerateContentRequest.contents: contents is not specified"
        return error(400, "INVALID_ARGUMENT", message)
    return None


async def _generate(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
    invalid = _invalid(call.body)
    if invalid is not None:
        return invalid
    return _json(_Answer(request, state, call).whole())


async def _stream_generate(
    request: web.Request, state: Any, call: Any, stream: Stream
) -> web.StreamResponse:
    invalid = _invalid(call.body)
    if invalid is not None:
        return invalid
    chunks = _Answer(request, state, call).chunks()
    if request.query.get("alt") != "sse":
        return _json(chunks)  # Google's default: the responses as one JSON array
    events = [_sse(c) for c in chunks[:-1]]
    return await stream(request, state, call, b"", events, len(events), _sse(chunks[-1]))


# --------------------------------------------------------------------------- embeddings


def _embedding(request: web.Request, item: Any) -> tuple[JSON, int] | web.Response:
    """One ``EmbedContentRequest``'s vector and its prompt tokens (or Google's 400)."""
    content = item.get("content") if isinstance(item, dict) else None
    parts = content.get("parts") if isinstance(content, dict) else None
    items = parts if isinstance(parts, list) else []
    texts = [p["text"] for p in items if isinstance(p, dict) and isinstance(p.get("text"), str)]
    if not texts or len(texts) != len(items) or not all(texts):
        message = "* EmbedContentRequest.content: contains an empty Part"
        return error(400, "INVALID_ARGUMENT", message)
    dims = item.get("outputDimensionality")
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= 3072:
        dims = fmt.EMBEDDING_DIMS
    model = request.match_info["model"]
    body = orjson.loads(fmt.embeddings_body([" ".join(texts)], model, dims, False))
    return {"values": body["data"][0]["embedding"]}, int(body["usage"]["prompt_tokens"])


async def _batch_embed(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
    requests = call.body.get("requests")
    if not isinstance(requests, list) or not requests:
        return error(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: is empty")
    expected = "models/" + request.match_info["model"]
    vectors: list[JSON] = []
    tokens = 0
    for i, item in enumerate(requests):
        if not isinstance(item, dict) or item.get("model") != expected:
            message = f"* BatchEmbedContentsRequest.requests[{i}].model: must be {expected}"
            return error(400, "INVALID_ARGUMENT", message)
        found = _embedding(request, item)
        if isinstance(found, web.Response):
            return found
        vectors.append(found[0])
        tokens += found[1]
    return _json({"embeddings": vectors, "usageMetadata": {"promptTokenCount": tokens}})


async def _embed(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
    found = _embedding(request, call.body)
    if isinstance(found, web.Response):
        return found
    return _json({"embedding": found[0], "usageMetadata": {"promptTokenCount": found[1]}})


async def _models(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
    return _json({"models": [{"name": f"models/{m}", "version": "001"} for m in MODELS]})
