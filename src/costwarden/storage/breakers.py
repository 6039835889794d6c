"""Circuit-breaker history in the database: transitions, and operator resets in the audit log.

Transitions are written by the gateway process that made them, in the background (the
board's writer task calls :func:`record_transitions` in a worker thread); resets are audited
by the admin request that makes them (:func:`audit_reset`). The board reaches both through
:class:`SqlBreakerRecorder`, which the app passes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from costwarden.routing.breaker import Transition
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.schema import breaker_transitions

logger = logging.getLogger(__name__)

RESET_ACTION = "breaker.reset"


@dataclasses.dataclass(frozen=True, slots=True)
class TransitionRecord:
    id: str
    ts: datetime
    deployment: str
    from_state: str
    to_state: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts.isoformat(),
            "deployment": self.deployment,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
        }


_SEQUENCE = itertools.count()


def _transition_id(at: float) -> str:
    """``brk_`` + milliseconds + a sequence number + random bits, in hex: unique, and
    ordered by time (within one process even in the same millisecond)."""
    sequence = next(_SEQUENCE) & 0xFFFF
    return f"brk_{int(at * 1000):012x}{sequence:04x}{secrets.randbits(32):08x}"


def record_transitions(bind: Bind, transitions: Sequence[Transition]) -> None:
    """Append one row per transition, in one transaction."""
    if not transitions:
        return
    rows = [
        {
            "id": _transition_id(t.at),
            "ts": datetime.fromtimestamp(t.at, UTC),
            "deployment": t.deployment,
            "from_state": t.from_state,
            "to_state": t.to_state,
            "reason": t.reason,
        }
        for t in transitions
    ]
    with begin_write(bind) as conn:
        conn.execute(breaker_transitions.insert(), rows)


def list_transitions(
    bind: Bind, *, deployment: str | None = None, limit: int = 100
) -> list[TransitionRecord]:
    """The newest ``limit`` transitions (of one deployment, if given), newest first."""
    stmt = sa.select(breaker_transitions).order_by(
        breaker_transitions.c.ts.desc(), breaker_transitions.c.id.desc()
    )
    if deployment is not None:
        stmt = stmt.where(breaker_transitions.c.deployment == deployment)
    with connect_read(bind) as conn:
        rows = conn.execute(stmt.limit(limit)).all()
    return [
        TransitionRecord(
            id=r.id,
            ts=r.ts,
            deployment=r.deployment,
            from_state=r.from_state,
            to_state=r.to_state,
            reason=r.reason,
        )
        for r in rows
    ]


def audit_reset(bind: Bind, *, actor: str, deployment: str, old: Any, new: Any) -> None:
    """One ``breaker.reset`` row in the audit log (InvalidInput for a bad actor)."""
    with begin_write(bind) as conn:
        record_audit(conn, actor, RESET_ACTION, deployment, old, new)


class SqlBreakerRecorder:
    """These tables as the breaker board's recorder
    (:class:`costwarden.routing.breakers.BreakerRecorder`), bound to one engine."""

    def __init__(self, engine: Bind) -> None:
        self._engine = engine

    def record_transitions(self, transitions: Sequence[Transition]) -> None:
        record_transitions(self._engine, transitions)

    def audit_reset(self, *, actor: str, deployment: str, old: Any, new: Any) -> None:
        audit_reset(self._engine, actor=actor, deployment=deployment, old=old, new=new)
