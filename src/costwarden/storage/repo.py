"""Orgs, projects and virtual keys: the admin-side writes and the key-cache feed.

These functions are for the admin API and the CLI, and for the gateway's background key
cache; none of them is meant to be called on the request path. They take an Engine (each
call is its own transaction) or a Connection (the caller owns the transaction).

Virtual keys are stored only as a SHA-256 hash; the plaintext is returned once by
:func:`create_key` and never again. Every change to a key bumps ``updated_at`` so that the
gateway cache can poll :func:`keys_changed_since` cheaply (``updated_at`` is indexed).
Creation is race-safe: ``ensure_*`` use ``INSERT ... ON CONFLICT DO NOTHING`` so two admins
(or two gateway processes) creating the same org at once both get the same id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import unicodedata
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.records import HONEYPOT_ACTIONS, HoneypotAction, KeyRecord
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.schema import orgs, projects, virtual_keys
from costwarden.storage.sqltypes import ensure_utc, utcnow

logger = logging.getLogger(__name__)

KEY_PREFIX = "cw-"
DISPLAY_PREFIX_LEN = 10
MAX_NAME_LEN = 200


@dataclasses.dataclass(frozen=True, slots=True)
class OrgRecord:
    id: str
    name: str
    created_at: datetime


# --------------------------------------------------------------------------- helpers


def hash_key(key: str) -> str:
    """The stored form of a virtual key: SHA-256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_id(kind: str) -> str:
    """``<kind>_<12 hex>``, e.g. ``org_1a2b3c4d5e6f``."""
    return f"{kind}_{secrets.token_hex(6)}"


