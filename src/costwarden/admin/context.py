"""What the admin handlers work with: :class:`AdminContext`, and :func:`context` to get it.

The app (``costwarden.app.factory``, the composition root) builds one context from the parts
it owns and hands it to :func:`costwarden.admin.api.create_admin_app`, which keeps it in the
Starlette app's state; every handler is a module-level function that starts with
``ctx = context(request)``. So the admin package never imports the app, and a handler's
dependencies are the fields listed here, no more.

The key cache and the switch board belong to the gateway package, a sibling layer admin does
not import: they are typed by the two small protocols below (what the admin API calls on
them). The rest are the domain's own classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from starlette.requests import Request

from costwarden.budgets.enforcer import Enforcer
from costwarden.core.events import EventBus
from costwarden.core.records import KeyRecord
from costwarden.dashboard.jwt_auth import JwtConfig
from costwarden.metrics import MetricsExporter
from costwarden.routing.breakers import BreakerBoard
from costwarden.routing.table import RouteTable
from costwarden.sessions.board import SessionBoard
from costwarden.storage.ledger import LedgerWriter


class Keys(Protocol):
    """The gateway's in-memory keys (``gateway.auth.KeyCache``): a key written through the
    admin API is applied at once, not at the next poll."""

    def apply(self, records: list[KeyRecord]) -> None: ...

    def from_headers(
        self,
        headers: dict[bytes, bytes],
        scope: MutableMapping[str, Any] | None = None,
        endpoint: str = "",
    ) -> KeyRecord | None:
        """The live virtual key the headers carry (an agent's own session stream); None for
        a honeypot too, whose use (given the request's ``scope``) raises its alert."""

    def __len__(self) -> int: ...


class Switches(Protocol):
    """The gateway's switch board (``gateway.switches.SwitchBoard``): reloaded after a write."""

    async def reload(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class AdminContext:
    """Everything an admin handler reads; built once per app by the composition root."""

    engine: Engine
    #: the bearer token the admin API asks for; None turns the API off (403). Kept out of
    #: the repr so the context can be logged or shown in a traceback without it.
    admin_token: str | None = dataclasses.field(repr=False)
    keys: Keys
    #: limits: ``refresh()`` after a policy write, ``book``/``store`` for live budget status,
    #: ``config_tiers`` (tiers from the config file, not writable through the API)
    enforcer: Enforcer
    switches: Switches
    breakers: BreakerBoard
    route_table: RouteTable
    #: route (public model name) -> the deployments the config file lists for it
    route_deployments: Mapping[str, tuple[str, ...]]
    #: every deployment id, sorted (any of them may be named in a fallback chain)
    deployments: tuple[str, ...]
    events: EventBus
    #: epoch seconds; the gateway's clock, so tests that move time move the admin API's too
    clock: Callable[[], float]
    #: the timezone of calendar budget windows (``budgets.timezone``)
    budgets_timezone: str
    #: the ledger writer, for /healthz (its queue and spool); None in tests that have none
    ledger: LedgerWriter | None = None
    #: what ``GET /metrics`` renders; None when ``[metrics] enabled = false``
    metrics: MetricsExporter | None = None
    #: ``[metrics] public``: /metrics without the admin token
    metrics_public: bool = False
    #: the agent sessions' board (an escalation resolved moves its session); None when
    #: ``[sessions] enabled = false``
    sessions: SessionBoard | None = None
    #: how a company identity provider's bearer JWTs are verified (``[dashboard.jwt]``);
    #: None: JWTs sign no one in
    jwt: JwtConfig | None = None


def context(request: Request) -> AdminContext:
    """The context of the admin app serving ``request`` (set by ``create_admin_app``)."""
    ctx: AdminContext = request.app.state.admin
    return ctx
