"""Fallback chains: which deployments a route may be served by, in order. Pure functions.

A route lists its own deployments, then ``fallbacks``: other routes (by public model name)
or deployments (``provider:model``). A fallback route brings its whole chain, its own
fallbacks included, so ``gpt-4o -> claude-sonnet -> gpt-4o-mini`` can be written as each
route naming the next. A deployment appears once in a chain, at its first place. A chain
that leads back to its own route is a cycle and is refused, as is a name that is neither a
route nor a known deployment: both are configuration mistakes that would otherwise surface
only when a provider is already down.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from costwarden.core.errors import InvalidInput
from costwarden.providers.base import Deployment
from costwarden.routing.downgrade import DowngradeRule
from costwarden.routing.strategy import Strategy

TEMPLATE_FIELDS = ("content",)


@dataclasses.dataclass(frozen=True, slots=True)
class DegradedTemplate:
    """What a route answers when every candidate is failing: the assistant's reply text."""

    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class RouteCache:
    """A route's response cache: how long answers keep, and whose they are."""

    ttl_seconds: int
    replay_unsafe: bool = False  # also cache requests not safe to replay (temperature > 0...)
    namespace: str | None = None  # shared by every org under this name; None: per org


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A public model name at run time: its candidates in order, and how to call them.

    The first ``own`` candidates are the route's own deployments, which ``strategy`` orders
    per request (``weights`` in their order, for ``weighted``); the fallback chain follows
    them as configured."""

    model: str
    candidates: tuple[Deployment, ...]
    retries: int = 2
    connect_timeout: float | None = None
    first_byte_timeout: float | None = None
    timeout: float | None = None
    degraded: DegradedTemplate | None = None
    strategy: Strategy = "ordered"
    own: int = 1
    weights: tuple[float, ...] = ()
    downgrade: tuple[DowngradeRule, ...] = ()
    downgrade_on_refusal: bool = False
    cache: RouteCache | None = None
    # The reason an ordered route gives when its first candidate serves, and its header
    # (x-costwarden-route-reason), built once.
    first_reason: str = dataclasses.field(default="", compare=False)
    reason_header: tuple[bytes, bytes] = dataclasses.field(default=(b"", b""), compare=False)
    # Some own deployment says what it can do: a request's needs are read to match them.
    capable: bool = dataclasses.field(default=False, compare=False)

    def __post_init__(self) -> None:
        if not self.first_reason and self.candidates:
            reason = f"{self.strategy}: {self.candidates[0].id} (first configured)"
            object.__setattr__(self, "first_reason", reason)
        value = self.first_reason.encode("ascii", "replace")
        object.__setattr__(self, "reason_header", (b"x-costwarden-route-reason", value))
        own = self.candidates[: self.own]
        object.__setattr__(self, "capable", any(d.capabilities is not None for d in own))


def parse_template(value: Any, where: str) -> DegradedTemplate:
    """A degraded template from config or the admin API; InvalidInput says what is wrong."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f'{where}: must be a table such as {{ content = "..." }}')
    unknown = sorted(set(value) - set(TEMPLATE_FIELDS))
    if unknown:
        raise InvalidInput(f"{where}: unknown field {unknown[0]!r} (known: content)")
    content = value.get("content")
    if not isinstance(content, str) or not content.strip():
        raise InvalidInput(f"{where}.content: required, a non-empty string (the reply text)")
    return DegradedTemplate(content=content)


def check_names(names: Any, where: str) -> list[str]:
    """``fallbacks`` must be a list of strings."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise InvalidInput(f"{where}: must be a list of route names or 'provider:model' ids")
    return list(names)


def expand(
    route: str,
    own: Mapping[str, Sequence[str]],
    fallbacks: Mapping[str, Sequence[str]],
    deployments: Sequence[str] | set[str],
) -> list[str]:
    """The deployment ids ``route`` may be served by, in order.

    ``own`` maps each route to its deployments, ``fallbacks`` to its fallback names,
    ``deployments`` is every known deployment id. InvalidInput for an unknown name or a cycle.
    """
    known = set(deployments)
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        for dep in own[name]:
            if dep not in out:
                out.append(dep)
        for entry in fallbacks.get(name, ()):
            if entry in own:
                if entry in path:
                    cycle = " -> ".join((*path, entry))
                    raise InvalidInput(f"route {route!r}: fallbacks form a cycle: {cycle}")
                visit(entry, (*path, entry))
            elif entry in known:
                if entry not in out:
                    out.append(entry)
            else:
                raise InvalidInput(
                    f"route {name!r}: fallback {entry!r} is neither a route nor a deployment "
                    "(routes: " + ", ".join(sorted(own)) + ")"
                )

    visit(route, (route,))
    return out


def expand_all(
    own: Mapping[str, Sequence[str]],
    fallbacks: Mapping[str, Sequence[str]],
    deployments: Sequence[str] | set[str],
) -> dict[str, list[str]]:
    """Every route's chain (InvalidInput on the first unknown name or cycle)."""
    return {route: expand(route, own, fallbacks, deployments) for route in own}
