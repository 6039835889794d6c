"""The ConverseStream decoder: AWS event-stream frames into OpenAI chunk events, the same
whatever the byte boundaries the frames arrive split at; a bad CRC, an unreadable frame and
an exception frame end the stream as an error; the usage chunk bills what the body does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from costwarden.mock.bedrock import event, event_frame, exception
from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import ProviderSpec
from costwarden.providers.bedrock_stream import (
    ConverseStreamDecoder,
    EventStreamError,
    openai_usage,
    token_usage,
)
from costwarden.providers.openai import usage_from_openai

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
USAGE = {
    "inputTokens": 11,
    "outputTokens": 7,
    "totalTokens": 11 + 7 + 5 + 3,
    "cacheReadInputTokens": 5,
    "cacheWriteInputTokens": 3,
}
SPEC = ProviderSpec(
    name="aws",
    type="bedrock",
    base_url="https://bedrock-runtime.us-east-1.amazonaws.com",
    connect_timeout=5.0,
    timeout=60.0,
    api_key="AKIDEXAMPLE",
    secret_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    region="us-east-1",
)


def _stream(*, tool: bool = False) -> bytes:
    frames = [event("messageStart", {"role": "assistant", "p": "abcdefgh"})]
    delta: dict[str, Any]
    if tool:
        start = {"toolUse": {"toolUseId": "tooluse_9", "name": "get_weather"}}
        frames.append(event("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        for part in ('{"city":', ' "Paris"}'):
            delta = {"toolUse": {"input": part}}
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
        stop = "tool_use"
    else:
        for text in ("Hel", "lo ", "wörld"):  # a multi-byte character: splits fall inside it
            delta = {"text": text}
            frames.append(event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}))
        stop = "end_turn"
    frames.append(event("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(event("messageStop", {"stopReason": stop}))
    frames.append(event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 3}}))
    return b"".join(frames)


def _events(sse: bytes) -> list[Any]:
    """The SSE events' data, ids and timestamps left out (each decoder has its own)."""
    found: list[Any] = []
    for chunk in sse.split(b"\n\n"):
        if not chunk:
            continue
        assert chunk.startswith(b"data: ")
        data = chunk[6:]
        if data == b"[DONE]":
            found.append("[DONE]")
            continue
        obj = orjson.loads(data)
        del obj["id"], obj["created"]
        found.append(obj)
    return found


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


USAGE_CHUNK = {
    "object": "chat.completion.chunk",
    "model": MODEL,
    "choices": [],
    "usage": openai_usage(USAGE),
}


def test_a_text_stream_decodes_to_openai_chunks() -> None:
    assert _events(ConverseStreamDecoder(MODEL).feed(_stream())) == [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo "}),
        _chunk({"content": "wörld"}),
        _chunk({}, "stop"),
        USAGE_CHUNK,
        "[DONE]",
    ]


def test_a_tool_stream_decodes_to_openai_tool_call_chunks() -> None:
    call = {
        "index": 0,
        "id": "tooluse_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert _events(ConverseStreamDecoder(MODEL).feed(_stream(tool=True))) == [
        _chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
        _chunk({}, "tool_calls"),
        USAGE_CHUNK,
        "[DONE]",
    ]


@pytest.mark.parametrize("tool", [False, True])
def test_a_stream_split_at_every_byte_decodes_the_same(tool: bool) -> None:
    data = _stream(tool=tool)
    whole = _events(ConverseStreamDecoder(MODEL).feed(data))
    for cut in range(1, len(data)):
        decoder = ConverseStreamDecoder(MODEL)
        head = decoder.feed(data[:cut])
        assert head.endswith(b"\n\n") or not head  # whole events only
        assert _events(head + decoder.feed(data[cut:]) + decoder.flush()) == whole, cut
    decoder = ConverseStreamDecoder(MODEL)
    one_by_one = b"".join(decoder.feed(data[i : i + 1]) for i in range(len(data)))
    assert _events(one_by_one) == whole


def test_a_stream_cut_mid_frame_ends_unfinished() -> None:
    data = _stream()
    decoder = ConverseStreamDecoder(MODEL)
    out = decoder.feed(data[:-10]) + decoder.flush()
    assert b"[DONE]" not in out and not decoder.finished


def _corrupt(frame: bytes, at: int) -> bytes:
    broken = bytearray(frame)
    broken[at] ^= 0x01
    return bytes(broken)


@pytest.mark.parametrize(
    "where",
    [
        0,  # the total length: the prelude CRC no longer matches
        9,  # the prelude CRC itself
        20,  # a header byte: the message CRC no longer matches
        -6,  # a payload byte
        -1,  # the message CRC
    ],
)
def test_a_bad_crc_ends_the_stream_as_an_error(where: int) -> None:
    good = event("messageStart", {"role": "assistant"}) + event(
        "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}
    )
    frame = event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}})
    bad = _corrupt(frame, where)
    decoder = ConverseStreamDecoder(MODEL)
    assert isinstance(EventStreamError("x"), OSError)  # what the gateway's pump catches
    # What came before the bad frame is relayed; the bad frame ends the stream.
    out = decoder.feed(good + bad + event("messageStop", {"stopReason": "end_turn"}))
    assert _events(out)[-1] == _chunk({"content": "Hi"})
    with pytest.raises(EventStreamError, match="unreadable event-stream frame"):
        decoder.feed(b"")
    with pytest.raises(EventStreamError):
        decoder.flush()


def test_a_bad_first_frame_fails_at_once() -> None:
    decoder = ConverseStreamDecoder(MODEL)
    with pytest.raises(EventStreamError):
        decoder.feed(_corrupt(_stream(), -1)[:60] + b"\x00" * 200)


def test_an_exception_frame_is_an_error() -> None:
    decoder = ConverseStreamDecoder(MODEL)
    data = event("messageStart", {"role": "assistant"}) + exception(
        "throttlingException", "Too many tokens, please wait before trying again."
    )
    with pytest.raises(EventStreamError, match="throttlingException"):
        decoder.feed(data)


def test_a_payload_that_is_not_json_is_an_error() -> None:
    frame = event_frame({":event-type": "contentBlockDelta", ":message-type": "event"}, b"{no")
    with pytest.raises(EventStreamError, match="not JSON"):
        ConverseStreamDecoder(MODEL).feed(frame)


# --------------------------------------------------------------------------- usage


def test_the_usage_chunk_bills_what_the_body_does() -> None:
    """OpenAI's usage (the stream's usage chunk) read by ``usage_from_openai`` gives the
    body's TokenUsage, cache writes included, so stream and body are billed alike."""
    body_usage = token_usage(USAGE)
    assert body_usage.cache_write_tokens == 3
    assert usage_from_openai(openai_usage(USAGE)) == body_usage
    no_writes = {**USAGE, "cacheWriteInputTokens": 0}
    assert usage_from_openai(openai_usage(no_writes)) == token_usage(no_writes)
    decoder = ConverseStreamDecoder(MODEL)
    meter = make_adapter(SPEC).stream_meter(client_wants_usage=False)
    out = meter.feed(decoder.feed(_stream()))
    assert meter.finished and meter.usage == body_usage
    assert b'"choices":[]' not in out and out.endswith(b"data: [DONE]\n\n")
