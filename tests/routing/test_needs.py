"""What a request needs of a deployment, read from its payload: table tests."""

from __future__ import annotations

from typing import Any

import pytest

from costwarden.routing.needs import request_needs, used_capabilities

IMAGE_OA = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
IMAGE_AN = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A"}}


@pytest.mark.parametrize(
    ("payload", "stream", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, False, set()),
        ({"messages": []}, True, {"streaming"}),
        ({"tools": [{"type": "function"}]}, False, {"tools"}),
        ({"tools": []}, False, set()),  # an empty list uses no tool
        ({"functions": [{"name": "f"}]}, False, {"tools"}),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, False,
         {"structured_output"}),
        ({"response_format": {"type": "json_object"}}, False, {"structured_output"}),
        ({"response_format": {"type": "text"}}, False, set()),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, IMAGE_OA]}]},
         False, {"vision"}),
        ({"messages": [{"role": "user", "content": [IMAGE_AN]}]}, False, {"vision"}),
        ({"messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [IMAGE_AN]}]}]},
         False, {"vision"}),
        ({"messages": "not a list"}, False, set()),
        ({"messages": [None, 3, {"content": [None, "x"]}]}, False, set()),
        ({"tools": [{"type": "function"}], "messages": [{"content": [IMAGE_OA]}],
          "response_format": {"type": "json_object"}}, True,
         {"tools", "vision", "structured_output", "streaming"}),
    ],
)  # fmt: skip
def test_used_capabilities(payload: dict[str, Any], stream: bool, expected: set[str]) -> None:
    assert used_capabilities(payload, stream) == expected


@pytest.mark.parametrize(
    ("endpoint", "payload", "out"),
    [
        ("chat.completions", {"max_tokens": 100}, 100),
        ("chat.completions", {"max_completion_tokens": 50, "max_tokens": 100}, 50),
        ("chat.completions", {}, None),  # each deployment's own cap
        ("chat.completions", {"max_tokens": True}, None),
        ("messages", {"max_tokens": 70, "max_completion_tokens": 5}, 70),
        ("embeddings", {"max_tokens": 70}, 0),
    ],
)
def test_the_output_cap_is_the_clients_or_each_deployments(
    endpoint: str, payload: dict[str, Any], out: int | None
) -> None:
    needs = request_needs(endpoint, payload, False, 400, capabilities=False)
    assert needs.output_tokens == out
    assert needs.prompt_tokens == 100  # the reservation's estimate: a token per 4 bytes
    assert needs.capabilities == frozenset()


def test_capabilities_are_read_only_when_asked() -> None:
    payload = {"tools": [{"type": "function"}]}
    assert request_needs("chat.completions", payload, True, 1, capabilities=False).capabilities == (
        frozenset()
    )
    assert request_needs("chat.completions", payload, True, 1, capabilities=True).capabilities == {
        "tools",
        "streaming",
    }
