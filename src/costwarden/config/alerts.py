"""``[alerts]``: raising alerts and delivering them (see ``costwarden.alerts``).

The alerts package does not import config: the app maps these values into its calls.
"""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class AlertSettings:
    enabled: bool = _setting(
        True,
        "Raise alerts (threshold crossings of every limit) and deliver them to the channels "
        "set through the admin API or the CLI.",
        "COSTWARDEN_ALERTS_ENABLED",
    )
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
    return None
