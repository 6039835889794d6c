"""The order one request tries its route's candidates in, and why: the route's strategy
(routing.strategy) over its own deployments, the fallback chain after them.

An ``ordered`` route whose deployments do not say what they can do -- the default, and
most routes -- takes the precomputed order and reason at no cost. The others build the
strategy's view of each own deployment per request: its prices (cached per deployment),
its live figures (routing.live) and whether its breaker is open.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Protocol, cast

from costwarden.budgets.enforcer import Reservation
from costwarden.budgets.limits import LIMIT_NAMES, is_rolling
from costwarden.core.errors import BadRequest, GatewayError
from costwarden.gateway.state import RequestState
from costwarden.providers.base import Deployment
from costwarden.routing.breaker import CLOSED
from costwarden.routing.chains import Route
from costwarden.routing.downgrade import BudgetUse, used_percent
from costwarden.routing.live import LiveFigures
from costwarden.routing.needs import request_needs
from costwarden.routing.strategy import (
    Candidate,
    Capability,
    Needs,
    choose,
    lacking,
    worst_case_usd,
)

MAX_REASON = 500  # characters of the reason kept (header and ledger)


class BreakerView(Protocol):
    """What the chooser reads of the breakers (the failover's Breakers has it)."""

    def state(self, deployment: str) -> str: ...
    def probe_due(self, deployment: str) -> bool: ...


class RouteChooser:
    def __init__(
        self,
        breakers: BreakerView,
        live: LiveFigures | None,
        default_max_tokens: int,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self._breakers = breakers
        self.live = LiveFigures() if live is None else live  # empty when not kept
        self._default_max_tokens = default_max_tokens
        self._draw = draw
        self._rates: dict[str, tuple[Decimal, Decimal]] = {}

    def order(self, call: RequestState, route: Route) -> tuple[Sequence[Deployment], str]:
        """The candidates in the order to try them, and the strategy's reason.

        A deployment without a capability the request uses is left out (it would answer
        400, which ends a walk as the client's error); none left is the client's 400."""
        if route.strategy == "ordered" and not route.capable:
            return route.candidates, route.first_reason
        needs = self.needs(call, route)
        unable: dict[str, str] = {}
        if needs.capabilities:
            for d in route.candidates:
                if (why := lacking(_capabilities(d.capabilities), needs)) is not None:
                    unable[d.id] = why
            if len(unable) == len(route.candidates):
                detail = "; ".join(f"{i}: {why}" for i, why in unable.items())
                raise BadRequest(
                    f"no deployment of {route.model!r} can take this request ({detail})"
                )
        own = route.candidates[: route.own]
        breakers = self._breakers
        unavailable = {
            d.id: "circuit breaker open"
            for d in own
            if breakers.state(d.id) != CLOSED and not breakers.probe_due(d.id)
        }
        candidates = [self.candidate(route, i, d) for i, d in enumerate(own)]
        choice = choose(
            route.strategy, candidates, needs, unavailable=unavailable, draw=self._draw()
        )
        by_id = {d.id: d for d in own}
        ordered = [by_id[i] for i in choice.order if i not in unable]
        ordered += [d for d in route.candidates[route.own :] if d.id not in unable]
        return ordered, choice.reason

    def needs(self, call: RequestState, route: Route) -> Needs:
        return request_needs(
            call.endpoint,
            call.payload,
            call.stream,
            len(call.body) + call.added_bytes,
            capabilities=route.capable,
        )

    def candidate(self, route: Route, index: int, dep: Deployment) -> Candidate:
        rates = self._rates.get(dep.id)
        if rates is None:
            rates = self._rates[dep.id] = dep.rates.bound_rates()
        live = self.live
        weights = route.weights
        return Candidate(
            dep.id,
            rates[0],
            rates[1],
            dep.context_window,
            _capabilities(dep.capabilities),
            weights[index] if index < len(weights) else 0.0,
            live.latency_ms.get(dep.id),
            live.in_flight.get(dep.id, 0),
            dep.max_output_tokens or self._default_max_tokens,
        )

    def cheaper_than(
        self, call: RequestState, route: Route, refused: Deployment, rest: Sequence[Deployment]
    ) -> list[Deployment]:
        """Of ``rest``, those cheaper for this request than ``refused``, cheapest first: where
        a refused reservation may be served instead (``downgrade_on_refusal``)."""
        needs = self.needs(call, route)
        ceiling = worst_case_usd(self.candidate(route, 0, refused), needs)
        priced = [(worst_case_usd(self.candidate(route, 0, d), needs), n, d) for n, d in
                  enumerate(rest)]  # fmt: skip
        return [d for cost, _, d in sorted(priced, key=lambda p: (p[0], p[1])) if cost < ceiling]


def budget_uses(reservation: Reservation) -> list[BudgetUse]:
    """How much of each USD budget the reservation met was used before it."""
    out: list[BudgetUse] = []
    for i, check in enumerate(reservation.checks):
        limit = check.limit
        if check.rolling or limit.metric != "usd":
            continue
        percent = used_percent(limit.amount, reservation.remaining[i], reservation.amounts[i])
        out.append(BudgetUse(limit.scope, limit.name, percent))
    return out


def refusal_uses(refused: GatewayError) -> list[BudgetUse]:
    """The USD budget that refused a reservation, as a downgrade rule reads it: what was
    spent and held by others, of its amount."""
    extra = refused.extra or {}
    name = str(extra.get("limit_name"))
    kind = LIMIT_NAMES.get(name)
    if kind is None or kind[0] != "usd" or is_rolling(kind[1]):
        return []
    try:
        limit = Decimal(str(extra["limit"]))
        used = Decimal(str(extra["spent"])) + Decimal(str(extra.get("reserved") or 0))
    except (KeyError, ArithmeticError):
        return []
    percent = used * 100 / limit if limit > 0 else Decimal(100)
    return [BudgetUse(str(extra.get("scope")), name, percent)]


def served_reason(reason: str, first: Deployment, served: Deployment, passed: list[str]) -> str:
    """The reason, with what the walk passed over when another than the first served."""
    if served is not first and passed:
        reason = f"{reason}; served by {served.id} after " + "; ".join(passed)
    return header_safe(reason)


def header_safe(text: str) -> str:
    """``text`` as a header value can carry it: printable ASCII, at most MAX_REASON long."""
    if not (text.isascii() and text.isprintable()):
        text = "".join(c if c.isascii() and c.isprintable() else "?" for c in text)
    return text[:MAX_REASON]


def _capabilities(said: frozenset[str] | None) -> frozenset[Capability] | None:
    # Each one checked against routing.strategy.CAPABILITIES by the config.
    return cast(frozenset[Capability] | None, said)
