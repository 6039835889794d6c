"""A request's reservation (what the proxy holds from reserve to settle) and its headers,
and the error a refused request gets."""

from __future__ import annotations

import functools
import math
from typing import Any

from costwarden.budgets.limits import format_amount
from costwarden.budgets.policy import Check, Grant, Refusal
from costwarden.budgets.windows import iso
from costwarden.core.errors import BudgetExceeded, BudgetInFlight, GatewayError, RateLimited


class Reservation:
    """What one admitted request holds until it settles."""

    __slots__ = (
        "lease", "checks", "amounts", "out_tokens", "remaining", "settled", "local", "holder",
    )  # fmt: skip

    def __init__(
        self, lease: str, checks: list[Check], grant: Grant, *, local: bool = False
    ) -> None:
        self.lease = lease
        # Admitted on this process's own counters while Redis was unreachable (outage.py).
        self.local = local
        self.checks = checks
        self.amounts = grant.amounts
        self.out_tokens = grant.out_tokens
        self.remaining = grant.remaining
        self.settled = False
        # The slice lease that admitted it (budgets/leased.py), for its ledger row.
        self.holder = grant.holder

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Remaining budget and rate-limit headers (the tightest limit of each kind)."""
        tightest: dict[tuple[bool, str], int] = {}
        remaining = self.remaining
        for i, check in enumerate(self.checks):
            kind = (check.rolling, check.limit.metric)
            best = tightest.get(kind)
            if best is None or remaining[i] < remaining[best]:
                tightest[kind] = i
        out: list[tuple[bytes, bytes]] = []
        reset: float | None = None
        for kind, i in tightest.items():
            check = self.checks[i]
            metric = kind[1]
            left = format_amount(metric, remaining[i] if remaining[i] > 0 else 0).encode()
            if kind[0]:
                limit_name, remaining_name = _RATE_HEADERS[metric]
                out.append((limit_name, _amount_bytes(metric, check.limit.amount)))
                out.append((remaining_name, left))
            else:
                out.append((_BUDGET_HEADERS[metric], left))
                if check.resets_at is not None and (reset is None or check.resets_at < reset):
                    reset = check.resets_at
        if reset is not None:
            out.append((b"x-costwarden-budget-reset", _iso_bytes(reset)))
        if self.out_tokens is not None:
            out.append((b"x-costwarden-max-tokens-clamped", str(self.out_tokens).encode()))
        return out


_RATE_HEADERS = {
    m: (f"x-ratelimit-limit-{m}".encode(), f"x-ratelimit-remaining-{m}".encode())
    for m in ("usd", "tokens", "requests")
}
_BUDGET_HEADERS = {
    m: f"x-costwarden-budget-remaining-{m}".encode() for m in ("usd", "tokens", "requests")
}


@functools.lru_cache(maxsize=256)
def _iso_bytes(epoch: float) -> bytes:
    return str(iso(epoch)).encode()


@functools.lru_cache(maxsize=1024)
def _amount_bytes(metric: str, amount: int) -> bytes:
    """A limit's amount as a header value (the same few limits on every response)."""
    return format_amount(metric, amount).encode()


def refusal_error(
    refusal: Refusal, checks: list[Check], inflight_retry_seconds: int
) -> GatewayError:
    """The error a refused request gets (402 budget, 429 rate or in flight)."""
    check = checks[refusal.index]
    limit = check.limit
    metric = limit.metric

    def fmt(units: int) -> str:
        return format_amount(metric, units)

    who = limit.scope if limit.scope == "platform" else f"{limit.scope} {limit.subject}"
    extra: dict[str, Any] = {
        "scope": limit.scope,
        "scope_id": limit.subject or None,
        "limit_name": limit.name,
        "limit": fmt(limit.amount),
        "spent": fmt(refusal.used),
    }
    if refusal.kind == "rate":
        wait = max(1, math.ceil(refusal.retry_after or 1))
        extra["retry_after"] = wait
        return RateLimited(
            f"rate limit {limit.name} = {fmt(limit.amount)} reached for {who} "
            f"({fmt(refusal.used)} used in the window); retry after {wait} s",
            extra=extra,
            headers={"retry-after": str(wait)},
        )
    resets = iso(check.resets_at)
    extra["resets_at"] = resets
    if refusal.kind == "budget":
        when = f"resets at {resets}" if resets else "a lifetime budget does not reset"
        return BudgetExceeded(
            f"budget exceeded: {who} {limit.name} = {fmt(limit.amount)} is spent "
            f"({fmt(refusal.used)} used); {when}",
            extra=extra,
            headers={"x-costwarden-budget-reset": resets} if resets else None,
        )
    wait = inflight_retry_seconds
    extra["reserved"] = fmt(refusal.reserved)
    extra["retry_after"] = wait
    return BudgetInFlight(
        f"budget {limit.name} of {who} is held by requests in flight "
        f"({fmt(refusal.reserved)} reserved, {fmt(refusal.used)} spent of "
        f"{fmt(limit.amount)}); retry after {wait} s",
        extra=extra,
        headers={"retry-after": str(wait)},
    )
