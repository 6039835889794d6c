"""Request validation and principal fields (pure functions)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from costwarden.core.errors import BadRequest
from costwarden.gateway.validate import MAX_LABEL, parse_tags, principal_fields, validate_payload

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("n", [0, -1, 1.5, "2", True])
def test_n_must_be_a_positive_integer(n: Any) -> None:
    with pytest.raises(BadRequest, match="'n' must be a positive integer"):
        validate_payload("chat.completions", orjson.dumps({**CHAT, "n": n}))


def test_n_is_accepted() -> None:
    assert validate_payload("chat.completions", orjson.dumps({**CHAT, "n": 8}))["n"] == 8
    assert validate_payload("chat.completions", orjson.dumps({**CHAT, "n": None}))["n"] is None


def test_tags_are_never_cut_short() -> None:
    tags = {f"name{i}": "v" * MAX_LABEL for i in range(20)}
    raw = ",".join(f"{k}={v}" for k, v in tags.items())
    assert parse_tags(raw) == tags
    with pytest.raises(BadRequest, match="at most 20 tags"):
        parse_tags(raw + ",one=more")
    with pytest.raises(BadRequest, match=f"limited to {MAX_LABEL} characters"):
        parse_tags("team=" + "v" * (MAX_LABEL + 1))
    with pytest.raises(BadRequest, match=f"limited to {MAX_LABEL} characters"):
        parse_tags("t" * (MAX_LABEL + 1) + "=v")


@pytest.mark.parametrize(
    ("endpoint", "payload", "headers", "param"),
    [
        ("chat.completions", {"user": "u" * 201}, {}, "user"),
        ("messages", {"metadata": {"user_id": "u" * 201}}, {}, "metadata.user_id"),
        ("chat.completions", {}, {b"x-costwarden-user": b"u" * 201}, "x-costwarden-user"),
        ("chat.completions", {}, {b"x-costwarden-session": b"s" * 201}, "x-costwarden-session"),
    ],
)
def test_long_principal_labels_are_refused_not_shortened(
    endpoint: str, payload: dict[str, Any], headers: dict[bytes, bytes], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        principal_fields(endpoint, payload, headers)
    assert caught.value.param == param


def test_labels_at_the_limit_are_kept_whole() -> None:
    user, session, tags = principal_fields(
        "chat.completions",
        {"user": "u" * MAX_LABEL},
        {b"x-costwarden-session": b"s" * MAX_LABEL, b"x-costwarden-tags": b"a=b, c = d"},
    )
    assert (user, session, tags) == ("u" * MAX_LABEL, "s" * MAX_LABEL, {"a": "b", "c": "d"})
