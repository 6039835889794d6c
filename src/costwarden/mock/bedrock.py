"""AWS Bedrock's Converse API on the mock: ``POST /model/{model}/converse`` and
``/model/{model}/converse-stream``, with the check Bedrock makes before it answers -- the
request's AWS Signature Version 4, recomputed from the method, URL, headers and body
received, with the test credentials below (:data:`CREDENTIALS`, the mock's; a test signs
with them, or with others to see the 403).

Answers are the mock's usual ones in Converse's shape: ``"tok0 tok1 ..."`` (or a tool call
when the request offers tools and the last user turn asks for the weather), usage with
the cache reads and writes set through the control API, and streams in the AWS
event-stream binary framing with correct CRCs (:func:`event_frame`; tests build corrupt or
split frames from it too). botocore is imported only for the signature check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import re
import secrets
import struct
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from costwarden.mock import formats as fmt

logger = logging.getLogger(__name__)

JSON = dict[str, Any]
# (request, state, call) -> response: the mock's handler signature.
Inner = Callable[[web.Request, Any, Any], Awaitable[web.StreamResponse]]

PREFIX = "/model/{model}"
EVENT_STREAM = "application/vnd.amazon.eventstream"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_BAD_TOKEN = "The security token included in the request is invalid."
_MAX_SKEW = timedelta(minutes=5)  # AWS refuses a signature made further from its clock
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s]+)/(?P<date>\d{8})/(?P<region>[^/\s]+)/"
    r"(?P<service>[^/\s]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
# Bedrock pads stream events with a "p" field so their sizes do not give the text away.
_PADDING = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


@dataclasses.dataclass(frozen=True, slots=True)
class AwsCredentials:
    """The one identity the mock's Bedrock accepts (a session token is optional; when sent,
    it must be this one)."""

    access_key: str
    secret_key: str
    session_token: str
    region: str


CREDENTIALS = AwsCredentials(
    access_key="AKIAMOCKBEDROCK00001",
    secret_key="mock/bedrock+SECRET/k3y/0123456789abcdefghij",
    session_token="mock-bedrock-session-TOKEN-0123456789",
    region="us-east-1",
)


# --------------------------------------------------------------------------- event stream


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total and headers lengths, their CRC32), headers
    (string values only, type 7), payload and the CRC32 of everything before it."""
    raw = b"".join(
        bytes([len(name)]) + name + b"\x07" + struct.pack(">H", len(value)) + value
        for name, value in ((k.encode(), v.encode()) for k, v in headers.items())
    )
    prelude = struct.pack(">II", 12 + len(raw) + len(payload) + 4, len(raw))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, payload: JSON) -> bytes:
    """A ConverseStream event of type ``name``."""
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return event_frame(headers, orjson.dumps(payload))


def exception(name: str, message: str) -> bytes:
    """A ConverseStream exception frame (e.g. ``throttlingException``)."""
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return event_frame(headers, orjson.dumps({"message": message}))


# --------------------------------------------------------------------------- checks


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"message": message}),
        status=status,
        content_type="application/json",
        headers={"x-amzn-ErrorType": kind},
    )


