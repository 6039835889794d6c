"""Streams assembled into the unary answer: OpenAI chunks and Anthropic events in any pieces,
the streams that must not be cached (unfinished, errors, unreadable, too large), streams the
mock upstream and the gateway's translators really send, linear time, and set_usage."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden.caching.assemble import StreamAssembler, set_usage
from costwarden.caching.replay import ReplayError, replay_stream
from costwarden.mock import MockServer
from costwarden.providers.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai_response,
    openai_to_anthropic_response,
)

JSON = dict[str, Any]


def assemble(wire: str, data: bytes, pieces: Iterable[int] | None = None, **kw: Any) -> Any:
    """The assembler's result for ``data`` fed whole, or cut at the ``pieces`` offsets."""
    assembler = StreamAssembler(wire, **kw)  # type: ignore[arg-type]
    cuts = [0, *sorted(pieces or []), len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        assembler.feed(data[start:end])
    return assembler.result()


def openai_events(*chunks: JSON | str) -> bytes:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "gpt-4o"}
    out = b""
    for chunk in chunks:
        if isinstance(chunk, str):
            out += b"data: " + chunk.encode() + b"\n\n"
        else:
            out += b"data: " + orjson.dumps({**head, **chunk}) + b"\n\n"
    return out


def choice(delta: JSON, finish: str | None = None, index: int = 0, **extra: Any) -> JSON:
    return {"choices": [{"index": index, "delta": delta, "finish_reason": finish, **extra}]}


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 0},
}
TEXT_STREAM = openai_events(
    {"system_fingerprint": "fp_9", **choice({"role": "assistant", "content": "", "refusal": None})},
    choice({"content": "Hel"}),
    choice({"content": "lo, wörld 👋"}),
    choice({}, "stop"),
    {"choices": [], "usage": USAGE},
    "[DONE]",
)
TEXT_ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 7,
    "model": "gpt-4o",
    "system_fingerprint": "fp_9",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, wörld 👋", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}


def test_openai_text() -> None:
    assert assemble("openai", TEXT_STREAM) == TEXT_ANSWER


def test_openai_in_every_two_pieces_and_byte_by_byte() -> None:
    for cut in range(1, len(TEXT_STREAM)):
        assert assemble("openai", TEXT_STREAM, [cut]) == TEXT_ANSWER, cut
    assert assemble("openai", TEXT_STREAM, range(1, len(TEXT_STREAM))) == TEXT_ANSWER


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(TEXT_STREAM)), max_size=30))
def test_openai_in_any_pieces(cuts: list[int]) -> None:
    assert assemble("openai", TEXT_STREAM, cuts) == TEXT_ANSWER


