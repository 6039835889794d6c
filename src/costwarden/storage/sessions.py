"""Agent sessions in the database: their state, each transition, their usage, escalations.

- A session that never left ``active`` has no row: its usage is its ledger rows
  (:func:`usage`, summed on ``ix_ledger_org_id_session_id``), its state the default.
- :func:`record_transition` stores a transition of ``sessions.lifecycle`` by compare-and-set
  on the row's ``version`` (the first one inserts the row): of two processes moving one
  session at once, one wins and the other is told (None), re-reads and decides again. The
  transition is kept in ``session_transitions`` in the same transaction.
- Escalations are opened with their evidence and resolved once: resolving an unknown one is
  NotFound, one already resolved Conflict, and an org's caller cannot reach another org's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.budgets.limits import LimitBook, Principal, format_amount
from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.core.money import usd_to_nanos
from costwarden.sessions.lifecycle import (
    STATES,
    SessionState,
    Standing,
    Transition,
    new_escalation_id,
    on_resolved,
)
from costwarden.storage.alert_records import new_alert_id
from costwarden.storage.db import Bind, begin_write, connect_read, money_sum
from costwarden.storage.policy import set_limits
from costwarden.storage.repo import org_names
from costwarden.storage.schema import agent_sessions, escalations, ledger, session_transitions
from costwarden.storage.sqltypes import utcnow

EscalationStatus = Literal["open", "approved", "denied"]
_c = ledger.c


@dataclasses.dataclass(frozen=True, slots=True)
class SessionRow:
    org_id: str
    session_id: str
    standing: Standing
    version: int
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class SessionUsage:
    started: datetime
    last_seen: datetime
    requests: int
    input_tokens: int
    output_tokens: int
    spend_usd: Decimal
    key_id: str | None = None  # the key (and project) of its latest request
    project_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Escalation:
    id: str
    org_id: str
    session_id: str
    reason: str
    evidence: Mapping[str, Any]
    status: EscalationStatus
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    note: str | None = None
    extra_budget_usd: Decimal | None = None


def _when(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _row(row: Any) -> SessionRow:
    state = row.state if row.state in STATES else "active"
    wake = row.wake_at.timestamp() if row.wake_at is not None else None
    standing = Standing(cast(SessionState, state), None, wake, row.escalation_id)
    return SessionRow(row.org_id, row.session_id, standing, row.version, row.updated_at)


def session_of(bind: Bind, org_id: str, session_id: str) -> SessionRow | None:
    t = agent_sessions.c
    with connect_read(bind) as conn:
        row = conn.execute(
            sa.select(agent_sessions).where(t.org_id == org_id, t.session_id == session_id)
        ).first()
    return None if row is None else _row(row)


def sessions_not_active(
    bind: Bind, *, tenant: str | None = None, states: tuple[str, ...] | None = None
) -> list[SessionRow]:
    """Every session whose state is not ``active`` (what a process loads at start-up), of
    one org (``tenant``), in some ``states``."""
    t = agent_sessions.c
    stmt = sa.select(agent_sessions).where(t.state != "active")
    if tenant is not None:
        stmt = stmt.where(t.org_id == tenant)
    if states is not None:
        stmt = stmt.where(t.state.in_(states))
    with connect_read(bind) as conn:
        rows = conn.execute(stmt.order_by(t.updated_at.desc())).all()
    return [_row(row) for row in rows]


def due_to_wake(bind: Bind, now: float) -> list[SessionRow]:
    """The sleeping sessions whose wake_at has come."""
    t = agent_sessions.c
    with connect_read(bind) as conn:
        rows = conn.execute(
            sa.select(agent_sessions).where(t.state == "sleeping", t.wake_at <= _when(now))
        ).all()
    return [_row(row) for row in rows]


def record_transition(
    bind: Bind,
    org_id: str,
    session_id: str,
    moved: Transition,
    *,
    version: int | None,
    actor: str,
) -> SessionRow | None:
    """Store ``moved`` if the session's row is still at ``version`` (None: it has no row
    yet); the row as now stored, or None if another writer moved the session first."""
    after = moved.after
    at = _when(moved.at) or utcnow()
    values = {
        "state": after.state,
        "wake_at": _when(after.wake_at),
        "escalation_id": after.escalation,
        "updated_at": at,
    }
    t = agent_sessions.c
    with begin_write(bind) as conn:
        if version is None:
            if _exists(conn, org_id, session_id):
                return None
            conn.execute(
                agent_sessions.insert().values(
                    org_id=org_id, session_id=session_id, version=1, **values
                )
            )
            stored = 1
        else:
            changed = conn.execute(
                agent_sessions.update()
                .where(t.org_id == org_id, t.session_id == session_id, t.version == version)
                .values(version=version + 1, **values)
            ).rowcount
            if not changed:
                return None
            stored = version + 1
        conn.execute(
            session_transitions.insert().values(
                id=new_alert_id("str"), org_id=org_id, session_id=session_id,
                before=moved.before, after=after.state, cause=moved.cause, at=at,
                wake_at=values["wake_at"], escalation_id=after.escalation, actor=actor,
            )
        )  # fmt: skip
    return SessionRow(org_id, session_id, after, stored, at)


def _exists(conn: Connection, org_id: str, session_id: str) -> bool:
    t = agent_sessions.c
    found = conn.execute(
        sa.select(t.version).where(t.org_id == org_id, t.session_id == session_id)
    ).first()
    return found is not None


def transitions_of(bind: Bind, org_id: str, session_id: str) -> list[dict[str, Any]]:
    """The session's transitions, oldest first."""
    t = session_transitions.c
    with connect_read(bind) as conn:
        rows = conn.execute(
            sa.select(session_transitions)
            .where(t.org_id == org_id, t.session_id == session_id)
            .order_by(t.at, t.id)
        ).mappings()
        return [dict(row) for row in rows]


