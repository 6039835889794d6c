"""What the enforcer does while the shared counters (Redis) cannot be reached.

``redis.on_unavailable`` chooses:

- ``fail_closed`` (the default): a request a limit applies to gets 503
  ``budget_counters_unavailable``. Once one command has failed the process refuses at once
  (mode ``refusing``) instead of costing every request a timeout, until a probe off the
  request path sees Redis answer.
- ``fail_open``: the process admits on counters of its own (mode ``local``), a
  :class:`~costwarden.budgets.memory.MemoryStore` seeded from the *figures*: what each counter
  had consumed (``limit - room``) at this process's last answer from Redis about it. Each
  limit's room is split between the gateway processes that were live then (``processes``,
  counted in Redis by a heartbeat): a process may use ``room // processes``, so a hard budget
  holds within one process exactly, and across processes as long as their figures agree (see
  docs/scale-out.md for the bound). A counter this process never had an answer about (or,
  with other processes, none in the last ``FIGURE_MAX_AGE_SECONDS``) is not guessed: its
  requests get the 503; so too all of them in a process that started so recently that the
  others may not count it yet.

When Redis answers again (mode ``reconciling``) every request admitted locally is counted in
Redis exactly once before Redis decides again: each local settle is sent as an *add*
(``add.lua``, tombstoned by lease), and each local reservation still in flight is *adopted*
(written into Redis as a lease holding its reservation), then the mode is ``shared`` again.

The policy here is pure (``local_used``, ``Figures``); the I/O is the enforcer's.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Final, Literal

from costwarden.budgets.memory import MemoryStore
from costwarden.budgets.policy import Check, View
from costwarden.budgets.reservation import Reservation

OnUnavailable = Literal["fail_closed", "fail_open"]
ON_UNAVAILABLE: Final[tuple[OnUnavailable, ...]] = ("fail_closed", "fail_open")

# shared: the counter store decides (Redis, or the embedded in-process store);
# refusing: fail_closed and Redis unreachable: 503 without a round trip;
# local: fail_open and Redis unreachable: this process's own counters decide;
# reconciling: Redis answers again; the local admissions are being counted into it.
CounterMode = Literal["shared", "refusing", "local", "reconciling"]
COUNTER_MODES: Final[tuple[CounterMode, ...]] = ("shared", "refusing", "local", "reconciling")


def mode_when_unreachable(policy: OnUnavailable) -> CounterMode:
    return "local" if policy == "fail_open" else "refusing"


def local_used(limit: int, consumed: int, processes: int) -> int:
    """What a local counter starts at, so that its room is this process's share of the room
    left at the last answer: ``(limit - consumed) // processes`` (none when it was spent)."""
    room = max(0, limit - consumed)
    return limit - room // max(1, processes)


# With other processes sharing the counters, a figure older than this is not used (their
# requests since are unknown to this one): the request gets the 503.
FIGURE_MAX_AGE_SECONDS = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Figure:
    consumed: int  # limit - room at the answer: settled + reserved, or the window's total
    bucket: int  # rolling: the bucket the answer was in (what it counted is at or before it)
    at: float = 0.0  # when (the enforcer's clock)


def usable(figure: Figure, processes: int, now: float) -> bool:
    """Alone, a process's last figure is exact however old (only it changes the counter);
    with others, only a recent one is."""
    return processes <= 1 or now - figure.at <= FIGURE_MAX_AGE_SECONDS


class Figures:
    """Each counter's consumption at this process's last answer from the shared store."""

    __slots__ = ("_by_key",)

    def __init__(self) -> None:
        self._by_key: dict[str, Figure] = {}

    def saw(self, checks: list[Check], rooms: list[int], now: float) -> None:
        """Record an answer: the room left in each check (a grant's, or a settle's)."""
        by_key = self._by_key
        for check, room in zip(checks, rooms, strict=True):
            by_key[check.key] = Figure(check.limit.amount - room, check.bucket, now)

    def get(self, key: str) -> Figure | None:
        return self._by_key.get(key)

    def __len__(self) -> int:
        return len(self._by_key)


def local_view(check: Check, figure: Figure, processes: int) -> View:
    """The local counter of ``check``, from its figure. A rolling counter's consumption is
    put in the figure's bucket (at or after everything it counted), so it leaves the window no
    earlier than what it stands for."""
    used = local_used(check.limit.amount, figure.consumed, processes)
    if check.rolling:
        return View(buckets={max(figure.bucket, check.first): used} if used else {})
    return View(used=used)


class Fallback:
    """One outage's local counters and the reservations admitted on them."""

    def __init__(self, figures: Figures, processes: int, *, counted: bool = True) -> None:
        self.store = MemoryStore()
        self.figures = figures
        self.processes = max(1, processes)
        # False: this process started so recently that the others may not count it in
        # their shares; it admits nothing locally then.
        self.counted = counted
        self._seeded: set[str] = set()
        # Local reservations not settled (nor adopted) yet: lease -> (it, reserved at).
        self.inflight: dict[str, tuple[Reservation, float]] = {}
        # Leases being adopted into Redis; settles of these wait for ``adopted``.
        self.adopting: set[str] = set()
        self.adopted = asyncio.Event()
        # Leases whose adoption failed with its outcome unknown: Redis may hold them.
        self.maybe_adopted: set[str] = set()
        self.admitted = 0  # requests admitted locally (logged when the outage ends)

    def seed(self, checks: list[Check], now: float) -> str | None:
        """Seed the local counters ``checks`` need; the key of one without a usable figure,
        if any (nothing is seeded then)."""
        if not self.counted:
            return checks[0].key
        todo = [c for c in checks if c.key not in self._seeded]
        if not todo:
            return None
        found: list[tuple[Check, Figure]] = []
        for check in todo:
            figure = self.figures.get(check.key)
            if figure is None or not usable(figure, self.processes, now):
                return check.key
            found.append((check, figure))
        for check, figure in found:
            self.store.load(check.key, local_view(check, figure, self.processes))
            self._seeded.add(check.key)
        return None
