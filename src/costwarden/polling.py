"""The background poll loop every in-process cache of the database shares.

Keys, limits, switches and routes are each held in memory and refreshed by a loop that
runs one step every few hundred milliseconds until its owner's ``stop`` event is set. A
step already running is allowed to finish rather than being cancelled: it usually runs in
a worker thread holding a pooled connection, which must go back to the pool before the
owner disposes the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def every(
    seconds: float,
    stop: asyncio.Event,
    step: Callable[[], Awaitable[None]],
    on_error: Callable[[Exception], None],
) -> None:
    """Run ``step`` every ``seconds`` until ``stop`` is set; a failing step goes to
    ``on_error`` and the loop carries on (the cache keeps serving what it has)."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), seconds)
            return
        except TimeoutError:
            pass
        try:
            await step()
        except Exception as exc:
            on_error(exc)