def signature_problem(
    method: str, url: str, headers: Any, body: bytes, credentials: AwsCredentials
) -> tuple[str, str] | None:
    """(error type, message) as Bedrock would answer a request whose signature does not
    hold, or None: the signature is recomputed with botocore from what was received."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = headers.get("authorization")
    if not auth:
        return "MissingAuthenticationTokenException", "Missing Authentication Token"
    found = _AUTH.fullmatch(auth.strip())
    stamp = headers.get("x-amz-date") or ""
    if found is None or not re.fullmatch(r"\d{8}T\d{6}Z", stamp):
        return "IncompleteSignatureException", "Authorization header requires a valid signature"
    token = headers.get("x-amz-security-token")
    if found["key"] != credentials.access_key or token not in (None, credentials.session_token):
        return "UnrecognizedClientException", _BAD_TOKEN
    signed = found["signed"].split(";")
    when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if abs(datetime.now(UTC) - when) > _MAX_SKEW:
        return "InvalidSignatureException", "Signature expired: " + stamp
    if "host" not in signed or found["date"] != stamp[:8] or found["service"] != "bedrock":
        return "InvalidSignatureException", SIGNATURE_MISMATCH
    if found["region"] != credentials.region:
        return "InvalidSignatureException", (
            f"Credential should be scoped to a valid region, not '{found['region']}'."
        )
    request = AWSRequest(
        method=method, url=url, data=body, headers={h: headers.get(h, "") for h in signed}
    )
    request.context["timestamp"] = stamp
    signer = SigV4Auth(
        Credentials(credentials.access_key, credentials.secret_key, token),
        "bedrock",
        credentials.region,
    )
    to_sign = signer.string_to_sign(request, signer.canonical_request(request))
    expected = signer.signature(to_sign, request)
    if not hmac.compare_digest(str(expected), found["signature"]):
        return "InvalidSignatureException", SIGNATURE_MISMATCH
    return None


def _invalid(body: JSON) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "The messages field must contain at least one message."
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: must be user or assistant"
        content = message.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            return f"messages.{i}.content: must be a list of content blocks"
    if messages[0].get("role") != "user":
        return "A conversation must start with a user message."
    return None


# --------------------------------------------------------------------------- answers


def _openai_view(body: JSON) -> JSON:
    """The request as the shared helpers (prompt_tokens, pick_tool) read a request: text
    parts typed, the tools at the top."""
    tools = (body.get("toolConfig") or {}).get("tools") or []
    messages = [
        {
            "role": m["role"],
            "content": [
                {"type": "text", "text": b["text"]}
                for b in m["content"]
                if isinstance(b.get("text"), str)
            ],
        }
        for m in body["messages"]
    ]
    return {
        "messages": messages,
        "system": body.get("system"),
        "tools": [t.get("toolSpec") or {} for t in tools] or None,
    }


def _usage(prompt: int, output: int, state: Any) -> JSON:
    usage = fmt.anthropic_usage(prompt, output, state.cached_tokens, state.cache_write_tokens)
    read, written = usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]
    return {
        "inputTokens": usage["input_tokens"],
        "outputTokens": output,
        "totalTokens": usage["input_tokens"] + read + written + output,
        "cacheReadInputTokens": read,
        "cacheWriteInputTokens": written,
    }


def _output_tokens(body: JSON, view: JSON, state: Any, call: Any) -> tuple[int, bool]:
    """(output tokens, capped by maxTokens)."""
    target = call.output_override
    if target is None:
        target = state.target_tokens(view["messages"])
    target = max(0, target)
    cap = (body.get("inferenceConfig") or {}).get("maxTokens")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap < target:
        return cap, True
    return target, False


def _converse(streaming: bool) -> Inner:
    async def handler(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
        body: JSON = call.body
        problem = signature_problem(
            request.method,
            f"{request.scheme}://{request.host}{request.raw_path}",
            request.headers,
            await request.read(),  # the bytes received (aiohttp keeps them once read)
            CREDENTIALS,
        )
        record = state.last.get(request.path)
        if record is not None:
            record["signature"] = "verified" if problem is None else problem[0]
        if problem is not None:
            return _aws_error(403, *problem)
        invalid = _invalid(body)
        if invalid is not None:
            return _aws_error(400, "ValidationException", invalid)
        view = _openai_view(body)
        prompt = fmt.prompt_tokens(view)
        tool = fmt.pick_tool(view, "anthropic")
        if tool is not None:
            total, stop = fmt.TOOL_OUTPUT_TOKENS, "tool_use"
        else:
            total, capped = _output_tokens(body, view, state, call)
            stop = "max_tokens" if capped else "end_turn"
        usage = _usage(prompt, total, state)
        tool_use = ("tooluse_" + secrets.token_urlsafe(16), tool) if tool is not None else None
        if not streaming:
            return _unary(total, tool_use, stop, usage)
        return await _stream(request, state, call, total, tool_use, stop, usage)

    return handler


def _unary(total: int, tool: tuple[str, str] | None, stop: str, usage: JSON) -> web.Response:
    content: list[JSON]
    if tool is not None:
        content = [{"toolUse": {"toolUseId": tool[0], "name": tool[1], "input": {"city": "Paris"}}}]
    else:
        content = [{"text": fmt.reply_text(total)}]
    answer = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 1},
    }
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def _stream(
    request: web.Request,
    state: Any,
    call: Any,
    total: int,
    tool: tuple[str, str] | None,
    stop: str,
    usage: JSON,
) -> web.StreamResponse:
    """The answer as ConverseStream sends it, paced like the mock's SSE streams."""
    head = event("messageStart", {"role": "assistant", "p": _PADDING})
    deltas: list[JSON]
    if tool is not None:
        start = {"toolUse": {"toolUseId": tool[0], "name": tool[1]}}
        head += event("contentBlockStart", {"contentBlockIndex": 0, "start": start, "p": "ab"})
        deltas = [{"toolUse": {"input": f}} for f in fmt.TOOL_ARGUMENT_FRAGMENTS]
    else:
        deltas = [{"text": t} for t in fmt.reply_tokens(total)]
    tail = event("contentBlockStop", {"contentBlockIndex": 0, "p": "abc"})
    tail += event("messageStop", {"stopReason": stop, "p": "abcd"})
    tail += event("metadata", {"usage": usage, "metrics": {"latencyMs": 1}, "p": "ab"})
    resp = web.StreamResponse(headers={"Content-Type": EVENT_STREAM})
    drop_after = call.drop_after
    try:
        await resp.prepare(request)
        await resp.write(head)
        if state.ttft_ms > 0:
            await asyncio.sleep(state.ttft_ms / 1000.0)
        gap = 1.0 / state.tokens_per_second if state.tokens_per_second > 0 else 0.0
        for i, delta in enumerate(deltas):
            if i == drop_after:
                _drop(request)
                return resp
            if gap and i:
                await asyncio.sleep(gap)
            await resp.write(
                event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta, "p": "a"})
            )
        if drop_after is not None and drop_after == len(deltas):
            _drop(request)
            return resp
        await resp.write(tail)
        await resp.write_eof()
    except ConnectionError:
        logger.debug("client disconnected during stream on %s", request.path)
    return resp


def _drop(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.close()


def routes() -> list[tuple[str, str, str, Inner]]:
    """(method, path, error format, handler) for each Converse endpoint."""
    return [
        ("POST", PREFIX + "/converse", "bedrock", _converse(streaming=False)),
        ("POST", PREFIX + "/converse-stream", "bedrock", _converse(streaming=True)),
    ]
