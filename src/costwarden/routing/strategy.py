"""Route strategies: in what order a route tries its own deployments for one request, and
why. Pure functions over data; the gateway supplies the request's needs, what each
deployment can do, its prices and its live figures (latency, requests in flight, breaker).

- ``ordered``: as configured (the chain as it always was).
- ``weighted``: one deployment drawn by weight (the caller supplies the uniform draw, so a
  test can choose it), the others after it in configured order: a failure still falls
  through to them.
- ``cheapest``: among the deployments that can take the request -- its token bound fits the
  context window, and it has the tools, vision, structured output and streaming the request
  uses -- the cheapest for *this* request first: its prompt bound at the dearest input rate
  plus its output cap at the dearest output rate, the same worst case a hard budget
  reserves. Ties keep configured order.
- ``lowest-latency``: ascending moving average of upstream latency; one never measured goes
  first, since it can only be compared once it has been tried.
- ``least-busy``: ascending requests in flight, ties in configured order.

Whatever the strategy, a deployment that cannot take the request, or whose breaker is open,
goes after those that can, so the walk still reports why it was passed over. The reason names
the deployment chosen and what was skipped; it becomes ``x-costwarden-route-reason`` and the
ledger row's reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Literal, get_args

Strategy = Literal["ordered", "weighted", "cheapest", "lowest-latency", "least-busy"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

Capability = Literal["tools", "vision", "structured_output", "streaming"]
CAPABILITIES: tuple[Capability, ...] = get_args(Capability)

WEIGHT_TOTAL = 100  # weights are percentages of the route's traffic
EWMA_ALPHA = 0.2  # each new latency sample's share of the moving average


@dataclasses.dataclass(frozen=True, slots=True)
class Needs:
    """What one request needs of a deployment."""

    prompt_tokens: int  # an upper bound
    output_tokens: int | None  # the client's output cap; None: each candidate's own cap
    capabilities: frozenset[Capability] = frozenset()


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    """One of the route's own deployments, as the strategy sees it."""

    id: str
    input_usd_per_token: Decimal  # the dearest input rate (cached writes included)
    output_usd_per_token: Decimal  # the dearest output rate (reasoning included)
    context_window: int | None = None  # None: unknown, assumed large enough
    capabilities: frozenset[Capability] | None = None  # None: unknown, assumed able
    weight: float = 0.0  # the weighted strategy's percentage
    latency_ms: float | None = None  # moving average of upstream latency; None: unmeasured
    in_flight: int = 0
    max_output_tokens: int = 4096  # the cap a request without one is sent (and reserved) with


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    order: tuple[str, ...]  # deployment ids, in the order to try them
    reason: str  # why the first one: for the response header and the ledger


def unfit(candidate: Candidate, needs: Needs) -> str | None:
    """Why ``candidate`` cannot take the request, or None when it can."""
    window = candidate.context_window
    # Only the client's own cap counts: without one the model stops at its window.
    wanted = needs.prompt_tokens + (needs.output_tokens or 0)
    if window is not None and wanted > window:
        return f"needs about {wanted} tokens, context window {window}"
    return lacking(candidate.capabilities, needs)


def lacking(capabilities: frozenset[Capability] | None, needs: Needs) -> str | None:
    """What of ``needs``' capabilities a deployment able to do ``capabilities`` lacks ("no
    tools or vision"), or None (None capabilities: not said, assumed able)."""
    if capabilities is None or not needs.capabilities:
        return None
    missing = needs.capabilities - capabilities
    if not missing:
        return None
    return "no " + " or ".join(c.replace("_", " ") for c in sorted(missing))


def worst_case_usd(candidate: Candidate, needs: Needs) -> Decimal:
    """The most this request can cost on ``candidate`` (what a hard budget reserves)."""
    return (
        needs.prompt_tokens * candidate.input_usd_per_token
        + _output(candidate, needs) * candidate.output_usd_per_token
    )


def _output(candidate: Candidate, needs: Needs) -> int:
    return candidate.max_output_tokens if needs.output_tokens is None else needs.output_tokens


def choose(
    strategy: Strategy,
    candidates: Sequence[Candidate],
    needs: Needs,
    *,
    unavailable: Mapping[str, str] | None = None,
    draw: float = 0.0,
) -> Choice:
    """The order to try ``candidates`` in (configured order given), and why the first.

    ``unavailable``: deployments passed over for now and why (a breaker open); ``draw``: a
    uniform number in [0, 1) for the weighted strategy."""
    skipped: dict[str, str] = dict(unavailable or {})
    able: list[Candidate] = []
    for candidate in candidates:
        why = skipped.get(candidate.id) or unfit(candidate, needs)
        if why is None:
            able.append(candidate)
        else:
            skipped[candidate.id] = why
    rest = [c.id for c in candidates if c.id in skipped]
    if not able:
        detail = "; ".join(f"{c.id}: {skipped[c.id]}" for c in candidates)
        return Choice(tuple(rest), f"{strategy}: no deployment can take it ({detail})")
    ranked, why_first = _rank(strategy, able, needs, draw)
    reason = f"{strategy}: {ranked[0].id}{why_first}"
    passed = [f"{i}: {skipped[i]}" for i in rest]
    if passed:
        reason += " (skipped " + "; ".join(passed) + ")"
    return Choice(tuple(c.id for c in ranked) + tuple(rest), reason)


def _rank(
    strategy: Strategy, able: list[Candidate], needs: Needs, draw: float
) -> tuple[list[Candidate], str]:
    """``able`` in the strategy's order, and what the reason says of the first."""
    if strategy == "cheapest":
        ranked = sorted(able, key=lambda c: worst_case_usd(c, needs))  # stable: ties in order
        return ranked, f", at most ${_usd(worst_case_usd(ranked[0], needs))} for this request"
    if strategy == "lowest-latency":
        ranked = sorted(able, key=lambda c: -1.0 if c.latency_ms is None else c.latency_ms)
        first = ranked[0].latency_ms
        return ranked, " (not measured yet)" if first is None else f" ({first:.0f} ms average)"
    if strategy == "least-busy":
        ranked = sorted(able, key=lambda c: c.in_flight)
        return ranked, f" ({ranked[0].in_flight} in flight)"
    if strategy == "weighted":
        picked = _draw(able, draw)
        total = sum(c.weight for c in able)
        ranked = [picked, *(c for c in able if c is not picked)]
        return ranked, f" (drawn at weight {picked.weight:g} of {total:g})"
    return list(able), " (first configured)"


def _draw(able: Sequence[Candidate], draw: float) -> Candidate:
    """The candidate whose share of the total weight ``draw`` falls in."""
    total = sum(c.weight for c in able)
    if total <= 0:
        return able[0]
    point = min(max(draw, 0.0), 0.999999999) * total
    for candidate in able:
        point -= candidate.weight
        if point < 0:
            return candidate
    return able[-1]


def _usd(amount: Decimal) -> str:
    return format(amount.quantize(Decimal("0.000001")).normalize(), "f")


def check_weights(weights: Sequence[float]) -> str | None:
    """What is wrong with a weighted route's weights (positive percentages summing to 100),
    or None."""
    if not weights:
        return "a weighted route needs a weight for each of its deployments"
    if any(w <= 0 for w in weights):
        return "weights must be positive"
    total = sum(weights)
    if abs(total - WEIGHT_TOTAL) > 1e-9:
        return f"weights must sum to {WEIGHT_TOTAL} (percent of the route's traffic), not {total:g}"
    return None


def ewma(previous: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    """The moving average after ``sample`` (the first sample is the average)."""
    return sample if previous is None else previous + alpha * (sample - previous)
