"""dashboard/session_cookie: the signed, expiring session cookie."""

from __future__ import annotations

import base64
import string
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.core.errors import InvalidInput
from costwarden.dashboard import session_cookie
from costwarden.dashboard.roles import Principal
from costwarden.dashboard.session_cookie import cookie_header, cookie_path, issue, verify

SECRET = "s3cret-for-the-dashboard-sessions"
NOW = 1_800_000_000.0
HOUR = 3600
_BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
ORG_ADMIN = Principal(role="org_admin", org_id="org-a", key_id="key-1", via="admin_key")


def _payload(cookie: str) -> bytes:
    """The signed JSON of a cookie: itsdangerous' payload.timestamp.signature, the payload
    zlib-compressed when that is shorter (a leading '.')."""
    body = cookie.rsplit(".", 2)[0]
    data = base64.urlsafe_b64decode(body.lstrip(".") + "=" * (-len(body.lstrip(".")) % 4))
    return zlib.decompress(data) if body.startswith(".") else data


def test_a_cookie_round_trips_its_principal_session_and_issue_time() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW, session_id="sid-1")
    session = verify(SECRET, cookie, HOUR, NOW + 10)
    assert session is not None
    assert session.principal == ORG_ADMIN
    assert session.session_id == "sid-1"
    assert session.issued_at == int(NOW)


def test_each_issue_gets_a_new_random_session_id() -> None:
    first = verify(SECRET, issue(SECRET, ORG_ADMIN, NOW), HOUR, NOW)
    second = verify(SECRET, issue(SECRET, ORG_ADMIN, NOW), HOUR, NOW)
    assert first is not None and second is not None
    assert first.session_id != second.session_id
    assert len(first.session_id) >= 20


def test_the_cookie_carries_no_secret() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    assert SECRET not in cookie
    decoded = _payload(cookie)
    assert b'"sid"' in decoded
    assert SECRET.encode() not in decoded
    assert b"org-a" in decoded  # signed, not encrypted: only what the browser may see


def test_platform_admin_and_viewer_principals_round_trip() -> None:
    for principal in (
        Principal(role="platform_admin", org_id=None, key_id=None, via="token"),
        Principal(role="viewer", org_id=None, key_id="key-2"),
        Principal(role="viewer", org_id="org-b", key_id=None, via="jwt"),
    ):
        session = verify(SECRET, issue(SECRET, principal, NOW), HOUR, NOW)
        assert session is not None and session.principal == principal


def test_an_expired_cookie_is_none() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    assert verify(SECRET, cookie, HOUR, NOW + HOUR) is not None
    assert verify(SECRET, cookie, HOUR, NOW + HOUR + 1) is None


def test_a_cookie_from_the_future_is_none() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW + 60)
    assert verify(SECRET, cookie, HOUR, NOW) is None


def test_a_wrong_secret_is_none() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    assert verify("another-secret", cookie, HOUR, NOW) is None


def test_a_tampered_cookie_is_none() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    payload, timestamp, signature = cookie.rsplit(".", 2)
    # Every single-character change of the payload, timestamp or signature is refused. The
    # top bit of the character's 6 is flipped: a segment's last character carries padding
    # bits, and a change there alone decodes to the same bytes (base64 is not canonical).
    for index in range(len(cookie)):
        if cookie[index] == ".":
            continue
        changed = _BASE64URL[_BASE64URL.index(cookie[index]) ^ 32]
        tampered = cookie[:index] + changed + cookie[index + 1 :]
        assert verify(SECRET, tampered, HOUR, NOW) is None, index
    assert verify(SECRET, f"{payload}.{timestamp}.{signature[::-1]}", HOUR, NOW) is None


def test_a_forged_cookie_with_a_raised_role_is_none() -> None:
    forged_principal = Principal(role="platform_admin", org_id=None)
    forged = issue("the attacker's secret", forged_principal, NOW)
    assert verify(SECRET, forged, HOUR, NOW) is None
    # The real cookie's signature on a payload the attacker wrote is refused too.
    real = issue(SECRET, ORG_ADMIN, NOW)
    spliced = forged.rsplit(".", 2)[0] + "." + ".".join(real.rsplit(".", 2)[1:])
    assert verify(SECRET, spliced, HOUR, NOW) is None


def test_a_cookie_of_another_salt_is_none() -> None:
    from itsdangerous import URLSafeTimedSerializer

    other = URLSafeTimedSerializer(SECRET, salt="another.use").dumps({"role": "platform_admin"})
    assert verify(SECRET, other, HOUR, NOW) is None