def test_openai_tool_calls_by_index_with_their_arguments_joined() -> None:
    def call(i: int, **fields: Any) -> JSON:
        return choice({"tool_calls": [{"index": i, **fields}]})

    stream = openai_events(
        choice({"role": "assistant", "content": None}),
        call(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        call(1, id="call_b", type="function", function={"name": "get_time", "arguments": ""}),
        call(0, function={"arguments": '{"city": '}),
        call(1, function={"arguments": '{"tz": "UTC"}'}),
        call(0, function={"arguments": '"Paris"}'}),
        choice({}, "tool_calls"),
        "[DONE]",
    )
    answer = assemble("openai", stream)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,  # a tool-only answer has no text
                "refusal": None,
                "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]  # fmt: skip
    assert "usage" not in answer  # no usage chunk, no usage


def test_openai_several_choices_refusals_logprobs_and_other_text_fields() -> None:
    token = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    stream = openai_events(
        choice({"role": "assistant", "content": ""}, index=1),
        choice({"role": "assistant", "content": ""}, index=0),
        choice({"content": "Hi"}, index=1, logprobs={"content": [token], "refusal": None}),
        choice({"content": "Hi"}, index=1, logprobs={"content": [token], "refusal": None}),
        choice({"reasoning_content": "think"}, index=0),
        choice({"refusal": "I can't"}, index=0),
        choice({}, "stop", index=1),
        choice({}, "content_filter", index=0),
        "[DONE]",
    )
    answer = assemble("openai", stream)
    first, second = answer["choices"]
    assert first["index"] == 0 and first["finish_reason"] == "content_filter"
    assert first["message"] == {
        "role": "assistant", "content": "", "refusal": "I can't", "reasoning_content": "think"
    }  # fmt: skip
    assert second["message"]["content"] == "HiHi"
    assert second["logprobs"] == {"content": [token, token], "refusal": None}


def test_line_endings_comments_and_multi_line_data() -> None:
    crlf = TEXT_STREAM.replace(b"\n", b"\r\n")
    assert assemble("openai", crlf, range(1, len(crlf))) == TEXT_ANSWER
    assert assemble("openai", TEXT_STREAM.replace(b"\n", b"\r")) == TEXT_ANSWER
    commented = b": keep-alive\n\n" + TEXT_STREAM.replace(b"data: [DONE]", b": x\ndata:[DONE]")
    assert assemble("openai", commented) == TEXT_ANSWER
    # a data field split over two lines is one JSON text with a newline in it
    split = TEXT_STREAM.replace(b'"delta":{"content":"Hel"}', b'"delta":\ndata: {"content":"Hel"}')
    assert split != TEXT_STREAM and assemble("openai", split) == TEXT_ANSWER


def test_bytes_after_the_end_are_ignored() -> None:
    assembler = StreamAssembler("openai")
    assembler.feed(TEXT_STREAM + b"data: {garbage")
    assembler.feed(b"more garbage\n\n")
    assert assembler.result() == TEXT_ANSWER and not assembler.failed


@pytest.mark.parametrize(
    "stream",
    [
        TEXT_STREAM[: TEXT_STREAM.index(b"data: [DONE]")],  # never finished
        TEXT_STREAM[:-1],  # [DONE] not ended by its blank line
        openai_events(choice({"content": "x"}), {"error": {"message": "overloaded"}}, "[DONE]"),
        b"event: error\ndata: {}\n\n" + TEXT_STREAM,
        TEXT_STREAM.replace(b'"Hel"', b'"Hel'),  # not JSON
        openai_events(choice({"content": "x"}), "[1, 2]", "[DONE]"),  # not an object
        openai_events(choice({"content": "x"}), "[DONE]"),  # no finish reason
        openai_events("[DONE]"),  # nothing at all
        openai_events(choice({"audio": {"id": "a"}}, "stop"), "[DONE]"),  # cannot replay it
        openai_events(choice({"function_call": {"name": "f"}}, "stop"), "[DONE]"),
        openai_events(choice({"tool_calls": [{"function": {"name": "f"}}]}, "stop"), "[DONE]"),
        openai_events(choice({"tool_calls": [{"index": 0, "function": "f"}]}, "stop"), "[DONE]"),
        openai_events(choice({"tool_calls": [{"index": 0, "function": {"name": 3}}]}), "[DONE]"),
        openai_events(choice({"content": [{"type": "text"}]}, "stop"), "[DONE]"),
        openai_events({"choices": [{"index": -1, "delta": {}, "finish_reason": "stop"}]}),
        openai_events({"choices": {"index": 0}}, "[DONE]"),
        openai_events({"choices": [{"index": 0, "delta": "x", "finish_reason": "stop"}]}, "[DONE]"),
    ],
)  # fmt: skip
def test_openai_streams_not_cached(stream: bytes) -> None:
    assert assemble("openai", stream) is None
    assert assemble("openai", stream, range(1, len(stream))) is None


def test_more_bytes_than_the_bound() -> None:
    assert assemble("openai", TEXT_STREAM, max_bytes=len(TEXT_STREAM)) == TEXT_ANSWER
    assembler = StreamAssembler("openai", max_bytes=len(TEXT_STREAM) - 1)
    for byte in range(len(TEXT_STREAM)):
        assembler.feed(TEXT_STREAM[byte : byte + 1])
    assert assembler.result() is None and assembler.failed


def test_endpoint_is_checked() -> None:
    StreamAssembler("openai", "chat.completions")
    StreamAssembler("anthropic", "messages")
    with pytest.raises(ValueError, match="not embeddings"):
        StreamAssembler("openai", "embeddings")
    with pytest.raises(ValueError, match="unknown wire"):
        StreamAssembler("gemini")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Anthropic


def anthropic_events(*events: JSON) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def start(index: int, block: Any) -> JSON:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, **fields: Any) -> JSON:
    return {"type": "content_block_delta", "index": index, "delta": fields}


