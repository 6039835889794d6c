"""Stream translation, checked with the official SDKs' own stream machinery.

Upstream streams are the mock's exact bytes (built with costwarden.mock.formats, or fetched
from the in-process mock); the translated streams are handed to the OpenAI and Anthropic
SDK clients over an in-memory transport and accumulated by their stream helpers
(``ChatCompletionStreamState`` behind ``chat.completions.stream``, ``accumulate_event``
behind ``messages.stream``). Every event is also validated against the SDKs' event models.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pydantic
import pytest
from anthropic.types import ParsedMessage, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from costwarden.mock import MockServer
from costwarden.mock import formats as fmt
from costwarden.providers.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)

JSON = dict[str, Any]
_SSE = {"content-type": "text/event-stream"}
_ANTHROPIC_EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
WEATHER_TOOL: JSON = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

# --------------------------------------------------------------------------- upstream streams


def anthropic_text_stream(n: int, stop: str = "end_turn", usage: JSON | None = None) -> bytes:
    """What the mock's /v1/messages streams for a text reply of ``n`` tokens."""
    usage = usage or fmt.anthropic_usage(100, n, 30, 20)
    return (
        fmt.anthropic_message_start("msg_text1", "claude-haiku-4-5", usage)
        + fmt.ANTHROPIC_TEXT_START
        + fmt.ANTHROPIC_PING
        + b"".join(fmt.anthropic_text_delta(i) for i in range(n))
        + fmt.ANTHROPIC_BLOCK_STOP
        + fmt.anthropic_message_delta(stop, n)
        + fmt.ANTHROPIC_STOP
    )


def anthropic_tool_stream() -> bytes:
    return (
        fmt.anthropic_message_start(
            "msg_tool1", "claude-haiku-4-5", fmt.anthropic_usage(80, 6, 0, 0)
        )
        + fmt.anthropic_tool_start("toolu_abc", "get_weather")
        + fmt.ANTHROPIC_PING
        + b"".join(fmt.anthropic_json_delta(f) for f in fmt.TOOL_ARGUMENT_FRAGMENTS)
        + fmt.ANTHROPIC_BLOCK_STOP
        + fmt.anthropic_message_delta("tool_use", fmt.TOOL_OUTPUT_TOKENS)
        + fmt.ANTHROPIC_STOP
    )


def openai_text_stream(n: int, finish: str = "stop", include_usage: bool = True) -> bytes:
    """What the mock's /v1/chat/completions streams for a text reply of ``n`` tokens."""
    chunks = fmt.OpenAIChunks("chatcmpl-text1", "gpt-4o-mini", include_usage)
    usage = chunks.usage(fmt.openai_usage(120, n, 40, 0)) if include_usage else b""
    return (
        chunks.role()
        + b"".join(chunks.content(i) for i in range(n))
        + chunks.finish(finish)
        + usage
        + fmt.SSE_DONE
    )


def openai_tool_stream() -> bytes:
    chunks = fmt.OpenAIChunks("chatcmpl-tool1", "gpt-4o-mini", True)
    return (
        chunks.tool_start("call_abc", "get_weather")
        + b"".join(chunks.tool_args(f) for f in fmt.TOOL_ARGUMENT_FRAGMENTS)
        + chunks.finish("tool_calls")
        + chunks.usage(fmt.openai_usage(60, fmt.TOOL_OUTPUT_TOKENS, 0, 0))
        + fmt.SSE_DONE
    )


def sse(*payloads: JSON, anthropic_style: bool = True) -> bytes:
    if anthropic_style:
        return b"".join(fmt.sse_event(p["type"], p) for p in payloads)
    return b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in payloads)


def message_start(mid: str) -> JSON:
    event: JSON = orjson.loads(
        fmt.anthropic_message_start(mid, "c", fmt.anthropic_usage(10, 1, 0, 0)).split(b"data: ")[1]
    )
    return event


def events_of(stream: bytes) -> list[bytes]:
    return [e + b"\n\n" for e in stream.split(b"\n\n") if e]


def feed_all(
    translator: AnthropicToOpenAIStream | OpenAIToAnthropicStream, parts: Iterable[bytes]
) -> bytes:
    return b"".join(translator.feed(p) for p in parts)


# --------------------------------------------------------------------------- SDK parsing


