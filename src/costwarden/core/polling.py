"""The background poll loop every in-process cache of the database shares.

Keys, limits, switches and routes are each held in memory and refreshed by a
:class:`Poller` that runs one step every few hundred milliseconds until its owner closes
it. A step already running is allowed to finish rather than being cancelled: it usually
runs in a worker thread holding a pooled connection, which must go back to the pool before
the owner disposes the engine.

While the database is away every step fails, several times a second for each cache: the
owner's ``on_error`` hears the first failure of a run of them and then one every
:data:`WARN_EVERY_SECONDS`, and the end of the run is logged once, with its length
(:class:`FailureRun`, which other background loops use too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

#: while a loop keeps failing, how often it is told again
WARN_EVERY_SECONDS = 30.0


class FailureRun:
    """A background loop's run of failures: whether to tell of this one, and its end.

    :meth:`failed` is True for the first failure of a run and then once every
    :data:`WARN_EVERY_SECONDS`; :meth:`succeeded` logs the end of a run (its name and
    length) once. Every loop that polls the database goes through one, so an outage logs a
    line a minute per loop instead of several a second.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._since: float | None = None  # time.monotonic() of the run's first failure
        self._told_at = 0.0

    def failed(self) -> bool:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._told_at < WARN_EVERY_SECONDS:
            return False
        self._told_at = now
        return True

    def succeeded(self) -> None:
        if self._since is not None:
            logger.warning("%s recovered after failing for %.1f s", self.name,
                           time.monotonic() - self._since)  # fmt: skip
            self._since = None


class Poller:
    """Runs ``step`` every ``seconds`` in a task of its own, from :meth:`start` to
    :meth:`close`; a failing step goes to ``on_error`` and the loop carries on (the cache
    keeps serving what it has)."""

    def __init__(
        self,
        name: str,
        seconds: float,
        step: Callable[[], Awaitable[None]],
        on_error: Callable[[Exception], None],
    ) -> None:
        self.name = name
        self.seconds = seconds
        self._step = step
        self._on_error = on_error
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = FailureRun(name)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def close(self) -> None:
        """Stop polling, after letting a step already running finish."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        stop = self._stop
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.seconds)
                return
            except TimeoutError:
                pass
            try:
                await self._step()
            except Exception as exc:
                if self._failures.failed():
                    self._on_error(exc)
                continue
            self._failures.succeeded()
