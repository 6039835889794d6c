"""Admin keys: the keys with a role (``dashboard.roles``) that sign in to the dashboard and,
later, the admin API.

Like the virtual keys (``storage.repo``) an admin key is stored only as a SHA-256 hash; its
plaintext (``cwa-`` and 43 random characters, told apart from a virtual key's ``cw-`` at a
glance) is returned once by :func:`create_admin_key` and never again. A key's role and org
fit together (``dashboard.roles.check_scope``): a ``platform_admin`` has no org, an
``org_admin`` has one, a ``viewer`` has one (org-scoped) or none (platform-wide); the org
must exist. Creating and revoking are audited in the audit log (``admin_key.create``,
``admin_key.revoke``), in the transaction that makes the change; the audit rows name the
key's id, role, org and prefix, never its hash.

:func:`find_admin_key` returns a revoked key too (its ``revoked_at`` set): the caller refuses
it, and can say why.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from costwarden.core.actors import clean_actor
from costwarden.core.errors import NotFound
from costwarden.dashboard.roles import Principal, Role, check_scope, parse_role
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import DISPLAY_PREFIX_LEN, clean_name, hash_key, new_id
from costwarden.storage.schema import admin_keys, orgs
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

ADMIN_KEY_PREFIX = "cwa-"
CREATE_ACTION = "admin_key.create"
REVOKE_ACTION = "admin_key.revoke"


@dataclasses.dataclass(frozen=True, slots=True)
class AdminKeyRecord:
    id: str
    key_hash: str
    prefix: str
    name: str | None
    role: Role
    org_id: str | None
    org_name: str | None
    created_at: datetime
    revoked_at: datetime | None
    created_by: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def principal(self) -> Principal:
        """Who signs in with this key (revoked or not: refusing a revoked key is the
        caller's)."""
        return Principal(self.role, self.org_id, self.id, "admin_key")

    def to_json(self) -> dict[str, Any]:
        """For lists and scripts: everything but the hash (and the key, never stored)."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "name": self.name,
            "role": self.role,
            "org_id": self.org_id,
            "org": self.org_name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
            "created_by": self.created_by,
        }


def _select() -> sa.Select[Any]:
    return (
        sa.select(admin_keys, orgs.c.name.label("org_name"))
        .select_from(admin_keys)
        .outerjoin(orgs, orgs.c.id == admin_keys.c.org_id)
    )


def _record(row: Row[Any]) -> AdminKeyRecord:
    return AdminKeyRecord(
        id=row.id,
        key_hash=row.key_hash,
        prefix=row.prefix,
        name=row.name,
        role=parse_role(row.role),
        org_id=row.org_id,
        org_name=row.org_name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        created_by=row.created_by,
    )


def _get(conn: Connection, key_id: str) -> AdminKeyRecord | None:
    row = conn.execute(_select().where(admin_keys.c.id == key_id)).one_or_none()
    return None if row is None else _record(row)


def _org_id(conn: Connection, org: str) -> str:
    """The id of the org whose id or name is ``org``; NotFound if there is none."""
    wanted = clean_name(org, "org")
    found: str | None = conn.execute(
        sa.select(orgs.c.id)
        .where(sa.or_(orgs.c.id == wanted, orgs.c.name == wanted))
        .order_by(sa.case((orgs.c.id == wanted, 0), else_=1))
        .limit(1)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"unknown org {org!r}")
    return found


def _audit_value(record: AdminKeyRecord) -> dict[str, Any]:
    return {
        "role": record.role, "org_id": record.org_id, "name": record.name,
        "prefix": record.prefix,
    }  # fmt: skip


def create_admin_key(
    bind: Bind, *, role: str, org: str | None = None, name: str | None = None, actor: str
) -> tuple[str, AdminKeyRecord]:
    """Create an admin key with ``role`` for org ``org`` (its id or name; None for a
    platform-wide key), made by ``actor``. Returns ``(plaintext, record)``: the plaintext is
    not stored and cannot be shown again.

    InvalidInput for an unknown role, a role and org that do not fit, a bad name or actor;
    NotFound for an org that does not exist.
    """
    checked = parse_role(role)
    check_scope(checked, org)  # before the database is opened
    key_name = None if name is None else clean_name(name, "admin key")
    who = clean_actor(actor)
    plaintext = ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)
    with begin_write(bind) as conn:
        org_id = None if org is None else _org_id(conn, org)
        key_id = new_id("adk")
        now = utcnow()
        conn.execute(
            admin_keys.insert().values(
                id=key_id,
                key_hash=hash_key(plaintext),
                prefix=plaintext[:DISPLAY_PREFIX_LEN],
                name=key_name,
                role=checked,
                org_id=org_id,
                created_at=now,
                revoked_at=None,
                created_by=who,
            )
        )
        record = _get(conn, key_id)
        assert record is not None
        record_audit(conn, who, CREATE_ACTION, key_id, None, _audit_value(record), ts=now)
    logger.info(
        "created admin key %s (%s...), %s of %s", key_id, record.prefix, checked,
        "the platform" if record.org_name is None else f"org {record.org_name}",
    )  # fmt: skip
    return plaintext, record


def find_admin_key(bind: Bind, plaintext: str) -> AdminKeyRecord | None:
    """The admin key ``plaintext`` is, by its hash (revoked ones too: ``revoked_at`` set),
    or None."""
    if not isinstance(plaintext, str) or not plaintext:
        return None
    with connect_read(bind) as conn:
        row = conn.execute(
            _select().where(admin_keys.c.key_hash == hash_key(plaintext))
        ).one_or_none()
    return None if row is None else _record(row)


def get_admin_key(bind: Bind, key_id: str) -> AdminKeyRecord | None:
    """Admin key ``key_id``, or None."""
    with connect_read(bind) as conn:
        return _get(conn, key_id)


def list_admin_keys(bind: Bind, org: str | None = None) -> list[AdminKeyRecord]:
    """Admin keys, oldest first; only org ``org``'s (its id or name; NotFound if unknown)."""
    stmt = _select().order_by(admin_keys.c.created_at, admin_keys.c.id)
    with connect_read(bind) as conn:
        if org is not None:
            stmt = stmt.where(admin_keys.c.org_id == _org_id(conn, org))
        rows = conn.execute(stmt).all()
    return [_record(r) for r in rows]


def revoke_admin_key(bind: Bind, key_id: str, actor: str) -> AdminKeyRecord:
    """Revoke admin key ``key_id`` (audited); revoking a revoked key changes nothing and
    records nothing. NotFound for an unknown key."""
    who = clean_actor(actor)
    with begin_write(bind) as conn:
        now = utcnow()
        changed = conn.execute(
            admin_keys.update()
            .where(admin_keys.c.id == key_id, admin_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        ).rowcount
        record = _get(conn, key_id)
        if record is None:
            raise NotFound(f"admin key {key_id!r} does not exist")
        if changed:
            record_audit(
                conn, who, REVOKE_ACTION, key_id, {"revoked_at": None},
                {"revoked_at": now.isoformat()}, ts=now,
            )  # fmt: skip
    if changed:
        logger.info("revoked admin key %s", key_id)
    return record
