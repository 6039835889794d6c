"""The reference of every setting (``costwarden settings``): key, default, env var, help."""

from __future__ import annotations

import dataclasses
from typing import Any

from costwarden.budgets.limits import TIER_SCOPES
from costwarden.config.alert_channels import CHANNEL_HELP
from costwarden.config.alerts import AlertSettings
from costwarden.config.analytics import AnalyticsSettings
from costwarden.config.billing import BillingSettings
from costwarden.config.cache import CacheSettings
from costwarden.config.dashboard import DashboardSettings
from costwarden.config.events import EventSettings
from costwarden.config.metrics import MetricsSettings
from costwarden.config.otel import OtelSettings
from costwarden.config.security import SecuritySettings
from costwarden.config.sessions import SessionSettings
from costwarden.config.settings import (
    BudgetSettings,
    RedisSettings,
    ServerSettings,
    Settings,
    StorageSettings,
    SwitchSettings,
    TierSettings,
)
from costwarden.config.upstreams import (
    RATE_HELP,
    DeploymentSettings,
    ProviderSettings,
    ResilienceSettings,
    RouteSettings,
)


def settings_help() -> list[tuple[str, str, str, str]]:
    """(key, default, env var, help) for every documented setting."""
    rows: list[tuple[str, str, str, str]] = []
    sections: list[tuple[str, type[Any]]] = [
        ("server", ServerSettings),
        ("storage", StorageSettings),
        ("budgets", BudgetSettings),
        ("redis", RedisSettings),
        ("resilience", ResilienceSettings),
        ("tiers[]", TierSettings),
        ("switches", SwitchSettings),
        ("metrics", MetricsSettings),
        ("otel", OtelSettings),
        ("events", EventSettings),
        ("alerts", AlertSettings),
        ("analytics", AnalyticsSettings),
        ("sessions", SessionSettings),
        ("security", SecuritySettings),
        ("cache", CacheSettings),
        ("dashboard", DashboardSettings),
        ("billing", BillingSettings),
        ("providers[]", ProviderSettings),
        ("deployments[]", DeploymentSettings),
        ("routes[]", RouteSettings),
    ]
    for section, cls in sections:
        for f in dataclasses.fields(cls):
            if not f.metadata.get("help"):
                continue
            default = "" if f.default in (None, dataclasses.MISSING) else str(f.default)
            rows.append(
                (f"{section}.{f.name}", default, f.metadata.get("env") or "", f.metadata["help"])
            )
    for field, meaning in CHANNEL_HELP:
        rows.append((f"alerts.channels[].{field}", "", "", meaning))
    for rate, meaning in RATE_HELP.items():
        rows.append((f"deployments[].price.{rate}", "", "", meaning))
    for scope in TIER_SCOPES:
        rows.append(
            (
                f"tiers[].{scope}",
                "",
                "",
                f"Default limits for every {scope} of an org on this tier: a table of limit = "
                'amount, e.g. { daily_usd = "5", requests_per_minute = 60 }; -1 is unlimited.',
            )
        )
    rows.append(("(env only)", "", "COSTWARDEN_ADMIN_TOKEN", "Bearer token for the admin API."))
    rows.append(
        (
            "security (env only)",
            "",
            "COSTWARDEN_SECURITY_HASH_KEY",
            "The key of the hash security findings' spans are recorded as; the same on every "
            "gateway to match a secret across processes (unset: random per process).",
        )
    )
    for name, key in (
        ("dashboard_secret", "dashboard.secret"),
        ("dashboard_jwt_secret", "dashboard.jwt_secret"),
        ("stripe_webhook_secret", "billing.webhook_secret"),
    ):
        meta = next(f for f in dataclasses.fields(Settings) if f.name == name).metadata
        rows.append((f"{key} (env only)", "", meta["env"], meta["help"]))
    return rows
