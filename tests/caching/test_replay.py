"""Stored answers replayed as streams: the assembler reads every generated answer back from its
replay (whole and byte by byte), the official SDKs' own decoders, types and accumulators read
the same answer from it, and so do the SDK clients themselves; answers a stream cannot carry
are refused."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from costwarden.caching.assemble import StreamAssembler
from costwarden.caching.replay import ReplayError, replay_stream

JSON = dict[str, Any]

text = st.text(max_size=80)  # any unicode but lone surrogates, which JSON cannot carry
short = st.text(min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip
counts = st.integers(0, 10**6)


@st.composite
def openai_answers(draw: st.DrawFn) -> JSON:
    choices = []
    for index in range(draw(st.integers(1, 3))):
        calls = draw(
            st.lists(
                st.builds(
                    lambda i, n, a: {"id": i, "type": "function",
                                     "function": {"name": n, "arguments": a}},
                    short, short, text | json_values.map(lambda v: orjson.dumps(v).decode()),
                ),
                max_size=3,
            )
        )  # fmt: skip
        message: JSON = {
            "role": "assistant",
            "content": draw(st.none() | text) if calls else draw(text),
            "refusal": draw(st.none() | text),
        }
        if calls:
            message["tool_calls"] = calls
        if draw(st.booleans()):
            message["reasoning_content"] = draw(text)
        token = {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}
        logprobs = draw(st.none() | st.just({"content": [token, token], "refusal": None}))
        finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"]))
        choices.append(
            {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}
        )
    answer: JSON = {
        "id": "chatcmpl-" + draw(short),
        "object": "chat.completion",
        "created": draw(st.integers(0, 2**32)),
        "model": draw(short),
        "choices": choices,
    }
    if draw(st.booleans()):
        answer["system_fingerprint"] = "fp_" + draw(short)
    prompt, completion = draw(counts), draw(counts)
    usage: JSON = {"prompt_tokens": prompt, "completion_tokens": completion,
                   "total_tokens": prompt + completion}  # fmt: skip
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}
    answer["usage"] = usage
    return answer


@st.composite
def anthropic_answers(draw: st.DrawFn) -> JSON:
    blocks = st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, text),
        st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, text, short),
        st.builds(
            lambda i, n, v: {"type": "tool_use", "id": "toolu_" + i, "name": n, "input": v},
            short, short, st.dictionaries(st.text(max_size=6), json_values, max_size=4),
        ),
        st.builds(lambda d: {"type": "redacted_thinking", "data": d}, short),
    )  # fmt: skip
    return {
        "id": "msg_" + draw(short),
        "type": "message",
        "role": "assistant",
        "model": draw(short),
        "content": draw(st.lists(blocks, max_size=5)),
        "stop_reason": draw(st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal",
                                             "stop_sequence"])),
        "stop_sequence": draw(st.none() | short),
        "usage": {
            "input_tokens": draw(counts),
            "cache_read_input_tokens": draw(counts),
            "cache_creation_input_tokens": draw(counts),
            "output_tokens": draw(counts),
        },
    }  # fmt: skip


def assembled(wire: str, data: bytes, step: int = 0) -> Any:
    assembler = StreamAssembler(wire)  # type: ignore[arg-type]
    for at in range(0, len(data), step or len(data) or 1):
        assembler.feed(data[at : at + (step or len(data))])
    return assembler.result()


# --------------------------------------------------------------------------- round trips


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(openai_answers())
def test_openai_round_trip(answer: JSON) -> None:
    assert assembled("openai", replay_stream("openai", answer, include_usage=True)) == answer


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(anthropic_answers())
def test_anthropic_round_trip(answer: JSON) -> None:
    replayed = replay_stream("anthropic", answer, include_usage=True)
    assert assembled("anthropic", replayed) == answer


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow])
@given(openai_answers(), anthropic_answers())
def test_round_trips_byte_by_byte(openai_answer: JSON, anthropic_answer: JSON) -> None:
    data = replay_stream("openai", openai_answer, include_usage=True)
    assert assembled("openai", data, step=1) == openai_answer
    data = replay_stream("anthropic", anthropic_answer, include_usage=False)
    assert assembled("anthropic", data, step=1) == anthropic_answer


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    data = replay_stream("openai", OPENAI_ANSWER, include_usage=False)
    assert b'"usage"' not in data and data.endswith(b"\n\ndata: [DONE]\n\n")
    got = assembled("openai", data)
    assert got == {k: v for k, v in OPENAI_ANSWER.items() if k != "usage"}


# --------------------------------------------------------------------------- the SDKs


OPENAI_ANSWER: JSON = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1_773_144_000,
    "model": "gpt-4o-mini-2024-07-18",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look that up — ☀️",
                "refusal": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230,
              "prompt_tokens_details": {"cached_tokens": 1024}},
}  # fmt: skip
ANTHROPIC_ANSWER: JSON = {
    "id": "msg_abc",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "They want weather.", "signature": "c2ln"},
        {"type": "text", "text": "Checking — ☀️"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
         "input": {"city": "Paris", "days": [1, 2.5], "alerts": None}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 50, "cache_read_input_tokens": 1000,
              "cache_creation_input_tokens": 150, "output_tokens": 42},
}  # fmt: skip


def openai_sdk_read(data: bytes) -> tuple[list[ChatCompletionChunk], Any]:
    """The chunks as the OpenAI SDK decodes and types them, and what it accumulates."""
    state = ChatCompletionStreamState()
    chunks = []
    events = list(OpenAISSEDecoder().iter_bytes(iter([data])))
    assert events[-1].data == "[DONE]"
    for sse in events[:-1]:
        chunk = ChatCompletionChunk.model_validate(sse.json())
        chunks.append(chunk)
        state.handle_chunk(chunk)
    return chunks, state.current_completion_snapshot


def same_as_openai_sdk(snapshot: Any, answer: JSON) -> None:
    expected = ChatCompletion.model_validate(answer)
    assert snapshot.usage == expected.usage
    for got, want in zip(snapshot.choices, expected.choices, strict=True):
        assert got.finish_reason == want.finish_reason
        assert got.message.content == want.message.content
        assert got.message.refusal == want.message.refusal
        got_calls = [(c.id, c.function.name, c.function.arguments)
                     for c in got.message.tool_calls or []]  # fmt: skip
        want_calls = [(c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
                      for c in want.message.tool_calls or []]  # fmt: skip
        assert got_calls == want_calls
        assert (got.logprobs is None) == (want.logprobs is None)


_EVENT = TypeAdapter[Any](RawMessageStreamEvent)


def anthropic_sdk_read(data: bytes) -> Any:
    """The final message as the Anthropic SDK decodes, types and accumulates it."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    names = []
    for sse in AnthropicSSEDecoder().iter_bytes(iter([data])):
        event = _EVENT.validate_python(sse.json())
        assert sse.event == event.type
        names.append(event.type)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    return snapshot


