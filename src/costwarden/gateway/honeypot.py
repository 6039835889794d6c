"""Honeypot keys: a virtual key that looks like any other, answered exactly as an unknown key,
whose use raises a critical alert (and, if the key says so, switches its org off).

A honeypot key is planted where a leak would be found (a repository, a CI log, a wiki page);
anyone using it has found a leak. The attacker must not be able to tell: the answer is the
unknown key's 401 -- same status, headers and body, the request id made the same way, no
ledger row --, and its timing the same, so the request path does nothing an unknown key's
does not, beyond handing the hit off:

- :meth:`HoneypotTrap.caught` appends what the hit is (the key, the request's scope and
  headers, its ``receive``) to a queue and, unless one is pending already, schedules the
  trap's handler :data:`HANDLE_AFTER` seconds later. No I/O, no await, nothing read or
  parsed (each of those measured microseconds on the path: bench/honeypot.py); then the
  caller raises the unknown key's very error, and the answer is written.
- The handler (5 ms later: its work then falls on no answer in particular, where run at
  once it followed the honeypot's own and, on a loaded machine, delayed a client beside
  the gateway reading it: bench/honeypot.py measured that) takes the peer address,
  ``User-Agent`` and ``X-Forwarded-For``, and the model from the body *as far as it had
  arrived by the answer* (:func:`arrived_body`); publishes ``honeypot_triggered`` on the
  event bus (the alerting service raises the critical alert from it, within a second:
  alerts/rules.py ``honeypot_alert``); logs one warning; and for a key whose
  ``honeypot_action`` is ``switch_off_org`` turns the org's ``ai`` switch off (audited as
  actor ``honeypot``, published as ``switch_changed``, live here at once), unless it is off.

The body is never read (``receive()`` is not called): reading it would wait for a client that
withholds it where an unknown key's 401 comes at once, make the server answer ``Expect:
100-continue`` with ``100 Continue`` first, and cost the path microseconds: each a difference
an attacker could measure. What the server had received of it by the time of the answer is
in uvicorn's request cycle (the bound ``receive``'s object: its ``body`` buffer, and
``more_body`` cleared at the end of the message; after the answer uvicorn keeps no more of
it), which the handler reads afterwards. So the model is known when the body came with the
head, as when a client writes its request at once; a client that writes its head and body
apart (httpx, http.client) is often answered before its body is read, and its model is then
unknown (None). Under another server there is no such cycle: the model is None.

A revoked honeypot key is disarmed: still answered as an unknown key, nothing raised.
Secrets: the event, the alert and the log carry the key's id and display prefix, never the
key; what the client sent is cut short, its control and format characters dropped and
anything shaped like a virtual key replaced.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.event_kinds import EventPayload, HoneypotTriggered
from costwarden.core.records import KeyRecord
from costwarden.gateway.asgi import Receive, Scope
from costwarden.gateway.switches import SwitchBoard
from costwarden.storage.switches import SwitchRecord, load_switches, set_switch

logger = logging.getLogger(__name__)

HONEYPOT_ACTOR = "honeypot"  # who the switch write is audited as
MAX_PENDING = 10_000  # hits waiting for the handler; past that a hit is counted, not kept
_BATCH = 100  # hits handled before the handler lets the loop run others
_TEXT_MAX = 300  # characters kept of what the client sent (user agent, model, ...)
_SWITCH_ATTEMPTS = 7  # 0.5 + 1 + 2 + 4 + 8 + 15 s of waiting between them
HANDLE_AFTER = 0.005  # seconds from a hit to the handler (see the module docstring)
_VIRTUAL_KEY = re.compile(r"cw-[A-Za-z0-9_\-]{8,}")
_HIDDEN = ("Cc", "Cf")  # control and format characters

# A hit as the path hands it off: key, scope, headers, endpoint, request id, receive, when.
_Hit = tuple[KeyRecord, Scope, dict[bytes, bytes], str, str | None, Receive | None, float]


def arrived_body(receive: Receive | None, limit: int) -> bytes | None:
    """The request body as far as the server had it when the request was answered, if that
    was all of it (and at most ``limit`` bytes); None otherwise. Read off uvicorn's request
    cycle, never through ``receive()``: call it after the answer (see the module docstring)."""
    cycle = getattr(receive, "__self__", None)
    body = getattr(cycle, "body", None)
    if getattr(cycle, "more_body", True) is not False or not isinstance(body, bytes | bytearray):
        return None
    return bytes(body) if len(body) <= limit else None


class HoneypotTrap:
    """Honeypot hits: taken on the request path (:meth:`caught`), handled off it."""

    def __init__(
        self,
        publish: Callable[[EventPayload], None],
        *,
        engine: Engine,
        switches: SwitchBoard,
        max_body_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._publish = publish
        self._engine = engine
        self._switches = switches
        self._max_body = max_body_bytes
        self._clock = clock
        self._pending: collections.deque[_Hit] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None  # set while started
        self._scheduled = False  # a handler run is pending
        self._switching: dict[str, asyncio.Task[None]] = {}  # org id -> its switch write
        self.caught_count = 0
        self.dropped = 0

    # ------------------------------------------------------------------ request path

    def caught(
        self,
        key: KeyRecord,
        scope: Scope,
        headers: dict[bytes, bytes],
        endpoint: str,
        request_id: str | None = None,
        receive: Receive | None = None,
    ) -> None:
        """Hand a honeypot key's use off: no I/O, no await, nothing read. The caller then
        answers exactly as for an unknown key."""
        if key.revoked:
            return  # disarmed
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            self.dropped += 1
            return
        pending.append((key, scope, headers, endpoint, request_id, receive, self._clock()))
        self.caught_count += 1
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_later(HANDLE_AFTER, self._run)

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._pending and not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    async def close(self, timeout: float = 5.0) -> None:
        """Stop handling on the loop: hits still waiting are handled now (the event bus
        closes after this), switch writes under way are given ``timeout`` seconds."""
        self._loop = None
        while self._pending:
            self._handle_some()
        writes = list(self._switching.values())
        if writes:
            _, late = await asyncio.wait(writes, timeout=timeout)
            for write in late:
                write.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _run(self) -> None:
        self._scheduled = False
        if self._loop is None:
            return  # closed: close() handles what is left
        self._handle_some()
        if self._pending:  # a flood: the rest after the loop has run the others
            self._scheduled = True
            self._loop.call_soon(self._run)

    # ------------------------------------------------------------------ off the path

    def _handle_some(self) -> None:
        for _ in range(min(_BATCH, len(self._pending))):
            hit = self._pending.popleft()
            try:
                self._handle(*hit)
            except Exception:
                logger.exception("honeypot key %s: its use was not handled", hit[0].id)

    def _handle(
        self,
        key: KeyRecord,
        scope: Scope,
        headers: dict[bytes, bytes],
        endpoint: str,
        request_id: str | None,
        receive: Receive | None,
        at: float,
    ) -> None:
        host, port = _peer(scope.get("client"))
        event = HoneypotTriggered(
            org_id=key.org_id,
            key_id=key.id,
            key_prefix=key.prefix,
            key_name=key.name,
            org_name=key.org_name,
            project_id=key.project_id,
            request_id=request_id,
            endpoint=endpoint,
            source=host,
            source_port=port,
            forwarded_for=_header(headers.get(b"x-forwarded-for")),
            user_agent=_header(headers.get(b"user-agent")),
            model=_model(arrived_body(receive, self._max_body)),
            action=key.honeypot_action,
            at=datetime.fromtimestamp(at, UTC).isoformat(),
        )
        self._publish(event)
        logger.warning(
            "honeypot key %s (%s..., org %s) used from %s on %s: answered as an unknown key",
            key.id, key.prefix, key.org_name, host or "an unknown address", endpoint,
        )  # fmt: skip
        if key.honeypot_action == "switch_off_org" and key.org_id not in self._switching:
            self._switching[key.org_id] = asyncio.create_task(
                self._switch_off(key), name="costwarden-honeypot-switch"
            )

    async def _switch_off(self, key: KeyRecord) -> None:
        """The org's ``ai`` switch off (once: nothing is written while it is off), live here
        at once and on every gateway within ``switches.refresh_seconds``."""
        try:
            record = await self._write_switch(key)
            if record is None:
                return
            try:
                await self._switches.reload()
            except Exception as exc:  # noqa: BLE001 - the poller applies it shortly
                logger.warning("switches not reloaded: %s", type(exc).__name__)
            self._publish(
                record.changed_event()
            )
        finally:
            self._switching.pop(key.org_id, None)

    async def _write_switch(self, key: KeyRecord) -> SwitchRecord | None:
        for attempt in range(_SWITCH_ATTEMPTS):
            try:
                return await asyncio.to_thread(
                    switch_off_org, self._engine, key.org_id, key.org_name
                )
            except (InvalidInput, NotFound) as exc:
                logger.error("honeypot key %s: org not switched off: %s", key.id, exc)
                return None
            except Exception as exc:  # noqa: BLE001 - the database is down: wait, retry
                if attempt == _SWITCH_ATTEMPTS - 1:
                    logger.error(
                        "honeypot key %s: org %s NOT switched off after %d attempts: %s",
                        key.id, key.org_name, _SWITCH_ATTEMPTS, type(exc).__name__,
                    )  # fmt: skip
                    return None
                await asyncio.sleep(min(0.5 * 2**attempt, 15.0))
        return None


def switch_off_org(engine: Engine, org_id: str, org_name: str) -> SwitchRecord | None:
    """Turn org ``org_id``'s ``ai`` switch off as actor ``honeypot`` (audited), unless it is
    off already (None: nothing written). Blocking: run it in a worker thread."""
    _, records = load_switches(engine)
    if any(r.org_id == org_id and r.feature == "ai" and not r.enabled for r in records):
        return None
    return set_switch(
        engine, org=org_name, feature="ai", enabled=False, message=None, actor=HONEYPOT_ACTOR
    )


def _peer(client: Any) -> tuple[str | None, int | None]:
    if not isinstance(client, tuple | list) or not client:
        return None, None
    host = _clean(str(client[0]))
    port = client[1] if len(client) > 1 and isinstance(client[1], int) else None
    return host, port


def _header(value: bytes | None) -> str | None:
    return None if value is None else _clean(value[: _TEXT_MAX * 4].decode("utf-8", "replace"))


def _model(body: bytes | None) -> str | None:
    if not body:
        return None
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return _clean(model) if isinstance(model, str) else None


def _clean(text: str) -> str | None:
    """What a client sent, fit to show: no virtual key, no control or format character
    (a newline in an e-mail subject, a bidi override in a dashboard), cut short."""
    kept = "".join(ch for ch in text[: _TEXT_MAX * 4] if unicodedata.category(ch) not in _HIDDEN)
    kept = _VIRTUAL_KEY.sub("cw-[redacted]", kept).strip()[:_TEXT_MAX]
    return kept or None