def usage(bind: Bind, org_id: str, session_id: str) -> SessionUsage | None:
    """The session's use as its ledger rows add up (None before its first request)."""
    stmt = sa.select(
        sa.func.min(_c.ts), sa.func.max(_c.ts), sa.func.count(),
        sa.func.coalesce(sa.func.sum(_c.input_tokens), 0),
        sa.func.coalesce(sa.func.sum(_c.output_tokens), 0), money_sum(_c.cost_usd),
    ).where(_c.org_id == org_id, _c.session_id == session_id)  # fmt: skip
    latest = (
        sa.select(_c.key_id, _c.project_id)
        .where(_c.org_id == org_id, _c.session_id == session_id)
        .order_by(_c.ts.desc())
        .limit(1)
    )
    with connect_read(bind) as conn:
        first, last, requests, tokens_in, tokens_out, spend = conn.execute(stmt).one()
        who = conn.execute(latest).first()
    if not requests or who is None:
        return None
    return SessionUsage(
        first, last, int(requests), int(tokens_in), int(tokens_out), Decimal(spend or 0),
        who.key_id, who.project_id,
    )  # fmt: skip


# ------------------------------------------------------------------ escalations


def _escalation(row: Any) -> Escalation:
    extra = row.extra_budget_usd
    return Escalation(
        id=row.id, org_id=row.org_id, session_id=row.session_id, reason=row.reason,
        evidence=orjson.loads(row.evidence), status=row.status, created_at=row.created_at,
        resolved_at=row.resolved_at, resolved_by=row.resolved_by, note=row.note,
        extra_budget_usd=None if extra is None else Decimal(extra),
    )  # fmt: skip


def open_escalation(
    bind: Bind,
    org_id: str,
    session_id: str,
    reason: str,
    evidence: Mapping[str, Any],
    now: float,
    escalation_id: str | None = None,
) -> Escalation:
    escalation = Escalation(
        id=escalation_id or new_escalation_id(), org_id=org_id, session_id=session_id,
        reason=reason,
        evidence=dict(evidence), status="open", created_at=_when(now) or utcnow(),
    )  # fmt: skip
    with begin_write(bind) as conn:
        conn.execute(
            escalations.insert().values(
                id=escalation.id, org_id=org_id, session_id=session_id, reason=reason,
                evidence=orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS).decode(),
                status="open", created_at=escalation.created_at,
            )
        )  # fmt: skip
    return escalation


def escalation_of(bind: Bind, escalation_id: str, tenant: str | None = None) -> Escalation:
    """One escalation (NotFound if unknown, or another org's than ``tenant``)."""
    with connect_read(bind) as conn:
        row = conn.execute(
            sa.select(escalations).where(escalations.c.id == escalation_id)
        ).first()
    if row is None or (tenant is not None and row.org_id != tenant):
        raise NotFound(f"no escalation {escalation_id!r}")
    return _escalation(row)


def list_escalations(
    bind: Bind, *, tenant: str | None = None, status: EscalationStatus | None = None
) -> list[Escalation]:
    """Escalations, newest first: of one org (``tenant``) or every org, of one status."""
    t = escalations.c
    stmt = sa.select(escalations).order_by(t.created_at.desc(), t.id.desc())
    if tenant is not None:
        stmt = stmt.where(t.org_id == tenant)
    if status is not None:
        stmt = stmt.where(t.status == status)
    with connect_read(bind) as conn:
        return [_escalation(row) for row in conn.execute(stmt)]


