"""``[alerts]``: raising alerts and delivering them (see ``costwarden.alerts``).

The alerts package does not import config: the app maps these values into its calls.
"""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal, InvalidOperation

from costwarden.alerts.model import Channel
from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class AlertSettings:
    enabled: bool = _setting(
        True,
        "Raise alerts (threshold crossings of every limit) and deliver them to the channels "
        "of [[alerts.channels]] and those set through the admin API or the CLI.",
        "COSTWARDEN_ALERTS_ENABLED",
    )
    # [[alerts.channels]] (config/alert_channels.py), validated; stored at gateway start.
    # Not in repr: they hold secrets.
    channels: tuple[Channel, ...] = dataclasses.field(default=(), repr=False, metadata={"help": ""})
    # Of those, the ones skipped for an unset secret variable by a load without secrets.
    channels_unresolved: tuple[str, ...] = dataclasses.field(default=(), metadata={"help": ""})
    dashboard_url: str = _setting(
        "",
        "The base URL of this gateway as on-call people reach it (e.g. https://gw.example.com):"
        " alerts then carry a link to the alert on the dashboard. Empty: no link.",
        "COSTWARDEN_ALERTS_DASHBOARD_URL",
    )
    delivery_poll_seconds: float = _setting(
        2.0,
        "How often each process looks for deliveries that are due (new alerts are sent at "
        "once by the process that raised them; this is for retries and other processes').",
        "COSTWARDEN_ALERTS_DELIVERY_POLL_SECONDS",
    )
    retry_base_seconds: float = _setting(
        10.0,
        "The first retry's delay after a failed delivery; each next one doubles (at most an "
        "hour apart), for up to 24 hours, then the delivery goes to the dead letter.",
        "COSTWARDEN_ALERTS_RETRY_BASE_SECONDS",
    )
    forecast_interval_seconds: float = _setting(
        300.0,
        "How often one process (the holder of the forecast lease) forecasts every org budget "
        "(daily and monthly, USD and tokens) from its last two hours of spend, and alerts "
        "when at that pace it runs out before it resets (alerts/forecast.py says how).",
        "COSTWARDEN_ALERTS_FORECAST_INTERVAL_SECONDS",
    )
    send_timeout_seconds: float = _setting(
        10.0,
        "How long one delivery attempt may take (connect, send, answer) before it counts as "
        "failed and is retried; a slow channel never holds up requests or other channels.",
        "COSTWARDEN_ALERTS_SEND_TIMEOUT_SECONDS",
    )
    watch_interval_seconds: float = _setting(
        30.0,
        "How often one process (the holder of the watch lease) checks every provider's "
        "upstream error rate, and once an hour every org's spend for spikes.",
        "COSTWARDEN_ALERTS_WATCH_INTERVAL_SECONDS",
    )
    spike_factor: float = _setting(
        3.0,
        "A spike alert fires when an org's spend in the last complete clock hour (UTC) is at "
        "least this many times its mean in the same hour on previous days. Above 1.",
        "COSTWARDEN_ALERTS_SPIKE_FACTOR",
    )
    spike_history_days: int = _setting(
        7,
        "How many previous days' same hour make the mean a spike is measured against (days "
        "before the org was created do not count). 1 to 31.",
        "COSTWARDEN_ALERTS_SPIKE_HISTORY_DAYS",
    )
    spike_min_history_days: int = _setting(
        3,
        "No spike alert for an org with fewer previous days of that hour than this (a new "
        "org has no usual yet). 1 to spike_history_days.",
        "COSTWARDEN_ALERTS_SPIKE_MIN_HISTORY_DAYS",
    )
    spike_min_usd: str = _setting(
        "1",
        "No spike alert for an hour under this spend, in USD as an exact decimal string "
        '(e.g. "2.50"): three times a few cents is nobody\'s emergency.',
        "COSTWARDEN_ALERTS_SPIKE_MIN_USD",
    )
    spike_min_tokens: int = _setting(
        0,
        "Also alert on token spikes (input plus output tokens) of hours with at least this "
        "many tokens; 0: tokens are not checked (a spend spike usually is one).",
        "COSTWARDEN_ALERTS_SPIKE_MIN_TOKENS",
    )
    error_rate_pct: int = _setting(
        20,
        "A provider's error-rate alert fires when at least this percentage of its requests "
        "failed upstream in each of the last error_rate_minutes minutes. 1 to 100.",
        "COSTWARDEN_ALERTS_ERROR_RATE_PCT",
    )
    error_rate_minutes: int = _setting(
        5,
        "How many consecutive complete minutes a provider's error rate must be at or over "
        "error_rate_pct before it alerts; it resolves once a minute is back under. 1 to 60.",
        "COSTWARDEN_ALERTS_ERROR_RATE_MINUTES",
    )
    error_rate_min_requests: int = _setting(
        10,
        "No error-rate alert unless the provider had at least this many requests in those "
        "minutes together (one failure out of one request pages nobody).",
        "COSTWARDEN_ALERTS_ERROR_RATE_MIN_REQUESTS",
    )


def alerts_problem(a: AlertSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[alerts]`` value, or None."""
    for name in (
        "delivery_poll_seconds",
        "retry_base_seconds",
        "forecast_interval_seconds",
        "send_timeout_seconds",
    ):
        if not 0 < getattr(a, name) < math.inf:
            return name, "must be a positive number"
    if a.dashboard_url and not a.dashboard_url.startswith(("http://", "https://")):
        return "dashboard_url", "must be an http(s) URL"
    return _watch_problem(a)


def _watch_problem(a: AlertSettings) -> tuple[str, str] | None:
    """The spike and error-rate settings' checks (the ranges ``app.watching`` relies on)."""
    if not 0 < a.watch_interval_seconds < math.inf:
        return "watch_interval_seconds", "must be a positive number"
    if not 1 < a.spike_factor < math.inf:
        return "spike_factor", "must be a number above 1"
    if not 1 <= a.spike_history_days <= 31:
        return "spike_history_days", "must be between 1 and 31"
    if not 1 <= a.spike_min_history_days <= a.spike_history_days:
        return "spike_min_history_days", "must be between 1 and spike_history_days"
    try:
        floor = Decimal(a.spike_min_usd)
    except InvalidOperation:
        floor = Decimal("NaN")
    if not (floor.is_finite() and floor >= 0):
        return "spike_min_usd", "must be a decimal amount of USD, at least 0"
    if a.spike_min_tokens < 0:
        return "spike_min_tokens", "must be at least 0"
    if not 1 <= a.error_rate_pct <= 100:
        return "error_rate_pct", "must be between 1 and 100"
    if not 1 <= a.error_rate_minutes <= 60:
        return "error_rate_minutes", "must be between 1 and 60"
    if a.error_rate_min_requests < 1:
        return "error_rate_min_requests", "must be at least 1"
    return None
