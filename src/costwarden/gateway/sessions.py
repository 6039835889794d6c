"""Agent sessions on the request path: the admission stage, and what the budget reservation
tells the session board (``sessions.board``).

- :class:`SessionGate` (an admission stage, after validation): a request of a sleeping
  session gets 429 with ``Retry-After`` and ``wake_at``; of an exhausted one 402; of a paused
  or terminated one 409 naming its escalation. Nothing is reserved or sent upstream. Then
  loop detection: the request's fingerprint repeated (``sessions.loops``) pauses the session
  (409 naming the new escalation), blocks the request, or only flags it, by policy.
- :meth:`SessionHooks.finished`: every request's tokens and outcome, for the velocity and
  error-burst signals (a pause then holds the next request).
- :meth:`SessionHooks.reserved`: the share of the session's tightest budget now spent or held
  (this request's hold included) winds the session down from ``wind_down_pct``; the
  response says so (``x-costwarden-session-state``, ``x-costwarden-session-budget-pct``).
- :meth:`SessionHooks.refused`: a refusal by the session's own budget puts it to sleep until
  the window resets (429, the reset as ``wake_at`` and ``Retry-After``) or, for a lifetime
  budget, exhausts it (402).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

from costwarden.budgets.enforcer import Reservation
from costwarden.core.errors import (
    BudgetExceeded,
    GatewayError,
    SessionExhausted,
    SessionHeld,
    SessionLooping,
    SessionSleeping,
    SessionTerminated,
)
from costwarden.core.records import LedgerRecord
from costwarden.gateway.state import RequestState
from costwarden.sessions.board import SessionBoard
from costwarden.sessions.lifecycle import Admission, Standing
from costwarden.sessions.loops import fingerprint

_STATE = b"x-costwarden-session-state"
_PCT = b"x-costwarden-session-budget-pct"


def session_share(reservation: Reservation, *, settled: bool) -> Decimal | None:
    """The largest share, in percent (to 0.01, rounded down), of the session's budgets (not
    its rate limits) spent, and held by its other requests in flight: before this request
    (its own hold left out), or once it ``settled``; None for a session without a budget."""
    share: Decimal | None = None
    for i, check in enumerate(reservation.checks):
        limit = check.limit
        if limit.scope != "session" or check.rolling or limit.amount <= 0:
            continue
        used = limit.amount - reservation.remaining[i]
        if not settled:
            used -= reservation.amounts[i]
        pct = (Decimal(used) * 100 / limit.amount).quantize(Decimal("0.01"), ROUND_FLOOR)
        share = pct if share is None else max(share, pct)
    return share


def session_headers(standing: Standing) -> list[tuple[bytes, bytes]]:
    out = [(_STATE, standing.state.encode())]
    if standing.budget_pct is not None:
        out.append((_PCT, str(standing.budget_pct).encode()))
    return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _held(
    session_id: str, admission: Admission, now: float, wake_at_epoch: float | None = None
) -> GatewayError:
    if admission.verdict == "sleeping":
        wait = admission.retry_after or 1
        wake_at = _iso(now + wait if wake_at_epoch is None else wake_at_epoch)
        return SessionSleeping(
            f"agent session {session_id!r} is asleep: its budget is spent until {wake_at}; "
            f"retry after {wait} s",
            extra={"session_id": session_id, "state": "sleeping", "wake_at": wake_at,
                   "retry_after": wait},  # fmt: skip
            headers={"retry-after": str(wait), _STATE.decode(): "sleeping"},
        )
    if admission.verdict == "exhausted":
        return SessionExhausted(
            f"agent session {session_id!r} has spent its lifetime budget",
            extra={"session_id": session_id, "state": "exhausted"},
            headers={_STATE.decode(): "exhausted"},
        )
    if admission.verdict == "paused":
        return SessionHeld(
            f"agent session {session_id!r} is paused until escalation "
            f"{admission.escalation} is resolved",
            extra={"session_id": session_id, "state": "paused",
                   "escalation_id": admission.escalation},  # fmt: skip
            headers={_STATE.decode(): "paused"},
        )
    if admission.verdict == "looping":
        return SessionLooping(
            f"agent session {session_id!r} sent this request again and again: refused as a "
            "loop",
            extra={"session_id": session_id, "state": "active"},
        )
    return SessionTerminated(
        f"agent session {session_id!r} was terminated",
        extra={"session_id": session_id, "state": "terminated"},
        headers={_STATE.decode(): "terminated"},
    )


class SessionGate:
    """The admission stage: a request of a session that may not go now is refused here."""

    __slots__ = ("_board", "_clock")

    def __init__(self, board: SessionBoard, clock: Callable[[], float]) -> None:
        self._board = board
        self._clock = clock

    def __call__(self, state: RequestState) -> None:
        record = state.record
        session_id = record.session_id
        if not session_id or record.org_id is None:
            return
        now = self._clock()
        board = self._board
        admission = board.admit(record.org_id, session_id, now)
        if admission.verdict == "go":
            seen = fingerprint(state.endpoint, state.payload)
            admission = board.observe(record.org_id, session_id, record.key_id, seen, now)
        if admission.verdict != "go":
            record.status = "blocked"
            wake_at = board.standing(record.org_id, session_id).wake_at
            raise _held(session_id, admission, now, wake_at)


class SessionHooks:
    """What the call stages tell the board (``gateway.proxy``'s reservation callback)."""

    __slots__ = ("_board", "_clock")

    def __init__(self, board: SessionBoard, clock: Callable[[], float]) -> None:
        self._board = board
        self._clock = clock

    def reserved(self, state: RequestState, reservation: Reservation | None) -> None:
        """Admitted: the share before this request (what a streamed answer's headers say)."""
        record = state.record
        if not record.session_id or record.org_id is None:
            return
        pct = None if reservation is None else session_share(reservation, settled=False)
        standing = self._board.spent(
            record.org_id, record.session_id, record.key_id, pct, self._clock()
        )
        state.extra_headers = session_headers(standing)

    def finished(self, record: LedgerRecord) -> None:
        """A request of a session ended, whatever its outcome: its pace and errors."""
        if not record.session_id or record.org_id is None:
            return
        self._board.finished(
            record.org_id, record.session_id, record.key_id,
            record.input_tokens + record.output_tokens, record.status == "upstream_error",
            self._clock(),
        )  # fmt: skip

    def settled(
        self, record: LedgerRecord, reservation: Reservation | None
    ) -> list[tuple[bytes, bytes]]:
        """Settled: the share with this request's cost (the next request's state, and a
        non-streamed answer's headers)."""
        if not record.session_id or record.org_id is None or reservation is None:
            return []
        pct = session_share(reservation, settled=True)
        standing = self._board.spent(
            record.org_id, record.session_id, record.key_id, pct, self._clock()
        )
        return session_headers(standing)

    def refused(self, state: RequestState, error: GatewayError) -> GatewayError:
        """The session's own budget refused: the session sleeps or is exhausted, and the
        error says so; any other refusal is returned as it is."""
        record = state.record
        session_id = record.session_id
        if (
            not isinstance(error, BudgetExceeded)
            or error.extra.get("scope") != "session"
            or not session_id
            or record.org_id is None
        ):
            return error
        resets = error.extra.get("resets_at")
        now = self._clock()
        resets_at = None if resets is None else datetime.fromisoformat(resets).timestamp()
        standing = self._board.budget_gone(
            record.org_id, session_id, record.key_id, resets_at, now
        )
        if standing.state == "sleeping" and standing.wake_at is not None:
            wait = max(1, math.ceil(standing.wake_at - now))
            held = _held(
                session_id, Admission("sleeping", retry_after=wait), now, standing.wake_at
            )
            held.extra.update(error.extra, wake_at=_iso(standing.wake_at), retry_after=wait)
            return held
        if standing.state == "exhausted":
            held = _held(session_id, Admission("exhausted"), now)
            held.extra.update(error.extra)
            return held
        return error
