"""Request and response translation between the OpenAI and Anthropic wire formats."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import orjson
import pytest

from costwarden.core.errors import BadRequest, UpstreamError
from costwarden.mock import formats as fmt
from costwarden.providers.translate import (
    TranslationError,
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)

JSON = dict[str, Any]

WEATHER_TOOL_OPENAI: JSON = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_ANTHROPIC: JSON = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8/x8AAwMCAO+ip1sAAAAASUVORK5CYII="
)


def to_anthropic(payload: JSON, default_max_tokens: int = 4096) -> JSON:
    return openai_to_anthropic_request(payload, default_max_tokens=default_max_tokens)


def openai_req(messages: list[JSON], **extra: Any) -> JSON:
    return {"model": "gpt-4o-mini", "messages": messages, **extra}


def anthropic_req(messages: list[JSON], **extra: Any) -> JSON:
    return {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": messages, **extra}


# --------------------------------------------------------------------------- OpenAI -> Anthropic


def test_openai_system_and_developer_messages_become_the_system_prompt() -> None:
    single = to_anthropic(openai_req([{"role": "system", "content": "Be brief."}, user("hi")]))
    assert single["system"] == "Be brief."
    assert single["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]

    several = to_anthropic(
        openai_req(
            [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                user("hi"),
            ]
        )
    )
    assert several["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use French."},
    ]
    assert "system" not in to_anthropic(openai_req([user("hi")]))


def user(content: Any) -> JSON:
    return {"role": "user", "content": content}


def test_openai_multi_turn_tool_call_and_results() -> None:
    payload = openai_req(
        [
            user("weather in Paris and Rome?"),
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "25C"}],
            },
            user("and tomorrow?"),
        ],
        tools=[WEATHER_TOOL_OPENAI],
    )
    out = to_anthropic(payload)
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            # consecutive tool messages and the next user message form one user turn
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"type": "text", "text": "and tomorrow?"},
            ],
        },
    ]
    assert out["tools"] == [WEATHER_TOOL_ANTHROPIC]


def test_openai_same_role_messages_are_merged_and_tool_results_come_first() -> None:
    out = to_anthropic(
        openai_req(
            [
                user("one"),
                user([{"type": "text", "text": "two"}]),
                {"role": "assistant", "content": None, "tool_calls": [call("c1", "{}")]},
                user("after"),
                {"role": "tool", "tool_call_id": "c1", "content": ""},
                {"role": "assistant", "content": ""},  # empty: dropped
                {"role": "assistant", "content": "done"},
            ]
        )
    )
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user", "assistant"]
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]
    assert out["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {}}
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1"},
        {"type": "text", "text": "after"},
    ]


def call(call_id: str, arguments: str) -> JSON:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        (None, True, None),
    ],
)
def test_openai_tool_choice(choice: Any, parallel: bool | None, expected: JSON | None) -> None:
    payload = openai_req([user("hi")], tools=[WEATHER_TOOL_OPENAI])
    if choice is not None:
        payload["tool_choice"] = choice
    if parallel is not None:
        payload["parallel_tool_calls"] = parallel
    assert to_anthropic(payload).get("tool_choice") == expected


def test_openai_tool_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    out = to_anthropic(openai_req([user("hi")], tools=[tool]))
    assert out["tools"] == [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]


def test_openai_sampling_fields_stop_stream_user_and_dropped_fields() -> None:
    out = to_anthropic(
        openai_req(
            [user("hi")],
            temperature=1.6,
            top_p=0.9,
            stop="END",
            stream=True,
            stream_options={"include_usage": True},
            user="end-user-7",
            seed=42,
            logprobs=True,
            top_logprobs=2,
            frequency_penalty=0.5,
            presence_penalty=0.1,
            logit_bias={"50256": -100},
            response_format={"type": "text"},
            n=1,
        )
    )
    assert out == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
        "temperature": 1,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "end-user-7"},
    }
    low = to_anthropic(openai_req([user("hi")], temperature=0.3, stop=["a", "b"]))
    assert low["temperature"] == 0.3
    assert low["stop_sequences"] == ["a", "b"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 777),
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 60}, 60),
        ({"max_completion_tokens": 60, "max_tokens": 50}, 60),
    ],
)
def test_openai_max_tokens(fields: JSON, expected: int) -> None:
    out = to_anthropic(openai_req([user("hi")], **fields), default_max_tokens=777)
    assert out["max_tokens"] == expected


def test_openai_images_become_anthropic_image_sources() -> None:
    out = to_anthropic(
        openai_req(
            [
                user(
                    [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": f"data:image/png;base64,{PNG_B64}",
                                "detail": "low",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ]
                )
            ]
        )
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    ("payload", "param", "words"),
    [
        (openai_req([user("hi")], n=2), "n", "one"),
        (
            openai_req([user("hi")], response_format={"type": "json_object"}),
            "response_format",
            "json_object",
        ),
        (
            openai_req(
                [user("hi")],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            ),
            "response_format",
            "json_schema",
        ),
        (openai_req([user("hi")], audio={"voice": "alloy", "format": "mp3"}), "audio", "audio"),
        (openai_req([user("hi")], modalities=["text", "audio"]), "modalities", "text output"),
        (openai_req([user("hi")], functions=[{"name": "f"}]), "functions", "tools"),
        (openai_req([user("hi")], web_search_options={}), "web_search_options", "search"),
        (
            openai_req(
                [user([{"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}])]
            ),
            "messages[0].content[0]",
            "audio",
        ),
        (
            openai_req([user([{"type": "file", "file": {"file_id": "file-1"}}])]),
            "messages[0].content[0]",
            "'file'",
        ),
        (
            openai_req([user([{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}])]),
            "messages[0].content[0]",
            "http(s)",
        ),
        (
            openai_req(
                [user([{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}])]
            ),
            "messages[0].content[0]",
            "image/bmp",
        ),
        (
            openai_req([{"role": "assistant", "content": None, "tool_calls": [call("c", "{no")]}]),
            "messages[0].tool_calls[0].function.arguments",
            "not valid JSON",
        ),
        (
            openai_req([{"role": "assistant", "content": None, "tool_calls": [call("c", "[1]")]}]),
            "messages[0].tool_calls[0].function.arguments",
            "JSON object",
        ),
        (
            openai_req([user("hi")], tools=[{"type": "custom", "custom": {"name": "x"}}]),
            "tools[0]",
            "'custom'",
        ),
        (openai_req([{"role": "function", "name": "f", "content": "1"}]), "messages[0]", "legacy"),
        (openai_req([{"role": "critic", "content": "1"}]), "messages[0]", "'critic'"),
        (openai_req([{"role": "tool", "content": "1"}]), "messages[0].tool_call_id", "non-empty"),
        (openai_req([{"role": "system", "content": "only a system prompt"}]), "messages", "empty"),
        (openai_req([user("hi")], temperature="hot"), "temperature", "number"),
        (openai_req([user("hi")], max_tokens=0), "max_tokens", "positive"),
    ],
)
def test_openai_requests_that_cannot_be_translated(payload: JSON, param: str, words: str) -> None:
    with pytest.raises(TranslationError) as caught:
        to_anthropic(payload)
    error = caught.value
    assert isinstance(error, BadRequest)
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", param)
    assert words in error.message
    assert error.message.startswith(param)


# --------------------------------------------------------------------------- Anthropic -> OpenAI


def test_anthropic_system_prompt_becomes_a_leading_system_message() -> None:
    out = anthropic_to_openai_request(anthropic_req([user("hi")], system="Be brief."))
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    blocks = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Use French."},
    ]
    out = anthropic_to_openai_request(anthropic_req([user("hi")], system=blocks))
    assert out["messages"][0] == {
        "role": "system",
        "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use French."}],
    }
    one = anthropic_to_openai_request(anthropic_req([user("hi")], system=blocks[:1]))
    assert one["messages"][0] == {"role": "system", "content": "Be brief."}


def test_anthropic_multi_turn_tool_use_and_results() -> None:
    payload = anthropic_req(
        [
            user([{"type": "text", "text": "weather in Paris and Rome?"}]),
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
            },
            user(
                [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "25C"}],
                        "is_error": False,
                    },
                    {"type": "text", "text": "and tomorrow?"},
                ]
            ),
        ],
        tools=[WEATHER_TOOL_ANTHROPIC],
    )
    out = anthropic_to_openai_request(payload)
    assert out["messages"] == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "25C"},
        {"role": "user", "content": "and tomorrow?"},
    ]
    assert out["tools"] == [WEATHER_TOOL_OPENAI]


def test_anthropic_tool_only_assistant_turn_has_null_content() -> None:
    out = anthropic_to_openai_request(
        anthropic_req(
            [
                user("weather?"),
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}
                    ],
                },
                user([{"type": "tool_result", "tool_use_id": "t1"}]),
            ]
        )
    )
    assert out["messages"][1]["content"] is None
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert out["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": ""}
    assert len(out["messages"]) == 3  # no empty user message after the tool result


@pytest.mark.parametrize(
    ("choice", "expected_choice", "expected_parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "none"}, "none", None),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ],
)
def test_anthropic_tool_choice(choice: JSON, expected_choice: Any, expected_parallel: Any) -> None:
    out = anthropic_to_openai_request(
        anthropic_req([user("hi")], tools=[WEATHER_TOOL_ANTHROPIC], tool_choice=choice)
    )
    assert out["tool_choice"] == expected_choice
    assert out.get("parallel_tool_calls") == expected_parallel


def test_anthropic_tool_choice_without_tools_is_left_out() -> None:
    out = anthropic_to_openai_request(anthropic_req([user("hi")], tool_choice={"type": "auto"}))
    assert "tool_choice" not in out and "tools" not in out


def test_anthropic_sampling_fields_stop_stream_and_user() -> None:
    out = anthropic_to_openai_request(
        anthropic_req(
            [user("hi")],
            temperature=0.5,
            top_p=0.8,
            top_k=40,
            stop_sequences=["END", "STOP"],
            stream=True,
            metadata={"user_id": "end-user-7"},
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    )
    assert out == {
        "model": "claude-haiku-4-5",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["END", "STOP"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "end-user-7",
    }


def test_anthropic_images_become_image_url_parts() -> None:
    out = anthropic_to_openai_request(
        anthropic_req(
            [
                user(
                    [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": PNG_B64,
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/a.jpg"},
                        },
                        {"type": "text", "text": "compare"},
                    ]
                )
            ]
        )
    )
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                {"type": "text", "text": "compare"},
            ],
        }
    ]


def test_images_survive_a_round_trip() -> None:
    original = openai_req(
        [
            user(
                [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ]
            )
        ]
    )
    back = anthropic_to_openai_request(to_anthropic(original))
    assert back["messages"] == original["messages"]


@pytest.mark.parametrize(
    ("payload", "param", "words"),
    [
        (
            anthropic_req([user("hi"), {"role": "assistant", "content": "The answer is"}]),
            "messages[1]",
            "prefill",
        ),
        (
            anthropic_req(
                [
                    user(
                        [
                            {
                                "type": "document",
                                "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                            }
                        ]
                    )
                ]
            ),
            "messages[0].content[0]",
            "'document'",
        ),
        (
            anthropic_req([user([{"type": "image", "source": {"type": "file", "file_id": "f1"}}])]),
            "messages[0].content[0]",
            "'file'",
        ),
        (
            anthropic_req(
                [
                    user(
                        [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t1",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {"type": "url", "url": "https://x/y.png"},
                                    }
                                ],
                            }
                        ]
                    )
                ]
            ),
            "messages[0].content[0]",
            "text only",
        ),
        (
            anthropic_req(
                [user("hi")], tools=[{"type": "web_search_20250305", "name": "web_search"}]
            ),
            "tools[0]",
            "server tool",
        ),
        (
            anthropic_req([user("hi")], stop_sequences=["a", "b", "c", "d", "e"]),
            "stop_sequences",
            "at most 4",
        ),
        (
            anthropic_req(
                [user("hi")], tools=[WEATHER_TOOL_ANTHROPIC], tool_choice={"type": "tool"}
            ),
            "tool_choice",
            "name",
        ),
        (anthropic_req([{"role": "system", "content": "x"}]), "messages[0]", "'system'"),
        (anthropic_req([user("hi")], system=[{"type": "image"}]), "system", "text blocks"),
        (anthropic_req([], system="x"), "messages", "non-empty"),
    ],
)
def test_anthropic_requests_that_cannot_be_translated(
    payload: JSON, param: str, words: str
) -> None:
    with pytest.raises(TranslationError) as caught:
        anthropic_to_openai_request(payload)
    error = caught.value
    assert (error.status, error.type, error.param) == (400, "invalid_request_error", param)
    assert words in error.message


def test_openai_conversation_round_trips() -> None:
    original = openai_req(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1", '{"city":"Paris"}')]},
            {"role": "tool", "tool_call_id": "c1", "content": "18C"},
            {"role": "user", "content": "thanks"},
        ],
        tools=[WEATHER_TOOL_OPENAI],
        tool_choice="required",
        parallel_tool_calls=False,
        max_completion_tokens=100,
        stop=["END"],
        user="u1",
    )
    back = anthropic_to_openai_request(to_anthropic(original))
    assert back == original


# --------------------------------------------------------------------------- responses


def anthropic_body(**changes: Any) -> JSON:
    body = fmt.anthropic_message(
        "msg_01abc",
        "claude-haiku-4-5",
        "Hello there",
        None,
        "end_turn",
        fmt.anthropic_usage(prompt=100, output=7, cache_read=30, cache_write=20),
    )
    body.update(changes)
    return body


def test_anthropic_text_response_to_openai() -> None:
    out = anthropic_to_openai_response(anthropic_body(), model="gpt-4o-mini")
    completion = openai.types.chat.ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-01abc"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert isinstance(completion.created, int) and completion.created > 1_700_000_000
    choice = completion.choices[0]
    assert (choice.message.role, choice.message.content) == ("assistant", "Hello there")
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (100, 7, 107)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 30


def test_anthropic_tool_use_response_to_openai() -> None:
    body = fmt.anthropic_message(
        "msg_1",
        "claude-haiku-4-5",
        None,
        ("toolu_9", "get_weather"),
        "tool_use",
        fmt.anthropic_usage(50, fmt.TOOL_OUTPUT_TOKENS, 0, 0),
    )
    completion = openai.types.chat.ChatCompletion.model_validate(
        anthropic_to_openai_response(body, model="m")
    )
    message = completion.choices[0].message
    assert message.content is None
    assert message.tool_calls is not None and len(message.tool_calls) == 1
    tool_call = message.tool_calls[0]
    assert tool_call.type == "function"
    assert tool_call.id == "toolu_9"
    assert tool_call.function.name == "get_weather"
    assert orjson.loads(tool_call.function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"

    mixed = anthropic_body(
        content=[
            {"type": "thinking", "thinking": "...", "signature": "s"},
            {"type": "text", "text": "Checking. "},
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Rome"}},
        ],
        stop_reason="tool_use",
    )
    message = (
        openai.types.chat.ChatCompletion.model_validate(
            anthropic_to_openai_response(mixed, model="m")
        )
        .choices[0]
        .message
    )
    assert message.content == "Checking. "
    assert message.tool_calls is not None and message.tool_calls[0].id == "t1"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons_to_openai(stop_reason: str, finish_reason: str) -> None:
    out = anthropic_to_openai_response(anthropic_body(stop_reason=stop_reason), model="m")
    assert out["choices"][0]["finish_reason"] == finish_reason


def openai_body(text: str | None = "Hello there", **changes: Any) -> JSON:
    body: JSON = orjson.loads(
        fmt.openai_completion(
            "chatcmpl-xyz", "gpt-4o-mini", text, None, "stop", fmt.openai_usage(120, 9, 40, 3)
        )
    )
    body.update(changes)
    return body


def test_openai_text_response_to_anthropic() -> None:
    out = openai_to_anthropic_response(openai_body(), model="claude-haiku-4-5")
    message = anthropic.types.Message.model_validate(out)
    assert message.id == "msg_xyz"
    assert (message.type, message.role, message.model) == (
        "message",
        "assistant",
        "claude-haiku-4-5",
    )
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text" and block.text == "Hello there"
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert message.usage.input_tokens == 80  # uncached prompt tokens
    assert message.usage.cache_read_input_tokens == 40
    assert message.usage.output_tokens == 9


def test_openai_tool_call_response_to_anthropic() -> None:
    body = orjson.loads(
        fmt.openai_completion(
            "chatcmpl-t",
            "gpt-4o-mini",
            None,
            ("call_5", "get_weather"),
            "tool_calls",
            fmt.openai_usage(60, 6, 0, 0),
        )
    )
    message = anthropic.types.Message.model_validate(openai_to_anthropic_response(body, model="m"))
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_5", "get_weather", {"city": "Paris"})


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reasons_to_anthropic(finish_reason: str, stop_reason: str) -> None:
    body = openai_body()
    body["choices"][0]["finish_reason"] = finish_reason
    assert openai_to_anthropic_response(body, model="m")["stop_reason"] == stop_reason


def test_openai_refusal_becomes_text_with_a_refusal_stop() -> None:
    body = openai_body(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    message = anthropic.types.Message.model_validate(openai_to_anthropic_response(body, model="m"))
    assert message.stop_reason == "refusal"
    assert message.content[0].type == "text"
    assert message.content[0].text == "I can't help with that."


def test_malformed_openai_responses_are_upstream_errors() -> None:
    with pytest.raises(UpstreamError, match="no choice"):
        openai_to_anthropic_response(openai_body(choices=[]), model="m")
    bad = openai_body(None)
    bad["choices"][0]["message"]["tool_calls"] = [call("c1", "{oops")]
    with pytest.raises(UpstreamError, match="JSON object"):
        openai_to_anthropic_response(bad, model="m")
