"""Rules: what an event makes an alert of. Pure functions over events and data.

An :class:`AlertDraft` is an alert before it is stored. Its ``dedupe_key`` names the rule, the
scope, the window instance and the threshold: the database keeps one alert per key (a unique
constraint), so a draft raised by several processes, or again after a restart, fires once.

**Threshold** alerts come from ``limit_threshold_crossed`` events (raised by the budgets after
a settle moves a limit's use, settled plus in flight, past 50, 80 or 100 %). Severity grows with
the share: below 80 % ``info``, below 100 % ``warning``, at 100 % ``critical``. The alert
resolves itself when the window resets (``resolves_at``); a lifetime limit's alert stays open
until someone resolves it.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from costwarden.alerts.model import Severity
from costwarden.core.event_kinds import LimitThresholdCrossed

THRESHOLD_RULE = "limit-threshold"


@dataclasses.dataclass(frozen=True, slots=True)
class AlertDraft:
    """An alert about to be raised (see the module docstring)."""

    dedupe_key: str
    kind: str
    rule: str
    severity: Severity
    title: str
    window_key: str
    org_id: str | None = None
    scope: str | None = None
    scope_id: str | None = None
    threshold_pct: int | None = None
    resolves_at: datetime | None = None
    # What the message shows beyond the columns: limit, spent, percent, resets_at, ...
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


def severity_of(threshold_pct: int) -> Severity:
    if threshold_pct >= 100:
        return "critical"
    if threshold_pct >= 80:
        return "warning"
    return "info"


def threshold_alert(event: LimitThresholdCrossed) -> AlertDraft:
    """The alert of a threshold crossing."""
    scope_id = event.scope_id or "-"
    limit_name = f"{event.window} {event.metric}"
    key = "|".join(
        (
            THRESHOLD_RULE,
            event.org_id or "platform",
            event.scope,
            scope_id,
            event.metric,
            event.window,
            event.window_key,
            str(event.threshold_pct),
        )
    )
    who = event.scope if not event.scope_id else f"{event.scope} {event.scope_id}"
    title = f"{who}: {event.threshold_pct}% of its {limit_name} limit used"
    resolves_at = datetime.fromisoformat(event.resets_at) if event.resets_at else None
    return AlertDraft(
        dedupe_key=key,
        kind="threshold",
        rule=THRESHOLD_RULE,
        severity=severity_of(event.threshold_pct),
        title=title,
        window_key=event.window_key,
        org_id=event.org_id,
        scope=event.scope,
        scope_id=event.scope_id,
        threshold_pct=event.threshold_pct,
        resolves_at=resolves_at,
        detail={
            "limit_name": limit_name,
            "metric": event.metric,
            "spent": event.used,
            "limit": event.limit,
            "percent": str(event.threshold_pct),
            "resets_at": event.resets_at,
        },
    )
