"""``costwarden admin-keys create|list|revoke``: a key with a role shown once (stored only as a
hash), listed for people and scripts without it, revoked; bad input one clear error line,
nothing created."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from costwarden.storage import repo
from costwarden.storage.admin_keys import find_admin_key, list_admin_keys
from costwarden.storage.audit import audit_entries
from costwarden.storage.db import create_engine_for
from tests.helpers import assert_clean_error, invoke_cli


@pytest.fixture
def db(config: str) -> Iterator[Engine]:
    engine = create_engine_for(f"sqlite:///{Path(config).parent}/cw.db")
    repo.ensure_org(engine, "acme")
    try:
        yield engine
    finally:
        engine.dispose()


def test_create_list_revoke(config: str, db: Engine) -> None:
    made = invoke_cli("admin-keys", "create", "--config", config, "--role", "org_admin",
                      "--org", "acme", "--name", "acme ops", "--json")  # fmt: skip
    assert made.code == 0, made.err
    acme = made.json()
    assert acme["key"].startswith("cwa-") and acme["prefix"] == acme["key"][:10]
    assert (acme["role"], acme["org"], acme["name"]) == ("org_admin", "acme", "acme ops")
    assert acme["created_by"].startswith("cli:") and acme["revoked_at"] is None
    found = find_admin_key(db, acme["key"])
    assert found is not None and found.id == acme["id"]

    human = invoke_cli("admin-keys", "create", "--config", config, "--role", "platform_admin")
    assert human.code == 0, human.err
    assert re.search(r"created admin key adk_[0-9a-f]{12}, platform_admin platform-wide", human.out)
    (plaintext,) = re.findall(r"^cwa-\S+$", human.out, flags=re.M)
    root = find_admin_key(db, plaintext)
    assert root is not None and root.role == "platform_admin" and root.org_id is None

    listed = invoke_cli("admin-keys", "list", "--config", config, "--json").json()["data"]
    assert [k["id"] for k in listed] == [acme["id"], root.id]
    only = invoke_cli("admin-keys", "list", "--config", config, "--org", "acme", "--json")
    assert [k["id"] for k in only.json()["data"]] == [acme["id"]]
    table = invoke_cli("admin-keys", "list", "--config", config)
    assert table.code == 0, table.err
    rows = {
        found: line
        for line in table.out.splitlines()
        for found in re.findall(r"adk_[0-9a-f]{12}", line)
    }
    assert "org_admin" in rows[acme["id"]] and "acme" in rows[acme["id"]]
    assert "(platform)" in rows[root.id] and "active" in rows[root.id]
    for secret in (acme["key"], plaintext):
        assert secret not in table.out and secret not in str(listed)
    assert "key_hash" not in str(listed)

    gone = invoke_cli("admin-keys", "revoke", "--config", config, acme["id"])
    assert gone.code == 0, gone.err
    assert f"revoked admin key {acme['id']} (org_admin)" in gone.out
    again = invoke_cli("admin-keys", "revoke", "--config", config, acme["id"], "--json").json()
    assert again["revoked_at"] is not None
    table = invoke_cli("admin-keys", "list", "--config", config)
    assert "revoked" in next(line for line in table.out.splitlines() if acme["id"] in line)
    assert [a.target for a in audit_entries(db, action="admin_key.revoke")] == [acme["id"]]
    assert len(audit_entries(db, action="admin_key.create")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--role", "root"), "role must be one of: platform_admin, org_admin, viewer"),
        (("--role", "org_admin"), "an org_admin needs an org"),
        (("--role", "platform_admin", "--org", "acme"), "a platform_admin is platform-wide"),
        (("--role", "org_admin", "--org", "initech"), "unknown org 'initech'"),
        (("--role", "viewer", "--name", " "), "admin key name must not be empty"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
    config: str, db: Engine, args: tuple[str, ...], message: str
) -> None:
    result = invoke_cli("admin-keys", "create", "--config", config, *args)
    assert_clean_error(result, message)
    assert list_admin_keys(db) == []


def test_unknown_key_and_org_are_one_line(config: str, db: Engine) -> None:
    assert_clean_error(
        invoke_cli("admin-keys", "revoke", "--config", config, "adk_nope"),
        "admin key 'adk_nope' does not exist",
    )
    assert_clean_error(
        invoke_cli("admin-keys", "list", "--config", config, "--org", "initech"),
        "unknown org 'initech'",
    )