def stop(index: int) -> JSON:
    return {"type": "content_block_stop", "index": index}


MESSAGE_START: JSON = {
    "type": "message_start",
    "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 30, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 0, "output_tokens": 1},
    },
}  # fmt: skip
END = (
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 42, "input_tokens": None, "cache_read_input_tokens": 100},
    },
    {"type": "message_stop"},
)
ANTHROPIC_STREAM = anthropic_events(
    MESSAGE_START,
    {"type": "ping"},
    start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, type="thinking_delta", thinking="Weather: "),
    delta(0, type="thinking_delta", thinking="call the tool."),
    delta(0, type="signature_delta", signature="sig=="),
    stop(0),
    start(1, {"type": "text", "text": ""}),
    delta(1, type="text_delta", text="Let me "),
    delta(1, type="text_delta", text="check ☀️"),
    stop(1),
    start(2, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
    delta(2, type="input_json_delta", partial_json=""),
    delta(2, type="input_json_delta", partial_json='{"city": "Pa'),
    delta(2, type="input_json_delta", partial_json='ris", "days": [1, 2]}'),
    stop(2),
    start(3, {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}}),
    stop(3),
    start(4, {"type": "redacted_thinking", "data": "opaque"}),
    stop(4),
    {"type": "a_future_event", "whatever": 1},
    *END,
)
ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Weather: call the tool.", "signature": "sig=="},
        {"type": "text", "text": "Let me check ☀️"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
         "input": {"city": "Paris", "days": [1, 2]}},
        {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        {"type": "redacted_thinking", "data": "opaque"},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    # message_delta's counts replace message_start's; its null ones leave them
    "usage": {"input_tokens": 30, "cache_read_input_tokens": 100,
              "cache_creation_input_tokens": 0, "output_tokens": 42},
}  # fmt: skip


def test_anthropic_blocks_and_usage() -> None:
    assert assemble("anthropic", ANTHROPIC_STREAM) == ANTHROPIC_ANSWER


def test_anthropic_byte_by_byte() -> None:
    cuts = range(1, len(ANTHROPIC_STREAM))
    assert assemble("anthropic", ANTHROPIC_STREAM, cuts) == ANTHROPIC_ANSWER


@settings(max_examples=200)
@given(st.lists(st.integers(0, len(ANTHROPIC_STREAM)), max_size=40))
def test_anthropic_in_any_pieces(cuts: list[int]) -> None:
    assert assemble("anthropic", ANTHROPIC_STREAM, cuts) == ANTHROPIC_ANSWER


def test_anthropic_citations() -> None:
    citation = {"type": "char_location", "cited_text": "x", "document_index": 0}
    stream = anthropic_events(
        MESSAGE_START,
        start(0, {"type": "text", "text": "", "citations": None}),
        delta(0, type="citations_delta", citation=citation),
        delta(0, type="text_delta", text="cited"),
        delta(0, type="citations_delta", citation=citation),
        stop(0),
        *END,
    )
    block = assemble("anthropic", stream)["content"][0]
    assert block == {"type": "text", "text": "cited", "citations": [citation, citation]}


