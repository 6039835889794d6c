"""The live route table: the config file's routes, with fallback chains the admin API set.

Every process builds its routes from the config at startup, then polls the fallback store
(the app passes storage's ``route_fallbacks`` table in: one indexed ``max(version)`` query
every ``refresh_seconds``) and rebuilds a changed route in place, so a chain set through one
process's admin API serves on every process within a poll. A change is validated against the
whole table first: an unknown name is refused with InvalidInput, a cycle through the other
routes' chains with Conflict, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from costwarden.core import polling
from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.providers.base import Deployment
from costwarden.routing.chains import (
    DegradedTemplate,
    Route,
    RouteCache,
    check_names,
    expand_all,
)
from costwarden.routing.downgrade import DowngradeRule
from costwarden.routing.strategy import Strategy

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class RouteSpec:
    """One configured route, as the table needs it (the app maps the config's ``[[routes]]``
    entries into these)."""

    model: str  # the public model name
    deployments: tuple[str, ...]  # its own deployments, first one preferred
    retries: int
    fallbacks: tuple[str, ...] = ()  # the config file's: routes or deployments
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    timeout: float | None = None
    degraded: DegradedTemplate | None = None
    strategy: Strategy = "ordered"
    weights: tuple[float, ...] = ()  # per deployment, for "weighted"
    downgrade: tuple[DowngradeRule, ...] = ()
    downgrade_on_refusal: bool = False
    cache: RouteCache | None = None


class FallbackStore(Protocol):
    """Where fallback chains set through the admin API live, shared by every process.

    Blocking calls: the table runs them in a worker thread, never on the request path.
    """

    def set_fallbacks(self, route: str, fallbacks: list[str] | None, *, actor: str) -> int:
        """Store ``route``'s fallbacks (None: back to the config's), audited; the new version."""

    def fallbacks_version(self) -> int:
        """The version of the whole set (grows with every write)."""

    def load_fallbacks(self) -> tuple[int, dict[str, list[str]]]:
        """``(version, {route: fallbacks})`` of the routes the admin API changed."""


class RouteTable:
    def __init__(
        self,
        routes: Iterable[RouteSpec],
        deployments: Mapping[str, Deployment],
        store: FallbackStore,
        *,
        refresh_seconds: float = 0.5,
    ) -> None:
        self._config = {r.model: r for r in routes}
        self._deployments = deployments
        self._store = store
        self._overrides: dict[str, list[str]] = {}
        self.version = 0
        #: public model name -> Route; updated in place, so holders of it see changes
        self.routes: dict[str, Route] = {}
        self._rebuild(self._overrides)
        self._poller = polling.Poller(
            "costwarden-route-poller", refresh_seconds, self._poll_once, _poll_failed
        )

    def fallbacks(self, model: str) -> tuple[list[str], str]:
        """``(fallbacks, source)`` of a route: "admin" when the admin API set them."""
        if model in self._overrides:
            return list(self._overrides[model]), "admin"
        return list(self._config[model].fallbacks), "config"

    def _chains(self, overrides: Mapping[str, list[str]]) -> dict[str, list[str]]:
        own = {m: r.deployments for m, r in self._config.items()}
        fallbacks = {m: overrides.get(m, r.fallbacks) for m, r in self._config.items()}
        return expand_all(own, fallbacks, set(self._deployments))

    def _rebuild(self, overrides: Mapping[str, list[str]]) -> None:
        chains = self._chains(overrides)
        for model, r in self._config.items():
            self.routes[model] = Route(
                model=model,
                candidates=tuple(self._deployments[d] for d in chains[model]),
                retries=r.retries,
                connect_timeout=r.connect_timeout,
                first_byte_timeout=r.first_byte_timeout,
                timeout=r.timeout,
                degraded=r.degraded,
                strategy=r.strategy,
                own=len(dict.fromkeys(r.deployments)),
                weights=r.weights,
                downgrade=r.downgrade,
                downgrade_on_refusal=r.downgrade_on_refusal,
                cache=r.cache,
            )

    async def set_fallbacks(self, model: str, fallbacks: object, *, actor: str) -> Route:
        """Validate, store and apply ``model``'s fallbacks (None: back to the config's)."""
        if model not in self._config:
            raise NotFound(f"unknown route {model!r} (routes: {', '.join(sorted(self._config))})")
        names = None if fallbacks is None else check_names(fallbacks, "fallbacks")
        overrides = dict(self._overrides)
        if names is None:
            overrides.pop(model, None)
        else:
            known = set(self._config) | set(self._deployments)
            unknown = [n for n in names if n not in known]
            if unknown:  # bad input: 400
                raise InvalidInput(
                    f"route {model!r}: fallback {unknown[0]!r} is neither a route nor a "
                    "deployment (routes: " + ", ".join(sorted(self._config)) + ")"
                )
            overrides[model] = names
        try:
            self._chains(overrides)  # a cycle through the other routes' chains; nothing stored
        except InvalidInput as exc:
            raise Conflict(str(exc)) from None
        version = await asyncio.to_thread(self._store.set_fallbacks, model, names, actor=actor)
        self._apply(version, overrides)
        return self.routes[model]

    def _apply(self, version: int, overrides: dict[str, list[str]]) -> None:
        try:
            self._rebuild(overrides)
        except InvalidInput as exc:
            # Stored by a process whose config differs from ours: keep what we serve now.
            logger.error("fallback chains from the admin API do not fit this config: %s", exc)
            return
        self._overrides = overrides
        self.version = version

    async def reload(self) -> None:
        version, overrides = await asyncio.to_thread(self._store.load_fallbacks)
        overrides = {m: f for m, f in overrides.items() if m in self._config}
        self._apply(version, overrides)

    async def start(self) -> None:
        await self.reload()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def _poll_once(self) -> None:
        if await asyncio.to_thread(self._store.fallbacks_version) != self.version:
            await self.reload()


def _poll_failed(exc: Exception) -> None:  # keep serving the routes we have
    logger.warning("route refresh failed: %s: %s", type(exc).__name__, exc)
