"""The last events delivered in one process, for subscribers that resume from an id.

Events are kept as the batches they were delivered in, each a first id and its ``(ts,
payload)`` pairs (for a batch this process wrote, the very pairs its outbox held), and become
:class:`~costwarden.core.event_kinds.Event` tuples only when a subscriber replays them. A ring
of events cost every event a tuple built and appended even when no one ever resumed (about
3,000 instructions each); a batch costs one append.

The ring holds at least ``capacity`` events once that many were delivered, and at most
``capacity`` plus one batch less one: the oldest batch goes whole once the others hold
``capacity``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from costwarden.core.event_kinds import Event, EventPayload

Item = tuple[float, EventPayload]  # when it was published, what


class EventRing:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._batches: collections.deque[tuple[int, Sequence[Item]]] = collections.deque()
        self._count = 0

    def add(self, first: int, items: Sequence[Item]) -> None:
        """Events ``first``, ``first + 1``, ... (the ids after the newest kept)."""
        batches = self._batches
        batches.append((first, items))
        self._count += len(items)
        while self._count - len(batches[0][1]) >= self.capacity:
            self._count -= len(batches.popleft()[1])

    def __len__(self) -> int:
        return self._count

    @property
    def first_id(self) -> int | None:
        """The oldest id kept (None: nothing yet)."""
        return self._batches[0][0] if self._batches else None

    def after(self, after: int) -> list[Event]:
        """The kept events with an id above ``after``, in order."""
        out: list[Event] = []
        for first, items in self._batches:
            if first + len(items) <= after + 1:
                continue  # all at or below ``after``
            for offset, (ts, payload) in enumerate(items):
                if first + offset > after:
                    out.append(Event(first + offset, ts, payload))
        return out
