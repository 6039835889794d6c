"""Kill switch, feature toggles and the audit log in the database, on SQLite and PostgreSQL.

Every write stores the switch and its audit row together, with a version no other write has;
bad input (unknown org or feature, bad message or actor) changes nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.storage import repo
from costwarden.storage.audit import MAX_AUDIT_LIMIT, audit_entries, record_audit
from costwarden.storage.db import begin_write
from costwarden.storage.schema import audit_log, switches
from costwarden.storage.switches import (
    FEATURES,
    MAX_MESSAGE_LEN,
    SWITCH_ACTION,
    load_switches,
    needs_confirmation,
    set_switch,
    switches_version,
)
from costwarden.storage.switches import list_switches as list_all


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything a switch write may change, raw from the tables."""
    with engine.connect() as conn:
        return (
            sorted(tuple(r) for r in conn.execute(sa.select(switches)).all()),
            sorted(tuple(r) for r in conn.execute(sa.select(audit_log)).all()),
        )


@pytest.fixture
def acme(engine: Engine) -> str:
    org_id, _ = repo.ensure_org(engine, "acme")
    repo.ensure_org(engine, "beta")
    return org_id


def test_empty_database(engine: Engine) -> None:
    assert switches_version(engine) == 0
    assert load_switches(engine) == (0, [])
    assert audit_entries(engine) == []


def test_platform_switch_off_and_on_is_audited(engine: Engine) -> None:
    off = set_switch(
        engine, org=None, feature="ai", enabled=False, message=" Maintenance ", actor="ops@x"
    )
    assert (off.id, off.org_id, off.org_name, off.feature) == ("platform:ai", None, None, "ai")
    assert (off.enabled, off.message, off.updated_by, off.version) == (
        False,
        "Maintenance",
        "ops@x",
        1,
    )
    assert switches_version(engine) == 1

    on = set_switch(engine, org=None, feature="ai", enabled=True, message=None, actor="ops@y")
    assert (on.enabled, on.message, on.updated_by, on.version) == (True, None, "ops@y", 2)
    assert load_switches(engine) == (2, [on])

    newest, oldest = audit_entries(engine)
    assert (oldest.actor, oldest.action, oldest.target) == ("ops@x", SWITCH_ACTION, "platform:ai")
    assert oldest.old_value is None
    assert oldest.new_value == {"enabled": False, "message": "Maintenance"}
    assert oldest.ts == off.updated_at
    assert (newest.actor, newest.target) == ("ops@y", "platform:ai")
    assert newest.old_value == {"enabled": False, "message": "Maintenance"}
    assert newest.new_value == {"enabled": True, "message": None}
    assert newest.ts >= oldest.ts
    assert newest.to_json()["old_value"] == {"enabled": False, "message": "Maintenance"}


def test_write_that_changes_nothing_is_still_recorded(engine: Engine) -> None:
    first = set_switch(
        engine, org=None, feature="streaming", enabled=False, message=None, actor="a"
    )
    again = set_switch(
        engine, org=None, feature="streaming", enabled=False, message=None, actor="b"
    )
    assert again.version == first.version + 1
    assert again.updated_by == "b"
    entries = audit_entries(engine)
    assert len(entries) == 2
    assert entries[0].old_value == entries[0].new_value == {"enabled": False, "message": None}


def test_org_switch_by_name(engine: Engine, acme: str) -> None:
    record = set_switch(
        engine, org=" acme ", feature="embeddings", enabled=False, message="", actor="cli:me"
    )
    assert record.id == f"org:{acme}:embeddings"
    assert (record.org_id, record.org_name, record.message) == (acme, "acme", None)
    assert record.to_json()["scope"] == "org" and record.to_json()["org"] == "acme"
    (entry,) = audit_entries(engine)
    assert entry.target == f"org:{acme}:embeddings" and entry.actor == "cli:me"


def test_list_order_platform_first_then_org_name(engine: Engine, acme: str) -> None:
    set_switch(engine, org="beta", feature="ai", enabled=False, message=None, actor="a")
    set_switch(engine, org="acme", feature="streaming", enabled=False, message=None, actor="a")
    set_switch(engine, org="acme", feature="ai", enabled=True, message=None, actor="a")
    set_switch(engine, org=None, feature="messages", enabled=False, message=None, actor="a")
    found = [(r.org_name, r.feature) for r in list_all(engine)]
    assert found == [(None, "messages"), ("acme", "ai"), ("acme", "streaming"), ("beta", "ai")]
    version, records = load_switches(engine)
    assert version == 4 == max(r.version for r in records)


@pytest.mark.parametrize(
    ("kwargs", "exc", "needle"),
    [
        ({"org": "nope"}, NotFound, "unknown org 'nope'"),
        ({"org": "  "}, InvalidInput, "org name"),
        ({"feature": "chat"}, InvalidInput, "known: ai, chat.completions, embeddings"),
        ({"feature": ""}, InvalidInput, "unknown feature"),
        ({"enabled": "false"}, InvalidInput, "enabled must be true or false"),
        ({"message": "x" * (MAX_MESSAGE_LEN + 1)}, InvalidInput, "longer than"),
        ({"message": "two\nlines"}, InvalidInput, "control characters"),
        ({"message": 5}, InvalidInput, "message must be a string"),
        ({"actor": " "}, InvalidInput, "actor"),
        ({"actor": "a" * 201}, InvalidInput, "actor is longer"),
    ],
)
def test_bad_input_changes_nothing(
    engine: Engine, acme: str, kwargs: dict[str, Any], exc: type[Exception], needle: str
) -> None:
    set_switch(engine, org="acme", feature="ai", enabled=False, message="m", actor="a")
    before = snapshot(engine)
    args: dict[str, Any] = {
        "org": "acme",
        "feature": "ai",
        "enabled": True,
        "message": None,
        "actor": "b",
        **kwargs,
    }
    with pytest.raises(exc) as info:
        set_switch(engine, **args)
    assert needle in str(info.value)
    assert snapshot(engine) == before
    assert switches_version(engine) == 1


