"""Which text of a request is scanned, and the request with spans redacted."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from costwarden.security.extract import location, pieces, replace_pieces
from costwarden.security.findings import Finding
from costwarden.security.scan import Located, Scanner, placeholder, redacted

OPENAI: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"q": 1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result text"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "description": "finds"}}],
}
ANTHROPIC: dict[str, Any] = {
    "model": "claude",
    "system": [{"type": "text", "text": "sys"}],
    "messages": [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {"a": 1}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "out"}],
                },
                {"type": "tool_result", "tool_use_id": "u", "content": "plain out"},
            ],
        },
    ],
    "tools": [{"name": "f", "description": "tool doc", "input_schema": {}}],
}


@pytest.mark.parametrize(
    ("endpoint", "payload", "expected"),
    [
        (
            "chat.completions",
            OPENAI,
            [
                ("messages[0].content", "be brief"),
                ("messages[1].content[0].text", "hello"),
                ("messages[2].tool_calls[0].function.arguments", '{"q": 1}'),
                ("messages[3].content", "result text"),
                ("tools[0].function.description", "finds"),
            ],
        ),
        (
            "messages",
            ANTHROPIC,
            [
                ("system[0].text", "sys"),
                ("messages[0].content", "question"),
                ("messages[1].content[0].input", '{"a":1}'),
                ("messages[2].content[0].content[0].text", "out"),
                ("messages[2].content[1].content", "plain out"),
                ("tools[0].description", "tool doc"),
            ],
        ),
        ("embeddings", {"model": "e", "input": ["a", "b"]}, [("input[0]", "a"), ("input[1]", "b")]),
        ("embeddings", {"model": "e", "input": "one"}, [("input", "one")]),
        ("embeddings", {"model": "e", "input": [1, 2, 3]}, []),
    ],
)
def test_pieces(endpoint: str, payload: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert [(location(p.path), p.text) for p in pieces(endpoint, payload)] == expected


def test_replacing_copies_only_the_paths_it_changes() -> None:
    payload = copy.deepcopy(OPENAI)
    before = copy.deepcopy(payload)
    out = replace_pieces(payload, {("messages", 3, "content"): "X"})
    assert payload == before  # the client's payload is left as it was
    assert out["messages"][3]["content"] == "X"
    assert out["messages"][0] is payload["messages"][0]  # shared, not copied
    assert out["tools"] is payload["tools"]


def test_a_tool_use_input_is_replaced_by_json() -> None:
    out = replace_pieces(ANTHROPIC, {("messages", 1, "content", 0, "input"): '{"a": "[R]"}'})
    assert out["messages"][1]["content"][0]["input"] == {"a": "[R]"}
    out = replace_pieces(ANTHROPIC, {("messages", 1, "content", 0, "input"): "not json"})
    assert out["messages"][1]["content"][0]["input"] == {"redacted": "not json"}


class _Word:
    """A detector of a word, for the scanner's tests."""

    name = "word"

    def __init__(self, word: str, family: str = "w") -> None:
        self.word = word
        self.family = family

    def scan(self, text: str) -> list[Finding]:
        out, at = [], text.find(self.word)
        while at >= 0:
            out.append(Finding(self.name, self.family, "high", 0.9, at, at + len(self.word)))
            at = text.find(self.word, at + 1)
        return out


def test_redaction_replaces_each_span_and_merges_overlaps() -> None:
    payload = {"model": "m", "messages": [{"role": "user", "content": "key abcd and abcd, xyz"}]}
    result = Scanner([_Word("abcd"), _Word("bcd a", "overlap")]).scan(
        "chat.completions", payload, 10.0
    )
    assert not result.timed_out
    out = redacted(payload, result.found)
    first = placeholder(result.found[0].finding)
    assert first == "[REDACTED:word:w]"
    # "bcd a" overlaps the first "abcd": one placeholder covers both spans
    assert out["messages"][0]["content"] == f"key {first}nd {first}, xyz"
    assert payload["messages"][0]["content"] == "key abcd and abcd, xyz"


def test_redacting_only_some_findings() -> None:
    payload = {"model": "m", "input": ["abcd xyz"]}
    result = Scanner([_Word("abcd"), _Word("xyz", "other")]).scan("embeddings", payload, 10.0)
    keep = [loc for loc in result.found if loc.finding.family == "other"]
    assert redacted(payload, keep)["input"] == ["abcd [REDACTED:word:other]"]


def test_the_scan_stops_at_its_time_budget() -> None:
    ticks = iter(range(100))
    scanner = Scanner([_Word("a")], clock=lambda: next(ticks) / 1000)  # 1 ms a look
    payload = {"model": "m", "input": ["a", "a", "a", "a", "a"]}
    result = scanner.scan("embeddings", payload, 2.5)
    assert result.timed_out
    assert 0 < len(result.found) < 5
    assert all(isinstance(x, Located) for x in result.found)
