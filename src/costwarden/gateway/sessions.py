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
from typing import Any

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


class SessionStop(GatewayError):
    """Not an error: the session's budget is reached and its key asks for a clean end. The
    proxy answers 200 with an assistant message and a normal stop reason (``degraded``'s
    answer, in the client's wire format, streamed or not), billed $0, ledger status
    ``session_stopped``; ``x-costwarden-session-stop`` says why."""

    status = 200
    code = "session_stopped"

    def __init__(self, message: str, *, reason: str, state: str) -> None:
        super().__init__(message, extra={"state": state})
        self.reason = reason
        self.state = state


def _stop(session_id: str, admission: Admission, wake_at: float | None) -> SessionStop | None:
    """The clean completion for a budget reached (sleeping or exhausted), else None."""
    if admission.verdict == "sleeping":
        until = "" if wake_at is None else f" until {_iso(wake_at)}"
        return SessionStop(
            f"[costwarden] This agent session's budget is spent{until}, so the run stops "
            "here. Summarize where you are; the session resumes when its budget resets.",
            reason="budget_spent", state="sleeping",
        )  # fmt: skip
    if admission.verdict == "exhausted":
        return SessionStop(
            "[costwarden] This agent session's budget is spent for good, so the run stops "
            "here. Summarize where you are.",
            reason="budget_exhausted", state="exhausted",
        )  # fmt: skip
    return None


def _clean_stop(state: RequestState) -> bool:
    key = state.key
    return key is not None and key.session_clean_stop and state.endpoint != "embeddings"


def budget_note(standing: Standing) -> str | None:
    """What a winding-down session's model is told (keys with ``session_budget_note``)."""
    if standing.state != "winding_down":
        return None
    pct = standing.budget_pct
    used = "most" if pct is None else f"{pct}%"
    return (
        f"[costwarden] This agent session has used {used} of its budget. Finish the task "
        "in as few steps as you can, or stop and summarize."
    )


def add_note(endpoint: str, payload: dict[str, Any], note: str) -> None:
    """``note`` as a system instruction of ``payload`` (already in the upstream's format):
    after the leading system messages (OpenAI), or at the end of ``system`` (Anthropic)."""
    if endpoint == "messages":
        system = payload.get("system")
        if isinstance(system, list):
            payload["system"] = [*system, {"type": "text", "text": note}]
        elif isinstance(system, str) and system:
            payload["system"] = f"{system}\n\n{note}"
        else:
            payload["system"] = note
        return
    messages = list(payload.get("messages") or [])
    at = 0
    while at < len(messages) and isinstance(messages[at], dict) and messages[at].get(
        "role"
    ) in ("system", "developer"):
        at += 1
    messages.insert(at, {"role": "system", "content": note})
    payload["messages"] = messages


def note_bytes(state: RequestState) -> int:
    """What the note adds to the request, for the reservation's bound on input tokens."""
    return 0 if state.system_note is None else len(state.system_note.encode()) + 64


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
        standing = board.standing(record.org_id, session_id)
        if admission.verdict != "go":
            record.status = "blocked"
            stop = _stop(session_id, admission, standing.wake_at) if _clean_stop(state) else None
            raise stop or _held(session_id, admission, now, standing.wake_at)
        key = state.key
        if key is not None and key.session_budget_note and state.endpoint != "embeddings":
            state.system_note = budget_note(standing)


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
        if _clean_stop(state) and standing.state in ("sleeping", "exhausted"):
            verdict = Admission("sleeping" if standing.state == "sleeping" else "exhausted")
            stop = _stop(session_id, verdict, standing.wake_at)
            assert stop is not None
            return stop
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
