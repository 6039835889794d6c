"""In-process counters for the embedded single-process gateway.

Every operation runs without an ``await`` between reading and writing, so on one event loop
it is atomic: the reservation of one request is complete before another is decided. There
are no leases: a reservation cannot outlive this process, and after a restart the counters
are rebuilt from the ledger.
"""

from __future__ import annotations

import logging

from costwarden.budgets.policy import (
    Actual,
    Ask,
    Check,
    Grant,
    Refusal,
    View,
    apply_grant,
    apply_settle,
    decide,
    window_total,
)
from costwarden.budgets.store import Seed

logger = logging.getLogger(__name__)

_NEVER = -(1 << 62)


class MemoryStore:
    name = "memory"
    processes = 1  # the embedded store is this process's alone

    def __init__(self) -> None:
        self._views: dict[str, View] = {}
        self._expires: dict[str, float] = {}
        self._pruned: dict[str, int] = {}  # rolling counter -> oldest bucket kept at last prune
        self._stale: set[str] = set()  # rolling counters a settle wrote an old bucket into

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _view(self, check: Check, now: float, *, prune: bool = True) -> View:
        view = self._views.get(check.key)
        if view is None:
            view = self._views[check.key] = View()
        if check.ttl:
            self._expires[check.key] = now + check.ttl
        if prune and check.rolling:
            # Drop buckets that left the window, as the Redis script does on every reserve;
            # a full pass is needed only when the window moved or a settle wrote behind it.
            key = check.key
            if check.first > self._pruned.get(key, _NEVER) or key in self._stale:
                for b in [b for b in view.buckets if b < check.first]:
                    del view.buckets[b]
                self._pruned[key] = check.first
                self._stale.discard(key)
        return view

    async def reserve(
        self, lease: str, ask: Ask, checks: list[Check], now: float
    ) -> Grant | Refusal:
        views = [self._view(c, now) for c in checks]
        result = decide(ask, checks, views, now)
        if isinstance(result, Grant):
            apply_grant(result, checks, views)
        return result

    async def settle(
        self, lease: str, checks: list[Check], amounts: list[int], actual: Actual, now: float
    ) -> list[int]:
        views = [self._view(c, now, prune=False) for c in checks]
        apply_settle(checks, amounts, actual, views, held=True)
        for check in checks:
            if check.rolling and check.bucket < self._pruned.get(check.key, _NEVER):
                self._stale.add(check.key)
        return [_room(c, v) for c, v in zip(checks, views, strict=True)]

    async def abandon(self, lease: str, checks: list[Check], now: float) -> None:
        return None  # a reserve here never fails half-way: nothing can be left behind

    async def views(self, checks: list[Check], now: float) -> list[View]:
        return self.peek(checks)

    def peek(self, checks: list[Check]) -> list[View]:
        """Copies of the counters of ``checks`` (rolling ones: the buckets still in their
        window), without awaiting: for readers on the event loop (metrics scrapes)."""
        out: list[View] = []
        for check in checks:
            view = self._views.get(check.key, View())
            buckets = {b: v for b, v in view.buckets.items() if b >= check.first}
            out.append(View(view.used, view.reserved, buckets))
        return out

    async def seed(
        self, tenant: str, seeds: dict[str, Seed], ttls: dict[str, int], *, complete: bool
    ) -> None:
        for key, value in seeds.items():
            view = self._views.setdefault(key, View())
            if isinstance(value, dict):
                view.buckets = dict(value)
                self._stale.add(key)
            else:
                view.used = value
        logger.debug("seeded %d counters for %s", len(seeds), tenant)

    def load(self, key: str, view: View) -> None:
        """Set one counter outright (the local counters of an outage, budgets/outage.py)."""
        self._views[key] = view
        if view.buckets:
            self._stale.add(key)

    def counted(self, now: float) -> bool:
        return True

    async def ping(self) -> None:
        return None

    async def add(
        self, lease: str, checks: list[Check], actual: Actual, settled_at: float
    ) -> None:
        return None  # nothing is ever admitted around this store

    async def adopt(
        self, leases: list[tuple[str, list[Check], list[int], float]], now: float
    ) -> None:
        return None

    async def ready(self, tenant: str) -> bool:
        return True  # nothing can take these counters away but the process itself

    async def acquire_rebuild(self, tenant: str, ttl_ms: int) -> bool:
        return True

    async def release_rebuild(self, tenant: str) -> None:
        return None

    async def prune(self, now: float) -> None:
        for key in [k for k, t in self._expires.items() if t < now]:
            self._views.pop(key, None)
            self._pruned.pop(key, None)
            self._stale.discard(key)
            del self._expires[key]


def _room(check: Check, view: View) -> int:
    if check.rolling:
        return check.limit.amount - window_total(view, check)
    return check.limit.amount - view.used - view.reserved