TEXT_BLOCK = (start(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="hi"))


@pytest.mark.parametrize(
    "events",
    [
        (MESSAGE_START, *TEXT_BLOCK, stop(0)),  # no message_stop
        (MESSAGE_START, *TEXT_BLOCK, stop(0), END[0]),
        (MESSAGE_START, *TEXT_BLOCK,
         {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, *END),
        (*TEXT_BLOCK, stop(0), *END),  # no message_start
        (MESSAGE_START, MESSAGE_START, *END),
        ({"type": "message_start", "message": None}, *END),
        (MESSAGE_START, *TEXT_BLOCK, *END),  # a block never stopped
        (MESSAGE_START, start(1, {"type": "text", "text": ""}), stop(1), *END),  # out of order
        (MESSAGE_START, delta(0, type="text_delta", text="x"), *END),  # no such block
        (MESSAGE_START, *TEXT_BLOCK, stop(0), stop(0), *END),  # stopped twice
        (MESSAGE_START, *TEXT_BLOCK, stop(0), delta(0, type="text_delta", text="x"), *END),
        (MESSAGE_START, TEXT_BLOCK[0], delta(0, type="input_json_delta", partial_json="{"),
         stop(0), *END),  # a delta of another block kind
        (MESSAGE_START, TEXT_BLOCK[0], delta(0, type="a_new_delta", x=1), stop(0), *END),
        (MESSAGE_START, TEXT_BLOCK[0], delta(0, type="text_delta", text=3), stop(0), *END),
        (MESSAGE_START, TEXT_BLOCK[0], {"type": "content_block_delta", "index": 0,
                                        "delta": "x"}, stop(0), *END),
        (MESSAGE_START, start(0, {"type": "tool_use", "id": "t", "name": "n", "input": {}}),
         delta(0, type="input_json_delta", partial_json='{"a": '), stop(0), *END),  # bad JSON
        (MESSAGE_START, start(0, {"type": "text", "text": 5}), stop(0), *END),
        (MESSAGE_START, start(0, "text"), stop(0), *END),
        (MESSAGE_START, *TEXT_BLOCK, stop(0), {"type": "message_delta", "delta": [1]}, END[1]),
        ({"type": "message_start", "message": {**MESSAGE_START["message"], "content": [1]}},
         *END),
    ],
)  # fmt: skip
def test_anthropic_streams_not_cached(events: tuple[Any, ...]) -> None:
    stream = anthropic_events(*events)
    assert assemble("anthropic", stream) is None


def test_anthropic_event_name_alone_says_error() -> None:
    stream = anthropic_events(MESSAGE_START, *TEXT_BLOCK, stop(0))
    stream += b"event: error\ndata: {}\n\n" + anthropic_events(*END)
    assert assemble("anthropic", stream) is None


def test_message_delta_cannot_overwrite_content_or_usage() -> None:
    sneaky = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "usage": 5,
                                                 "content": "x", "container": {"id": "c"}},
              "usage": {"output_tokens": 2}}  # fmt: skip
    answer = assemble("anthropic", anthropic_events(MESSAGE_START, *TEXT_BLOCK, stop(0), sneaky,
                                                    END[1]))  # fmt: skip
    assert answer["content"] == [{"type": "text", "text": "hi"}]
    assert answer["usage"]["output_tokens"] == 2 and answer["container"] == {"id": "c"}