def test_every_feature_is_accepted(engine: Engine) -> None:
    for feature in FEATURES:
        set_switch(engine, org=None, feature=feature, enabled=True, message=None, actor="a")
    assert sorted(r.feature for r in list_all(engine)) == sorted(FEATURES)


def test_needs_confirmation_only_for_everything_off() -> None:
    assert needs_confirmation(None, "ai", False)
    assert not needs_confirmation(None, "ai", True)
    assert not needs_confirmation("acme", "ai", False)
    for feature in FEATURES[1:]:
        assert not needs_confirmation(None, feature, False)


# --------------------------------------------------------------------------- audit log


def test_record_audit_rolls_back_with_its_transaction(engine: Engine) -> None:
    class Abort(Exception):
        pass

    with pytest.raises(Abort), begin_write(engine) as conn:
        record_audit(conn, "me", "test.action", "thing", None, {"a": 1})
        raise Abort
    assert audit_entries(engine) == []
    with begin_write(engine) as conn:
        kept = record_audit(conn, "me", "test.action", "thing", [1, 2], {"b": "x", "a": 1})
    (entry,) = audit_entries(engine)
    assert entry == kept
    assert entry.old_value == [1, 2] and entry.new_value == {"a": 1, "b": "x"}
    with engine.connect() as conn:
        stored = conn.execute(sa.select(audit_log.c.new_value)).scalar_one()
    assert stored == '{"a":1,"b":"x"}'  # compact, sorted keys


def test_record_audit_refuses_empty_fields(engine: Engine) -> None:
    with begin_write(engine) as conn:
        for args in (("", "a", "t"), ("me", " ", "t"), ("me", "a", "")):
            with pytest.raises(InvalidInput):
                record_audit(conn, *args, None, None)
    assert audit_entries(engine) == []


def test_audit_entries_limit_and_action(engine: Engine) -> None:
    for i in range(5):
        set_switch(
            engine, org=None, feature="embeddings", enabled=i % 2 == 0, message=None, actor=f"a{i}"
        )
    with begin_write(engine) as conn:
        record_audit(conn, "me", "breaker.reset", "openai:gpt-4o", None, None)
    entries = audit_entries(engine)
    assert [e.actor for e in entries] == ["me", "a4", "a3", "a2", "a1", "a0"]
    assert [e.actor for e in audit_entries(engine, limit=2)] == ["me", "a4"]
    switch_entries = audit_entries(engine, action=SWITCH_ACTION, limit=3)
    assert [e.actor for e in switch_entries] == ["a4", "a3", "a2"]
    assert audit_entries(engine, action="breaker.reset")[0].target == "openai:gpt-4o"
    assert audit_entries(engine, action="nothing") == []
    for bad in (0, -1, MAX_AUDIT_LIMIT + 1, "x", True):
        with pytest.raises(InvalidInput, match="limit"):
            audit_entries(engine, limit=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="action"):
        audit_entries(engine, action=" ")


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_get_distinct_versions(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    repo.ensure_org(engines[0], "acme")
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []
    versions: list[int] = []
    per_thread = 6

    def run(i: int, engine: Engine) -> None:
        barrier.wait()
        try:
            for j in range(per_thread):
                # Half the writes hit one shared row, half a row of this thread's own.
                org, feature = ("acme", "ai") if j % 2 else (None, FEATURES[1 + i % 4])
                record = set_switch(
                    engine,
                    org=org,
                    feature=feature,
                    enabled=j % 3 == 0,
                    message=None,
                    actor=f"t{i}",
                )
                versions.append(record.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    total = per_thread * len(engines)
    assert sorted(versions) == list(range(1, total + 1))
    assert switches_version(engines[0]) == total
    assert len(audit_entries(engines[0], limit=MAX_AUDIT_LIMIT)) == total


def test_a_writer_holding_the_lock_does_not_block_pollers(
    db_url: str, backend: str, make_engine: Callable[[str], Engine]
) -> None:
    writer, reader = make_engine(db_url), make_engine(db_url)
    set_switch(writer, org=None, feature="ai", enabled=True, message=None, actor="a")
    with begin_write(writer) as conn:  # SQLite: BEGIN IMMEDIATE holds the write lock
        if backend == "postgresql":
            conn.execute(sa.text("LOCK TABLE switches IN EXCLUSIVE MODE"))
        conn.execute(switches.update().values(enabled=False, version=2))
        started = time.monotonic()
        assert switches_version(reader) == 1  # the uncommitted write is invisible
        assert [r.enabled for r in load_switches(reader)[1]] == [True]
        assert time.monotonic() - started < 2.0
    assert switches_version(reader) == 2