def test_a_signed_payload_that_is_not_a_session_is_none() -> None:
    serializer = session_cookie._serializer([SECRET], NOW)
    for payload in (
        [],
        {"role": "platform_admin"},
        {"role": "root", "org": None, "key": None, "via": "token", "sid": "s", "iat": 1},
        {"role": "org_admin", "org": None, "key": None, "via": "token", "sid": "s", "iat": 1},
        {"role": "viewer", "org": None, "key": 7, "via": "token", "sid": "s", "iat": 1},
        {"role": "viewer", "org": None, "key": None, "via": "token", "sid": "s", "iat": True},
        {"role": "viewer", "org": None, "key": None, "via": "token", "sid": "", "iat": 1},
        {"role": "viewer", "org": None, "key": None, "via": "magic", "sid": "s", "iat": 1},
    ):
        assert verify(SECRET, serializer.dumps(payload), HOUR, NOW) is None, payload


def test_rotation_signs_with_the_first_and_verifies_with_any() -> None:
    old_cookie = issue(["old-secret"], ORG_ADMIN, NOW)
    rotated = ["new-secret", "old-secret"]
    new_cookie = issue(rotated, ORG_ADMIN, NOW)
    assert verify(rotated, old_cookie, HOUR, NOW) is not None
    assert verify(rotated, new_cookie, HOUR, NOW) is not None
    # signed with the first: the new secret alone accepts it, the old one alone does not
    assert verify("new-secret", new_cookie, HOUR, NOW) is not None
    assert verify("old-secret", new_cookie, HOUR, NOW) is None
    # once the old secret is dropped, its cookies are gone
    assert verify(["new-secret"], old_cookie, HOUR, NOW) is None


def test_no_secret_issues_nothing_and_verifies_nothing() -> None:
    with pytest.raises(InvalidInput):
        issue("", ORG_ADMIN, NOW)
    with pytest.raises(InvalidInput):
        issue([], ORG_ADMIN, NOW)
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    assert verify("", cookie, HOUR, NOW) is None
    assert verify([], cookie, HOUR, NOW) is None


@pytest.mark.parametrize("garbage", ["", ".", "..", "a.b.c", "x" * 5000, "é.é.é", "\x00"])
def test_garbage_is_none(garbage: str) -> None:
    assert verify(SECRET, garbage, HOUR, NOW) is None


def test_a_non_string_cookie_is_none() -> None:
    assert verify(SECRET, None, HOUR, NOW) is None
    assert verify(SECRET, b"bytes", HOUR, NOW) is None


@settings(max_examples=300, deadline=None)
@given(cookie=st.text(max_size=300))
def test_verify_never_raises_on_random_text(cookie: str) -> None:
    assert verify(SECRET, cookie, HOUR, NOW) is None


@settings(max_examples=200, deadline=None)
@given(cookie=st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=300))
def test_verify_never_raises_on_random_url_safe_text(cookie: str) -> None:
    assert verify(SECRET, "." + cookie, HOUR, NOW) is None
    assert verify(SECRET, cookie, HOUR, NOW) is None


def test_the_set_cookie_header_has_every_attribute() -> None:
    cookie = issue(SECRET, ORG_ADMIN, NOW)
    header = cookie_header(
        "costwarden_session", cookie, max_age=HOUR, path="/costwarden/dashboard", secure=True
    )
    parts = header.split("; ")
    assert parts[0] == f"costwarden_session={cookie}"
    assert set(parts[1:]) == {
        "Max-Age=3600",
        "Path=/costwarden/dashboard",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
    }


def test_secure_only_when_asked_and_max_age_zero_clears() -> None:
    header = cookie_header("s", "", max_age=0, path="/dashboard", secure=False)
    assert header == "s=; Max-Age=0; Path=/dashboard; HttpOnly; SameSite=Strict"


@pytest.mark.parametrize(
    ("name", "value", "path", "max_age"),
    [
        ("a b", "v", "/", 1),
        ("a;b", "v", "/", 1),
        ("", "v", "/", 1),
        ("n", "v;Domain=evil", "/", 1),
        ("n", "v v", "/", 1),
        ("n", 'v"', "/", 1),
        ("n", "v", "relative", 1),
        ("n", "v", "/a;Domain=evil", 1),
        ("n", "v", "/a b", 1),
        ("n", "v", "/a\r\nSet-Cookie: x=y", 1),
        ("n", "v", "/", -1),
    ],
)
def test_a_header_that_would_break_is_refused(
    name: str, value: str, path: str, max_age: int
) -> None:
    with pytest.raises(InvalidInput):
        cookie_header(name, value, max_age=max_age, path=path, secure=True)


@pytest.mark.parametrize(
    ("root_path", "expected"),
    [
        ("", "/dashboard"),
        ("/", "/dashboard"),
        ("/costwarden", "/costwarden/dashboard"),
        ("/costwarden/", "/costwarden/dashboard"),
        ("/a/b", "/a/b/dashboard"),
    ],
)
def test_the_cookie_path_is_the_dashboard_under_the_root_path(
    root_path: str, expected: str
) -> None:
    assert cookie_path(root_path) == expected
