"""Stopping background tasks: cancel, and cancel again until each has ended.

Every part of the gateway that runs a loop of its own (a poll, a heartbeat, a flush, a
subscription) stops it on shutdown with :func:`cancel_and_wait`, never with a single
``task.cancel()`` followed by ``await task``.

Why again: a cancel can be swallowed by the code the task is running. redis-py 8.1 (on
Python 3.11) does so when the cancel lands while it is handling its own socket timeout: the
command then ends with redis-py's ``TimeoutError``, or even returns normally, and the task's
loop -- which carries on after a Redis error, as it must -- goes round again, its cancel
spent. Measured with a loop of pipelined commands through a proxy that delays answers by up
to 1.5 times the timeout, each loop cancelled once at a random moment, 400 loops a run: in
two runs 10 and 12 cancels were swallowed and 3 loops were still running a second later;
two other runs lost none (it takes a cancel and a timeout landing together). One such loop
hung a gateway's shutdown until it was killed: the budget store's heartbeat, found in a test
on a loaded machine (CI had failed the same way). Cancelling again every
:data:`AGAIN_EVERY_SECONDS` ends such a task at its next await: with :func:`cancel_and_wait`,
three runs of 400 left none running.

(A request's own waits -- a stream's watch, an event wait -- end with their request and are
cancelled once; only tasks that outlive requests come here.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

#: how long a cancelled task may run on before it is cancelled again
AGAIN_EVERY_SECONDS = 0.1


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any] | None]) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until every one has ended,
    cancelling those still running again every :data:`AGAIN_EVERY_SECONDS`.

    As ``await task`` would, raises the first exception a task ended with other than its
    cancel (after all of them have ended); a cancel of the caller itself goes through.
    """
    todo = [t for t in tasks if t is not None]
    running = {t for t in todo if not t.done()}
    while running:
        for task in running:
            task.cancel()
        _, running = await asyncio.wait(running, timeout=AGAIN_EVERY_SECONDS)
    errors = [t.exception() for t in todo if not t.cancelled()]  # (each one retrieved)
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
