"""storage.admin_keys on SQLite and PostgreSQL: created with a role that fits its org, found
by the plaintext only (stored as a hash), listed, revoked (found still, revoked_at set),
every change audited; migration 0017 up and down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.dashboard.roles import Principal, can_write
from costwarden.storage import repo
from costwarden.storage.admin_keys import (
    ADMIN_KEY_PREFIX,
    create_admin_key,
    find_admin_key,
    get_admin_key,
    list_admin_keys,
    revoke_admin_key,
)
from costwarden.storage.audit import audit_entries
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import alembic_config, migrate
from costwarden.storage.schema import admin_keys


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _stored(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(admin_keys))]


def test_create_find_list_revoke(db: Engine) -> None:
    acme, _ = repo.ensure_org(db, "acme")
    globex, _ = repo.ensure_org(db, "globex")
    root_key, root = create_admin_key(db, role="platform_admin", name="ops", actor="cli:ann")
    acme_key, acme_admin = create_admin_key(db, role="org_admin", org="acme", actor="cli:ann")
    _, watcher = create_admin_key(db, role="viewer", org=globex, actor="cli:bob")  # by id
    _, everyone = create_admin_key(db, role="viewer", actor="cli:bob")

    assert root_key.startswith(ADMIN_KEY_PREFIX) and len(root_key) == len(acme_key)
    assert root.id.startswith("adk_") and root.prefix == root_key[:10]
    assert (root.role, root.org_id, root.org_name) == ("platform_admin", None, None)
    assert root.name == "ops"
    assert (acme_admin.org_id, acme_admin.org_name, acme_admin.name) == (acme, "acme", None)
    assert (watcher.role, watcher.org_name, watcher.created_by) == ("viewer", "globex", "cli:bob")
    assert everyone.org_id is None and everyone.principal().platform_wide
    assert acme_admin.principal() == Principal("org_admin", acme, acme_admin.id, "admin_key")
    assert can_write(acme_admin.principal(), acme) and not can_write(acme_admin.principal(), globex)

    # The plaintext is stored nowhere; only its hash finds the key.
    for row in _stored(db):
        assert root_key not in str(row) and acme_key not in str(row)
    assert find_admin_key(db, acme_key) == acme_admin
    assert find_admin_key(db, root_key) == root
    for wrong in (acme_key + "x", acme_admin.key_hash, acme_admin.prefix, ""):
        assert find_admin_key(db, wrong) is None

    everything = list_admin_keys(db)
    assert [k.id for k in everything] == [root.id, acme_admin.id, watcher.id, everyone.id]
    assert list_admin_keys(db, "acme") == [acme_admin]
    assert list_admin_keys(db, globex) == [watcher]
    with pytest.raises(NotFound, match="unknown org 'initech'"):
        list_admin_keys(db, "initech")
    assert "key_hash" not in acme_admin.to_json() and acme_key not in str(acme_admin.to_json())

    revoked = revoke_admin_key(db, acme_admin.id, "cli:ann")
    assert revoked.revoked and revoked.revoked_at is not None
    found = find_admin_key(db, acme_key)
    assert found is not None and found.revoked_at == revoked.revoked_at  # the caller refuses it
    again = revoke_admin_key(db, acme_admin.id, "cli:bob")  # changes nothing
    assert again.revoked_at == revoked.revoked_at
    assert get_admin_key(db, acme_admin.id) == revoked
    with pytest.raises(NotFound, match="admin key 'adk_nope' does not exist"):
        revoke_admin_key(db, "adk_nope", "cli:ann")

    made = audit_entries(db, action="admin_key.create")
    assert {(a.target, a.actor) for a in made} == {
        (root.id, "cli:ann"), (acme_admin.id, "cli:ann"),
        (watcher.id, "cli:bob"), (everyone.id, "cli:bob"),
    }  # fmt: skip
    by_target = {a.target: a for a in made}
    assert by_target[acme_admin.id].old_value is None
    assert by_target[acme_admin.id].new_value == {
        "role": "org_admin", "org_id": acme, "name": None, "prefix": acme_admin.prefix,
    }  # fmt: skip
    (gone,) = audit_entries(db, action="admin_key.revoke")  # once: the second changed nothing
    assert (gone.target, gone.actor) == (acme_admin.id, "cli:ann")
    assert gone.old_value == {"revoked_at": None}
    assert revoked.revoked_at is not None
    assert gone.new_value == {"revoked_at": revoked.revoked_at.isoformat()}
    assert all(acme_admin.key_hash not in str(a.to_json()) for a in audit_entries(db))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"role": "root"}, InvalidInput, "role must be one of: platform_admin, org_admin, viewer"),
        ({"role": "platform_admin", "org": "acme"}, InvalidInput, "is platform-wide"),
        ({"role": "org_admin"}, InvalidInput, "an org_admin needs an org"),
        ({"role": "org_admin", "org": "initech"}, NotFound, "unknown org 'initech'"),
        ({"role": "viewer", "org": "initech"}, NotFound, "unknown org 'initech'"),
        ({"role": "viewer", "org": " "}, InvalidInput, "org name must not be empty"),
        ({"role": "viewer", "name": "a\nb"}, InvalidInput, "control characters"),
        ({"role": "viewer", "actor": " "}, InvalidInput, "actor"),
    ],
)
def test_bad_input_creates_nothing(
    db: Engine, kwargs: dict[str, str], error: type[Exception], message: str
) -> None:
    repo.ensure_org(db, "acme")
    with pytest.raises(error, match=message):
        create_admin_key(db, **{"actor": "cli:ann", **kwargs})
    assert _stored(db) == []
    assert audit_entries(db, action="admin_key.create") == []


def test_a_revoke_with_a_bad_actor_changes_nothing(db: Engine) -> None:
    _, made = create_admin_key(db, role="viewer", actor="cli:ann")
    with pytest.raises(InvalidInput, match="actor"):
        revoke_admin_key(db, made.id, "")
    assert get_admin_key(db, made.id) == made


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def test_migration_0017_up_and_down(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0016")
    assert "admin_keys" not in sa.inspect(engine).get_table_names()
    _migrate_to(engine, "0017")
    repo.ensure_org(engine, "acme")
    _, made = create_admin_key(engine, role="org_admin", org="acme", actor="cli:ann")
    inspector = sa.inspect(engine)
    assert "admin_keys" in inspector.get_table_names()
    assert [fk["referred_table"] for fk in inspector.get_foreign_keys("admin_keys")] == ["orgs"]
    with pytest.raises(sa.exc.IntegrityError):  # the hash is unique
        with engine.begin() as conn:
            conn.execute(admin_keys.insert().values({**_stored(engine)[0], "id": "adk_twin"}))
    _migrate_to(engine, "0016", down=True)
    assert "admin_keys" not in sa.inspect(engine).get_table_names()
    assert repo.get_org_by_name(engine, "acme") is not None  # nothing else touched
    _migrate_to(engine, "head")
    assert list_admin_keys(engine) == [] and made.id.startswith("adk_")
