"""The background poll loop every in-process cache of the database shares.

Keys, limits, switches and routes are each held in memory and refreshed by a
:class:`Poller` that runs one step every few hundred milliseconds until its owner closes
it. A step already running is allowed to finish rather than being cancelled: it usually
runs in a worker thread holding a pooled connection, which must go back to the pool before
the owner disposes the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


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
                self._on_error(exc)
