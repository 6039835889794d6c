"""The Gemini codec: OpenAI requests into Gemini's, Gemini's answers into OpenAI's.

Table tests of the request encoding (and of what it refuses), of the body decoding and of
the usage; the stream decoder fed the same Gemini stream whole, split in two at every
byte, and a byte at a time, giving the same OpenAI events -- which the OpenAI SDK's own
stream helper accumulates into the answer the unary decoding gives, and which the
gateway's meter bills exactly as the body would be billed.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import orjson
import pytest
from genai_prices import calc_price, extract_usage
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from costwarden.mock import gemini as mock_gemini
from costwarden.pricing import resolve_rates
from costwarden.providers.base import ProviderSpec
from costwarden.providers.gemini import GeminiAdapter
from costwarden.providers.gemini_stream import GeminiStreamDecoder, StreamEventTooLarge
from costwarden.providers.openai import OpenAIStreamMeter, usage_from_openai
from costwarden.providers.translate import TranslationError
from tests.providers.test_translate_stream import openai_chunks, openai_final

JSON = dict[str, Any]
KEY = "AIza-test-secret-0f1e2d"
MODEL = "gemini-2.5-flash"


@pytest.fixture
def adapter() -> GeminiAdapter:
    spec = ProviderSpec(
        name="gemini",
        type="gemini",
        base_url="https://generativelanguage.googleapis.com/v1beta",
        connect_timeout=5,
        timeout=60,
        api_key=KEY,
        price_provider="google",
    )
    return GeminiAdapter(spec)


def _chat(**fields: Any) -> JSON:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


WEATHER: JSON = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
            "$schema": "http://json-schema.org/draft-07/schema#",
        },
    },
}
GEMINI_WEATHER: JSON = {
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "OBJECT",
        "properties": {"city": {"type": "STRING"}},
        "required": ["city"],
    },
}


# --------------------------------------------------------------------------- the call


def test_urls_name_the_model_and_never_carry_the_key(adapter: GeminiAdapter) -> None:
    base = "https://generativelanguage.googleapis.com/v1beta/models/"
    assert adapter.url("chat.completions", MODEL, False) == base + MODEL + ":generateContent"
    assert (
        adapter.url("chat.completions", MODEL, True)
        == base + MODEL + ":streamGenerateContent?alt=sse"
    )
    assert (
        adapter.url("embeddings", "models/gemini-embedding-001", False)
        == base + "gemini-embedding-001:batchEmbedContents"
    )
    headers = adapter.headers({b"authorization": b"Bearer client-key"}, "", b"")
    assert headers == {"content-type": "application/json", "x-goog-api-key": KEY}
    assert adapter.codec and adapter.wire == "openai" and adapter.price_provider == "google"
    assert adapter.secrets() == [KEY]


def test_models_list_is_read_from_googles_shape(adapter: GeminiAdapter) -> None:
    assert adapter.models_url() == adapter.base_url + "/models?pageSize=1000"
    body = {"models": [{"name": "models/gemini-2.5-flash"}, {"name": "models/x"}, {}]}
    assert adapter.model_ids(body) == {"gemini-2.5-flash", "x"}
    with pytest.raises(ValueError):
        adapter.model_ids({"data": []})


# --------------------------------------------------------------------------- requests

ENCODED: list[tuple[str, JSON, JSON]] = [
    (
        "system and developer messages become the system instruction",
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "hi", "name": "ann"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "again"}]},
            ],
            "user": "u-1",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {
            "contents": [
                {"role": "user", "parts": [{"text": "hi"}]},
                {"role": "model", "parts": [{"text": "hello"}]},
                {"role": "user", "parts": [{"text": "again"}]},
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]},
        },
    ),
    (
        "tool calls and results; parallel results share one user turn",
        {
            "model": MODEL,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "noon"}],
                },
                {"role": "user", "content": "thanks"},
            ],
        },
        {
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {
                    "role": "model",
                    "parts": [
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                        {"functionCall": {"name": "get_time", "args": {}}},
                    ],
                },
                {
                    "role": "user",
                    "parts": [
                        {
                            "functionResponse": {
                                "name": "get_weather",
                                "response": {"output": "sunny"},
                            }
                        },
                        {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
                        {"text": "thanks"},
                    ],
                },
            ],
        },
    ),
    (
        "a base64 image, and empty texts left out",
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": ""},
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/PNG;base64,iVBORw0K", "detail": "low"},
                        },
                    ],
                },
                {"role": "assistant", "content": ""},
            ]
        ),
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {"text": "what is this?"},
                        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}},
                    ],
                }
            ]
        },
    ),
    (
        "generation settings; max_completion_tokens before max_tokens; zero penalties unsent",
        _chat(
            max_completion_tokens=50,
            max_tokens=70,
            temperature=1.5,
            top_p=0.9,
            stop="END",
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0,
            n=1,
            logprobs=False,
            reasoning_effort="low",
            response_format={"type": "json_object"},
        ),
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {
                "maxOutputTokens": 50,
                "temperature": 1.5,
                "topP": 0.9,
                "presencePenalty": 0.5,
                "seed": 7,
                "stopSequences": ["END"],
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 1024},
            },
        },
    ),
    (
        "tools, a parameterless one without a schema, a named choice",
        _chat(
            max_tokens=9,
            tools=[
                WEATHER,
                {
                    "type": "function",
                    "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
                },
            ],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
        ),
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [GEMINI_WEATHER, {"name": "now"}]}],
            "toolConfig": {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
            },
            "generationConfig": {"maxOutputTokens": 9},
        },
    ),
    (
        "tool_choice required and none; none without tools is dropped",
        _chat(tools=[WEATHER], tool_choice="required"),
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [GEMINI_WEATHER]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
        },
    ),
    (
        "tool_choice none without tools",
        _chat(tool_choice="none"),
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    ),
    (
        "a JSON schema answer: refs inlined, nullable, enums, unknown keywords dropped",
        _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "trip",
                    "strict": True,
                    "schema": {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "type": "object",
                        "additionalProperties": False,
                        "$defs": {"city": {"type": "string", "minLength": 1, "format": "hostname"}},
                        "properties": {
                            "from": {"$ref": "#/$defs/city", "description": "start"},
                            "to": {"anyOf": [{"$ref": "#/$defs/city"}, {"type": "null"}]},
                            "when": {"type": ["string", "null"], "format": "date-time"},
                            "mode": {"enum": ["car", "train"]},
                            "kind": {"const": "trip"},
                            "seats": {"type": "integer", "enum": [1, 2], "default": 1},
                            "stops": {
                                "type": "array",
                                "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                                "uniqueItems": True,
                                "maxItems": 3,
                            },
                            "id": {"type": ["string", "integer"]},
                        },
                        "required": ["from", "to"],
                    },
                },
            }
        ),
        {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": {
                    "type": "OBJECT",
                    "properties": {
                        "from": {"type": "STRING", "description": "start", "minLength": 1},
                        "to": {"type": "STRING", "minLength": 1, "nullable": True},
                        "when": {"type": "STRING", "format": "date-time", "nullable": True},
                        "mode": {"type": "STRING", "enum": ["car", "train"]},
                        "kind": {"type": "STRING", "enum": ["trip"]},
                        "seats": {"type": "INTEGER"},
                        "stops": {
                            "type": "ARRAY",
                            "maxItems": 3,
                            "items": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                        },
                        "id": {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]},
                    },
                    "required": ["from", "to"],
                },
            },
        },
    ),
]


@pytest.mark.parametrize(("what", "payload", "expected"), ENCODED, ids=[c[0] for c in ENCODED])
def test_encode(adapter: GeminiAdapter, what: str, payload: JSON, expected: JSON) -> None:
    assert orjson.loads(adapter.encode("chat.completions", payload)) == expected


def test_encode_embeddings(adapter: GeminiAdapter) -> None:
    one = adapter.encode("embeddings", {"model": "gemini-embedding-001", "input": "hello"})
    assert orjson.loads(one) == {
        "requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello"}]}}
        ]
    }
    two = adapter.encode(
        "embeddings",
        {"model": "gemini-embedding-001", "input": ["a", "b"], "dimensions": 8, "user": "u"},
    )
    assert [r["outputDimensionality"] for r in orjson.loads(two)["requests"]] == [8, 8]
    assert [r["content"]["parts"][0]["text"] for r in orjson.loads(two)["requests"]] == ["a", "b"]


REFUSED: list[tuple[str, JSON, str]] = [
    ("n", _chat(n=2), "n"),
    ("logprobs", _chat(logprobs=True), "logprobs"),
    ("top_logprobs", _chat(top_logprobs=2), "top_logprobs"),
    ("audio output", _chat(audio={"voice": "alloy", "format": "wav"}), "audio"),
    ("modalities", _chat(modalities=["text", "audio"]), "modalities"),
    ("logit_bias", _chat(logit_bias={"50256": -100}), "logit_bias"),
    ("legacy functions", _chat(functions=[{"name": "f"}]), "functions"),
    (
        "audio input",
        _chat(
            messages=[
                {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}
            ]
        ),
        "messages[0].content[0]",
    ),
    (
        "an image link",
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
                }
            ]
        ),
        "messages[0].content[0]",
    ),
    (
        "a gif",
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lG"}}
                    ],
                }
            ]
        ),
        "messages[0].content[0]",
    ),
    (
        "a tool result for no call",
        _chat(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "tool", "tool_call_id": "call_9", "content": "x"},
            ]
        ),
        "messages[1].tool_call_id",
    ),
    (
        "tool arguments that are no object",
        _chat(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "[1]"},
                        }
                    ],
                }
            ]
        ),
        "messages[0].tool_calls[0].function.arguments",
    ),
    ("only a system message", _chat(messages=[{"role": "system", "content": "x"}]), "messages"),
    ("six stop sequences", _chat(stop=["a", "b", "c", "d", "e", "f"]), "stop"),
    ("an unknown response format", _chat(response_format={"type": "grammar"}), "response_format"),
    ("an unknown reasoning effort", _chat(reasoning_effort="max"), "reasoning_effort"),
    ("a custom tool", _chat(tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools[0]"),
    ("a required call without tools", _chat(tool_choice="required"), "tool_choice"),
    (
        "a recursive schema",
        _chat(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "tree",
                        "parameters": {
                            "type": "object",
                            "properties": {"node": {"$ref": "#/$defs/node"}},
                            "$defs": {
                                "node": {
                                    "type": "object",
                                    "properties": {
                                        "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                                    },
                                }
                            },
                        },
                    },
                }
            ]
        ),
        "tools[0].function.parameters.properties.node.properties.kids.items",
    ),
    (
        "tuple items",
        _chat(
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {
                            "type": "object",
                            "properties": {"p": {"type": "array", "items": [{"type": "string"}]}},
                        },
                    },
                }
            ]
        ),
        "tools[0].function.parameters.properties.p",
    ),
    (
        "allOf of several schemas",
        _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"allOf": [{"type": "object"}, {}]}},
            }
        ),
        "response_format.json_schema.schema",
    ),
]


@pytest.mark.parametrize(("what", "payload", "param"), REFUSED, ids=[c[0] for c in REFUSED])
def test_encode_refuses(adapter: GeminiAdapter, what: str, payload: JSON, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        adapter.encode("chat.completions", payload)
    assert caught.value.status == 400
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "m", "input": [[1, 2, 3]]}, "input"),
        ({"model": "m", "input": ["ok", ""]}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_encode_embeddings_refuses(adapter: GeminiAdapter, payload: JSON, param: str) -> None:
    with pytest.raises(TranslationError) as caught:
        adapter.encode("embeddings", payload)
    assert caught.value.param == param


# --------------------------------------------------------------------------- responses

USAGE = {
    "promptTokenCount": 1200,
    "candidatesTokenCount": 40,
    "thoughtsTokenCount": 25,
    "cachedContentTokenCount": 1000,
    "toolUsePromptTokenCount": 10,
    "totalTokenCount": 1275,
}


def _response(parts: list[JSON], finish: str | None = "STOP", **extra: Any) -> JSON:
    candidate: JSON = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": USAGE, "responseId": "r1", **extra}


DECODED: list[tuple[str, JSON, Any, str]] = [
    ("text", _response([{"text": "Hello "}, {"text": "there"}]), "Hello there", "stop"),
    ("no thoughts", _response([{"text": "hm", "thought": True}, {"text": "ok"}]), "ok", "stop"),
    ("length", _response([{"text": "cut"}], "MAX_TOKENS"), "cut", "length"),
    ("safety", _response([], "SAFETY"), "", "content_filter"),
    ("recitation", _response([{"text": "x"}], "RECITATION"), "x", "content_filter"),
    ("an unknown reason", _response([{"text": "x"}], "OTHER"), "x", "stop"),
    (
        "a blocked prompt",
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE},
        "",
        "content_filter",
    ),
    (
        "a function call",
        _response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
        None,
        "tool_calls",
    ),
]


@pytest.mark.parametrize(
    ("what", "body", "content", "finish"), DECODED, ids=[c[0] for c in DECODED]
)
def test_decode(
    adapter: GeminiAdapter, what: str, body: JSON, content: Any, finish: str
) -> None:
    out = adapter.decode("chat.completions", body, MODEL)
    choice = out["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == (content, finish)
    assert out["object"] == "chat.completion" and out["model"] == MODEL
    assert out["usage"] == {
        "prompt_tokens": 1210,
        "completion_tokens": 65,
        "total_tokens": 1275,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    if finish == "tool_calls":
        (call,) = choice["message"]["tool_calls"]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}


def test_decode_refuses_an_answer_without_candidates(adapter: GeminiAdapter) -> None:
    with pytest.raises(ValueError):
        adapter.decode("chat.completions", {"usageMetadata": USAGE}, MODEL)


def test_decode_embeddings(adapter: GeminiAdapter) -> None:
    body = {
        "embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}],
        "usageMetadata": {"promptTokenCount": 7},
    }
    out = adapter.decode("embeddings", body, "gemini-embedding-001")
    assert out == {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
        ],
        "model": "gemini-embedding-001",
        "usage": {"prompt_tokens": 7, "total_tokens": 7},
    }
    assert adapter.usage_from_body("embeddings", body).input_tokens == 7
    single = adapter.decode("embeddings", {"embedding": {"values": [1.0]}}, "e")
    assert single["data"][0]["embedding"] == [1.0]


@pytest.mark.parametrize(
    "meta",
    [
        USAGE,
        {"promptTokenCount": 12, "candidatesTokenCount": 3},
        mock_gemini.usage_metadata(900, 40, 15, 300),
        {"promptTokenCount": 5, "toolUsePromptTokenCount": 20, "candidatesTokenCount": 1},
    ],
)
def test_usage_is_priced_as_genai_prices_prices_gemini(adapter: GeminiAdapter, meta: JSON) -> None:
    body = {"usageMetadata": meta, "modelVersion": MODEL}
    usage = adapter.usage_from_body("chat.completions", body)
    # The decoded body's usage (what the stream's usage chunk carries too) reads back the same.
    decoded = adapter.decode("chat.completions", _response([{"text": "x"}]) | body, MODEL)
    assert usage_from_openai(decoded["usage"]) == usage
    rates = resolve_rates("google", MODEL, None, deployment="gemini:" + MODEL)
    expected: Decimal = calc_price(
        extract_usage(body, provider_id="google").usage, MODEL, provider_id="google"
    ).total_price
    assert rates.cost(usage) == expected


# --------------------------------------------------------------------------- streams


def _sse(payload: JSON) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


PARTIAL = {"promptTokenCount": 1200, "totalTokenCount": 1200}
TEXT_STREAM = (
    b": keep-alive\r\n\r\n"
    + _sse(_response([{"text": "Hel"}], None, usageMetadata=PARTIAL))
    + _sse(_response([{"text": "lo \u00e9t\u00e9"}], None, usageMetadata=PARTIAL))
    + _sse(_response([{"text": "", "thought": True}, {"text": "!"}], "STOP"))
)
TOOL_STREAM = _sse(
    _response([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}], None)
) + _sse(_response([{"text": ""}], "STOP"))

_IDS = re.compile(rb'"id":"call_[0-9a-f]{24}"')


def _decode(parts: list[bytes], *, max_event_bytes: int = 1 << 20) -> bytes:
    decoder = GeminiStreamDecoder(MODEL, max_event_bytes=max_event_bytes, created=1_700_000_000)
    out = b"".join(decoder.feed(p) for p in parts) + decoder.flush()
    return _IDS.sub(b'"id":"call_X"', out)


@pytest.mark.parametrize("stream", [TEXT_STREAM, TOOL_STREAM], ids=["text", "tool call"])
def test_stream_split_anywhere_decodes_the_same(stream: bytes) -> None:
    whole = _decode([stream])
    for cut in range(1, len(stream)):
        assert _decode([stream[:cut], stream[cut:]]) == whole, cut
    assert _decode([stream[i : i + 1] for i in range(len(stream))]) == whole
    lf = stream.replace(b"\r\n", b"\n")  # any line ending the SSE specification allows
    assert _decode([lf]) == whole
    assert _decode([stream.replace(b"\r\n", b"\r")]) == whole
    assert _decode([lf[i : i + 1] for i in range(len(lf))]) == whole


def test_text_stream_is_what_the_body_is(adapter: GeminiAdapter) -> None:
    out = _decode([TEXT_STREAM])
    chunks = openai_chunks(out)  # every event a valid ChatCompletionChunk, then [DONE]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.content for c in chunks[1:4]] == ["Hel", "lo \u00e9t\u00e9", "!"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert {c.id for c in chunks} == {"chatcmpl-r1"}
    final = openai_final(out)  # the OpenAI SDK's own accumulation
    assert final.choices[0].message.content == "Hello \u00e9t\u00e9!"
    assert final.usage is not None and final.usage.prompt_tokens == 1210
    # Billed exactly as the body is: through the meter the gateway puts behind the decoder.
    meter = OpenAIStreamMeter(client_wants_usage=False)
    relayed = meter.feed(out)
    assert meter.finished and meter.content_events == 3
    assert meter.usage == adapter.usage_from_body("chat.completions", {"usageMetadata": USAGE})
    assert b'"choices":[]' not in relayed  # the client did not ask for the usage chunk


def test_tool_call_stream(adapter: GeminiAdapter) -> None:
    out = _decode([TOOL_STREAM])
    chunks = openai_chunks(out)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content is None and first.tool_calls
    final = openai_final(out)
    (call,) = final.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_a_stream_cut_short_ends_without_usage_or_done() -> None:
    cut = _sse(_response([{"text": "Hel"}], None, usageMetadata=PARTIAL))
    out = _decode([cut + b"data: {\"candidates\""])  # the last event never ends
    assert b"Hel" in out and b"[DONE]" not in out and b'"usage"' not in out


def test_an_error_event_ends_the_stream() -> None:
    error = _sse({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    out = _decode([_sse(_response([{"text": "a"}], None)) + error + TEXT_STREAM])
    events = [e for e in out.split(b"\n\n") if e]
    assert orjson.loads(events[-1][6:]) == {
        "error": {
            "message": "overloaded",
            "type": "server_error",
            "param": None,
            "code": "UNAVAILABLE",
        }
    }
    assert b"[DONE]" not in out


def test_a_blocked_prompt_streams_a_content_filter_finish() -> None:
    out = _decode([_sse({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": PARTIAL})])
    chunks = openai_chunks(out)
    assert chunks[-2].choices[0].finish_reason == "content_filter"


def test_an_event_that_never_ends_is_refused() -> None:
    with pytest.raises(StreamEventTooLarge):
        _decode([b"data: " + b"x" * 200], max_event_bytes=100)
    assert isinstance(StreamEventTooLarge("x"), ConnectionError)  # the relay's transport failure
