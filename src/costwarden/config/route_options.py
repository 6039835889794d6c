"""A route's routing and caching options: ``strategy``, ``weights``, ``downgrade``,
``downgrade_on_refusal`` and ``cache``; and a deployment's ``capabilities``.

Split from :mod:`costwarden.config.upstreams` (which reads the rest of a route). Each value
is checked here, where the config's line numbers are known, with the same rules the domain's
own checks apply (``routing.strategy.check_weights``, ``routing.downgrade.check_rules``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, cast

from costwarden.budgets.limits import BUDGET_NAMES, SCOPES
from costwarden.config.fields import reject_unknown
from costwarden.config.lines import ConfigText as _Ctx
from costwarden.routing.chains import RouteCache
from costwarden.routing.downgrade import DowngradeRule, check_rules
from costwarden.routing.strategy import (
    CAPABILITIES,
    STRATEGIES,
    Capability,
    Strategy,
    check_weights,
)

ROUTE_OPTION_KEYS = {"strategy", "weights", "downgrade", "downgrade_on_refusal", "cache"}
_RULE_KEYS = {"above_percent", "to", "scope", "limit"}
_USD_BUDGETS = [name for name, (metric, _) in BUDGET_NAMES.items() if metric == "usd"]
_CACHE_KEYS = {"ttl_seconds", "replay_unsafe", "namespace"}
MAX_TTL_SECONDS = 30 * 86_400


def strategy_of(item: dict[str, Any], key: str, ctx: _Ctx) -> tuple[Strategy, tuple[float, ...]]:
    """The route's strategy and, for ``weighted``, its weights (one per deployment)."""
    value = item.get("strategy", "ordered")
    if value not in STRATEGIES:
        raise ctx.fail(
            f"{key}.strategy",
            f"unknown strategy {value!r} (known: {', '.join(STRATEGIES)})",
            "strategy",
        )
    strategy = cast(Strategy, value)
    raw = item.get("weights")
    if raw is None:
        if strategy == "weighted":
            raise ctx.fail(
                f"{key}.strategy", "a weighted route needs weights, one per deployment", "strategy"
            )
        return strategy, ()
    if strategy != "weighted":
        raise ctx.fail(f"{key}.weights", "only a weighted route takes weights", "weights")
    deployments = item.get("deployments") or []
    if (
        not isinstance(raw, list)
        or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in raw)
        or len(raw) != len(deployments)
    ):
        raise ctx.fail(
            f"{key}.weights",
            f"must be a list of {len(deployments)} numbers, one per deployment, in their order",
            "weights",
        )
    weights = tuple(float(w) for w in raw)
    if problem := check_weights(weights):
        raise ctx.fail(f"{key}.weights", problem, "weights")
    return strategy, weights


def downgrade_of(
    item: dict[str, Any], key: str, ctx: _Ctx
) -> tuple[tuple[DowngradeRule, ...], bool]:
    """The route's downgrade rules (checked against its own deployments) and whether a
    refused reservation may be served by a cheaper deployment."""
    on_refusal = item.get("downgrade_on_refusal", False)
    if not isinstance(on_refusal, bool):
        raise ctx.fail(f"{key}.downgrade_on_refusal", "must be true or false", None)
    raw = item.get("downgrade", [])
    if not isinstance(raw, list):
        raise ctx.fail(
            f"{key}.downgrade",
            'must be an array of tables such as { above_percent = 80, to = "provider:model" }',
            "downgrade",
        )
    rules: list[DowngradeRule] = []
    for i, entry in enumerate(raw):
        where = f"{key}.downgrade[{i}]"
        if not isinstance(entry, dict):
            raise ctx.fail(where, 'must be a table: { above_percent = 80, to = "..." }', None)
        reject_unknown(entry, _RULE_KEYS, where, ctx)
        percent = _percent(entry.get("above_percent"))
        to = entry.get("to")
        if percent is None:
            raise ctx.fail(f"{where}.above_percent", "required: a number from 0 to below 100")
        if not isinstance(to, str) or not to:
            raise ctx.fail(f"{where}.to", "required: one of the route's deployments", None)
        scope, limit = entry.get("scope"), entry.get("limit")
        for name, value in (("scope", scope), ("limit", limit)):
            if value is not None and (not isinstance(value, str) or not value):
                raise ctx.fail(f"{where}.{name}", "must be a non-empty string", name)
        rules.append(DowngradeRule(percent, to, scope, limit))
    own = [str(d) for d in item.get("deployments") or []]
    if problem := check_rules(rules, own, SCOPES, _USD_BUDGETS):
        raise ctx.fail(f"{key}.{problem.split(':', 1)[0]}", problem.split(": ", 1)[1], "downgrade")
    return tuple(rules), on_refusal


def cache_of(
    item: dict[str, Any], key: str, ctx: _Ctx, default: RouteCache | None
) -> RouteCache | None:
    """The route's response cache (None: not cached), from its ``cache`` table or the
    ``[cache]`` section's defaults."""
    raw = item.get("cache")
    if raw is None:
        return default
    default_ttl = 0 if default is None else default.ttl_seconds
    where = f"{key}.cache"
    if not isinstance(raw, dict):
        raise ctx.fail(where, "must be a table such as { ttl_seconds = 600 }", "cache")
    reject_unknown(raw, _CACHE_KEYS, where, ctx)
    ttl = raw.get("ttl_seconds", default_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL_SECONDS:
        raise ctx.fail(
            f"{where}.ttl_seconds",
            f"must be a whole number of seconds from 0 (not cached) to {MAX_TTL_SECONDS}",
            "ttl_seconds",
        )
    unsafe = raw.get("replay_unsafe", False)
    if not isinstance(unsafe, bool):
        raise ctx.fail(f"{where}.replay_unsafe", "must be true or false", "replay_unsafe")
    namespace = raw.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace.strip()):
        raise ctx.fail(f"{where}.namespace", "must be a non-empty string", "namespace")
    return RouteCache(ttl, unsafe, namespace) if ttl > 0 else None


def capabilities_of(item: dict[str, Any], key: str, ctx: _Ctx) -> frozenset[Capability] | None:
    """A deployment's capabilities (None: not said, assumed able)."""
    raw = item.get("capabilities")
    if raw is None:
        return None
    if not isinstance(raw, list) or any(c not in CAPABILITIES for c in raw):
        raise ctx.fail(
            f"{key}.capabilities",
            "must be a list of: " + ", ".join(CAPABILITIES),
            "capabilities",
        )
    return frozenset(cast(list[Capability], raw))


def _percent(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        percent = Decimal(str(value))
    except InvalidOperation:
        return None
    return percent if percent.is_finite() and 0 <= percent < 100 else None
