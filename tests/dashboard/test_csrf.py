"""dashboard/csrf: CSRF tokens bound to the session id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.csrf import TOKEN_CHARS, token_for, valid

SECRET = "s3cret-for-the-dashboard-sessions"


def test_a_sessions_token_is_valid_for_it() -> None:
    token = token_for(SECRET, "sid-1")
    assert len(token) == TOKEN_CHARS
    assert valid(SECRET, "sid-1", token)
    assert token_for(SECRET, "sid-1") == token  # stable: every form of the session


def test_another_sessions_token_is_invalid() -> None:
    assert not valid(SECRET, "sid-2", token_for(SECRET, "sid-1"))


def test_another_secrets_token_is_invalid() -> None:
    assert not valid(SECRET, "sid-1", token_for("another-secret", "sid-1"))


@pytest.mark.parametrize("token", [None, "", "x", "A" * TOKEN_CHARS, 42, "é" * TOKEN_CHARS])
def test_a_missing_or_made_up_token_is_invalid(token: object) -> None:
    assert not valid(SECRET, "sid-1", token)


def test_a_tampered_token_is_invalid() -> None:
    token = token_for(SECRET, "sid-1")
    for index in range(len(token)):
        changed = "A" if token[index] != "A" else "B"
        assert not valid(SECRET, "sid-1", token[:index] + changed + token[index + 1 :])


def test_the_token_is_not_the_session_cookies_signature_nor_the_session_id() -> None:
    token = token_for(SECRET, "sid-1")
    assert "sid-1" not in token and SECRET not in token


def test_rotation_makes_with_the_first_and_accepts_any() -> None:
    old = token_for("old-secret", "sid-1")
    rotated = ["new-secret", "old-secret"]
    assert valid(rotated, "sid-1", old)
    assert token_for(rotated, "sid-1") == token_for("new-secret", "sid-1")
    assert not valid(["new-secret"], "sid-1", old)


def test_no_secret_or_session_makes_no_token_and_validates_nothing() -> None:
    with pytest.raises(InvalidInput):
        token_for("", "sid-1")
    with pytest.raises(InvalidInput):
        token_for(SECRET, "")
    token = token_for(SECRET, "sid-1")
    assert not valid("", "sid-1", token)
    assert not valid([], "sid-1", token)
    assert not valid(SECRET, "", token)


@settings(max_examples=300, deadline=None)
@given(session_id=st.text(max_size=60), token=st.text(max_size=60))
def test_valid_never_raises(session_id: str, token: str) -> None:
    assert valid(SECRET, session_id, token) is (
        bool(session_id) and token == token_for(SECRET, session_id)
    )
