"""What the budgets package is given from outside: its configuration and the storage it reads.

The budgets package sits below storage and config, so it imports neither: the
composition root (app/factory.py; the CLI for its offline status) maps the settings into a
:class:`BudgetConfig` with ``costwarden.config.budgets.budget_config`` and passes storage's
readers in as a :class:`PolicySource` and a :class:`LedgerSums`. Both are used only in worker
threads, by the background refresh, the seeding and the rebuild -- never on the request path.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import NamedTuple, Protocol

from costwarden.budgets.alert_lines import AlertLines
from costwarden.budgets.limits import Limit, Tier
from costwarden.budgets.outage import OnUnavailable

# (org_id, subject) -> (usd_nanos, tokens, requests)
Totals = dict[tuple[str, str], tuple[int, int, int]]
# (org_id, subject) -> {bucket index: (usd_nanos, tokens, requests)}
Buckets = dict[tuple[str, str], dict[int, tuple[int, int, int]]]


class PolicySnapshot(NamedTuple):
    """Everything the limit book is built from, read in one consistent snapshot."""

    version: int
    limits: list[Limit]
    api_tiers: list[Tier]  # the tiers defined through the API (the config's are in BudgetConfig)
    org_tiers: dict[str, str]  # org id -> tier name
    alert_rules: list[AlertLines]


@dataclasses.dataclass(frozen=True, slots=True)
class BudgetConfig:
    """The settings the enforcer and the status read (their help texts are in
    config/settings.py, under the key named on each field)."""

    # tiers: the config-defined plan tiers, already parsed (their limits are validated)
    tiers: tuple[Tier, ...]
    # budgets.timezone: the zone calendar windows (day, month) reset in
    timezone: str
    # budgets.lease_seconds: a reservation of a dead process is released after this (Redis)
    lease_seconds: float
    # budgets.refresh_seconds: how often the stored policy version is polled
    refresh_seconds: float
    # budgets.prompt_overhead_tokens: prompt tokens a provider may add, in every hard bound
    prompt_overhead_tokens: int
    # budgets.default_max_output_tokens: output cap under a hard budget when none was sent
    default_max_output_tokens: int
    # budgets.min_output_tokens: below this clamped output, the request is refused
    min_output_tokens: int
    # budgets.expected_output_tokens: output reserved by soft budgets and rate limits
    expected_output_tokens: int
    # budgets.inflight_retry_seconds: Retry-After when only in-flight reservations refuse
    inflight_retry_seconds: int
    # storage.ledger_mode ("batched" or "durable") and storage.flush_interval_ms: how late
    # another process's rows may reach the ledger, waited for before a rebuild
    ledger_mode: str
    flush_interval_ms: int
    # redis.on_unavailable: while Redis cannot be reached, refuse (503) or admit on this
    # process's own counters (budgets/outage.py)
    on_unavailable: OnUnavailable = "fail_closed"


class PolicySource(Protocol):
    """The stored limits and tiers (storage.policy's tables). Blocking: called in a worker
    thread."""

    def version(self) -> int:
        """The current policy version; one cheap read, polled every refresh."""
        ...

    def load(self) -> PolicySnapshot:
        """Everything, read when the version moved."""
        ...


class LedgerSums(Protocol):
    """What admitted ledger rows add up to per scope instance (storage.counters), in counter
    units: usd as nano-dollars, each row rounded up. Blocking: called in a worker thread."""

    def totals(
        self,
        *,
        scope: str,
        since: datetime | None,
        org_id: str | None,
        holder: str | None = None,
    ) -> Totals:
        """Sums since ``since`` (all time when None), only org ``org_id``'s if given, only
        the rows a slice lease's slices admitted if ``holder`` is given (budgets/leased.py)."""
        ...

    def buckets(
        self, *, scope: str, since: datetime, bucket_seconds: int, org_id: str | None
    ) -> Buckets:
        """The same split into buckets of ``bucket_seconds`` (rolling windows)."""
        ...
