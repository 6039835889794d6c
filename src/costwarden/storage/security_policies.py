"""Orgs' and keys' security policies in the database: the admin writes and the gateway's feed.

A policy is a layer over the gateway's configured ``[security]`` policy: only the fields it
names (``actions`` per detector, ``min_confidence``, ``flag_confidence``, ``on_timeout``,
``time_budget_ms``; checked by :func:`costwarden.security.policy.parse_layer`). One row per
org (``key_id`` '') and per key; the gateway merges the gateway's, the org's and the key's,
in that order. Every write is one transaction with its audit row, and stamps ``version`` (the
table's max + 1, writers serialized as for switches), so a poller that sees the same
``(count, max version)`` knows nothing changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.core.actors import clean_actor
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.security.policy import parse_layer
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import org_id_by_name
from costwarden.storage.schema import security_policies, virtual_keys
from costwarden.storage.sqltypes import utcnow

POLICY_ACTION = "security.policy.set"
DELETE_ACTION = "security.policy.delete"


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyRecord:
    org_id: str
    key_id: str | None  # None: the org's own layer
    policy: dict[str, Any]
    updated_by: str
    updated_at: datetime
    version: int

    def to_json(self) -> dict[str, Any]:
        return {
            "org_id": self.org_id,
            "key_id": self.key_id,
            "policy": self.policy,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }


def _record(row: Any) -> PolicyRecord:
    return PolicyRecord(
        org_id=row.org_id,
        key_id=row.key_id or None,
        policy=orjson.loads(row.policy),
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        version=row.version,
    )


def _subject(conn: Connection, org: str | None, key_id: str | None) -> str:
    """The org id of the layer's subject: the org named ``org``, or the org of ``key_id``."""
    if key_id is not None:
        owner: str | None = conn.execute(
            sa.select(virtual_keys.c.org_id).where(virtual_keys.c.id == key_id)
        ).scalar_one_or_none()
        if owner is None:
            raise NotFound(f"key {key_id!r} does not exist")
        return owner
    if org is None:
        raise InvalidInput("a security policy is an org's or a key's")
    return org_id_by_name(conn, org)


def put_policy(
    bind: Bind, *, org: str | None, key_id: str | None, raw: Mapping[str, Any], actor: str
) -> PolicyRecord:
    """Set the layer of the org named ``org`` or of key ``key_id``, replacing what was
    there. InvalidInput / NotFound before anything is written."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("a security policy is a JSON object")
    layer = parse_layer(raw)
    who = clean_actor(actor)
    subject = key_id or ""
    with begin_write(bind) as conn:
        org_id = _subject(conn, org, key_id)
        where = (security_policies.c.org_id == org_id) & (security_policies.c.key_id == subject)
        old = conn.execute(sa.select(security_policies.c.policy).where(where)).scalar()
        version = (
            conn.execute(sa.select(sa.func.max(security_policies.c.version))).scalar() or 0
        ) + 1
        values = {
            "policy": orjson.dumps(layer, option=orjson.OPT_SORT_KEYS).decode(),
            "updated_by": who,
            "updated_at": utcnow(),
            "version": version,
        }
        if old is None:
            conn.execute(security_policies.insert().values(org_id=org_id, key_id=subject, **values))
        else:
            conn.execute(security_policies.update().where(where).values(**values))
        target = f"org:{org_id}" + (f":key:{key_id}" if key_id else "")
        record_audit(
            conn, who, POLICY_ACTION, target, None if old is None else orjson.loads(old), layer
        )
        row = conn.execute(sa.select(security_policies).where(where)).one()
    return _record(row)


def delete_policy(bind: Bind, *, org: str | None, key_id: str | None, actor: str) -> bool:
    """Remove a layer (the one under it applies again); False if there was none (nothing
    written). NotFound for an unknown org or key."""
    who = clean_actor(actor)
    subject = key_id or ""
    with begin_write(bind) as conn:
        org_id = _subject(conn, org, key_id)
        where = (security_policies.c.org_id == org_id) & (security_policies.c.key_id == subject)
        old = conn.execute(sa.select(security_policies.c.policy).where(where)).scalar()
        if old is None:
            return False
        conn.execute(security_policies.delete().where(where))
        target = f"org:{org_id}" + (f":key:{key_id}" if key_id else "")
        record_audit(conn, who, DELETE_ACTION, target, orjson.loads(old), None)
    return True


def list_policies(bind: Bind, org: str | None = None) -> list[PolicyRecord]:
    """Every layer, or the org named ``org``'s and its keys' (NotFound for an unknown org)."""
    stmt = sa.select(security_policies).order_by(
        security_policies.c.org_id, security_policies.c.key_id
    )
    with connect_read(bind) as conn:
        if org is not None:
            stmt = stmt.where(security_policies.c.org_id == org_id_by_name(conn, org))
        return [_record(row) for row in conn.execute(stmt)]


def policies_version(bind: Bind) -> tuple[int, int]:
    """(rows, max version): unchanged means no layer changed (a delete changes the count)."""
    stmt = sa.select(sa.func.count(), sa.func.coalesce(sa.func.max(security_policies.c.version), 0))
    with connect_read(bind) as conn:
        count, version = conn.execute(stmt).one()
    return int(count), int(version)


def load_layers(bind: Bind) -> dict[tuple[str, str], dict[str, Any]]:
    """Every layer by ``(org_id, key_id or '')``, for the gateway's policy book."""
    stmt = sa.select(
        security_policies.c.org_id, security_policies.c.key_id, security_policies.c.policy
    )
    with connect_read(bind) as conn:
        return {(row.org_id, row.key_id): orjson.loads(row.policy) for row in conn.execute(stmt)}