# --------------------------------------------------------------------------- fuzz, time


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["openai", "anthropic"]),
    st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=3)), max_size=6),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_mangled_streams_never_raise(
    wire: str, edits: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    raw = bytearray(TEXT_STREAM if wire == "openai" else ANTHROPIC_STREAM)
    for where, replacement in edits:
        at = where % len(raw)
        raw[at : at + len(replacement)] = replacement
    result = assemble(wire, bytes(raw), [c % (len(raw) + 1) for c in cuts])
    assert result is None or isinstance(result, dict)


def test_linear_time() -> None:
    """A quadratic rescan or copy of the waiting bytes would take minutes here."""
    text = "x" * (6 * 1024 * 1024)
    big = openai_events(choice({"content": text}), choice({}, "stop"), "[DONE]")
    many = openai_events(*(choice({"content": "y"}) for _ in range(20_000)), choice({}, "stop"),
                         "[DONE]")  # fmt: skip
    began = time.perf_counter()
    assembler = StreamAssembler("openai")
    for at in range(0, len(big), 512):
        assembler.feed(big[at : at + 512])
    answer = assembler.result()
    assert answer is not None and answer["choices"][0]["message"]["content"] == text
    assembler = StreamAssembler("openai")
    for at in range(0, len(many), 7):
        assembler.feed(many[at : at + 7])
    answer = assembler.result()
    assert answer is not None and answer["choices"][0]["message"]["content"] == "y" * 20_000
    assert time.perf_counter() - began < 10


# --------------------------------------------------------------------------- real streams


async def post(http: aiohttp.ClientSession, url: str, body: JSON) -> bytes:
    async with http.post(url, data=orjson.dumps(body)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


@pytest.mark.parametrize(
    "request_body",
    [
        {"messages": [{"role": "user", "content": "hello there"}]},
        {"messages": [{"role": "user", "content": "hello"}], "n": 2, "max_tokens": 3},
        {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL]},
    ],
)
async def test_the_mock_openai_stream_assembles_to_its_unary_answer(
    mock: MockServer, request_body: JSON
) -> None:
    url = mock.base_url + "/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "temperature": 0, **request_body}
    async with aiohttp.ClientSession() as http:
        unary = orjson.loads(await post(http, url, body))
        streamed = await post(
            http, url, {**body, "stream": True, "stream_options": {"include_usage": True}}
        )
    answer = assemble("openai", streamed, range(0, len(streamed), 5))
    assert answer is not None
    assert same_openai(answer, unary)


def same_openai(answer: JSON, unary: JSON) -> bool:
    """Equal but for the ids and times of two calls, and fields a stream does not carry."""

    def strip(obj: JSON) -> JSON:
        out = {k: v for k, v in obj.items() if k not in ("id", "created", "service_tier")}
        out["choices"] = [
            {**c, "message": {k: v for k, v in c["message"].items() if k != "annotations"}}
            for c in obj["choices"]
        ]
        for c in out["choices"]:
            for call in c["message"].get("tool_calls", []):
                call["id"] = "call"
        return out

    return strip(answer) == strip(unary)


@pytest.mark.parametrize("content", ["hello there", "what's the weather?"])
async def test_the_mock_anthropic_stream_assembles_to_its_unary_answer(
    mock: MockServer, content: str
) -> None:
    url = mock.base_url + "/v1/messages"
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": content}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    }
    async with aiohttp.ClientSession() as http:
        unary = orjson.loads(await post(http, url, body))
        streamed = await post(http, url, {**body, "stream": True})
    answer = assemble("anthropic", streamed, range(0, len(streamed), 3))
    assert answer is not None
    for obj in (answer, unary):
        del obj["id"]
        for block in obj["content"]:
            block.pop("id", None)
    assert answer == unary


async def test_streams_translated_by_the_gateway_assemble_to_the_translated_answer(
    mock: MockServer,
) -> None:
    """What a client of the other wire format is sent: the translator's output."""
    async with aiohttp.ClientSession() as http:
        body = {"model": "claude-haiku-4-5", "max_tokens": 30, "temperature": 0,
                "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
        url = mock.base_url + "/v1/messages"
        unary = orjson.loads(await post(http, url, body))
        upstream = await post(http, url, {**body, "stream": True})
        to_openai = AnthropicToOpenAIStream(model="m", include_usage=True)
        sent = b"".join(to_openai.feed(upstream[i : i + 64]) for i in range(0, len(upstream), 64))
        answer = assemble("openai", sent)
        assert answer is not None
        assert same_openai(answer, anthropic_to_openai_response(unary, model="m"))

        body = {"model": "gpt-4o-mini", "temperature": 0,
                "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
        url = mock.base_url + "/v1/chat/completions"
        unary = orjson.loads(await post(http, url, body))
        upstream = await post(
            http, url, {**body, "stream": True, "stream_options": {"include_usage": True}}
        )
        to_anthropic = OpenAIToAnthropicStream(model="m")
        sent = b"".join(
            to_anthropic.feed(upstream[i : i + 64]) for i in range(0, len(upstream), 64)
        )
        answer = assemble("anthropic", sent)
        expected = openai_to_anthropic_response(unary, model="m")
        assert answer is not None
        assert answer["content"] == expected["content"]
        assert answer["stop_reason"] == expected["stop_reason"]
        assert answer["usage"] == {**expected["usage"], "cache_creation_input_tokens": 0}


# --------------------------------------------------------------------------- set_usage


def test_set_usage_openai() -> None:
    got = set_usage("openai", TEXT_ANSWER, input_tokens=1200, output_tokens=7,
                    cached_input_tokens=1024)  # fmt: skip
    assert got["usage"] == {
        "prompt_tokens": 1200,
        "completion_tokens": 7,
        "total_tokens": 1207,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    assert got["choices"] == TEXT_ANSWER["choices"] and TEXT_ANSWER["usage"] == USAGE  # a copy
    plain = set_usage("openai", TEXT_ANSWER, input_tokens=3, output_tokens=0)
    assert plain["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}


def test_set_usage_openai_embeddings() -> None:
    embeddings = {"object": "list", "data": [], "model": "e", "usage": {"prompt_tokens": 9}}
    got = set_usage("openai", embeddings, input_tokens=0, output_tokens=0)
    assert got["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_set_usage_anthropic() -> None:
    got = set_usage("anthropic", ANTHROPIC_ANSWER, input_tokens=1200, output_tokens=7,
                    cached_input_tokens=1000, cache_write_tokens=150)  # fmt: skip
    assert got["usage"] == {
        "input_tokens": 50,  # the uncached part
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 150,
        "output_tokens": 7,
    }
    assert got["content"] == ANTHROPIC_ANSWER["content"]
    zero = set_usage("anthropic", ANTHROPIC_ANSWER, input_tokens=0, output_tokens=0)
    assert zero["usage"]["input_tokens"] == 0


# --------------------------------------------------------------------------- structured junk

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 3) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=2),
    max_leaves=4,
)  # fmt: skip
ANTHROPIC_TYPES = [
    "message_start", "content_block_start", "content_block_delta", "content_block_stop",
    "message_delta", "message_stop", "ping", "error", "text", "thinking", "tool_use",
    "redacted_thinking", "text_delta", "input_json_delta", "thinking_delta", "signature_delta",
    "citations_delta",
]  # fmt: skip
FIELDS = ["text", "partial_json", "thinking", "signature", "citation", "input", "content",
          "usage", "stop_reason", "id", "name"]  # fmt: skip
anthropic_junk = st.fixed_dictionaries(
    {"type": st.sampled_from(ANTHROPIC_TYPES) | junk},
    optional={"index": st.integers(-1, 3) | junk, "delta": junk, "content_block": junk,
              "message": junk, "usage": junk, **{f: junk for f in FIELDS}},
)  # fmt: skip
BLOCKS: dict[str, JSON] = {
    "text": {"type": "text", "text": ""},
    "thinking": {"type": "thinking", "thinking": "", "signature": ""},
    "tool_use": {"type": "tool_use", "id": "t", "name": "n", "input": {}},
    "redacted_thinking": {"type": "redacted_thinking", "data": "d"},
}
fragments = st.sampled_from(['{"a": ', "1}", '"x"', "", "[", "]", "{}", "null", " "])
DELTAS = {
    "text": st.fixed_dictionaries({"type": st.just("text_delta"), "text": st.text(max_size=3)}),
    "thinking": st.fixed_dictionaries({"type": st.just("thinking_delta"), "thinking": st.text(
        max_size=3)}) | st.fixed_dictionaries({"type": st.just("signature_delta"),
                                                "signature": st.text(max_size=3)}),
    "tool_use": st.fixed_dictionaries({"type": st.just("input_json_delta"),
                                       "partial_json": fragments}),
    "redacted_thinking": st.just({"type": "text_delta", "text": "x"}),  # never valid
}  # fmt: skip


def with_junk(draw: st.DrawFn, events: list[JSON], junk_events: Any) -> list[JSON]:
    """``events`` with a few junk events slipped in, or a field of one replaced by junk."""
    for _ in range(draw(st.integers(0, 2))):
        victim = events[draw(st.integers(0, len(events) - 1))] if events else {}
        if draw(st.booleans()) or not victim:
            events.insert(draw(st.integers(0, len(events))), draw(junk_events))
        else:
            victim[draw(st.sampled_from(sorted(victim)))] = draw(junk)
    return events


@st.composite
def anthropic_streams(draw: st.DrawFn) -> bytes:
    events: list[JSON] = [orjson.loads(orjson.dumps(MESSAGE_START))]
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(sorted(BLOCKS)))
        events.append(start(index, dict(BLOCKS[kind])))
        events.extend(delta(index, **draw(DELTAS[kind])) for _ in range(draw(st.integers(0, 3))))
        events.append(stop(index))
    events = with_junk(draw, events, anthropic_junk)
    events.extend(orjson.loads(orjson.dumps(END)))
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)


openai_delta = st.one_of(
    st.fixed_dictionaries({"content": st.text(max_size=3)}),
    st.fixed_dictionaries({"refusal": st.text(max_size=3)}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.just("") | st.none()}),
    st.fixed_dictionaries({"tool_calls": st.lists(st.fixed_dictionaries(
        {"index": st.integers(0, 1)},
        optional={"id": st.text(max_size=2), "type": st.just("function"),
                  "function": st.fixed_dictionaries({}, optional={
                      "name": st.text(max_size=2), "arguments": fragments})}),
        min_size=1, max_size=2)}),
)  # fmt: skip
openai_choice: st.SearchStrategy[JSON] = st.fixed_dictionaries(
    {"index": st.integers(0, 1), "delta": openai_delta,
     "finish_reason": st.none() | st.sampled_from(["stop", "tool_calls"])},
    optional={"logprobs": st.none() | st.just({"content": [], "refusal": None})},
)  # fmt: skip
openai_junk = st.fixed_dictionaries(
    {}, optional={"choices": junk | st.lists(junk, max_size=2), "usage": junk, "error": junk}
)


@st.composite
def openai_streams(draw: st.DrawFn) -> bytes:
    chunks: list[JSON] = [
        {"id": "c", "choices": draw(st.lists(openai_choice, max_size=2))}
        for _ in range(draw(st.integers(1, 5)))
    ]
    chunks = with_junk(draw, chunks, openai_junk)
    events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


def never_raises(wire: str, stream: bytes) -> None:
    """Assembling gives an answer or None; replaying an answer gives a stream or ReplayError,
    and that stream assembles again."""
    answer = assemble(wire, stream)
    if answer is None:
        return
    assert isinstance(answer, dict)
    try:
        replayed = replay_stream(wire, answer, include_usage=True)
    except ReplayError:
        return
    assert assemble(wire, replayed) is not None


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(anthropic_streams())
def test_any_anthropic_events(stream: bytes) -> None:
    never_raises("anthropic", stream)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(openai_streams())
def test_any_openai_chunks(stream: bytes) -> None:
    never_raises("openai", stream)