def openai_final(stream: bytes) -> ChatCompletion:
    """Accumulate ``stream`` with the OpenAI SDK client's stream helper.

    The helper refuses to "parse" a completion cut by the length limit; the exception
    carries the accumulated completion.
    """

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=_SSE, content=stream)

    with httpx.Client(transport=httpx.MockTransport(respond)) as http:
        client = openai.OpenAI(api_key="test", base_url="http://upstream.test/v1", http_client=http)
        with client.chat.completions.stream(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream_options={"include_usage": True},
        ) as events:
            try:
                return events.get_final_completion()
            except openai.LengthFinishReasonError as exc:
                return exc.completion


def openai_chunks(stream: bytes) -> list[ChatCompletionChunk]:
    """Every event validated as a ChatCompletionChunk; the stream ends with [DONE]."""
    events = events_of(stream)
    assert events[-1] == b"data: [DONE]\n\n"
    assert all(e.startswith(b"data: ") and e.count(b"\n") == 2 for e in events)
    return [ChatCompletionChunk.model_validate(orjson.loads(e[6:])) for e in events[:-1]]


def anthropic_final(stream: bytes) -> ParsedMessage[None]:
    """Accumulate ``stream`` with the Anthropic SDK client's stream helper."""

    def respond(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=_SSE, content=stream)

    with httpx2.Client(transport=httpx2.MockTransport(respond)) as http:
        client = anthropic.Anthropic(
            api_key="test", base_url="http://upstream.test", http_client=http
        )
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            return events.get_final_message()


def anthropic_events(stream: bytes) -> list[Any]:
    """Every event validated as a RawMessageStreamEvent, its ``event:`` line matching."""
    out = []
    for raw in events_of(stream):
        head, _, data = raw.partition(b"\n")
        assert head.startswith(b"event: ") and data.startswith(b"data: ")
        event = _ANTHROPIC_EVENT.validate_python(orjson.loads(data[6:].strip()))
        assert head[7:].decode() == event.type
        out.append(event)
    return out


def chunk_ids(chunks: list[ChatCompletionChunk]) -> set[tuple[str, str, int]]:
    return {(c.id, c.model, c.created) for c in chunks}


# --------------------------------------------------------------------------- Anthropic -> OpenAI


def test_anthropic_text_stream_to_openai() -> None:
    translator = AnthropicToOpenAIStream(model="gpt-4o-mini", include_usage=True)
    out = feed_all(translator, [anthropic_text_stream(12)])
    assert translator.finished

    completion = openai_final(out)
    choice = completion.choices[0]
    assert choice.message.content == fmt.reply_text(12)
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    assert completion.model == "gpt-4o-mini"
    assert completion.id == "chatcmpl-text1"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 12, 112)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30

    chunks = openai_chunks(out)
    assert len(chunk_ids(chunks)) == 1  # every chunk has the same id, model and created
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    first = chunks[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", "")
    # content chunks, the finish chunk, then the usage chunk with no choices
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * 13 + ["stop"]
    assert chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None


def test_anthropic_tool_stream_to_openai() -> None:
    translator = AnthropicToOpenAIStream(model="gpt-4o-mini", include_usage=True)
    out = feed_all(translator, [anthropic_tool_stream()])
    completion = openai_final(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    tool_call = choice.message.tool_calls[0]
    assert tool_call.id == "toolu_abc"
    assert tool_call.function.name == "get_weather"
    assert tool_call.function.arguments == fmt.TOOL_ARGUMENTS
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (80, fmt.TOOL_OUTPUT_TOKENS)

    # as OpenAI does, the role comes with the first tool call chunk, content null
    first = openai_chunks(out)[0].choices[0].delta
    assert (first.role, first.content) == ("assistant", None)
    assert first.tool_calls is not None
    assert (first.tool_calls[0].index, first.tool_calls[0].type) == (0, "function")
    assert first.tool_calls[0].id == "toolu_abc"
    assert first.tool_calls[0].function is not None
    assert first.tool_calls[0].function.arguments == ""


def test_anthropic_stream_without_include_usage_has_no_usage_chunk() -> None:
    translator = AnthropicToOpenAIStream(model="gpt-4o-mini", include_usage=False)
    out = feed_all(translator, [anthropic_text_stream(3, stop="max_tokens")])
    chunks = openai_chunks(out)
    assert all(c.choices and c.usage is None for c in chunks)
    completion = openai_final(out)
    assert completion.usage is None
    assert completion.choices[0].finish_reason == "length"
    # the translator still knows the usage, for billing
    assert translator.usage()["completion_tokens"] == 3


def test_anthropic_thinking_blocks_are_skipped_and_tool_indexes_count_tools_only() -> None:
    stream = sse(
        message_start("msg_m"),
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "hmm"},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig"},
        },
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "text_delta", "text": "Checking both."},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "t_a", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "content_block_start",
            "index": 3,
            "content_block": {"type": "tool_use", "id": "t_b", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 3,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Rome"}'},
        },
        {"type": "content_block_stop", "index": 3},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 40},
        },
        {"type": "message_stop"},
    )
    translator = AnthropicToOpenAIStream(model="gpt-4o", include_usage=True)
    out = feed_all(translator, [stream])
    message = openai_final(out).choices[0].message
    assert message.content == "Checking both."
    assert message.tool_calls is not None
    assert [(t.id, t.function.arguments) for t in message.tool_calls] == [
        ("t_a", '{"city": "Paris"}'),
        ("t_b", '{"city": "Rome"}'),
    ]
    indexes = [
        tc.index
        for c in openai_chunks(out)
        if c.choices
        for tc in c.choices[0].delta.tool_calls or []
    ]
    assert indexes == [0, 0, 1, 1]  # the empty partial_json produced no chunk


