"""The settings the budgets package reads, mapped into its own :class:`BudgetConfig`.

The one mapping, used by the app factory (the enforcer) and by the CLI (offline status): the
budgets package does not import config.
"""

from __future__ import annotations

from costwarden.budgets.limits import tier_from_mapping
from costwarden.budgets.ports import BudgetConfig
from costwarden.config.settings import Settings


def budget_config(settings: Settings) -> BudgetConfig:
    """``[budgets]``, the ``[[tiers]]`` (parsed; load_settings has validated them) and the
    ledger's timing from ``[storage]``."""
    b = settings.budgets
    return BudgetConfig(
        tiers=tuple(
            tier_from_mapping(t.name, t.limits, where=f"tiers.{t.name}", source="config")
            for t in settings.tiers
        ),
        timezone=b.timezone,
        lease_seconds=b.lease_seconds,
        refresh_seconds=b.refresh_seconds,
        prompt_overhead_tokens=b.prompt_overhead_tokens,
        default_max_output_tokens=b.default_max_output_tokens,
        min_output_tokens=b.min_output_tokens,
        expected_output_tokens=b.expected_output_tokens,
        inflight_retry_seconds=b.inflight_retry_seconds,
        ledger_mode=settings.storage.ledger_mode,
        flush_interval_ms=settings.storage.flush_interval_ms,
        on_unavailable=settings.redis.on_unavailable,
    )
