"""dashboard.roles: every role x (own org, other org, platform-wide) x (read, write), the
principals that cannot exist, and the orgs each one sees."""

from __future__ import annotations

import pytest

from costwarden.core.errors import InvalidInput
from costwarden.dashboard.roles import (
    ROLES,
    Principal,
    can_read,
    can_write,
    parse_role,
    visible_orgs,
)

OWN, OTHER, PLATFORM = "org_a", "org_b", None

ADMIN = Principal("platform_admin", None, None, "token")
ORG_ADMIN = Principal("org_admin", OWN, "adk_1", "admin_key")
VIEWER = Principal("viewer", None, "adk_2", "admin_key")  # platform-wide
ORG_VIEWER = Principal("viewer", OWN, None, "jwt")  # org-scoped

# (principal, data's org, may read, may write)
TABLE = [
    (ADMIN, OWN, True, True),
    (ADMIN, OTHER, True, True),
    (ADMIN, PLATFORM, True, True),
    (ORG_ADMIN, OWN, True, True),
    (ORG_ADMIN, OTHER, False, False),
    (ORG_ADMIN, PLATFORM, False, False),
    (VIEWER, OWN, True, False),
    (VIEWER, OTHER, True, False),
    (VIEWER, PLATFORM, True, False),
    (ORG_VIEWER, OWN, True, False),
    (ORG_VIEWER, OTHER, False, False),
    (ORG_VIEWER, PLATFORM, False, False),
]


@pytest.mark.parametrize(("principal", "org", "read", "write"), TABLE)
def test_the_table(principal: Principal, org: str | None, read: bool, write: bool) -> None:
    assert can_read(principal, org) is read
    assert can_write(principal, org) is write


def test_the_table_covers_every_role_and_place() -> None:
    assert {p.role for p, *_ in TABLE} == set(ROLES)
    for principal in {p for p, *_ in TABLE}:
        assert {org for p, org, *_ in TABLE if p == principal} == {OWN, OTHER, PLATFORM}


def test_whoever_may_write_may_read() -> None:
    for principal, org, read, write in TABLE:
        assert read or not write, (principal, org)


def test_an_empty_org_id_is_no_org() -> None:
    assert not can_read(ORG_ADMIN, "") and not can_write(ORG_ADMIN, "")


@pytest.mark.parametrize(
    ("role", "org", "message"),
    [
        ("platform_admin", "org_a", "platform_admin is platform-wide"),
        ("org_admin", None, "org_admin needs an org"),
        ("root", None, "role must be one of: platform_admin, org_admin, viewer"),
        ("viewer", "", "org_id must be a non-empty string"),
    ],
)
def test_principals_that_cannot_exist(role: str, org: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Principal(role, org)  # type: ignore[arg-type]


def test_an_unknown_way_in_is_refused() -> None:
    with pytest.raises(InvalidInput, match="via must be one of"):
        Principal("viewer", None, None, "cookie")  # type: ignore[arg-type]


def test_a_principal_is_frozen() -> None:
    with pytest.raises(AttributeError):
        ORG_ADMIN.org_id = OTHER  # type: ignore[misc]


def test_parse_role() -> None:
    assert [parse_role(r) for r in ROLES] == list(ROLES)
    for bad in ("Platform_Admin", "", None, 1):
        with pytest.raises(InvalidInput):
            parse_role(bad)


def test_visible_orgs() -> None:
    orgs = ["org_c", OWN, OTHER]
    assert visible_orgs(ADMIN, orgs) == orgs
    assert visible_orgs(VIEWER, iter(orgs)) == orgs
    assert visible_orgs(ORG_ADMIN, orgs) == [OWN]
    assert visible_orgs(ORG_VIEWER, orgs) == [OWN]
    assert visible_orgs(ORG_ADMIN, ["org_c"]) == []
    assert visible_orgs(ADMIN, []) == []
