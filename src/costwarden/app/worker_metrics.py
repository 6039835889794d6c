"""``/metrics`` across the workers of ``serve --workers N``: each worker answers its own
values on a unix socket, and the worker answering a scrape asks all the others.

The supervisor makes a run directory (``costwarden.app.supervisor``) and gives it to every
worker. A worker listens on ``<run dir>/<pid>.sock`` from the end of its startup to the start
of its shutdown; whoever connects gets this worker's scrape (``metrics.scrape.encode``) and
EOF. A scrape lists the directory and reads every other socket at once, within
:data:`PEER_TIMEOUT_SECONDS`. Values are read when the scrape is asked for, not published
on a timer, so a scrape is as fresh from every worker as from the one answering, and nothing
runs between scrapes: the request path is untouched.

A socket nobody listens on belongs to a worker that died without removing it (SIGKILL): it is
removed here, and by the supervisor when it reaps that worker. A worker that does not answer
in time (its event loop stalled) is left out of that scrape, with a warning; the scrape's
``costwarden_workers`` says how many were summed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from costwarden.metrics import MetricsExporter
from costwarden.metrics.scrape import Scrape, decode, encode

logger = logging.getLogger(__name__)

PEER_TIMEOUT_SECONDS = 2.0
SUFFIX = ".sock"


def socket_path(run_dir: Path, pid: int) -> Path:
    """Where the worker ``pid`` answers (the supervisor removes it when the worker dies)."""
    return run_dir / f"{pid}{SUFFIX}"


class WorkerMetrics:
    """This worker's side of the exchange: its socket, and the gathering of the others'."""

    def __init__(self, run_dir: Path, exporter: MetricsExporter, pid: int | None = None) -> None:
        self._dir = run_dir
        self._exporter = exporter
        self._pid = os.getpid() if pid is None else pid  # (tests run two in one process)
        self._path = socket_path(run_dir, self._pid)
        self._server: asyncio.Server | None = None
        exporter.worker = str(self._pid)
        exporter.peers = self.gather

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._answer, path=str(self._path))

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # An asker that gave up (timed out) has closed its end: nothing to answer then.
        try:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(encode(self._exporter.snapshot()))
                await writer.drain()
        finally:
            writer.close()

    async def gather(self) -> list[Scrape]:
        """Every other live worker's scrape."""
        paths = [p for p in self._dir.glob("*" + SUFFIX) if p != self._path]
        found = await asyncio.gather(*(self._ask(p) for p in paths))
        return [s for s in found if s is not None]

    async def _ask(self, path: Path) -> Scrape | None:
        try:
            async with asyncio.timeout(PEER_TIMEOUT_SECONDS):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    data = await reader.read()
                finally:
                    writer.close()
        except (ConnectionRefusedError, FileNotFoundError):
            # Its worker is gone without removing it (or just removed it): not a worker.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        except (TimeoutError, OSError) as exc:
            logger.warning(
                "metrics of worker %s left out of this scrape: %s", path.stem, type(exc).__name__
            )
            return None
        try:
            return decode(data)
        except ValueError as exc:
            logger.warning("metrics of worker %s left out of this scrape: %s", path.stem, exc)
            return None
