"""The kill switch and feature toggles as the request path sees them: an in-memory view.

:class:`SwitchBoard` keeps only the switches that are *off*, as ``{feature: message}`` per
scope, so :meth:`SwitchBoard.refusal` is two empty-dict tests when nothing is switched off and
a few dict lookups when something is; it never does I/O. A background task polls
:func:`~costwarden.storage.switches.switches_version` (one indexed query) every
``refresh_seconds`` and reloads the view when the version moved, so a change made by another
process (the CLI, another gateway's admin API) is live here within one interval; the admin API
calls :meth:`SwitchBoard.reload` after its own writes so they are live at once. A failed poll
keeps the last view: the gateway keeps enforcing what it knew.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from costwarden.core import polling
from costwarden.core.errors import ServiceDisabled
from costwarden.storage.switches import SwitchRecord, load_switches, switches_version

logger = logging.getLogger(__name__)

_Off = dict[str, str]  # feature -> message, only for features switched off


def _match(off: _Off, endpoint: str, stream: bool) -> str | None:
    found = off.get("ai") or off.get(endpoint)
    if found is None and stream:
        found = off.get("streaming")
    return found


class SwitchBoard:
    def __init__(self, engine: Engine, *, refresh_seconds: float, default_message: str) -> None:
        self._engine = engine
        self._default = default_message
        self._platform: _Off = {}
        self._orgs: dict[str, _Off] = {}
        self._records: list[SwitchRecord] = []
        self._version = -1
        self._loads_started = 0
        self._loads_applied = 0
        # a failed poll keeps enforcing the last view (the poller says so at most every 30 s)
        self._poller = polling.Poller(
            "costwarden-switches", refresh_seconds, self._poll_once, self._poll_failed
        )

    # ------------------------------------------------------------------ request path

    def refusal(self, org_id: str | None, endpoint: str, stream: bool) -> ServiceDisabled | None:
        """The 503 to answer with if a switch that applies is off, else None. No I/O.

        Platform-wide switches apply to every org, an org's switches to that org; ``ai``
        covers every endpoint, ``streaming`` only requests with ``stream: true``.
        """
        platform = self._platform
        orgs = self._orgs
        if not platform and not orgs:
            return None
        message = _match(platform, endpoint, stream) if platform else None
        if message is None and org_id is not None and orgs:
            off = orgs.get(org_id)
            if off:
                message = _match(off, endpoint, stream)
        return None if message is None else ServiceDisabled(message)

    # ------------------------------------------------------------------ view

    @property
    def version(self) -> int:
        """The switch version of the view in use (-1 before the first load)."""
        return self._version

    @property
    def switches(self) -> list[SwitchRecord]:
        """Every switch of the view in use (on and off), as loaded."""
        return list(self._records)

    def _apply(self, version: int, records: list[SwitchRecord]) -> None:
        platform: _Off = {}
        orgs: dict[str, _Off] = {}
        for r in records:
            if r.enabled:
                continue
            off = platform if r.org_id is None else orgs.setdefault(r.org_id, {})
            off[r.feature] = r.message or self._default
        changed = version != self._version
        # One event-loop step, no await: a request sees the old view or the new, never a mix.
        self._platform, self._orgs = platform, orgs
        self._records, self._version = records, version
        if changed:
            logger.info(
                "switches loaded (version %d): %d off platform-wide, %d org(s) with switches off",
                version,
                len(platform),
                len(orgs),
            )

    async def reload(self) -> None:
        """Load every switch now and use them (raises if storage cannot be read)."""
        self._loads_started += 1
        started = self._loads_started
        version, records = await asyncio.to_thread(load_switches, self._engine)
        # A poll and an admin write may load at once; the one started last must win.
        if started < self._loads_applied:
            return
        self._loads_applied = started
        self._apply(version, records)

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        await self.reload()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def _poll_once(self) -> None:
        version = await asyncio.to_thread(switches_version, self._engine)
        if version != self._version:
            await self.reload()

    def _poll_failed(self, exc: Exception) -> None:
        logger.warning(
            "switch refresh failed, keeping the last switches (version %d): %s: %s",
            self._version,
            type(exc).__name__,
            exc,
        )