def resolve_escalation(
    bind: Bind,
    escalation_id: str,
    *,
    approved: bool,
    by: str,
    note: str | None,
    extra_budget_usd: Decimal | None,
    now: float,
    tenant: str | None = None,
) -> Escalation:
    """Approve (with extra budget, maybe) or deny an open escalation, once: NotFound for an
    unknown one (or another org's), Conflict for one already resolved, InvalidInput for a
    negative extra budget or one on a denial; nothing changed then."""
    t = escalations.c
    status: EscalationStatus = "approved" if approved else "denied"
    with begin_write(bind) as conn:
        row = conn.execute(
            sa.select(escalations).where(t.id == escalation_id).with_for_update()
        ).first()
        if row is None or (tenant is not None and row.org_id != tenant):
            raise NotFound(f"no escalation {escalation_id!r}")
        extra = extra_budget_usd
        if extra is not None and (not extra.is_finite() or extra < 0):
            raise InvalidInput(f"extra_budget_usd must be a positive amount, got {extra}")
        if extra is not None and not approved:
            raise InvalidInput("extra_budget_usd goes with an approval, not a denial")
        if row.status != "open":
            raise Conflict(f"escalation {escalation_id} is already {row.status}")
        conn.execute(
            escalations.update().where(t.id == escalation_id, t.status == "open").values(
                status=status, resolved_at=_when(now), resolved_by=by, note=note,
                extra_budget_usd=extra_budget_usd,
            )
        )  # fmt: skip
        resolved = conn.execute(sa.select(escalations).where(t.id == escalation_id)).one()
    return _escalation(resolved)


def settle_escalation(
    bind: Bind,
    escalation_id: str,
    *,
    approved: bool,
    by: str,
    note: str | None,
    extra_budget_usd: Decimal | None,
    now: float,
    tenant: str | None = None,
) -> tuple[Escalation, SessionRow | None, Transition | None]:
    """Resolve the escalation (:func:`resolve_escalation`: once), then move its paused
    session on or end it, by compare-and-set (read again if another writer came first):
    (the escalation, the session's row, the transition stored or None). Whoever resolves --
    the admin API, the CLI -- publishes the transition; every gateway's board follows it."""
    resolved = resolve_escalation(
        bind, escalation_id, approved=approved, by=by, note=note,
        extra_budget_usd=extra_budget_usd, now=now, tenant=tenant,
    )  # fmt: skip
    key = (resolved.org_id, resolved.session_id)
    for _ in range(_CAS_TRIES):
        row = session_of(bind, *key)
        moved = on_resolved(Standing() if row is None else row.standing, resolved.id, approved, now)
        if moved is None:
            return resolved, row, None
        version = None if row is None else row.version
        stored = record_transition(bind, *key, moved, version=version, actor=by)
        if stored is not None:
            return resolved, stored, moved
    return resolved, session_of(bind, *key), None


_CAS_TRIES = 5


class SqlSessionStore:
    """The session board's store (``sessions.board.SessionStore``) in the database."""

    def __init__(self, bind: Bind, actor: str = "gateway") -> None:
        self._bind = bind
        self._actor = actor

    def load(self) -> list[tuple[tuple[str, str], Standing, int]]:
        return [
            ((row.org_id, row.session_id), row.standing, row.version)
            for row in sessions_not_active(self._bind)
        ]

    def get(self, key: tuple[str, str]) -> tuple[Standing, int] | None:
        row = session_of(self._bind, *key)
        return None if row is None else (row.standing, row.version)

    def record(self, key: tuple[str, str], moved: Transition, version: int | None) -> int | None:
        row = record_transition(self._bind, *key, moved, version=version, actor=self._actor)
        return None if row is None else row.version

    def open_escalation(
        self, key: tuple[str, str], escalation_id: str, reason: str,
        evidence: Mapping[str, Any], now: float,
    ) -> None:  # fmt: skip
        open_escalation(self._bind, *key, reason, evidence, now, escalation_id)


def raise_session_budgets(
    bind: Bind, book: LimitBook, org_id: str, session_id: str, extra_usd: Decimal
) -> dict[str, str]:
    """Each USD budget of the session (its own limit, or its tier's default) raised by
    ``extra_usd``, stored as a limit on the session itself: {limit name: new amount}; {}
    when the session has no USD budget."""
    used = usage(bind, org_id, session_id)
    principal = Principal(
        org_id, None if used is None else used.project_id,
        "" if used is None or used.key_id is None else used.key_id, None, session_id,
    )  # fmt: skip
    amounts = {
        limit.name: format_amount("usd", limit.amount + usd_to_nanos(extra_usd))
        for limit in book.applicable(principal)
        if limit.scope == "session" and limit.metric == "usd" and not limit.rolling
        and limit.amount >= 0
    }  # fmt: skip
    if amounts:
        name = org_names(bind)[org_id]
        set_limits(bind, org=name, scope="session", subject=session_id, amounts=amounts)
    return amounts
