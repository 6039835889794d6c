"""Honeypot keys in storage (SQLite and PostgreSQL): migration 0014 keeps every existing key,
an ordinary one, up and down; create_key stores the flag and the action, and refuses bad
ones before writing anything."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput
from costwarden.storage import repo
from costwarden.storage.migrate import alembic_config, migrate

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in sa.inspect(engine).get_columns("virtual_keys")}


def test_migration_0014_keeps_every_key_an_ordinary_one_up_and_down(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0013")
    assert "honeypot" not in _columns(engine)
    with engine.begin() as conn:  # a key as 0013 wrote it
        conn.execute(
            sa.text("INSERT INTO orgs (id, name, created_at) VALUES ('org_a', 'acme', :t)"),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO virtual_keys (id, key_hash, prefix, org_id, name, created_at, "
                "updated_at, session_clean_stop, session_budget_note) VALUES ('key_old', "
                "'h', 'cw-0123456', 'org_a', 'old', :t, :t, :yes, :no)"
            ),
            {"t": NOW, "yes": True, "no": False},
        )
    _migrate_to(engine, "0014")
    assert {"honeypot", "honeypot_action"} <= _columns(engine)
    (after,) = repo.list_keys(engine)
    assert (after.id, after.name, after.session_clean_stop) == ("key_old", "old", True)
    assert (after.honeypot, after.honeypot_action) == (False, "alert")
    _migrate_to(engine, "0013", down=True)
    assert not {"honeypot", "honeypot_action"} & _columns(engine)
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT id, key_hash, name FROM virtual_keys")).all()
    assert [tuple(r) for r in kept] == [("key_old", "h", "old")]
    _migrate_to(engine, "head")
    assert repo.list_keys(engine) == [after]


def test_create_key_stores_a_honeypot_and_refuses_bad_input(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    migrate(engine)
    _, trap = repo.create_key(engine, org="acme", honeypot=True)
    _, fuse = repo.create_key(engine, org="acme", honeypot=True, honeypot_action="switch_off_org")
    assert (trap.honeypot, trap.honeypot_action) == (True, "alert")
    assert (fuse.honeypot, fuse.honeypot_action) == (True, "switch_off_org")
    assert {k.id: k for k in repo.keys_changed_since(engine, None)}[fuse.id] == fuse
    for honeypot, action in (
        (True, "nuke"), ("yes", None), (False, "alert"), (False, "switch_off_org"), (True, 3),
    ):  # fmt: skip
        with pytest.raises(InvalidInput):
            repo.create_key(engine, org="beta", honeypot=honeypot, honeypot_action=action)  # type: ignore[arg-type]
    assert repo.get_org_by_name(engine, "beta") is None
    assert [k.id for k in repo.list_keys(engine)] == [trap.id, fuse.id]
