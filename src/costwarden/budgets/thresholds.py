"""Which shares of a limit one settle went past: the ``limit_threshold_crossed`` events.

A limit's use is what its counter holds: settled spend plus what requests in flight have
reserved (the figure admission checks). A request crosses a threshold when the use without
it, as it was admitted, was below the line and the use once it settled (its actual cost in,
its reservation out: the store answers the room left after each atomic settle) is at or above
it. Reservations are worst cases, so the settle, not the admission, is where a request's own
share is known. Requests that
overlap can both see one line crossed, so each process remembers the crossings it reported per
window (bounded) and reports each once; across processes a line may be reported once by each,
so consumers that need exactly once (alerts) key on (scope, subject, limit, window, threshold).

Pure functions; the enforcer calls :func:`crossings` after each settle.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from decimal import Decimal

from costwarden.budgets.limits import UNLIMITED
from costwarden.budgets.policy import Check
from costwarden.core.event_kinds import LimitThresholdCrossed

THRESHOLDS_PCT = (50, 80, 100)
_LOWEST = THRESHOLDS_PCT[0]
_REMEMBERED = 10_000  # crossings kept per process to report each once


def crossed(amount: int, before: int, after: int) -> list[int]:
    """The thresholds (percent of ``amount``) that a use going ``before`` -> ``after`` passed."""
    if amount <= 0 or after <= before:
        return []
    return [t for t in THRESHOLDS_PCT if before * 100 < t * amount <= after * 100]


class Crossings:
    """Remembers what this process reported (see the module docstring)."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[tuple[str, float, int, int], None] = (
            collections.OrderedDict()
        )

    def events(
        self,
        checks: Sequence[Check],
        reserved: Sequence[int],
        admitted: Sequence[int],
        settled: Sequence[int],
    ) -> list[LimitThresholdCrossed]:
        """Events for the checks a request moved past a line: ``reserved`` is what it
        reserved in each, ``admitted`` the room left once it had, ``settled`` the room left
        once it settled."""
        out: list[LimitThresholdCrossed] = []
        rows = zip(checks, reserved, admitted, settled, strict=True)
        for check, amount_reserved, room_admitted, room_settled in rows:
            amount = check.limit.amount
            used = amount - room_settled
            if used * 100 < _LOWEST * amount or amount == UNLIMITED:
                continue  # below the lowest line: most settles stop here
            limit = check.limit
            before = amount - room_admitted - amount_reserved
            for pct in crossed(limit.amount, before, used):
                seen = (check.key, check.resets_at or 0.0, check.bucket, pct)
                if seen in self._seen:
                    continue
                self._seen[seen] = None
                if len(self._seen) > _REMEMBERED:
                    self._seen.popitem(last=False)
                out.append(
                    LimitThresholdCrossed(
                        org_id=limit.org_id or None,
                        scope=limit.scope,
                        scope_id=limit.subject,
                        window=limit.window,
                        metric=limit.metric,
                        threshold_pct=pct,
                        used=_units(limit.metric, used),
                        limit=_units(limit.metric, limit.amount),
                    )
                )
        return out


def _units(metric: str, value: int) -> str:
    """A counter value in the metric's own unit: USD (from nano-dollars), tokens, requests."""
    if metric == "usd":
        return str(Decimal(value).scaleb(-9).normalize())
    return str(value)
