"""Properties of the wire-format translations, over conversations and streams hypothesis makes.

- Any JSON object is either translated or refused with a TranslationError (a 400 in the
  client's format); a response from the upstream is translated or refused with an
  UpstreamError (a 502): never another exception, which would be a 500.
- A conversation carried OpenAI -> Anthropic -> OpenAI (and the other way) keeps its roles,
  texts, tool calls and tool results, where both formats can say them.
- A stream translated in whatever pieces the network cuts it into gives the same events as
  the stream translated whole, and accumulates to the translation of the same answer as one
  body: the same text, tool calls, stop reason and usage.
- Usage, as translated, is never negative.

Bounded to a few seconds each; in CI the examples are the same on every run
(tests/conftest.py, the "ci" profile).
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from costwarden.core.errors import UpstreamError
from costwarden.providers.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    TranslationError,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from costwarden.providers.translate_stream import (
    anthropic_usage_from_openai,
    openai_usage_from_anthropic,
)

JSON = dict[str, Any]
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Whole requests and conversations are larger to draw: fewer of them.
REQUESTS = settings(FAST, max_examples=60)

# --------------------------------------------------------------------------- strategies

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=24,
)
texts = st.text(min_size=1, max_size=30)
names = st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
call_ids = st.from_regex(r"call_[A-Za-z0-9]{4,12}", fullmatch=True)
tool_use_ids = st.from_regex(r"toolu_[A-Za-z0-9]{4,12}", fullmatch=True)
arguments = st.dictionaries(names, _scalars, max_size=3)
counts = st.integers(0, 10**7)


def _near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[JSON]:
    """Objects with some of ``keys`` (each value of its own strategy or any JSON value),
    so that generated input gets past the first checks and reaches the deeper ones."""
    return st.fixed_dictionaries(
        {}, optional={k: v | json_values for k, v in keys.items()}
    )


_openai_message = _near(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]),
        "content": texts | st.lists(_near({"type": st.just("text"), "text": texts}), max_size=3),
        "tool_calls": st.lists(
            _near({"id": call_ids, "type": st.just("function"),
                   "function": _near({"name": names, "arguments": arguments.map(
                       lambda a: orjson.dumps(a).decode())})}),
            max_size=2,
        ),  # fmt: skip
        "tool_call_id": call_ids,
        "refusal": texts,
    }
)
openai_requests = _near(
    {
        "model": names,
        "messages": st.lists(_openai_message, min_size=1, max_size=4),
        "max_tokens": st.integers(-2, 10**6),
        "stop": st.lists(texts, max_size=5) | texts,
        "tools": st.lists(_near({"type": st.just("function"),
                                 "function": _near({"name": names})}), max_size=2),  # fmt: skip
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "temperature": st.floats(0, 2),
        "stream": st.booleans(),
    }
)
_anthropic_block = _near(
    {
        "type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking"]),
        "text": texts,
        "id": tool_use_ids,
        "name": names,
        "input": arguments,
        "tool_use_id": tool_use_ids,
        "content": texts,
        "source": _near({"type": st.sampled_from(["base64", "url"]), "url": texts}),
    }
)
anthropic_requests = _near(
    {
        "model": names,
        "max_tokens": st.integers(-2, 10**6),
        "system": texts,
        "messages": st.lists(
            _near({"role": st.sampled_from(["user", "assistant"]),
                   "content": texts | st.lists(_anthropic_block, max_size=3)}),
            min_size=1, max_size=4,
        ),  # fmt: skip
        "stop_sequences": st.lists(texts, max_size=6),
        "tools": st.lists(_near({"name": names, "type": st.just("custom")}), max_size=2),
        "tool_choice": _near({"type": st.sampled_from(["auto", "any", "tool", "none"])}),
        "stream": st.booleans(),
    }
)


# --------------------------------------------------------------------------- never a 500


@REQUESTS
@given(payload=openai_requests | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_any_openai_request_is_translated_or_refused(payload: JSON) -> None:
    try:
        out = openai_to_anthropic_request(payload, default_max_tokens=1024)
    except TranslationError as exc:
        assert exc.message
        return
    assert out["messages"] and out["max_tokens"] >= 1
    # Anthropic's rule: user and assistant turns alternate.
    roles = [m["role"] for m in out["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), roles


@REQUESTS
@given(payload=anthropic_requests | st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_any_anthropic_request_is_translated_or_refused(payload: JSON) -> None:
    try:
        out = anthropic_to_openai_request(payload)
    except TranslationError as exc:
        assert exc.message
        return
    assert isinstance(out["messages"], list)
    assert len(out.get("stop", [])) <= 4


_openai_bodies = _near(
    {
        "id": st.text(max_size=8),
        "choices": st.lists(
            _near({"finish_reason": st.sampled_from(["stop", "length", "tool_calls"]),
                   "message": _near({"content": texts | st.lists(json_values, max_size=2),
                                     "refusal": texts,
                                     "tool_calls": st.lists(json_values, max_size=2)})}),
            max_size=2,
        ),  # fmt: skip
        "usage": json_values,
    }
)


@FAST
@given(body=_openai_bodies | st.dictionaries(st.text(max_size=8), json_values, max_size=4))
@example(body={"choices": [{"message": {"tool_calls": [{"function": {"arguments": 5}}]}}]})
@example(body={"choices": [{"message": {"content": [{"text": 5}]}}]})
@example(body={"choices": [{"message": {"tool_calls": 5}}]})
def test_any_openai_response_is_translated_or_refused(body: JSON) -> None:
    try:
        out = openai_to_anthropic_response(body, model="m")
    except UpstreamError:
        return
    assert all(block["type"] in ("text", "tool_use") for block in out["content"])
    assert all(isinstance(b["text"], str) for b in out["content"] if b["type"] == "text")
    assert all(v >= 0 for v in out["usage"].values()), out["usage"]


@FAST
@given(body=st.dictionaries(st.sampled_from(["id", "content", "stop_reason", "usage"]),
                            json_values, max_size=4))  # fmt: skip
def test_any_anthropic_response_is_translated(body: JSON) -> None:
    out = anthropic_to_openai_response(body, model="m")
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert all(v >= 0 for k, v in out["usage"].items() if isinstance(v, int)), out["usage"]


@FAST
@given(usage=json_values)
@example(usage={"prompt_tokens": -5, "completion_tokens": -1})
@example(usage={"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": -3}})
@example(usage={"input_tokens": -2, "cache_read_input_tokens": -1, "output_tokens": -9})
def test_translated_usage_is_never_negative(usage: Any) -> None:
    anthropic = anthropic_usage_from_openai(usage)
    assert all(isinstance(v, int) and v >= 0 for v in anthropic.values()), anthropic
    openai = openai_usage_from_anthropic(usage)
    flat = {k: v for k, v in openai.items() if isinstance(v, int)}
    flat["cached"] = openai["prompt_tokens_details"]["cached_tokens"]
    assert all(v >= 0 for v in flat.values()), openai
    assert openai["total_tokens"] == openai["prompt_tokens"] + openai["completion_tokens"]
    assert flat["cached"] <= openai["prompt_tokens"]


# --------------------------------------------------------------------------- round trips


@st.composite
def openai_conversations(draw: st.DrawFn) -> list[JSON]:
    """System text, then user turns each answered by the assistant in text, or with tool
    calls whose results come back (then the assistant answers again); ends with the user."""
    messages: list[JSON] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts)})
    for _ in range(draw(st.integers(0, 3))):
        messages.append({"role": "user", "content": draw(texts)})
        calls = draw(st.lists(st.tuples(call_ids, names, arguments), max_size=3,
                              unique_by=lambda c: c[0]))  # fmt: skip
        if calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": draw(st.none() | texts),
                    "tool_calls": [
                        {"id": i, "type": "function",
                         "function": {"name": n, "arguments": orjson.dumps(a).decode()}}
                        for i, n, a in calls
                    ],  # fmt: skip
                }
            )
            for call_id, _, _ in calls:
                messages.append({"role": "tool", "tool_call_id": call_id, "content": draw(texts)})
        messages.append({"role": "assistant", "content": draw(texts)})
    messages.append({"role": "user", "content": draw(texts)})
    return messages


def _openai_view(messages: list[JSON]) -> list[tuple[Any, ...]]:
    """What a conversation says: role, text, tool calls (arguments parsed), tool result."""
    view = []
    for m in messages:
        calls = tuple(
            (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
            for c in m.get("tool_calls") or []
        )
        view.append((m["role"], m.get("content") or None, calls, m.get("tool_call_id")))
    return view


@REQUESTS
@given(messages=openai_conversations())
def test_openai_conversation_survives_anthropic_and_back(messages: list[JSON]) -> None:
    request = {"model": "m", "messages": messages, "max_tokens": 100}
    there = openai_to_anthropic_request(request, default_max_tokens=1)
    back = anthropic_to_openai_request(there)
    assert back["max_completion_tokens"] == 100
    assert _openai_view(back["messages"]) == _openai_view(messages)


@st.composite
def anthropic_conversations(draw: st.DrawFn) -> list[JSON]:
    """Alternating user and assistant turns, the assistant's with text and tool uses, the
    next user turn with a result for each; ends with the user."""
    messages: list[JSON] = [{"role": "user", "content": draw(texts)}]
    for _ in range(draw(st.integers(0, 3))):
        uses = draw(st.lists(st.tuples(tool_use_ids, names, arguments), max_size=3,
                             unique_by=lambda u: u[0]))  # fmt: skip
        blocks: list[JSON] = [{"type": "text", "text": draw(texts)}] if draw(st.booleans()) else []
        blocks += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in uses]
        if not blocks:
            blocks = [{"type": "text", "text": draw(texts)}]
        messages.append({"role": "assistant", "content": blocks})
        results: list[JSON] = [
            {"type": "tool_result", "tool_use_id": i, "content": draw(texts)} for i, _, _ in uses
        ]
        results.append({"type": "text", "text": draw(texts)})
        messages.append({"role": "user", "content": results})
    return messages


def _anthropic_view(messages: list[JSON]) -> list[tuple[Any, ...]]:
    view = []
    for m in messages:
        blocks = m["content"] if isinstance(m["content"], list) else [
            {"type": "text", "text": m["content"]}
        ]
        view.append((m["role"], tuple(
            (b["type"], b.get("text"), b.get("id"), b.get("name"), orjson.dumps(b.get("input")),
             b.get("tool_use_id"), b.get("content"))
            for b in blocks
        )))  # fmt: skip
    return view


@REQUESTS
@given(messages=anthropic_conversations(), system=st.none() | texts)
def test_anthropic_conversation_survives_openai_and_back(
    messages: list[JSON], system: str | None
) -> None:
    request: JSON = {"model": "m", "messages": messages, "max_tokens": 100}
    if system:
        request["system"] = system
    there = anthropic_to_openai_request(request)
    back = openai_to_anthropic_request(there, default_max_tokens=1)
    assert there["max_completion_tokens"] == back["max_tokens"] == 100
    assert back.get("system") == system
    assert _anthropic_view(back["messages"]) == _anthropic_view(messages)


# --------------------------------------------------------------------------- streams


def _pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False) if text[a:b]]


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def _sse(event: JSON, *, named: bool) -> bytes:
    head = b"event: " + event["type"].encode() + b"\n" if named else b""
    return head + b"data: " + orjson.dumps(event) + b"\n\n"


def _events(stream: bytes) -> list[Any]:
    """The data of every event, parsed, with the chunk's creation time left out (it is the
    clock's, not the stream's)."""
    out: list[Any] = []
    for raw in stream.split(b"\n\n"):
        for line in raw.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
                event = data.decode() if data == b"[DONE]" else orjson.loads(data)
                if isinstance(event, dict):
                    event.pop("created", None)
                out.append(event)
    return out


anthropic_answers = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"msg_[a-z0-9]{4,10}", fullmatch=True),
        "content": st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": texts})
            | st.fixed_dictionaries({"type": st.just("tool_use"), "id": tool_use_ids,
                                     "name": names, "input": arguments}),
            max_size=4,
        ),  # fmt: skip
        "stop_reason": st.sampled_from(["end_turn", "max_tokens", "stop_sequence", "tool_use"]),
        "usage": st.fixed_dictionaries(
            {"input_tokens": counts, "output_tokens": counts,
             "cache_read_input_tokens": counts, "cache_creation_input_tokens": counts}
        ),  # fmt: skip
    }
)


def _anthropic_stream(answer: JSON, cuts: list[int]) -> bytes:
    """The Messages stream of ``answer``: its texts and tool inputs in pieces."""
    start_usage = {**answer["usage"], "output_tokens": 1}
    out = [{"type": "message_start", "message": {
        "id": answer["id"], "type": "message", "role": "assistant", "model": "m",
        "content": [], "stop_reason": None, "usage": start_usage}}]  # fmt: skip
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            out.append({"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}})  # fmt: skip
            out += [{"type": "content_block_delta", "index": index,
                     "delta": {"type": "text_delta", "text": piece}}
                    for piece in _pieces(block["text"], cuts)]  # fmt: skip
        else:
            out.append({"type": "content_block_start", "index": index,
                        "content_block": {**block, "input": {}}})  # fmt: skip
            out += [{"type": "content_block_delta", "index": index,
                     "delta": {"type": "input_json_delta", "partial_json": piece}}
                    for piece in _pieces(orjson.dumps(block["input"]).decode(), cuts)]  # fmt: skip
        out.append({"type": "content_block_stop", "index": index})
        out.append({"type": "ping"})
    out.append({"type": "message_delta", "delta": {"stop_reason": answer["stop_reason"]},
                "usage": {"output_tokens": answer["usage"]["output_tokens"]}})  # fmt: skip
    out.append({"type": "message_stop"})
    return b"".join(_sse(e, named=True) for e in out)


def _accumulate_openai(events: list[Any]) -> JSON:
    content: str | None = None
    calls: dict[int, JSON] = {}
    finish = usage = None
    for event in events:
        if event == "[DONE]":
            continue
        if event.get("usage"):
            usage = event["usage"]
        for choice in event["choices"]:
            delta = choice["delta"]
            if "content" in delta and delta["content"] is not None:
                content = (content or "") + delta["content"]
            for call in delta.get("tool_calls", []):
                acc = calls.setdefault(call["index"], {"arguments": ""})
                acc.update({k: call[k] for k in ("id",) if k in call})
                fn = call["function"]
                if "name" in fn:
                    acc["name"] = fn["name"]
                acc["arguments"] += fn.get("arguments", "")
            finish = choice["finish_reason"] or finish
    return {"content": content, "calls": [calls[i] for i in sorted(calls)], "finish": finish,
            "usage": usage}  # fmt: skip


@FAST
@given(answer=anthropic_answers, text_cuts=st.lists(st.integers(0, 64), max_size=4),
       wire_cuts=st.lists(st.integers(0, 10**6), max_size=12), crlf=st.booleans())  # fmt: skip
def test_anthropic_stream_in_any_pieces_is_the_answer_translated(
    answer: JSON, text_cuts: list[int], wire_cuts: list[int], crlf: bool
) -> None:
    upstream = _anthropic_stream(answer, text_cuts)
    if crlf:
        upstream = upstream.replace(b"\n", b"\r\n")
    whole = AnthropicToOpenAIStream(model="m", include_usage=True)
    at_once = whole.feed(upstream)
    pieces = AnthropicToOpenAIStream(model="m", include_usage=True)
    in_pieces = b"".join(pieces.feed(piece) for piece in _cut(upstream, wire_cuts))
    assert whole.finished and pieces.finished
    assert _events(in_pieces) == _events(at_once)

    body = anthropic_to_openai_response(answer, model="m")
    message = body["choices"][0]
    got = _accumulate_openai(_events(at_once))
    assert got["content"] == message["message"]["content"]
    assert got["finish"] == message["finish_reason"]
    assert got["usage"] == body["usage"] == pieces.usage()
    expected_calls = [
        {"id": c["id"], "name": c["function"]["name"],
         "arguments": orjson.loads(c["function"]["arguments"] or "{}")}
        for c in message["message"].get("tool_calls", [])
    ]  # fmt: skip
    assert [
        {**c, "arguments": orjson.loads(c["arguments"] or "{}")} for c in got["calls"]
    ] == expected_calls


openai_answers = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"chatcmpl-[a-z0-9]{4,10}", fullmatch=True),
        "content": st.none() | texts,
        "calls": st.lists(st.tuples(call_ids, names, arguments), max_size=3,
                          unique_by=lambda c: c[0]),  # fmt: skip
        "finish": st.sampled_from(["stop", "length", "tool_calls", "content_filter"]),
        "prompt": counts,
        "completion": counts,
        "cached_share": st.floats(0, 1),
    }
)


def _openai_stream(answer: JSON, cuts: list[int]) -> tuple[JSON, bytes]:
    """(the chat completion body, its stream with text and arguments in pieces)."""
    cached = int(answer["prompt"] * answer["cached_share"])
    usage = {"prompt_tokens": answer["prompt"], "completion_tokens": answer["completion"],
             "total_tokens": answer["prompt"] + answer["completion"],
             "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip
    calls = [{"id": i, "type": "function", "function": {"name": n,
              "arguments": orjson.dumps(a).decode()}} for i, n, a in answer["calls"]]  # fmt: skip
    message: JSON = {"role": "assistant", "content": answer["content"]}
    if calls:
        message["tool_calls"] = calls
    body = {"id": answer["id"], "choices": [{"index": 0, "message": message,
            "finish_reason": answer["finish"]}], "usage": usage}  # fmt: skip

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        return {"id": answer["id"], "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in _pieces(answer["content"] or "", cuts)]
    for index, call in enumerate(calls):
        fn = call["function"]
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": fn["name"], "arguments": ""}}]}))
        out += [chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]})
                for p in _pieces(fn["arguments"], cuts)]  # fmt: skip
    out.append(chunk({}, answer["finish"]))
    out.append({"id": answer["id"], "object": "chat.completion.chunk", "choices": [],
                "usage": usage})  # fmt: skip
    stream = b"".join(_sse(e, named=False) for e in out) + b"data: [DONE]\n\n"
    return body, stream


def _accumulate_anthropic(events: list[Any]) -> JSON:
    blocks: dict[int, JSON] = {}
    stop = None
    usage: JSON = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            usage = dict(event["message"]["usage"])
        elif kind == "content_block_start":
            blocks[event["index"]] = {**event["content_block"], "json": ""}
        elif kind == "content_block_delta":
            block, delta = blocks[event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                block["json"] += delta["partial_json"]
        elif kind == "message_delta":
            stop = event["delta"]["stop_reason"]
            usage.update({k: v for k, v in event["usage"].items() if v is not None})
    content = []
    for index in sorted(blocks):
        block = blocks[index]
        json_text = block.pop("json")
        if block["type"] == "tool_use":
            block["input"] = orjson.loads(json_text or "{}")
        content.append(block)
    return {"content": content, "stop_reason": stop, "usage": usage}


@FAST
@given(answer=openai_answers, text_cuts=st.lists(st.integers(0, 64), max_size=4),
       wire_cuts=st.lists(st.integers(0, 10**6), max_size=12), crlf=st.booleans())  # fmt: skip
def test_openai_stream_in_any_pieces_is_the_answer_translated(
    answer: JSON, text_cuts: list[int], wire_cuts: list[int], crlf: bool
) -> None:
    body, upstream = _openai_stream(answer, text_cuts)
    if crlf:
        upstream = upstream.replace(b"\n", b"\r\n")
    whole = OpenAIToAnthropicStream(model="m")
    at_once = whole.feed(upstream)
    pieces = OpenAIToAnthropicStream(model="m")
    in_pieces = b"".join(pieces.feed(piece) for piece in _cut(upstream, wire_cuts))
    assert whole.finished and pieces.finished
    assert _events(in_pieces) == _events(at_once)

    expected = openai_to_anthropic_response(body, model="m")
    got = _accumulate_anthropic(_events(at_once))
    assert got["content"] == expected["content"]
    assert got["stop_reason"] == expected["stop_reason"]
    assert got["usage"] == expected["usage"] == {**pieces.usage()}
    assert all(v >= 0 for v in got["usage"].values())