def test_anthropic_error_event_becomes_an_openai_error_the_sdk_raises() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream = events_of(anthropic_text_stream(3))
    translator = AnthropicToOpenAIStream(model="gpt-4o-mini", include_usage=True)
    out = feed_all(translator, [*upstream[:4], sse(error)])
    assert not translator.finished
    assert translator.error == {
        "message": "Overloaded",
        "type": "server_error",
        "param": None,
        "code": "overloaded_error",
    }
    assert out.endswith(b"data: " + orjson.dumps({"error": translator.error}) + b"\n\n")
    with pytest.raises(openai.APIError, match="Overloaded"):
        openai_final(out)


def test_anthropic_stream_output_does_not_depend_on_how_it_is_fed() -> None:
    stream = anthropic_tool_stream()
    whole = AnthropicToOpenAIStream(model="m", include_usage=True)
    by_event = AnthropicToOpenAIStream(model="m", include_usage=True)
    by_byte = AnthropicToOpenAIStream(model="m", include_usage=True)
    outputs = [
        feed_all(whole, [stream]),
        feed_all(by_event, events_of(stream)),
        feed_all(by_byte, (stream[i : i + 1] for i in range(len(stream)))),
    ]
    parsed = [[{**c.model_dump(), "created": 0} for c in openai_chunks(o)] for o in outputs]
    assert parsed[0] == parsed[1] == parsed[2]
    assert whole.finished and by_event.finished and by_byte.finished
    # fed one by one: message_start, ping, content_block_stop and message_delta say nothing
    one_by_one = AnthropicToOpenAIStream(model="m", include_usage=True)
    silent = [one_by_one.feed(e) == b"" for e in events_of(stream)]
    assert silent == [True, False, True] + [False] * 6 + [True, True, False]


def test_anthropic_stream_ignores_input_after_it_finished() -> None:
    translator = AnthropicToOpenAIStream(model="m", include_usage=False)
    translator.feed(anthropic_text_stream(1))
    assert translator.finished
    assert translator.feed(anthropic_text_stream(1)) == b""


# --------------------------------------------------------------------------- OpenAI -> Anthropic


def test_openai_text_stream_to_anthropic() -> None:
    translator = OpenAIToAnthropicStream(model="claude-haiku-4-5")
    out = feed_all(translator, [openai_text_stream(12)])
    assert translator.finished

    message = anthropic_final(out)
    assert message.id == "msg_text1"
    assert message.model == "claude-haiku-4-5"
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text == fmt.reply_text(12)
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    # usage only arrives at the end; the SDK takes it from message_delta
    assert message.usage.input_tokens == 80
    assert message.usage.cache_read_input_tokens == 40
    assert message.usage.output_tokens == 12

    events = anthropic_events(out)
    assert [e.type for e in events] == (
        ["message_start", "content_block_start"]
        + ["content_block_delta"] * 12
        + ["content_block_stop", "message_delta", "message_stop"]
    )
    assert events[0].message.usage.input_tokens == 0
    assert events[-2].usage.input_tokens == 80


def test_openai_tool_stream_to_anthropic() -> None:
    translator = OpenAIToAnthropicStream(model="claude-haiku-4-5")
    out = feed_all(translator, [openai_tool_stream()])
    message = anthropic_final(out)
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_abc", "get_weather", {"city": "Paris"})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (60, fmt.TOOL_OUTPUT_TOKENS)
    start = anthropic_events(out)[1]
    assert start.type == "content_block_start"
    assert start.content_block.input == {}