def clean_name(value: str | None, what: str) -> str:
    """Strip ``value`` and refuse empty, over-long or control-character names."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} name must be a string")
    name = value.strip()
    if not name:
        raise InvalidInput(f"{what} name must not be empty")
    if len(name) > MAX_NAME_LEN:
        raise InvalidInput(f"{what} name is longer than {MAX_NAME_LEN} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidInput(f"{what} name must not contain control characters")
    return name


def _insert(conn: Connection, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ``on_conflict_do_nothing``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --------------------------------------------------------------------------- orgs, projects


def ensure_org(bind: Bind, name: str) -> tuple[str, bool]:
    """Return ``(org_id, created)`` for the org called ``name``, creating it if needed."""
    name = clean_name(name, "org")
    with begin_write(bind) as conn:
        return _ensure_org(conn, name)


def _ensure_org(conn: Connection, name: str) -> tuple[str, bool]:
    stmt = (
        _insert(conn, orgs)
        .values(id=new_id("org"), name=name, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(orgs.c.id)
    )
    inserted: str | None = conn.execute(stmt).scalar_one_or_none()
    created = inserted is not None
    org_id: str = (
        inserted
        if inserted is not None
        else conn.execute(sa.select(orgs.c.id).where(orgs.c.name == name)).scalar_one()
    )
    if created:
        logger.info("created org %s (%s)", name, org_id)
    return org_id, created


def get_org_by_name(bind: Bind, name: str) -> OrgRecord | None:
    """The org called ``name`` (surrounding whitespace ignored), or None."""
    with connect_read(bind) as conn:
        row = conn.execute(sa.select(orgs).where(orgs.c.name == name.strip())).one_or_none()
    return None if row is None else OrgRecord(row.id, row.name, row.created_at)


def get_org(bind: Bind, org_id: str) -> OrgRecord | None:
    """The org whose id is ``org_id``, or None."""
    with connect_read(bind) as conn:
        row = conn.execute(sa.select(orgs).where(orgs.c.id == org_id)).one_or_none()
    return None if row is None else OrgRecord(row.id, row.name, row.created_at)


def list_orgs(bind: Bind) -> list[OrgRecord]:
    """All orgs, by name."""
    with connect_read(bind) as conn:
        rows = conn.execute(sa.select(orgs).order_by(orgs.c.name)).all()
    return [OrgRecord(r.id, r.name, r.created_at) for r in rows]


def ensure_project(bind: Bind, org_id: str, name: str) -> str:
    """Return the id of project ``name`` in org ``org_id``, creating it if needed."""
    name = clean_name(name, "project")
    with begin_write(bind) as conn:
        return _ensure_project(conn, org_id, name)


def _ensure_project(conn: Connection, org_id: str, name: str) -> str:
    if conn.execute(sa.select(orgs.c.id).where(orgs.c.id == org_id)).first() is None:
        raise NotFound(f"org {org_id!r} does not exist")
    stmt = (
        _insert(conn, projects)
        .values(id=new_id("proj"), org_id=org_id, name=name, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["org_id", "name"])
        .returning(projects.c.id)
    )
    inserted: str | None = conn.execute(stmt).scalar_one_or_none()
    created = inserted is not None
    project_id: str = (
        inserted
        if inserted is not None
        else conn.execute(
            sa.select(projects.c.id).where(projects.c.org_id == org_id, projects.c.name == name)
        ).scalar_one()
    )
    if created:
        logger.info("created project %s (%s) in org %s", name, project_id, org_id)
    return project_id


# --------------------------------------------------------------------------- keys


def _key_select() -> sa.Select[Any]:
    return (
        sa.select(
            virtual_keys,
            orgs.c.name.label("org_name"),
            projects.c.name.label("project_name"),
        )
        .select_from(virtual_keys)
        .join(orgs, orgs.c.id == virtual_keys.c.org_id)
        .outerjoin(projects, projects.c.id == virtual_keys.c.project_id)
    )


def _key_record(row: Row[Any]) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        key_hash=row.key_hash,
        prefix=row.prefix,
        org_id=row.org_id,
        org_name=row.org_name,
        project_id=row.project_id,
        project_name=row.project_name,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        session_clean_stop=bool(row.session_clean_stop),
        session_budget_note=bool(row.session_budget_note),
        honeypot=bool(row.honeypot),
        honeypot_action=row.honeypot_action,
    )


def _get_key(conn: Connection, key_id: str) -> KeyRecord | None:
    row = conn.execute(_key_select().where(virtual_keys.c.id == key_id)).one_or_none()
    return None if row is None else _key_record(row)


def create_key(
    bind: Bind,
    *,
    org: str,
    project: str | None = None,
    name: str | None = None,
    create_org: bool = True,
    session_clean_stop: bool = False,
    session_budget_note: bool = False,
    honeypot: bool = False,
    honeypot_action: str | None = None,
) -> tuple[str, KeyRecord]:
    """Create a virtual key for org ``org`` (by name), optionally scoped to a project.

    Returns ``(plaintext_key, record)``; the plaintext is not stored and cannot be shown
    again. The project is created if it does not exist; the org only if ``create_org``
    (otherwise an unknown org raises NotFound).

    ``honeypot``: a key made like any other (same form, listed with the others, marked),
    which the gateway answers exactly as an unknown key and whose use raises a critical
    alert; ``honeypot_action`` (honeypot keys only, :func:`check_honeypot`) what else it
    does: ``alert`` (the default) or ``switch_off_org``.
    """
    action = check_honeypot(honeypot, honeypot_action)
    org_name = clean_name(org, "org")
    project_name = None if project is None else clean_name(project, "project")
    key_name = None if name is None else clean_name(name, "key")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    with begin_write(bind) as conn:
        if create_org:
            org_id, _ = _ensure_org(conn, org_name)
        else:
            found: str | None = conn.execute(
                sa.select(orgs.c.id).where(orgs.c.name == org_name)
            ).scalar_one_or_none()
            if found is None:
                raise NotFound(f"org {org_name!r} does not exist")
            org_id = found
        project_id = None if project_name is None else _ensure_project(conn, org_id, project_name)
        key_id = new_id("key")
        now = utcnow()
        conn.execute(
            virtual_keys.insert().values(
                id=key_id,
                key_hash=hash_key(plaintext),
                prefix=plaintext[:DISPLAY_PREFIX_LEN],
                org_id=org_id,
                project_id=project_id,
                name=key_name,
                created_at=now,
                revoked_at=None,
                updated_at=now,
                session_clean_stop=session_clean_stop,
                session_budget_note=session_budget_note,
                honeypot=honeypot,
                honeypot_action=action,
            )
        )
        record = _get_key(conn, key_id)
    assert record is not None
    logger.info(
        "created %s %s (%s...) for org %s",
        "honeypot key" if honeypot else "key", key_id, record.prefix, org_name,
    )  # fmt: skip
    return plaintext, record


def check_honeypot(honeypot: object, action: object) -> HoneypotAction:
    """The ``honeypot_action`` to store; InvalidInput for a honeypot flag that is no boolean,
    an unknown action, or an action given for a key that is no honeypot."""
    if not isinstance(honeypot, bool):
        raise InvalidInput("honeypot must be true or false")
    if action is None:
        return "alert"
    if not honeypot:
        raise InvalidInput("honeypot_action is for honeypot keys only")
    for known in HONEYPOT_ACTIONS:
        if action == known:
            return known
    raise InvalidInput(f"honeypot_action must be one of: {', '.join(HONEYPOT_ACTIONS)}")


def revoke_key(bind: Bind, key_id: str) -> KeyRecord:
    """Revoke key ``key_id``; revoking an already revoked key changes nothing."""
    with begin_write(bind) as conn:
        now = utcnow()
        conn.execute(
            virtual_keys.update()
            .where(virtual_keys.c.id == key_id, virtual_keys.c.revoked_at.is_(None))
            .values(revoked_at=now, updated_at=now)
        )
        record = _get_key(conn, key_id)
    if record is None:
        raise NotFound(f"key {key_id!r} does not exist")
    logger.info("revoked key %s", key_id)
    return record


KEY_OPTIONS = ("session_clean_stop", "session_budget_note")


def set_key_options(bind: Bind, key_id: str, options: dict[str, bool]) -> KeyRecord:
    """Set some of a key's :data:`KEY_OPTIONS`; every gateway applies them at its next key
    poll (``updated_at`` moves). NotFound for an unknown key."""
    unknown = set(options) - set(KEY_OPTIONS)
    if unknown:
        raise InvalidInput(f"unknown key option(s): {', '.join(sorted(unknown))}")
    if any(not isinstance(v, bool) for v in options.values()):
        raise InvalidInput("key options are true or false")
    with begin_write(bind) as conn:
        if options:
            conn.execute(
                virtual_keys.update()
                .where(virtual_keys.c.id == key_id)
                .values(**options, updated_at=utcnow())
            )
        record = _get_key(conn, key_id)
    if record is None:
        raise NotFound(f"key {key_id!r} does not exist")
    return record


def org_names(bind: Bind) -> dict[str, str]:
    """{org id: name} of every org."""
    with connect_read(bind) as conn:
        return {row.id: row.name for row in conn.execute(sa.select(orgs.c.id, orgs.c.name))}


def named(names: dict[str, str], org: str) -> str:
    """The id of the org called ``org`` (surrounding blanks ignored) in ``names`` (from
    :func:`org_names`); NotFound if there is none."""
    wanted = org.strip()
    for org_id, name in names.items():
        if name == wanted:
            return org_id
    raise NotFound(f"unknown org {org!r}")


def org_id_by_name(conn: Connection, org: str) -> str:
    """The id of org ``org``; NotFound if there is none."""
    org_id: str | None = conn.execute(
        sa.select(orgs.c.id).where(orgs.c.name == org.strip())
    ).scalar_one_or_none()
    if org_id is None:
        raise NotFound(f"unknown org {org!r}")
    return org_id


def list_keys(bind: Bind, org: str | None = None) -> list[KeyRecord]:
    """Keys, oldest first; only org ``org``'s (by name) if given (NotFound if unknown)."""
    stmt = _key_select().order_by(virtual_keys.c.created_at, virtual_keys.c.id)
    with connect_read(bind) as conn:
        if org is not None:
            stmt = stmt.where(virtual_keys.c.org_id == org_id_by_name(conn, org))
        rows = conn.execute(stmt).all()
    return [_key_record(r) for r in rows]


def keys_changed_since(bind: Bind, since: datetime | None) -> list[KeyRecord]:
    """Keys created or changed at or after ``since`` (all keys when None), oldest change first.

    For the gateway's key cache. ``updated_at`` is written with the clock of whichever
    process made the change, and a change becomes visible only when its transaction commits,
    so a poller should pass ``since`` a few seconds *before* the start of its previous poll:
    the overlap costs a few repeated rows, which are idempotent for a cache.
    """
    stmt = _key_select().order_by(virtual_keys.c.updated_at, virtual_keys.c.id)
    if since is not None:
        stmt = stmt.where(virtual_keys.c.updated_at >= ensure_utc(since, "since"))
    with connect_read(bind) as conn:
        rows = conn.execute(stmt).all()
    return [_key_record(r) for r in rows]
