"""Rules: what an event makes an alert of. Pure functions over events and data.

An :class:`AlertDraft` is an alert before it is stored. Its ``dedupe_key`` names the rule, the
scope, the window instance and the threshold: the database keeps one alert per key (a unique
constraint), so a draft raised by several processes, or again after a restart, fires once.

**Threshold** alerts come from ``limit_threshold_crossed`` events (raised by the budgets after
a settle moves a limit's use, settled plus in flight, past 50, 80 or 100 %). Severity grows with
the share: below 80 % ``info``, below 100 % ``warning``, at 100 % ``critical``. The alert
resolves itself when the window resets (``resolves_at``); a lifetime limit's alert stays open
until someone resolves it.

**Service** alerts come from ``breaker_changed`` (a deployment's breaker opened: warning) and
``switch_changed`` (a kill switch or toggle turned off: critical for ``ai``, else warning).
Each is keyed on its event's id, which is global and raised once, so every process that
receives the event raises the same alert. The breaker closing again, or the switch turned
back on, resolves them (:func:`cleared`).

**Spike** alerts (:func:`spike_alert`, decided by ``alerts.spikes``) are keyed per org, metric
and clock hour and resolve themselves at the end of the next hour. **Error-rate** service
alerts (:func:`error_rate_alert`, decided by ``alerts.error_rate``) are keyed per provider and
the minute its episode began; the watch (``app.watching``) resolves them when the rate falls.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from costwarden.alerts.model import Severity
from costwarden.core.event_kinds import (
    BillingChanged,
    BreakerChanged,
    EscalationCreated,
    EscalationResolved,
    HoneypotTriggered,
    LimitThresholdCrossed,
    SecurityFinding,
    SwitchChanged,
)

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


# ------------------------------------------------------------------ service alerts

BREAKER_RULE = "service-breaker-open"
SWITCH_RULE = "service-kill-switch"


def breaker_alert(event_id: int, event: BreakerChanged) -> AlertDraft | None:
    """An alert when a deployment's breaker opens (None for other moves). Keyed on the event
    id: each transition is one event, raised once by the process that made it."""
    if event.to_state != "open":
        return None
    return AlertDraft(
        dedupe_key=f"{BREAKER_RULE}|{event_id}",
        kind="service",
        rule=BREAKER_RULE,
        severity="warning",
        title=f"{event.deployment} is failing: its circuit breaker opened ({event.reason})",
        window_key=f"event:{event_id}",
        scope="deployment",
        scope_id=event.deployment,
        detail={"reason": event.reason, "at": event.at},
    )


def switch_alert(event_id: int, event: SwitchChanged) -> AlertDraft | None:
    """An alert when a kill switch or feature toggle is turned off (None when on: that
    resolves it instead, see :func:`cleared`)."""
    if event.enabled:
        return None
    where = "platform-wide" if event.org_id is None else f"for org {event.org_id}"
    severity: Severity = "critical" if event.feature == "ai" else "warning"
    return AlertDraft(
        dedupe_key=f"{SWITCH_RULE}|{event_id}",
        kind="service",
        rule=SWITCH_RULE,
        severity=severity,
        title=f"{event.feature} switched off {where} by {event.actor}",
        window_key=f"event:{event_id}",
        org_id=event.org_id,
        scope="switch",
        scope_id=event.feature,
        detail={"actor": event.actor, "message": event.message},
    )


BILLING_RULE = "billing-payment-failed"


def billing_alert(event_id: int, event: BillingChanged) -> AlertDraft | None:
    """An alert when an org's payment failed (its grace period began): critical, as the org
    is switched off when the grace period ends; resolved when an invoice is paid
    (:func:`cleared`). One per org and failed invoice. None for other billing changes."""
    if event.change != "payment_failed" or event.org_id is None:
        return None
    invoice = event.invoice_id or f"event:{event_id}"
    return AlertDraft(
        dedupe_key=f"{BILLING_RULE}|{event.org_id}|{invoice}",
        kind="service",
        rule=BILLING_RULE,
        severity="critical",
        title=f"payment failed for org {event.org_id}: switched off after {event.grace_until}"
        " unless paid",
        window_key=f"invoice:{invoice}",
        org_id=event.org_id,
        scope="org",
        scope_id=event.org_id,
        detail={
            "invoice_id": event.invoice_id,
            "subscription_id": event.subscription_id,
            "grace_until": event.grace_until,
        },
    )


ESCALATION_RULE = "session-escalation"


def escalation_alert(event_id: int, event: EscalationCreated) -> AlertDraft:
    """An alert when an agent session is paused for a person to decide (its escalation):
    once per escalation, resolved with it (:func:`cleared`)."""
    return AlertDraft(
        dedupe_key=f"{ESCALATION_RULE}|{event.escalation_id}",
        kind="session",
        rule=ESCALATION_RULE,
        severity="warning",
        title=f"agent session {event.session_id} is paused ({event.reason}): escalation "
        f"{event.escalation_id} waits for a decision",
        window_key=f"event:{event_id}",
        org_id=event.org_id,
        scope="session",
        scope_id=event.session_id,
        detail={"escalation_id": event.escalation_id, "evidence": dict(event.evidence)},
    )


SECURITY_RULE = "security-finding"


def security_alert(event: SecurityFinding, now: float) -> AlertDraft | None:
    """An alert for what the prompt scan blocked or redacted, or flagged at high severity:
    one per org, detector and family an hour (the hour's later findings fold into it).
    Flagged low and medium findings stay events and ledger fields only."""
    if event.action == "flagged" and event.severity not in ("high", "critical"):
        return None
    hour = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H")
    what = f"{event.detector}/{event.family}"
    return AlertDraft(
        dedupe_key=f"{SECURITY_RULE}|{what}",
        kind="security",
        rule=SECURITY_RULE,
        severity="critical" if event.severity == "critical" else "warning",
        title=f"security: {what} ({event.severity}, confidence {event.confidence:g}) "
        f"{event.action} in a request",
        window_key=f"hour:{hour}",
        org_id=event.org_id,
        scope="key" if event.key_id else "org",
        scope_id=event.key_id or event.org_id or "",
        detail={
            "request_id": event.request_id,
            "session_id": event.session_id,
            "location": event.location,
            "span_hash": event.span_hash,
            "action": event.action,
        },
    )


def cleared(
    event: BreakerChanged | SwitchChanged | EscalationResolved | BillingChanged,
) -> tuple[str, str, str | None] | None:
    """(rule, scope_id, org_id) of the open alerts an event clears: a breaker that closed
    again, a switch turned back on, an escalation resolved, an org's invoice paid; None if
    it clears nothing."""
    if isinstance(event, BillingChanged):
        if event.change != "paid" or event.org_id is None:
            return None
        return BILLING_RULE, event.org_id, event.org_id
    if isinstance(event, BreakerChanged):
        return (BREAKER_RULE, event.deployment, None) if event.to_state == "closed" else None
    if isinstance(event, EscalationResolved):
        return ESCALATION_RULE, event.session_id, event.org_id
    return (SWITCH_RULE, event.feature, event.org_id) if event.enabled else None


# ------------------------------------------------------------------ forecasts

FORECAST_RULE = "budget-forecast"


def forecast_alert(
    *,
    org_id: str,
    scope: str,
    scope_id: str,
    metric: str,
    window: str,
    window_key: str,
    resets_at: str | None,
    limit: str,
    used: str,
    exhausts_at: str | None,
    reason: str,
) -> AlertDraft:
    """The alert of a forecast that a limit runs out before its window resets: once per
    limit and window (``alerts.forecast`` decides; this names and keys it)."""
    key = "|".join((FORECAST_RULE, org_id, scope, scope_id or "-", metric, window, window_key))
    who = scope if not scope_id else f"{scope} {scope_id}"
    return AlertDraft(
        dedupe_key=key,
        kind="forecast",
        rule=FORECAST_RULE,
        severity="warning",
        title=f"{who}: at the current pace its {window} {metric} limit runs out before it resets",
        window_key=window_key,
        org_id=org_id,
        scope=scope,
        scope_id=scope_id,
        resolves_at=datetime.fromisoformat(resets_at) if resets_at else None,
        detail={
            "limit_name": f"{window} {metric}",
            "metric": metric,
            "spent": used,
            "limit": limit,
            "resets_at": resets_at,
            "exhausts_at": exhausts_at,
            "reason": reason,
        },
    )


# ------------------------------------------------------------------ spend spikes

SPIKE_RULE = "spend-spike"


def spike_alert(
    *, org_id: str, metric: str, hour: int, spent: str, usual: str, ratio: str | None, reason: str
) -> AlertDraft:
    """The alert of an org's hour far above the usual for that hour (``alerts.spikes``
    decides): once per org, metric and hour; it resolves itself at the end of the next hour."""
    start = datetime.fromtimestamp(hour, UTC)
    times = f"{ratio} times" if ratio is not None else "far above"
    return AlertDraft(
        dedupe_key=f"{SPIKE_RULE}|{org_id}|{metric}|hour:{hour}",
        kind="spike",
        rule=SPIKE_RULE,
        severity="warning",
        title=(
            f"org {org_id}: {spent} {metric} in the hour from {start:%Y-%m-%d %H:%M} UTC, "
            f"{times} its usual {usual} for that hour"
        ),
        window_key=f"hour:{hour}",
        org_id=org_id,
        scope="org",
        scope_id=org_id,
        resolves_at=start + timedelta(hours=2),  # the end of the hour after the spike's
        detail={
            "metric": metric,
            "spent": spent,
            "usual": usual,
            "ratio": ratio,
            "hour": start.isoformat(),
            "reason": reason,
        },
    )


# ------------------------------------------------------------------ upstream error rate

ERROR_RATE_RULE = "service-error-rate"


def error_rate_alert(
    *,
    provider: str,
    episode_start: int,
    pct: int,
    minutes: int,
    requests: int,
    failures: int,
    reason: str,
) -> AlertDraft:
    """The alert of a provider failing at least ``pct`` % of its requests for ``minutes``
    minutes (``alerts.error_rate`` decides): keyed on the minute its episode began, so every
    process names the same episode alike; resolved when the rate falls back (:func:`cleared`
    does not apply: the watcher resolves it)."""
    began = datetime.fromtimestamp(episode_start, UTC)
    share = failures * 100 // requests if requests else 0
    return AlertDraft(
        dedupe_key=f"{ERROR_RATE_RULE}|{provider}|minute:{episode_start}",
        kind="service",
        rule=ERROR_RATE_RULE,
        severity="warning",
        title=(
            f"{provider} is failing: {failures} of {requests} requests ({share} %) in the "
            f"last {minutes} min, at least {pct} % each minute since {began:%H:%M} UTC"
        ),
        window_key=f"minute:{episode_start}",
        scope="provider",
        scope_id=provider,
        threshold_pct=pct,
        detail={
            "percent": str(share),
            "requests": requests,
            "failures": failures,
            "minutes": minutes,
            "started_at": began.isoformat(),
            "reason": reason,
        },
    )


# ------------------------------------------------------------------ honeypot keys

HONEYPOT_RULE = "security-honeypot-key"


def honeypot_alert(event: HoneypotTriggered) -> AlertDraft:
    """The critical alert of a honeypot key's use: one per key, source address and clock
    hour (every use is its own ``honeypot_triggered`` event; a stream of them from one
    address is one alert an hour, not an alert per request). It stays open until someone
    resolves it. Carries the key's id and prefix, never the key."""
    at = datetime.fromisoformat(event.at)
    hour = int(at.timestamp()) // 3600 * 3600
    source = event.source or "an unknown address"
    return AlertDraft(
        dedupe_key=f"{HONEYPOT_RULE}|{event.key_id}|{event.source or '-'}|hour:{hour}",
        kind="security",
        rule=HONEYPOT_RULE,
        severity="critical",
        title=(
            f"honeypot key {event.key_prefix}... ({event.key_id}) of org {event.org_name} "
            f"used from {source}"
        ),
        window_key=f"hour:{hour}",
        org_id=event.org_id,
        scope="key",
        scope_id=event.key_id,
        detail={
            "key_id": event.key_id,
            "key_prefix": event.key_prefix,
            "key_name": event.key_name,
            "org_name": event.org_name,
            "project_id": event.project_id,
            "source": event.source,
            "source_port": event.source_port,
            "forwarded_for": event.forwarded_for,
            "user_agent": event.user_agent,
            "model": event.model,
            "endpoint": event.endpoint,
            "request_id": event.request_id,
            "action": event.action,
            "at": event.at,
        },
    )


_HONEYPOT_FIELDS = (
    ("user agent", "user_agent"),
    ("model", "model"),
    ("endpoint", "endpoint"),
    ("X-Forwarded-For (as sent, not trusted)", "forwarded_for"),
    ("request id", "request_id"),
    ("action", "action"),
    ("at", "at"),
)


def honeypot_text(title: str, detail: dict[str, Any]) -> str:
    """What a delivery of a honeypot alert says beyond its title."""
    said = "; ".join(
        f"{label}: {detail[name]}" for label, name in _HONEYPOT_FIELDS if detail.get(name)
    )
    return f"{title}. {said}. It was answered as an unknown key."
