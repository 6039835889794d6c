"""Orgs, projects and virtual keys on both backends."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.storage import repo
from costwarden.storage.schema import virtual_keys


def test_ensure_org_and_project(engine: Engine) -> None:
    org_id, created = repo.ensure_org(engine, "  acme ")
    assert created and re.fullmatch(r"org_[0-9a-f]{12}", org_id)
    assert repo.ensure_org(engine, "acme") == (org_id, False)
    org = repo.get_org_by_name(engine, "acme")
    assert org is not None and org.id == org_id and org.name == "acme"
    assert org.created_at.tzinfo is not None and org.created_at.utcoffset() == timedelta(0)
    assert repo.get_org_by_name(engine, "nope") is None
    repo.ensure_org(engine, "beta")
    assert [o.name for o in repo.list_orgs(engine)] == ["acme", "beta"]

    project_id = repo.ensure_project(engine, org_id, "web")
    assert re.fullmatch(r"proj_[0-9a-f]{12}", project_id)
    assert repo.ensure_project(engine, org_id, "web") == project_id
    other_org, _ = repo.ensure_org(engine, "gamma")
    assert repo.ensure_project(engine, other_org, "web") != project_id
    with pytest.raises(NotFound):
        repo.ensure_project(engine, "org_000000000000", "web")


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "a\x00b", "x" * 201])
def test_bad_names_are_invalid_input(engine: Engine, bad: str) -> None:
    with pytest.raises(InvalidInput):
        repo.ensure_org(engine, bad)
    with pytest.raises(InvalidInput):
        repo.create_key(engine, org=bad)
    with pytest.raises(InvalidInput):
        repo.create_key(engine, org="acme", project=bad)
    with pytest.raises(InvalidInput):
        repo.create_key(engine, org="acme", name=bad)


def test_concurrent_ensure_org_agrees(db_url: str, make_engine: Callable[[str], Engine]) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        barrier.wait()
        try:
            results.append(repo.ensure_org(engine, "raced"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len({org_id for org_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_create_key(engine: Engine) -> None:
    key, record = repo.create_key(engine, org="acme", project="web", name="ci")
    assert key.startswith("cw-") and len(key) > 40
    assert record.key_hash == repo.hash_key(key)
    assert record.prefix == key[:10]
    assert re.fullmatch(r"key_[0-9a-f]{12}", record.id)
    assert record.org_name == "acme" and record.project_name == "web" and record.name == "ci"
    assert not record.revoked
    assert record.created_at.tzinfo is not None
    # the plaintext is stored nowhere
    with engine.connect() as conn:
        dumped = repr(conn.execute(sa.select(virtual_keys)).all())
    assert key not in dumped and key[10:] not in dumped

    key2, record2 = repo.create_key(engine, org="acme")
    assert key2 != key and record2.project_id is None and record2.project_name is None
    assert record2.org_id == record.org_id


def test_create_key_without_create_org(engine: Engine) -> None:
    with pytest.raises(NotFound):
        repo.create_key(engine, org="ghost", create_org=False)
    assert repo.get_org_by_name(engine, "ghost") is None
    repo.ensure_org(engine, "real")
    _, record = repo.create_key(engine, org="real", project="p", create_org=False)
    assert record.org_name == "real" and record.project_name == "p"


def test_hash_key() -> None:
    assert repo.hash_key("cw-abc") == hashlib.sha256(b"cw-abc").hexdigest()
    assert len(repo.hash_key("x")) == 64


def test_revoke_key(engine: Engine) -> None:
    _, record = repo.create_key(engine, org="acme")
    revoked = repo.revoke_key(engine, record.id)
    assert revoked.revoked and revoked.revoked_at is not None
    assert revoked.revoked_at >= record.created_at
    again = repo.revoke_key(engine, record.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        repo.revoke_key(engine, "key_000000000000")


def test_list_keys(engine: Engine) -> None:
    _, a = repo.create_key(engine, org="acme")
    _, b = repo.create_key(engine, org="beta", project="p")
    _, c = repo.create_key(engine, org="acme", name="second")
    assert [k.id for k in repo.list_keys(engine)] == [a.id, b.id, c.id]
    assert [k.id for k in repo.list_keys(engine, org="acme")] == [a.id, c.id]
    assert [k.project_name for k in repo.list_keys(engine, org="beta")] == ["p"]
    with pytest.raises(NotFound):
        repo.list_keys(engine, org="ghost")


def test_keys_changed_since(engine: Engine) -> None:
    _, a = repo.create_key(engine, org="acme")
    _, b = repo.create_key(engine, org="acme", project="web")
    everything = repo.keys_changed_since(engine, None)
    assert {k.id for k in everything} == {a.id, b.id}
    assert {k.org_name for k in everything} == {"acme"}
    assert {k.project_name for k in everything} == {None, "web"}

    time.sleep(0.01)
    mark = datetime.now(UTC)
    time.sleep(0.01)
    assert repo.keys_changed_since(engine, mark) == []
    repo.revoke_key(engine, a.id)
    _, c = repo.create_key(engine, org="beta")
    changed = repo.keys_changed_since(engine, mark)
    assert [k.id for k in changed] == [a.id, c.id]
    assert changed[0].revoked and not changed[1].revoked
    assert repo.keys_changed_since(engine, datetime.now(UTC) + timedelta(seconds=5)) == []
    # a non-UTC aware datetime means the same instant
    eastern = mark.astimezone(timezone(timedelta(hours=-5)))
    assert [k.id for k in repo.keys_changed_since(engine, eastern)] == [a.id, c.id]
    with pytest.raises(InvalidInput):
        repo.keys_changed_since(engine, datetime.now())  # naive


def test_repo_with_connection_uses_callers_transaction(engine: Engine) -> None:
    with engine.connect() as conn:
        org_id, created = repo.ensure_org(conn, "tx")
        assert created
        _, record = repo.create_key(conn, org="tx")
        assert [k.id for k in repo.list_keys(conn)] == [record.id]
        conn.rollback()
    assert repo.get_org_by_name(engine, "tx") is None
    with engine.begin() as conn:
        repo.ensure_org(conn, "tx")
    assert repo.get_org_by_name(engine, "tx") is not None
