"""The audit log: who changed what, when, from which value to which.

Operator actions that change how the gateway behaves (kill switch and feature toggles, and
later breaker resets and fallback-chain edits) record one row each with
:func:`record_audit`, *inside the transaction that makes the change*: the change and its
audit row commit together or not at all, so the log can never miss a change nor record one
that did not happen.

Values are stored as compact JSON text (sorted keys, so equal values are equal text); None
means "no value" (e.g. the old value of something set for the first time).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import unicodedata
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from costwarden.core.actors import clean_actor
from costwarden.core.errors import InvalidInput, StorageError
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import audit_log
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

DEFAULT_AUDIT_LIMIT = 100
MAX_AUDIT_LIMIT = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRecord:
    id: str
    ts: datetime
    actor: str
    action: str
    target: str
    old_value: Any  # decoded JSON, None when there was none
    new_value: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "old_value": self.old_value,
            "new_value": self.new_value,
        }


def new_audit_id() -> str:
    """``aud_`` + milliseconds + random bits, in hex: unique, and ordered by time."""
    return f"aud_{time.time_ns() // 1_000_000:012x}{secrets.randbits(48):012x}"


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except TypeError as exc:  # a caller's bug, not the operator's: say what could not be stored
        raise InvalidInput(f"audit value is not JSON-serializable: {exc}") from None


def _loads(text: str | None, entry_id: str) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise StorageError(f"audit entry {entry_id} holds unreadable JSON") from None


def record_audit(
    conn: Connection,
    actor: str,
    action: str,
    target: str,
    old: Any,
    new: Any,
    *,
    ts: datetime | None = None,
) -> AuditRecord:
    """Append one audit row in the caller's transaction (``conn``); returns it.

    ``old`` and ``new`` are JSON-serializable values (None: no value); ``ts`` defaults to
    now (pass the change's own timestamp so both agree). Raises InvalidInput for an empty
    actor, action or target, which aborts the caller's transaction.
    """
    who = clean_actor(actor)
    for what, value in (("action", action), ("target", target)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"audit {what} must be a non-empty string")
    record = AuditRecord(
        id=new_audit_id(),
        ts=utcnow() if ts is None else ts,
        actor=who,
        action=action.strip(),
        target=target.strip(),
        old_value=old,
        new_value=new,
    )
    conn.execute(
        audit_log.insert().values(
            id=record.id,
            ts=record.ts,
            actor=record.actor,
            action=record.action,
            target=record.target,
            old_value=_dumps(old),
            new_value=_dumps(new),
        )
    )
    logger.debug(
        "audit: %s %s %s: %s -> %s",
        record.actor,
        record.action,
        record.target,
        _dumps(old),
        _dumps(new),
    )
    return record


def parse_limit(value: Any) -> int:
    """An audit page size from an operator (text or int): 1..MAX_AUDIT_LIMIT, else InvalidInput."""
    if isinstance(value, bool):
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_AUDIT_LIMIT}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"limit must be an integer from 1 to {MAX_AUDIT_LIMIT}, got {value!r}"
        ) from None
    if not 1 <= number <= MAX_AUDIT_LIMIT:
        raise InvalidInput(f"limit must be from 1 to {MAX_AUDIT_LIMIT}, got {number}")
    return number


def _from_row(row: Row[Any]) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        ts=row.ts,
        actor=row.actor,
        action=row.action,
        target=row.target,
        old_value=_loads(row.old_value, row.id),
        new_value=_loads(row.new_value, row.id),
    )


def audit_entries(
    engine: Bind, *, limit: int = DEFAULT_AUDIT_LIMIT, action: str | None = None
) -> list[AuditRecord]:
    """The newest ``limit`` audit entries (of ``action`` only, if given), newest first."""
    count = parse_limit(limit)
    stmt = sa.select(audit_log).order_by(audit_log.c.ts.desc(), audit_log.c.id.desc())
    if action is not None:
        if not isinstance(action, str) or not action.strip():
            raise InvalidInput("action must be a non-empty string")
        if any(unicodedata.category(ch) == "Cc" for ch in action.strip()):
            raise InvalidInput("action must not contain control characters")
        stmt = stmt.where(audit_log.c.action == action.strip())
    with connect_read(engine) as conn:
        rows = conn.execute(stmt.limit(count)).all()
    return [_from_row(r) for r in rows]
