"""The session board: each gateway process's view of the agent sessions, moved by the
request path, stored once across processes, published as ``session_changed``.

The request path asks :meth:`SessionBoard.admit` before anything is reserved (a dict
lookup: a session with no entry is ``active``), tells :meth:`~SessionBoard.spent` the share
of the session's budget once its reservation is made (wind-down), and
:meth:`~SessionBoard.budget_gone` when the session's own budget refused the request (sleep
until the window resets, or exhausted). Each of these decides with ``sessions.lifecycle`` at
once, in memory, so the answer never waits on the database; the transition is handed to one
writer task that stores it by compare-and-set (:class:`SessionStore`) and publishes it.

Across processes: every board follows the bus's ``session_changed`` events (from the event
log, in one order for every process) and takes a change whose ``version`` is above the one it
holds. A write that loses the compare-and-set (another process moved the session first)
takes the stored row instead, and publishes nothing. A sleeping session is woken by the
first board whose wake loop finds its ``wake_at`` past (the others lose the compare-and-set):
an event, with no request needed; a request that comes first is let through at once.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from costwarden.core.event_kinds import EscalationCreated, SessionChanged, SessionRunaway
from costwarden.core.events import EventBus
from costwarden.core.subscription import Subscription
from costwarden.core.tasks import cancel_and_wait
from costwarden.sessions.lifecycle import (
    DEFAULT_WIND_DOWN_PCT,
    GO,
    SLEEPING,
    Admission,
    Standing,
    Transition,
    admit,
    new_escalation_id,
    on_budget_gone,
    on_clock,
    on_runaway,
    on_spend,
)
from costwarden.sessions.loops import (
    Finding,
    LoopPolicy,
    check_errors,
    check_repeat,
    check_velocity,
)

logger = logging.getLogger(__name__)

SessionKey = tuple[str, str]  # (org id, session id)


class SessionStore(Protocol):
    """Where sessions are kept (the app passes the database's, ``storage.sessions``)."""

    def load(self) -> list[tuple[SessionKey, Standing, int]]:
        """Every session not ``active``, with its version."""

    def get(self, key: SessionKey) -> tuple[Standing, int] | None: ...

    def record(self, key: SessionKey, moved: Transition, version: int | None) -> int | None:
        """Store ``moved`` if the session is still at ``version``: its new version, or None
        if another writer moved it first."""

    def open_escalation(
        self, key: SessionKey, escalation_id: str, reason: str, evidence: Any, now: float
    ) -> None: ...


@dataclasses.dataclass(slots=True)
class _Entry:
    standing: Standing
    version: int | None  # as stored; None: no row yet
    key_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Write:
    key: SessionKey
    moved: Transition
    key_id: str | None
    finding: Finding | None = None  # a pause: the escalation to open first


@dataclasses.dataclass(slots=True)
class _Pace:
    """A session's recent use, for the velocity and error-burst signals."""

    minutes: dict[int, int] = dataclasses.field(default_factory=dict)  # minute: tokens
    errors: int = 0  # upstream errors in a row
    # The earlier busy minutes, as of the minute ``upto`` (rebuilt once a minute, not per
    # request: the median of up to an hour of minutes is the costly part of the check).
    earlier: list[int] = dataclasses.field(default_factory=list)
    upto: int = -1


_HISTORY = 256  # fingerprints remembered per session for the repeat signal
_MINUTES = 60  # minutes of pace kept per session
_PRUNE_EVERY = 60.0  # seconds between two prunes of what the board remembers


class SessionBoard:
    def __init__(
        self,
        store: SessionStore,
        events: EventBus,
        *,
        clock: Callable[[], float],
        wind_down_pct: Decimal = DEFAULT_WIND_DOWN_PCT,
        wake_interval: float = 1.0,
        loops: LoopPolicy | None = None,
    ) -> None:
        self._store = store
        self._events = events
        self._clock = clock
        self.wind_down_pct = wind_down_pct
        self.loops = LoopPolicy() if loops is None else loops
        # Per session, per fingerprint (the least recently sent first), the times it was
        # sent: the last repeat_count of them, all the repeat signal needs.
        self._seen: dict[SessionKey, dict[str, collections.deque[float]]] = {}
        self._pace: dict[SessionKey, _Pace] = {}
        self._wake_interval = wake_interval
        self._entries: dict[SessionKey, _Entry] = {}
        self._writes: asyncio.Queue[_Write] = asyncio.Queue()
        self._pending: collections.Counter[SessionKey] = collections.Counter()  # writes queued
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        for key, standing, version in await asyncio.to_thread(self._store.load):
            self._entries[key] = _Entry(standing, version)
        subscription = self._events.subscribe(
            kinds=frozenset({SessionChanged.kind}), background=True
        )
        self._tasks = [
            asyncio.create_task(self._follow(subscription)),
            asyncio.create_task(self._write_loop()),
            asyncio.create_task(self._wake_loop()),
        ]

    async def close(self) -> None:
        await self.flush()
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def flush(self) -> None:
        """Wait until every transition decided so far is stored (tests, shutdown)."""
        if self._tasks:
            await self._writes.join()

    # ------------------------------------------------------------------ the request path

    def standing(self, org_id: str, session_id: str) -> Standing:
        entry = self._entries.get((org_id, session_id))
        return Standing() if entry is None else entry.standing

    def admit(self, org_id: str, session_id: str, now: float) -> Admission:
        entry = self._entries.get((org_id, session_id))
        if entry is None:
            return GO
        standing = entry.standing
        if standing.state == SLEEPING:
            woke = on_clock(standing, now)
            if woke is not None:  # its time came before the wake loop's: let it through
                self._move((org_id, session_id), woke, entry.key_id)
                return GO
        return admit(standing, now)

    def spent(
        self, org_id: str, session_id: str, key_id: str | None, pct: Decimal | None, now: float
    ) -> Standing:
        """The share of the session's budget now spent (or held): wind down, or back."""
        key = (org_id, session_id)
        standing = self.standing(*key)
        moved = on_spend(standing, pct, now, self.wind_down_pct)
        if moved is not None:
            self._move(key, moved, key_id)
            return moved.after
        if pct == standing.budget_pct:
            return standing
        # Built directly: dataclasses.replace costs twice as much, on every session request.
        now_at = Standing(standing.state, pct, standing.wake_at, standing.escalation)
        if pct is not None and key in self._entries:
            self._entries[key].standing = now_at
        return now_at

    def budget_gone(
        self, org_id: str, session_id: str, key_id: str | None, resets_at: float | None,
        now: float,
    ) -> Standing:  # fmt: skip
        """The session's own budget refused a request: asleep until ``resets_at``, or
        exhausted (a lifetime budget: None)."""
        key = (org_id, session_id)
        standing = self.standing(*key)
        moved = on_budget_gone(standing, resets_at, now)
        if moved is None:
            return standing
        self._move(key, moved, key_id)
        return moved.after

    # ------------------------------------------------------------------ loops and runaways

    def observe(
        self, org_id: str, session_id: str, key_id: str | None, fingerprint: str | None,
        now: float,
    ) -> Admission:  # fmt: skip
        """A request of the session, admitted so far: the repeat signal (this request's
        fingerprint among the session's recent ones)."""
        if fingerprint is None:
            return GO
        key = (org_id, session_id)
        sent = self._seen.get(key)
        if sent is None:
            sent = self._seen[key] = {}
        times = sent.pop(fingerprint, None)  # put back last: the most recently sent
        if times is None:
            times = collections.deque(maxlen=self.loops.repeat_count)
            if len(sent) >= _HISTORY:
                del sent[next(iter(sent))]  # the least recently sent fingerprint goes
        sent[fingerprint] = times
        finding = check_repeat(self.loops, [(t, fingerprint) for t in times], fingerprint, now)
        times.append(now)
        if finding is None:
            return GO
        return self._runaway(key, key_id, finding, now)

    def finished(
        self, org_id: str, session_id: str, key_id: str | None, tokens: int,
        upstream_error: bool, now: float,
    ) -> None:  # fmt: skip
        """A request of the session ended: the velocity and error-burst signals (a pause
        holds the session's next request)."""
        key = (org_id, session_id)
        pace = self._pace.get(key)
        if pace is None:
            pace = self._pace[key] = _Pace()
        minute = int(now // 60)
        pace.minutes[minute] = pace.minutes.get(minute, 0) + tokens
        for old in [m for m in pace.minutes if m <= minute - _MINUTES]:
            del pace.minutes[old]
        pace.errors = pace.errors + 1 if upstream_error else 0
        if pace.upto != minute:
            pace.earlier = [t for m, t in pace.minutes.items() if m != minute]
            pace.upto = minute
        finding = check_errors(self.loops, pace.errors) or check_velocity(
            self.loops, pace.earlier, pace.minutes[minute]
        )
        if finding is not None:
            if finding.signal == "errors":
                pace.errors = 0  # one finding per burst
            self._runaway(key, key_id, finding, now)

    def _runaway(
        self, key: SessionKey, key_id: str | None, finding: Finding, now: float
    ) -> Admission:
        action = self.loops.action
        escalation: str | None = None
        standing = self.standing(*key)
        if action == "pause":
            escalation = new_escalation_id()
            moved = on_runaway(standing, escalation, now)
            if moved is None:  # paused already, or over
                return admit(standing, now)
            self._move(key, moved, key_id, finding)
        self._events.publish(
            SessionRunaway(
                org_id=key[0], session_id=key[1], key_id=key_id, signal=finding.signal,
                action=action, evidence=dict(finding.evidence), escalation_id=escalation,
            )
        )  # fmt: skip
        if action == "flag":
            return GO
        if action == "block":
            return Admission("looping")
        return admit(self.standing(*key), now)

    # ------------------------------------------------------------------ moves

    def _move(
        self, key: SessionKey, moved: Transition, key_id: str | None,
        finding: Finding | None = None,
    ) -> None:  # fmt: skip
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(moved.after, None, key_id)
        else:
            entry.standing = moved.after
            entry.key_id = entry.key_id or key_id
        self._pending[key] += 1
        self._writes.put_nowait(_Write(key, moved, key_id, finding))

    async def _write_loop(self) -> None:
        while True:
            write = await self._writes.get()
            try:
                await self._write(write)
            except Exception:  # noqa: BLE001 - the database is down: the next move retries
                logger.warning("session %s: transition not stored", write.key[1], exc_info=True)
            finally:
                self._pending[write.key] -= 1
                if not self._pending[write.key]:
                    del self._pending[write.key]
                self._writes.task_done()

    async def _write(self, write: _Write) -> None:
        entry = self._entries.get(write.key)
        version = None if entry is None else entry.version
        escalation = write.moved.after.escalation
        if write.finding is not None and escalation is not None:
            finding = write.finding
            await asyncio.to_thread(
                self._store.open_escalation, write.key, escalation, finding.signal,
                dict(finding.evidence), write.moved.at,
            )  # fmt: skip
            self._events.publish(
                EscalationCreated(
                    org_id=write.key[0], session_id=write.key[1], escalation_id=escalation,
                    reason=finding.signal, evidence=dict(finding.evidence),
                )
            )  # fmt: skip
        stored = await asyncio.to_thread(self._store.record, write.key, write.moved, version)
        if stored is None:  # another process moved it first: what it stored wins
            found = await asyncio.to_thread(self._store.get, write.key)
            if found is not None and entry is not None:
                entry.standing, entry.version = found
            return
        if entry is not None and (entry.version is None or stored > entry.version):
            entry.version = stored
        self._events.publish(changed_event(write.key, write.key_id, write.moved, stored))

    async def _follow(self, subscription: Subscription) -> None:
        while True:
            with subscription:
                async for event in subscription:
                    if isinstance(event.payload, SessionChanged):
                        self.apply(event.payload)
            if not subscription.cut:
                return
            subscription = self._events.subscribe(
                kinds=frozenset({SessionChanged.kind}), background=True
            )

    def apply(self, change: SessionChanged) -> None:
        """A change stored by any process (this one's included): taken if newer."""
        if change.org_id is None:
            return
        key = (change.org_id, change.session_id)
        entry = self._entries.get(key)
        if entry is not None and entry.version is not None and entry.version >= change.version:
            return
        wake = None if change.wake_at is None else datetime.fromisoformat(change.wake_at)
        standing = Standing(
            change.to_state,  # type: ignore[arg-type]  # written by lifecycle
            None if change.budget_pct is None else Decimal(change.budget_pct),
            None if wake is None else wake.timestamp(),
            change.escalation_id,
        )
        if entry is None:
            self._entries[key] = _Entry(standing, change.version, change.key_id)
        else:
            entry.standing, entry.version = standing, change.version
        if change.cause == "approved":  # resolved in another process: forgiven here too
            self._seen.pop(key, None)

    async def _wake_loop(self) -> None:
        pruned = self._clock()
        while True:
            await asyncio.sleep(self._wake_interval)
            now = self._clock()
            for key, entry in list(self._entries.items()):
                woke = on_clock(entry.standing, now)
                if woke is not None:
                    self._move(key, woke, entry.key_id)
            if now - pruned >= _PRUNE_EVERY:
                self.prune(now)
                pruned = now

    def remembered(self) -> tuple[int, int, int]:
        """How many sessions the board holds fingerprints, pace and a state of."""
        return len(self._seen), len(self._pace), len(self._entries)

    def prune(self, now: float) -> None:
        """Forget what no longer matters, so memory follows the sessions in use, not every
        session ever seen: fingerprints older than the repeat window, pace older than an
        hour, and active sessions stored (a dict miss is ``active``)."""
        since = now - self.loops.repeat_window_s
        for key, sent in list(self._seen.items()):
            if not sent or sent[next(reversed(sent))][-1] < since:  # the latest is too old
                del self._seen[key]
        minute = int(now // 60)
        for key, pace in list(self._pace.items()):
            if not pace.minutes or max(pace.minutes) <= minute - _MINUTES:
                del self._pace[key]
        for key, entry in list(self._entries.items()):
            stored = entry.version is not None and key not in self._pending
            if entry.standing.state == "active" and stored:
                del self._entries[key]


def changed_event(
    key: SessionKey, key_id: str | None, moved: Transition, version: int
) -> SessionChanged:
    """The ``session_changed`` event of a transition stored at ``version``."""
    after = moved.after
    return SessionChanged(
        org_id=key[0], session_id=key[1], key_id=key_id, from_state=moved.before,
        to_state=after.state, cause=moved.cause,
        budget_pct=None if after.budget_pct is None else str(after.budget_pct),
        wake_at=_iso(after.wake_at), escalation_id=after.escalation, version=version,
    )  # fmt: skip


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()
