"""An alert's life: ``firing -> acknowledged -> resolved``, snoozes, and whether it delivers.

Pure policy over data, tested like the breaker: the storage layer loads an alert's row, asks
:func:`apply` what an action makes of it, and stores the result with its audit row in one
transaction.

- An alert is raised **firing**. Someone **acknowledges** it (it stays open, but people know);
  it is **resolved** by an operator, when its window resets, or when its condition clears.
  Resolved is final: the same rule, scope and threshold in the next window is a new alert (a
  new row: alerts are unique per (rule, scope, window, threshold)).
- **Snooze** holds an open alert's deliveries until the given time; it changes no state. A
  snooze in the past, or ``None``, lifts it.
- Actions that change nothing (acknowledging an acknowledged alert) are refused, so the audit
  trail records only what happened.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Literal

from costwarden.alerts.model import AlertState
from costwarden.core.errors import Conflict, InvalidInput

Action = Literal["acknowledge", "snooze", "resolve"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "snooze", "resolve")
OPEN_STATES: frozenset[AlertState] = frozenset({"firing", "acknowledged"})


@dataclasses.dataclass(frozen=True, slots=True)
class AlertStatus:
    """The part of an alert's row that actions change."""

    state: AlertState
    snoozed_until: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


def apply(
    status: AlertStatus,
    action: Action,
    *,
    actor: str,
    now: datetime,
    until: datetime | None = None,
) -> AlertStatus:
    """What ``action`` by ``actor`` at ``now`` makes of ``status``.

    Raises Conflict for an action the state does not allow (acknowledging a resolved alert)
    and InvalidInput for an unknown action or a snooze without an end."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    if status.state not in OPEN_STATES:
        raise Conflict(f"the alert is {status.state}: nothing to {action}")
    if action == "acknowledge":
        if status.state == "acknowledged":
            raise Conflict(f"the alert was already acknowledged by {status.acknowledged_by}")
        return dataclasses.replace(
            status, state="acknowledged", acknowledged_by=actor, acknowledged_at=now
        )
    if action == "snooze":
        if until is None:
            raise InvalidInput("a snooze needs an end time (until)")
        return dataclasses.replace(status, snoozed_until=until if until > now else None)
    return dataclasses.replace(
        status, state="resolved", resolved_at=now, resolved_by=actor, snoozed_until=None
    )


def delivers(status: AlertStatus, now: datetime) -> bool:
    """Whether a pending delivery of this alert may go out now: open and not snoozed."""
    if status.state not in OPEN_STATES:
        return False
    return status.snoozed_until is None or status.snoozed_until <= now
