"""Which shares of a limit one settle went past: the ``limit_threshold_crossed`` events.

Each limit carries its own lines (``Limit.alert_lines``: 50, 80 and 100 % unless an alert
rule sets others, see ``budgets.alert_lines``).

A limit's use is what its counter holds: settled spend plus what requests in flight have
reserved (the figure admission checks). A request crosses a threshold when the use without
it, as it was admitted, was below the line and the use once it settled (its actual cost in,
its reservation out: the store answers the room left after each atomic settle) is at or above
it. Reservations are worst cases, so the settle, not the admission, is where a request's own
share is known. Requests that
overlap can both see one line crossed, so each process remembers the crossings it reported per
window (bounded) and reports each once; across processes a line may be reported once by each,
so consumers that need exactly once (alerts) key on (scope, subject, limit, window, threshold).

Pure functions; the enforcer calls :meth:`Crossings.events` after each settle. Most settles
leave every limit below its lowest line, so that case is one C-level pass over the rooms
(``all(map(gt, ...))`` against lines computed once per list of checks): the per-check Python
loop cost about 11,500 instructions a request with four limits, the pass about 1,500.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from operator import gt

from costwarden.budgets.alert_lines import DEFAULT_LINES
from costwarden.budgets.limits import UNLIMITED
from costwarden.budgets.policy import Check
from costwarden.budgets.windows import bucket_seconds
from costwarden.core.event_kinds import LimitThresholdCrossed

_REMEMBERED = 10_000  # crossings kept per process to report each once
_LINES_KEPT = 4096  # lists of checks whose lines are known (the enforcer caches the lists)


def crossed(
    amount: int, before: int, after: int, lines: Sequence[int] = DEFAULT_LINES
) -> list[int]:
    """The ``lines`` (percent of ``amount``) that a use going ``before`` -> ``after`` passed."""
    if amount <= 0 or after <= before:
        return []
    return [t for t in lines if before * 100 < t * amount <= after * 100]


def lowest_line(amount: int, lowest_pct: int = DEFAULT_LINES[0]) -> float:
    """The room left at or below which a limit of ``amount`` has reached its lowest line
    (-inf: never, for an unlimited or empty limit). Exact: for an integer room, ``room >
    line`` is ``(amount - room) * 100 < lowest_pct * amount``, the rule
    :meth:`Crossings.events` applies to each limit (floor division keeps it exact for lines
    past 100 %, where the room is negative)."""
    if amount <= 0:
        return -math.inf
    return amount * (100 - lowest_pct) // 100


class Crossings:
    """Remembers what this process reported (see the module docstring)."""

    def __init__(self) -> None:
        self._seen: collections.OrderedDict[tuple[str, str, int], None] = (
            collections.OrderedDict()
        )
        # id of a list of checks -> (that list, each check's lowest line); the list is kept
        # so that its id cannot be reused while it is here.
        self._lines: dict[int, tuple[Sequence[Check], tuple[float, ...]]] = {}

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
        known = self._lines.get(id(checks))
        if known is None or known[0] is not checks:
            known = self._learn(checks)
        if all(map(gt, settled, known[1])):
            return []  # every limit still below its lowest line: most settles stop here
        out: list[LimitThresholdCrossed] = []
        rows = zip(checks, reserved, admitted, settled, strict=True)
        for check, amount_reserved, room_admitted, room_settled in rows:
            limit = check.limit
            amount = limit.amount
            used = amount - room_settled
            if used * 100 < limit.alert_lines[0] * amount or amount == UNLIMITED:
                continue  # below the lowest line
            before = amount - room_admitted - amount_reserved
            for pct in crossed(amount, before, used, limit.alert_lines):
                seen = (check.key, _window_key(check), pct)
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
                        window_key=_window_key(check),
                        resets_at=_iso(_resets_at(check)),
                    )
                )
        return out

    def _learn(self, checks: Sequence[Check]) -> tuple[Sequence[Check], tuple[float, ...]]:
        if len(self._lines) >= _LINES_KEPT:
            self._lines.clear()  # bounded; relearnt from the next settles
        known = (
            checks,
            tuple(lowest_line(c.limit.amount, c.limit.alert_lines[0]) for c in checks),
        )
        self._lines[id(checks)] = known
        return known


def _window_key(check: Check) -> str:
    """The window instance a crossing belongs to: the same for every request in it.

    A rolling window (a rate limit) has no instance of its own, and a steady rate would cross
    its lines again in every bucket: its crossings count per clock hour instead, so a rate
    limit alerts at most once an hour per line."""
    if check.rolling:
        return f"hour:{_hour(check)}"
    if check.resets_at is None:
        return "lifetime"
    return f"until:{int(check.resets_at)}"


def _hour(check: Check) -> int:
    return check.bucket * bucket_seconds(check.limit.window) // 3600


def _resets_at(check: Check) -> float | None:
    """When the window instance ends: the calendar reset, or a rolling window's hour's end."""
    if check.rolling:
        return float((_hour(check) + 1) * 3600)
    return check.resets_at


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _units(metric: str, value: int) -> str:
    """A counter value in the metric's own unit: USD (from nano-dollars), tokens, requests."""
    if metric == "usd":
        return str(Decimal(value).scaleb(-9).normalize())
    return str(value)
