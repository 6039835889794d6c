"""The Bedrock codec: OpenAI requests into Converse requests (and what cannot be carried
over refused), Converse answers into chat completions, usage into exact bills, and the SigV4
signature botocore's own client would send. The stream: test_bedrock_stream.py."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import sys
from typing import Any

import botocore.auth
import botocore.session
import orjson
import pytest
from botocore.awsrequest import AWSResponse

from costwarden.core.errors import ConfigError
from costwarden.pricing import TokenUsage
from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import ProviderSpec
from costwarden.providers.bedrock import BedrockAdapter, chat_completion, converse_request
from costwarden.providers.bedrock_stream import token_usage
from costwarden.providers.translate import TranslationError

ACCESS_KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "session-token-EXAMPLE"
MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
PNG = "iVBORw0KGgo="
FROZEN = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)


def _spec(**changes: Any) -> ProviderSpec:
    values: dict[str, Any] = {
        "name": "aws",
        "type": "bedrock",
        "base_url": "https://bedrock-runtime.us-east-1.amazonaws.com",
        "connect_timeout": 5.0,
        "timeout": 60.0,
        "api_key": ACCESS_KEY,
        "secret_key": SECRET,
        "region": "us-east-1",
        "price_provider": "aws",
    }
    return ProviderSpec(**{**values, **changes})


def _adapter(**changes: Any) -> BedrockAdapter:
    adapter = make_adapter(_spec(**changes))
    assert isinstance(adapter, BedrockAdapter)
    return adapter


# --------------------------------------------------------------------------- requests


def _user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
SPEC = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather",
        "inputSchema": {"json": TOOL["function"]["parameters"]},
    }
}

ENCODED: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text, system and developer messages, sampling",
        {
            "model": MODEL,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
                {"role": "user", "content": "Hi"},
            ],
            "max_completion_tokens": 64,
            "temperature": 1.5,  # OpenAI's 0..2, Converse's 0..1
            "top_p": 0.9,
            "stop": "END",
            "seed": 7,  # no Converse field, and no change to what the answer means
        },
        {
            "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
            "system": [{"text": "Be brief."}, {"text": "No lists."}],
            "inferenceConfig": {
                "maxTokens": 64,
                "temperature": 1,
                "topP": 0.9,
                "stopSequences": ["END"],
            },
        },
    ),
    (
        "an image as bytes; neighbouring user turns merged; empty text left out",
        {
            "messages": [
                {"role": "user", "content": "Look:"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": ""},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}},
                    ],
                },
            ],
            "max_tokens": 10,
        },
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": "Look:"},
                        {"image": {"format": "png", "source": {"bytes": PNG}}},
                    ],
                }
            ],
            "inferenceConfig": {"maxTokens": 10},
        },
    ),
    (
        "tools, a call and its results (first in their user turn), a named choice",
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
        {
            "messages": [
                {"role": "user", "content": [{"text": "Weather?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "toolUse": {
                                "toolUseId": "call_1",
                                "name": "get_weather",
                                "input": {"city": "Paris"},
                            }
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"toolResult": {"toolUseId": "call_1", "content": [{"text": "Sunny"}]}},
                        {"text": "Thanks"},
                    ],
                },
            ],
            "toolConfig": {"tools": [SPEC], "toolChoice": {"tool": {"name": "get_weather"}}},
        },
    ),
    (
        "tool_choice required is any; auto is auto",
        {**_user("x"), "tools": [TOOL], "tool_choice": "required"},
        {
            "messages": [{"role": "user", "content": [{"text": "x"}]}],
            "toolConfig": {"tools": [SPEC], "toolChoice": {"any": {}}},
        },
    ),
    (
        "tool_choice none with no tool calls yet: no tools offered",
        {**_user("x"), "tools": [TOOL], "tool_choice": "none"},
        {"messages": [{"role": "user", "content": [{"text": "x"}]}]},
    ),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [c[1:] for c in ENCODED], ids=[c[0] for c in ENCODED]
)
def test_encode(payload: dict[str, Any], expected: dict[str, Any]) -> None:
    assert converse_request(payload) == expected
    assert orjson.loads(_adapter().encode("chat.completions", payload)) == expected


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


FIRST_PART = "messages[0].content[0]"
NOT_AN_OBJECT = {"name": "f", "arguments": "[1]"}


REFUSED: list[tuple[dict[str, Any], str]] = [
    ({**_user("x"), "n": 2}, "n"),
    ({**_user("x"), "audio": {"voice": "alloy"}}, "audio"),
    ({**_user("x"), "response_format": {"type": "json_object"}}, "response_format"),
    ({**_user("x"), "modalities": ["text", "audio"]}, "modalities"),
    ({**_user("x"), "logit_bias": {"50256": -100}}, "logit_bias"),
    ({**_user("x"), "tools": [TOOL], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({**_user("x"), "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0]"),
    (_user([_image("https://x.test/a.png")]), FIRST_PART),
    (_user([_image("data:image/bmp;base64,AA==")]), FIRST_PART),
    (_user([{"type": "input_audio", "input_audio": {"data": "AA=="}}]), FIRST_PART),
    ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0]"),
    ({"messages": []}, "messages"),
    ({**_user("x"), "max_tokens": 0}, "max_tokens"),
    (
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "y"},
            ],
            "tools": [TOOL],
            "tool_choice": "none",
        },
        "tool_choice",
    ),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{**CALL, "function": NOT_AN_OBJECT}]}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
]


@pytest.mark.parametrize(("payload", "param"), REFUSED)
def test_what_converse_cannot_carry_is_a_translation_error(
    payload: dict[str, Any], param: str
) -> None:
    with pytest.raises(TranslationError) as info:
        converse_request(payload)
    assert info.value.param == param
    assert info.value.status == 400


# --------------------------------------------------------------------------- responses

USAGE = {
    "inputTokens": 11,
    "outputTokens": 7,
    "totalTokens": 11 + 7 + 5 + 3,
    "cacheReadInputTokens": 5,
    "cacheWriteInputTokens": 3,
}


def _answer(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": USAGE,
        "metrics": {"latencyMs": 9},
    }


def test_decode_text() -> None:
    body = chat_completion(_answer([{"text": "Hello "}, {"text": "there"}]), MODEL)
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    assert body["id"].startswith("chatcmpl-")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {
        "prompt_tokens": 19,
        "completion_tokens": 7,
        "total_tokens": 26,
        "prompt_tokens_details": {"cached_tokens": 5, "cache_write_tokens": 3},
    }


def test_decode_a_tool_call() -> None:
    use = {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}
    body = chat_completion(_answer([{"text": "Let me look."}, {"toolUse": use}], "tool_use"), MODEL)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "tooluse_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    body = chat_completion(_answer([{"text": "x"}], stop), MODEL)
    assert body["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize(
    "body",
    [
        {"message": "Internal error"},
        {"output": {"message": {"content": "text"}}},
        {"output": {"message": {"content": ["text"]}}},
        {"output": {"message": {"content": [{"toolUse": {"name": "f"}}]}}},
    ],
)
def test_a_body_that_is_not_a_converse_answer_is_refused(body: dict[str, Any]) -> None:
    # What the proxy answers as "upstream sent a response that could not be read" (502).
    with pytest.raises((KeyError, TypeError, ValueError)):
        chat_completion(body, MODEL)


# --------------------------------------------------------------------------- usage


def test_usage_counts_every_prompt_token_and_names_the_cached_parts() -> None:
    expected = TokenUsage(
        input_tokens=19, cached_input_tokens=5, cache_write_tokens=3, output_tokens=7
    )
    assert _adapter().usage_from_body("chat.completions", _answer([])) == expected
    assert token_usage(None) == TokenUsage()


# --------------------------------------------------------------------------- adapter


def test_urls_name_the_model_and_the_stream() -> None:
    adapter = _adapter()
    base = "https://bedrock-runtime.us-east-1.amazonaws.com/model/"
    assert adapter.url("chat.completions", MODEL, False) == (
        base + "anthropic.claude-3-5-sonnet-20241022-v2%3A0/converse"
    )
    assert adapter.url("chat.completions", "amazon.nova-lite-v1:0", True) == (
        base + "amazon.nova-lite-v1%3A0/converse-stream"
    )
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-pro-v1:0"
    assert adapter.url("chat.completions", arn, False) == (
        base + "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2F"
        "us.amazon.nova-pro-v1%3A0/converse"
    )
    assert adapter.codec and adapter.wire == "openai"
    assert adapter.stream_type == "application/vnd.amazon.eventstream"
    assert "embeddings" not in adapter.endpoints
    assert adapter.models_url() is None


def _botocore_call(monkeypatch: pytest.MonkeyPatch, token: str | None) -> dict[str, Any]:
    """What botocore's own bedrock-runtime client sends for a Converse call (caught before
    it leaves: no network)."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)
    client = botocore.session.get_session().create_client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        aws_session_token=token,
        endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com",
    )
    seen: dict[str, Any] = {}

    class _Raw:
        def stream(self, **_: Any) -> Any:
            yield b"{}"

    def before_send(request: Any, **_: Any) -> AWSResponse:
        seen.update(url=request.url, body=request.body, headers=dict(request.headers))
        return AWSResponse(request.url, 418, {}, _Raw())

    client.meta.events.register("before-send", before_send)
    with pytest.raises(Exception, match="418"):
        client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    return seen


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_signature_is_the_one_botocores_client_sends(
    monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    sent = _botocore_call(monkeypatch, token)
    adapter = _adapter(session_token=token)
    url = adapter.url("chat.completions", MODEL, False)
    assert url == sent["url"]
    headers = adapter.headers({b"authorization": b"Bearer client-key"}, url, sent["body"])
    assert headers["authorization"] == _text(sent["headers"]["Authorization"])
    assert headers["x-amz-date"] == "20260304T050607Z"
    assert headers.get("x-amz-security-token") == token
    assert "client-key" not in str(headers)  # the client's own key never goes upstream
    assert all(SECRET not in value for value in headers.values())


def test_the_signature_follows_the_sigv4_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    """An independent computation of AWS Signature Version 4 (the AWS documentation's
    steps), against the adapter's header."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)
    adapter = _adapter(base_url="http://127.0.0.1:8123")
    url = adapter.url("chat.completions", MODEL, True)
    body = b'{"messages":[{"role":"user","content":[{"text":"hi"}]}]}'
    headers = adapter.headers({}, url, body)
    stamp, day = "20260304T050607Z", "20260304"
    canonical = "\n".join(
        [
            "POST",
            "/model/anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse-stream",
            "",
            f"content-type:application/json\nhost:127.0.0.1:8123\nx-amz-date:{stamp}\n",
            "content-type;host;x-amz-date",
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{day}/us-east-1/bedrock/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + SECRET).encode()
    for part in (day, "us-east-1", "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    assert headers["authorization"] == (
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
        f"SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
    )


def test_secrets_are_every_credential() -> None:
    adapter = _adapter(session_token=TOKEN)
    assert sorted(adapter.secrets()) == sorted([ACCESS_KEY, SECRET, TOKEN])
    assert SECRET not in repr(_spec()) and TOKEN not in repr(_spec(session_token=TOKEN))


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"region": None}, "needs a region"),
        ({"api_key": None}, "needs AWS credentials"),
        ({"secret_key": None}, "needs AWS credentials"),
    ],
)
def test_an_adapter_without_region_or_credentials_is_refused(
    changes: dict[str, Any], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        make_adapter(_spec(**changes))


def test_an_adapter_without_botocore_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    with pytest.raises(ConfigError, match=r"pip install 'costwarden\[bedrock\]'"):
        make_adapter(_spec())
