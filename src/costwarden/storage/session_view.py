"""One agent session as its readers see it: the admin API's view and the agent's own
(``GET /v1/costwarden/session/{id}``) are this one function, so they agree.

Everything comes from what every process shares, never one process's memory: the state,
``wake_at`` and open escalation from ``agent_sessions`` (stored by compare-and-set), usage
from the ledger, and the session's budgets from the counters the gateway enforces with (in
this process, or Redis) -- so the view is the same from any process and after a restart.
``budget_pct`` is the largest share spent (settled) of the session's budgets (not its rate
limits), to 0.01, rounded down.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from costwarden.budgets.limits import LimitBook, Principal
from costwarden.budgets.policy import checks_for
from costwarden.budgets.status import LimitStatus, statuses_of
from costwarden.budgets.store import CounterStore
from costwarden.budgets.windows import zone
from costwarden.sessions.lifecycle import Standing
from costwarden.storage.db import Bind
from costwarden.storage.sessions import Escalation, SessionUsage, escalation_of, session_of, usage
from costwarden.storage.sqltypes import money_str


@dataclasses.dataclass(frozen=True, slots=True)
class SessionView:
    org_id: str
    session_id: str
    standing: Standing
    usage: SessionUsage | None
    budgets: list[LimitStatus]
    escalation: Escalation | None

    @property
    def key_id(self) -> str | None:
        return None if self.usage is None else self.usage.key_id

    @property
    def budget_pct(self) -> Decimal | None:
        shares = [
            (Decimal(s.spent) * 100 / s.limit.amount).quantize(Decimal("0.01"), ROUND_FLOOR)
            for s in self.budgets
            if not s.limit.rolling and s.limit.amount > 0
        ]
        return max(shares) if shares else None

    def to_json(self) -> dict[str, Any]:
        standing, used = self.standing, self.usage
        wake = standing.wake_at
        pct = self.budget_pct
        return {
            "session_id": self.session_id,
            "org_id": self.org_id,
            "key_id": self.key_id,
            "state": standing.state,
            "budget_pct": None if pct is None else str(pct),
            "wake_at": None if wake is None else datetime.fromtimestamp(wake, UTC).isoformat(),
            "budgets": [s.to_json() for s in self.budgets],
            "started": None if used is None else used.started.isoformat(),
            "last_seen": None if used is None else used.last_seen.isoformat(),
            "requests": 0 if used is None else used.requests,
            "input_tokens": 0 if used is None else used.input_tokens,
            "output_tokens": 0 if used is None else used.output_tokens,
            "spend_usd": "0" if used is None else money_str(used.spend_usd),
            "escalation": None if self.escalation is None else escalation_json(self.escalation),
        }


def escalation_json(e: Escalation) -> dict[str, Any]:
    return {
        "id": e.id,
        "org_id": e.org_id,
        "session_id": e.session_id,
        "reason": e.reason,
        "evidence": dict(e.evidence),
        "status": e.status,
        "created_at": e.created_at.isoformat(),
        "resolved_at": None if e.resolved_at is None else e.resolved_at.isoformat(),
        "resolved_by": e.resolved_by,
        "note": e.note,
        "extra_budget_usd": (
            None if e.extra_budget_usd is None else money_str(e.extra_budget_usd)
        ),
    }


async def session_view(
    bind: Bind,
    book: LimitBook,
    store: CounterStore,
    tz_name: str,
    org_id: str,
    session_id: str,
    now: float,
) -> SessionView | None:
    """The session ``session_id`` of org ``org_id``; None if it never sent a request and
    has no stored state."""
    used = await asyncio.to_thread(usage, bind, org_id, session_id)
    row = await asyncio.to_thread(session_of, bind, org_id, session_id)
    if used is None and row is None:
        return None
    standing = Standing() if row is None else row.standing
    budgets: list[LimitStatus] = []
    if used is not None and used.key_id is not None:
        principal = Principal(org_id, used.project_id, used.key_id, None, session_id)
        checks = [
            c for c in checks_for(book.applicable(principal), now, zone(tz_name))
            if c.limit.scope == "session"
        ]  # fmt: skip
        budgets = statuses_of(checks, await store.views(checks, now))
    escalation = None
    if standing.escalation is not None:
        escalation = await asyncio.to_thread(escalation_of, bind, standing.escalation, org_id)
    return SessionView(org_id, session_id, standing, used, budgets, escalation)