def test_the_openai_sdk_reads_the_replayed_answer() -> None:
    chunks, snapshot = openai_sdk_read(replay_stream("openai", OPENAI_ANSWER, include_usage=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert {c.id for c in chunks} == {"chatcmpl-abc"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    same_as_openai_sdk(snapshot, OPENAI_ANSWER)


def test_the_anthropic_sdk_reads_the_replayed_answer() -> None:
    message = anthropic_sdk_read(replay_stream("anthropic", ANTHROPIC_ANSWER, include_usage=True))
    assert anthropic_dict(message) == ANTHROPIC_ANSWER


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(openai_answers())
def test_the_openai_sdk_reads_every_answer(answer: JSON) -> None:
    _, snapshot = openai_sdk_read(replay_stream("openai", answer, include_usage=True))
    same_as_openai_sdk(snapshot, answer)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(anthropic_answers())
def test_the_anthropic_sdk_reads_every_answer(answer: JSON) -> None:
    message = anthropic_sdk_read(replay_stream("anthropic", answer, include_usage=True))
    assert anthropic_dict(message) == answer


_SSE = {"content-type": "text/event-stream"}  # (both SDKs make their requests with httpx2)


def anthropic_dict(message: Any) -> JSON:
    """The SDK's message as a dict; it sets ``stop_details`` (null) from message_delta."""
    out: JSON = message.to_dict()
    if out.get("stop_details", ...) is None:
        del out["stop_details"]
    return out


async def test_the_openai_client_streams_the_replayed_answer() -> None:
    body = replay_stream("openai", OPENAI_ANSWER, include_usage=True)
    http = httpx2.AsyncClient(
        transport=httpx2.MockTransport(lambda _: httpx2.Response(200, content=body, headers=_SSE))
    )
    async with openai.AsyncOpenAI(api_key="sk-x", http_client=http, max_retries=0) as client:
        async with client.chat.completions.stream(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            async for _ in stream:
                pass
            final = await stream.get_final_completion()
    same_as_openai_sdk(final, OPENAI_ANSWER)


async def test_the_anthropic_client_streams_the_replayed_answer() -> None:
    body = replay_stream("anthropic", ANTHROPIC_ANSWER, include_usage=True)
    http = httpx2.AsyncClient(
        transport=httpx2.MockTransport(lambda _: httpx2.Response(200, content=body, headers=_SSE))
    )
    async with anthropic.AsyncAnthropic(api_key="x", http_client=http, max_retries=0) as client:
        async with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            texts = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
    assert texts == ["Checking — ☀️"]
    assert anthropic_dict(final) == ANTHROPIC_ANSWER


# --------------------------------------------------------------------------- shapes


def test_message_start_counts_no_output_tokens_yet() -> None:
    """Output tokens arrive once, in message_delta: a client adding both counts them once."""
    data = replay_stream("anthropic", ANTHROPIC_ANSWER, include_usage=True)
    events = [orjson.loads(line[6:]) for line in data.split(b"\n") if line[:6] == b"data: "]
    assert events[0]["message"]["usage"] == {**ANTHROPIC_ANSWER["usage"], "output_tokens": 0}
    assert events[-2]["usage"] == {"output_tokens": 42}
    assert [e["type"] for e in events] == [
        "message_start",
        *["content_block_start", "content_block_delta", "content_block_delta",
          "content_block_stop"],  # thinking, then its signature
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip


def test_a_tool_only_openai_answer_opens_with_null_content() -> None:
    answer = {**OPENAI_ANSWER, "choices": [{**OPENAI_ANSWER["choices"][0]}]}
    answer["choices"][0]["message"] = {**answer["choices"][0]["message"], "content": None}
    chunks, snapshot = openai_sdk_read(replay_stream("openai", answer, include_usage=True))
    assert chunks[0].choices[0].delta.content is None
    assert snapshot.choices[0].message.content is None


@pytest.mark.parametrize(
    ("wire", "answer", "message"),
    [
        ("openai", {"object": "list", "data": []}, "no choices"),  # embeddings
        ("openai", {"choices": [{"index": 0}]}, "without a message"),
        ("openai", {"choices": [{"message": {"content": [{"type": "text"}]}}]}, "not text"),
        ("openai", {"choices": [{"message": {"audio": {"id": "a"}}}]}, "'audio'"),
        ("openai", {"choices": [{"message": {"annotations": [{"type": "url"}]}}]},
         "'annotations'"),
        ("openai", {"choices": [{"message": {"tool_calls": {"id": 1}}}]}, "not a list"),
        ("openai", {"choices": [{"message": {"tool_calls": [{"id": 1}]}}]}, "without a function"),
        ("openai", {"choices": [{"message": {"tool_calls": [{"function": {"arguments": 3}}]}}]},
         "not a string"),
        ("anthropic", {"type": "message"}, "no content blocks"),
        ("anthropic", {"content": ["text"]}, "no content blocks"),
    ],
)  # fmt: skip
def test_what_cannot_be_replayed(wire: str, answer: JSON, message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        replay_stream(wire, answer, include_usage=True)


def test_fields_without_a_stream_form_that_say_nothing_are_left_out() -> None:
    message: JSON = {"role": "assistant", "content": "hi", "refusal": None, "annotations": [],
               "audio": None, "function_call": None}  # fmt: skip
    answer = {**OPENAI_ANSWER, "choices": [{**OPENAI_ANSWER["choices"][0], "message": message}]}
    got = assembled("openai", replay_stream("openai", answer, include_usage=True))
    assert got["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}


def test_unknown_wire() -> None:
    with pytest.raises(ValueError, match="unknown wire"):
        replay_stream("gemini", OPENAI_ANSWER, include_usage=True)
