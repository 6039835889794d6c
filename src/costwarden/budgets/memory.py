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


class MemoryStore:
    name = "memory"

    def __init__(self) -> None:
        self._views: dict[str, View] = {}
        self._expires: dict[str, float] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _view(self, check: Check, now: float) -> View:
        view = self._views.get(check.key)
        if view is None:
            view = self._views[check.key] = View()
        if check.ttl:
            self._expires[check.key] = now + check.ttl
        if check.rolling:
            # Buckets are created in time order, so the dict's first key is the oldest.
            buckets = view.buckets
            while buckets:
                oldest = next(iter(buckets))
                if oldest >= check.first:
                    break
                del buckets[oldest]
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
        views = [self._view(c, now) for c in checks]
        apply_settle(checks, amounts, actual, views, held=True)
        return [_room(c, v) for c, v in zip(checks, views, strict=True)]

    async def views(self, checks: list[Check], now: float) -> list[View]:
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
                view.buckets = dict(sorted(value.items()))  # oldest first, as _view expects
            else:
                view.used = value
        logger.debug("seeded %d counters for %s", len(seeds), tenant)

    async def ready(self, tenant: str) -> bool:
        return True  # nothing can take these counters away but the process itself

    async def acquire_rebuild(self, tenant: str, ttl_ms: int) -> bool:
        return True

    async def release_rebuild(self, tenant: str) -> None:
        return None

    async def prune(self, now: float) -> None:
        for key in [k for k, t in self._expires.items() if t < now]:
            self._views.pop(key, None)
            del self._expires[key]


def _room(check: Check, view: View) -> int:
    if check.rolling:
        return check.limit.amount - window_total(view, check)
    return check.limit.amount - view.used - view.reserved