def test_openai_text_then_parallel_tool_calls_become_separate_blocks() -> None:
    head = {"id": "chatcmpl-p", "object": "chat.completion.chunk", "created": 1, "model": "g"}

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def tool(index: int, **fields: Any) -> JSON:
        return {"tool_calls": [{"index": index, **fields}]}

    stream = (
        sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Checking "}),
            chunk({"content": "both."}),
            chunk(
                tool(
                    0,
                    id="call_a",
                    type="function",
                    function={"name": "get_weather", "arguments": ""},
                )
            ),
            chunk(tool(0, function={"arguments": '{"city": '})),
            chunk(tool(0, function={"arguments": '"Paris"}'})),
            chunk(
                tool(
                    1,
                    id="call_b",
                    type="function",
                    function={"name": "get_weather", "arguments": '{"city": "Rome"}'},
                )
            ),
            chunk({}, "tool_calls"),
            {
                **head,
                "choices": [],
                "usage": {"prompt_tokens": 30, "completion_tokens": 25, "total_tokens": 55},
            },
            anthropic_style=False,
        )
        + fmt.SSE_DONE
    )
    translator = OpenAIToAnthropicStream(model="claude-sonnet-4-5")
    out = feed_all(translator, [stream])
    message = anthropic_final(out)
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].type == "text" and message.content[0].text == "Checking both."
    tools = [(b.id, b.input) for b in message.content if b.type == "tool_use"]
    assert tools == [("call_a", {"city": "Paris"}), ("call_b", {"city": "Rome"})]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 25)

    events = anthropic_events(out)
    starts_and_stops = [(e.type, e.index) for e in events if e.type.startswith("content_block_s")]
    assert starts_and_stops == [
        ("content_block_start", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_stop", 2),
    ]


def test_openai_stream_without_usage_closes_at_done() -> None:
    translator = OpenAIToAnthropicStream(model="c")
    events = events_of(openai_text_stream(2, finish="length", include_usage=False))
    out = feed_all(translator, events[:-1])
    assert not translator.finished
    assert b"message_delta" not in out
    out += translator.feed(events[-1])
    assert translator.finished
    message = anthropic_final(out)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and message.content[0].text == fmt.reply_text(2)
    assert message.usage.output_tokens == 0  # the upstream reported none


def test_openai_stream_closes_as_soon_as_finish_and_usage_are_known() -> None:
    translator = OpenAIToAnthropicStream(model="c")
    events = events_of(openai_text_stream(2))
    out = feed_all(translator, events[:-1])  # everything but [DONE]
    assert translator.finished
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert translator.feed(events[-1]) == b""


def test_openai_refusal_stream() -> None:
    head = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "g"}
    stream = (
        sse(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "refusal": ""},
                        "finish_reason": None,
                    }
                ],
            },
            {
                **head,
                "choices": [
                    {"index": 0, "delta": {"refusal": "I can't help."}, "finish_reason": None}
                ],
            },
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            anthropic_style=False,
        )
        + fmt.SSE_DONE
    )
    message = anthropic_final(feed_all(OpenAIToAnthropicStream(model="c"), [stream]))
    assert message.stop_reason == "refusal"
    assert message.content[0].type == "text" and message.content[0].text == "I can't help."


