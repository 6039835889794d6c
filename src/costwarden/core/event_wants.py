"""What the other gateway processes wait for, so that this one's events may gather when no one does.

Every request raises an event. While no one waits for them -- no live stream (``GET
/admin/events``) and no background consumer of their kind, in this process or another -- the
bus lets them gather in its outbox for ``idle_flush_interval`` and writes them in one
transaction. A process learns what the others wait for over the relay: one that waits for
something announces it (every kind for a live stream, else the kinds its background
consumers wait for) at once when that changes and again every :data:`ANNOUNCE_SECONDS`; an
announcement not renewed within :data:`EXPIRES_SECONDS` lapses (its process is gone).

Before, a process with a relay wrote and published its events every ``flush_interval``
(20 ms) in case another process waited: 50 log transactions, 50 PUBLISH and 50 pub/sub
messages a second per process, measured at about 0.15-0.3 ms of the gateway's CPU per
request at c=1 (docs/benchmarks.md).

An announcement travels as a relay message whose first id is 0 (real ids start at 1): a
batch holding one item of kind :data:`KIND`, which an older version skips as an id it has
already delivered, so the two can share a relay during a rolling upgrade.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

__all__ = ["ANNOUNCE_SECONDS", "EXPIRES_SECONDS", "KIND", "Announcement", "RemoteWants"]

ANNOUNCE_SECONDS = 1.0
EXPIRES_SECONDS = 3.5
KIND = "events.wanted"


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    origin: str  # the announcing bus, to skip its own
    every: bool  # a live stream there: every kind is waited for
    kinds: frozenset[str]  # the kinds its background consumers wait for

    @property
    def empty(self) -> bool:
        return not self.every and not self.kinds

    def encode(self, ts_ms: int) -> bytes:
        data = {"origin": self.origin, "every": self.every, "kinds": sorted(self.kinds)}
        return orjson.dumps([0, [[ts_ms, KIND, None, data]]])

    @classmethod
    def decode(cls, items: Any) -> Announcement | None:
        """The announcement in a first-id-0 message's items; None if it is malformed."""
        try:
            (_ts, kind, _org, data) = items[0]
            origin, every, kinds = data["origin"], data["every"], data["kinds"]
        except (TypeError, ValueError, KeyError, IndexError):
            return None
        valid = (
            kind == KIND and isinstance(origin, str) and isinstance(every, bool)
            and isinstance(kinds, list) and all(isinstance(k, str) for k in kinds)
        )  # fmt: skip
        return cls(origin, every, frozenset(kinds)) if valid else None


class RemoteWants:
    """The other processes' announcements, and what they add up to: :attr:`every` (someone
    streams every event) and :attr:`kinds` (kinds a background consumer waits for)."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.every = False
        self.kinds: frozenset[str] = frozenset()
        self._heard: dict[str, tuple[float, Announcement]] = {}

    def heard(self, announcement: Announcement, now: float) -> bool:
        """Take ``announcement`` (heard at ``now``, monotonic); True if others now wait for
        more than before (a gathering outbox should be written now)."""
        if announcement.origin == self.origin:
            return False
        if announcement.empty:
            self._heard.pop(announcement.origin, None)
        else:
            self._heard[announcement.origin] = (now + EXPIRES_SECONDS, announcement)
        return self._add_up(now)

    def expire(self, now: float) -> None:
        """Forget announcements not renewed in time."""
        if any(until <= now for until, _ in self._heard.values()):
            self._add_up(now)

    def _add_up(self, now: float) -> bool:
        self._heard = {o: (u, a) for o, (u, a) in self._heard.items() if u > now}
        every = any(a.every for _, a in self._heard.values())
        kinds = frozenset(k for _, a in self._heard.values() for k in a.kinds)
        more = (every and not self.every) or not kinds <= self.kinds
        self.every, self.kinds = every, kinds
        return more
