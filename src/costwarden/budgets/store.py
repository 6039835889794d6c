"""The counter-store interface: where spend, reservations and rate-limit buckets live.

Two implementations apply the same decision (:mod:`costwarden.budgets.policy`):
:class:`~costwarden.budgets.memory.MemoryStore` for the embedded single process, and
:class:`~costwarden.budgets.redis_store.RedisStore` for several gateway processes, where each
reserve and each settle is one atomic Lua script (one round trip).

Counters are a cache of the ledger. ``seed`` loads values computed from the ledger; a store
that has lost a tenant's counters (Redis restarted or flushed) raises :class:`CountersLost`
from ``reserve`` so the enforcer rebuilds them before anything is admitted.
"""

from __future__ import annotations

from typing import Protocol

from costwarden.budgets.policy import Actual, Ask, Check, Grant, Refusal, View

# A seed: a calendar counter's settled value, or a rolling counter's buckets.
Seed = int | dict[int, int]


class CountersLost(Exception):
    """The store no longer holds these tenants' counters; rebuild them from the ledger."""

    def __init__(self, tenants: list[str]) -> None:
        super().__init__(", ".join(tenants))
        self.tenants = tenants


class LeaseClosed(Exception):
    """The lease was settled or given up already: a reserve under it reserves nothing.

    Only a reserve that ran late (its caller timed out and abandoned the lease) meets this;
    with lease ids unique per reservation, no caller waiting for an answer should."""

    def __init__(self, lease: str) -> None:
        super().__init__(lease)
        self.lease = lease


class TenantsSpanSlots(Exception):
    """The checks of one request belong to several tenants (an org and the platform), whose
    counters a Redis Cluster keeps in different slots: no one script can reserve or settle
    them atomically, so the store refuses before sending anything (docs/scale-out.md, "Redis
    Cluster")."""

    def __init__(self, tenants: list[str]) -> None:
        super().__init__(
            f"limits of {' and '.join(tenants)} in one request: a Redis Cluster cannot "
            "reserve across two tenants' slots atomically"
        )
        self.tenants = tenants


class CounterStore(Protocol):
    name: str

    @property
    def processes(self) -> int:
        """Gateway processes sharing these counters, as last counted (1 for in-process ones)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def reserve(
        self, lease: str, ask: Ask, checks: list[Check], now: float
    ) -> Grant | Refusal: ...

    async def settle(
        self, lease: str, checks: list[Check], amounts: list[int], actual: Actual, now: float
    ) -> list[int]:
        """Apply the actual amounts; returns the room left in each check afterwards.

        Idempotent: when a settle fails with its outcome unknown (a timeout), the caller sends
        it again, and a lease is settled at most once however often it is sent."""
        ...

    async def abandon(self, lease: str, checks: list[Check], now: float) -> None:
        """Give up a lease whose ``reserve`` failed with its outcome unknown (it may have
        reserved, or still reserve when a stalled store resumes): give back what it holds and
        keep it from reserving later. Idempotent."""
        ...

    async def views(self, checks: list[Check], now: float) -> list[View]: ...

    def counted(self, now: float) -> bool:
        """Whether every other process sharing the counters has counted this one in its
        ``processes`` by now (until then an outage's local share could be too large)."""
        ...

    async def ping(self) -> None:
        """One cheap round trip; raises when the store cannot be reached."""
        ...

    async def add(
        self, lease: str, checks: list[Check], actual: Actual, settled_at: float
    ) -> None:
        """Count a request that was admitted and settled on this process's own counters while
        the store could not be reached (budgets/outage.py). Idempotent per lease; nothing
        when the tenant has been rebuilt from the ledger since ``settled_at`` (the rebuild
        counted its ledger row) or is not loaded (the rebuild will)."""
        ...

    async def adopt(
        self, leases: list[tuple[str, list[Check], list[int], float]], now: float
    ) -> None:
        """Record leases reserved on this process's own counters (lease, checks, amounts,
        reserved at) as this process's leases, holding their reservations, so that they
        settle as any other. Idempotent; a lease settled already stays gone."""
        ...

    async def seed(
        self, tenant: str, seeds: dict[str, Seed], ttls: dict[str, int], *, complete: bool
    ) -> None:
        """Load counters computed from the ledger.

        ``complete``: these are all of the tenant's counters (a rebuild); the tenant is then
        marked as loaded. The memory store overwrites (no one else writes its counters); the
        Redis store only fills counters that are absent, since other processes may already be
        counting into them.
        """
        ...

    async def prune(self, now: float) -> None:
        """Forget counters whose windows are over."""
        ...

    async def ready(self, tenant: str) -> bool:
        """Whether the tenant's counters are loaded (False after a Redis flush)."""
        ...

    async def acquire_rebuild(self, tenant: str, ttl_ms: int) -> bool:
        """Become the one process rebuilding ``tenant`` (expires after ``ttl_ms``)."""
        ...

    async def release_rebuild(self, tenant: str) -> None: ...