def test_openai_error_chunk_becomes_an_anthropic_error_event_the_sdk_raises() -> None:
    upstream = events_of(openai_text_stream(3))
    error = {
        "error": {
            "message": "The server had an error",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    translator = OpenAIToAnthropicStream(model="c")
    out = feed_all(translator, [*upstream[:2], sse(error, anthropic_style=False)])
    assert not translator.finished
    assert translator.error == {"type": "api_error", "message": "The server had an error"}
    assert out.endswith(
        b"event: error\ndata: "
        + orjson.dumps({"type": "error", "error": translator.error})
        + b"\n\n"
    )
    with pytest.raises(anthropic.APIStatusError, match="The server had an error"):
        anthropic_final(out)


def test_openai_stream_output_does_not_depend_on_how_it_is_fed() -> None:
    stream = openai_tool_stream()
    translators = [OpenAIToAnthropicStream(model="c") for _ in range(3)]
    outputs = [
        feed_all(translators[0], [stream]),
        feed_all(translators[1], events_of(stream)),
        feed_all(translators[2], (stream[i : i + 7] for i in range(0, len(stream), 7))),
    ]
    assert outputs[0] == outputs[1] == outputs[2]
    assert all(t.finished for t in translators)
    assert anthropic_final(outputs[0]).content[0].type == "tool_use"


def test_crlf_framed_events_are_understood() -> None:
    stream = openai_text_stream(2).replace(b"\n", b"\r\n")
    message = anthropic_final(feed_all(OpenAIToAnthropicStream(model="c"), [stream]))
    assert message.content[0].type == "text" and message.content[0].text == fmt.reply_text(2)


def test_chunk_state_accumulates_translated_chunks() -> None:
    """The lower-level OpenAI accumulator gives the same answer as the client helper."""
    out = feed_all(
        AnthropicToOpenAIStream(model="m", include_usage=True), [anthropic_tool_stream()]
    )
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in openai_chunks(out):
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    tool_calls = final.choices[0].message.tool_calls
    assert tool_calls is not None and tool_calls[0].function.arguments == fmt.TOOL_ARGUMENTS


# --------------------------------------------------------------------------- through the mock


async def test_openai_client_served_by_the_anthropic_mock(mock: MockServer) -> None:
    request = {
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the weather in Paris?"},
        ],
        "tools": [WEATHER_TOOL],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    upstream = openai_to_anthropic_request(request, default_max_tokens=1024)
    translator = AnthropicToOpenAIStream(model="gpt-4o-mini", include_usage=True)
    out = b""
    client = anthropic.AsyncAnthropic(api_key="test", base_url=mock.base_url)
    try:
        # the SDK refuses parameters it does not know: the translation's field names are real
        async with client.messages.with_streaming_response.create(**upstream) as response:
            async for piece in response.iter_bytes():
                out += translator.feed(piece)
    finally:
        await client.close()
    assert translator.finished
    assert mock.state.last_request("/v1/messages")["body"] == upstream  # type: ignore[index]
    completion = openai_final(out)
    tool_calls = completion.choices[0].message.tool_calls
    assert tool_calls is not None
    assert (tool_calls[0].function.name, tool_calls[0].function.arguments) == (
        "get_weather",
        fmt.TOOL_ARGUMENTS,
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == fmt.prompt_tokens(upstream)
    assert usage.completion_tokens == fmt.TOOL_OUTPUT_TOKENS


async def test_anthropic_client_served_by_the_openai_mock(mock: MockServer) -> None:
    mock.state.update(cached_tokens=5)
    request = {
        "model": "gpt-4o-mini",
        "max_tokens": 7,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "stream": True,
    }
    upstream = anthropic_to_openai_request(request)
    translator = OpenAIToAnthropicStream(model="claude-haiku-4-5")
    out = b""
    client = openai.AsyncOpenAI(api_key="test", base_url=mock.base_url + "/v1")
    try:
        async with client.chat.completions.with_streaming_response.create(**upstream) as response:
            async for piece in response.iter_bytes():
                out += translator.feed(piece)
    finally:
        await client.close()
    assert translator.finished
    message = anthropic_final(out)
    assert message.content[0].type == "text"
    assert message.content[0].text == fmt.reply_text(7)
    assert message.stop_reason == "max_tokens"  # the mock was capped by max_completion_tokens
    prompt = fmt.prompt_tokens(upstream)
    assert message.usage.input_tokens == prompt - 5
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.output_tokens == 7


@pytest.mark.parametrize("direction", ["openai-client", "anthropic-client"])
async def test_non_stream_responses_through_the_mock(mock: MockServer, direction: str) -> None:
    if direction == "openai-client":
        upstream = openai_to_anthropic_request(
            {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5},
            default_max_tokens=1024,
        )
        aclient = anthropic.AsyncAnthropic(api_key="test", base_url=mock.base_url)
        try:
            raw = await aclient.messages.with_raw_response.create(**upstream)
            body = orjson.loads(raw.http_response.content)
        finally:
            await aclient.close()
        completion = openai.types.chat.ChatCompletion.model_validate(
            anthropic_to_openai_response(body, model="gpt-4o-mini")
        )
        assert completion.choices[0].message.content == fmt.reply_text(5)
        assert completion.choices[0].finish_reason == "length"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == fmt.prompt_tokens(upstream)
    else:
        upstream = anthropic_to_openai_request(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]}
        )
        oclient = openai.AsyncOpenAI(api_key="test", base_url=mock.base_url + "/v1")
        try:
            oraw = await oclient.chat.completions.with_raw_response.create(**upstream)
            body = orjson.loads(oraw.http_response.content)
        finally:
            await oclient.close()
        message = anthropic.types.Message.model_validate(
            openai_to_anthropic_response(body, model="claude-haiku-4-5")
        )
        assert message.content[0].type == "text"
        assert message.content[0].text == fmt.reply_text(5)
        assert message.stop_reason == "max_tokens"
        assert message.usage.input_tokens == fmt.prompt_tokens(upstream)
