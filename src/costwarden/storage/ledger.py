"""Getting ledger rows off the request path and into the database in batches.

The gateway must never wait on the database while serving a request, and it must never lose
a billed request. :class:`LedgerWriter` reconciles the two:

- :meth:`LedgerWriter.submit` validates the record, converts it to the driver's parameters,
  appends them to an in-memory buffer and returns; it never awaits anything. A background
  task writes the buffer every ``flush_interval`` seconds, or at once when ``max_batch``
  records are waiting: one transaction per batch, in a worker thread, of multi-row INSERTs
  handed straight to the driver's cursor. SQLAlchemy's per-row statement machinery held the
  GIL for about 25 µs a row there and stalled the event loop by milliseconds per batch; a
  statement per row made the thread wait for the GIL once per row and fall behind a busy
  event loop (see :class:`~costwarden.storage.ledger_rows.DriverInsert`).
- :meth:`LedgerWriter.submit_durable` is for deployments that want a request's row committed
  before the response completes. Concurrent callers share transactions (group commit):
  whatever accumulated while the previous batch was being written goes in the next one.
- When a write fails (database down, restarted, locked, table missing...), the batch stays at
  the head of the buffer, the error is logged (exception class and driver message only: no
  URL, no parameters) and the write is retried with exponential backoff until it succeeds.
  Records are never dropped silently; a record the database could never accept is refused
  up front by ``submit`` with InvalidInput, so it cannot poison a batch forever.
- Inserts are ``ON CONFLICT (request_id) DO NOTHING``: if a commit succeeded but its
  acknowledgement was lost, the retry does not fail on, or duplicate, the rows.
- :meth:`LedgerWriter.close` drains everything; call it on graceful shutdown (SIGTERM).

The writer belongs to one event loop; call its methods from that loop's thread.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, StorageError
from costwarden.core.records import LedgerRecord
from costwarden.storage.ledger_rows import DriverInsert

logger = logging.getLogger(__name__)

_MIN_BACKOFF = 0.1
def _describe(exc: BaseException) -> str:
    """Class and driver message of a database error: no SQL, no bound parameters, no URL."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    message = str(source).strip().splitlines()[0] if str(source).strip() else ""
    return f"{type(source).__name__}: {message[:300]}"


# --------------------------------------------------------------------------- the writer


class LedgerWriter:
    """Batches ledger records off the request path; see the module docstring.

    ``durable=True`` makes every commit reach stable storage before it counts as written:
    ``synchronous=FULL`` for the writer's SQLite transactions (the engine default, NORMAL in
    WAL mode, survives process crashes but may lose the last commits on power loss) and
    ``synchronous_commit=on`` for its PostgreSQL transactions whatever the server default.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        flush_interval: float = 0.2,
        max_batch: int = 1000,
        durable: bool = False,
        max_backoff: float = 5.0,
    ) -> None:
        if not flush_interval > 0:
            raise InvalidInput("flush_interval must be > 0")
        if max_batch < 1:
            raise InvalidInput("max_batch must be >= 1")
        if not max_backoff >= _MIN_BACKOFF:
            raise InvalidInput(f"max_backoff must be >= {_MIN_BACKOFF}")
        self._engine = engine
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.durable = durable
        self.max_backoff = max_backoff
        self._buffer: collections.deque[list[Any]] = collections.deque()
        # When each buffered record was submitted (time.monotonic), for flush_lag.
        self._since: collections.deque[float] = collections.deque()
        self._submitted = 0  # sequence number of the last record submitted
        self._done = 0  # sequence number of the last record committed (commits are FIFO)
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._insert = DriverInsert(engine)
        #: records committed so far (including request_ids that were already recorded)
        self.written = 0
        #: failed write attempts so far
        self.failures = 0
        #: description of the most recent write failure (None once a write succeeds)
        self.last_error: str | None = None

    # ---------------------------------------------------------------- state

    @property
    def pending(self) -> int:
        """Records submitted but not yet committed."""
        return len(self._buffer)

    def flush_lag(self, now: float | None = None) -> float:
        """Seconds the oldest record not yet committed has waited (0 when none waits);
        ``now`` is a ``time.monotonic()`` reading."""
        if not self._since:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self._since[0])

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the background flusher (idempotent)."""
        if self._closed or self._closing:
            raise StorageError("ledger writer is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="costwarden-ledger-writer"
            )
            self._task.add_done_callback(self._task_done)

    async def close(self, timeout: float | None = None) -> None:
        """Write everything still buffered, then stop; submit raises StorageError afterwards.

        Waits as long as the database needs to come back unless ``timeout`` is given; if the
        drain does not finish in time, the writer stops anyway and StorageError says how
        many records were not written (they are also logged at ERROR level).
        """
        if self._closed:
            return
        self._closing = True
        if self._task is None:
            if not self._buffer:
                self._closed = True
                return
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="costwarden-ledger-writer"
            )
            self._task.add_done_callback(self._task_done)
        task = self._task
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError as exc:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            self._closed = True
            lost = len(self._buffer)
            logger.error(
                "ledger writer closed with %d records NOT confirmed written (last error: %s)",
                lost,
                self.last_error,
            )
            self._fail_waiters(StorageError(f"{lost} ledger records were not written"))
            raise StorageError(
                f"ledger writer could not drain: {lost} records not written"
            ) from exc
        self._closed = True

    async def __aenter__(self) -> LedgerWriter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ---------------------------------------------------------------- submitting

    def submit(self, record: LedgerRecord) -> None:
        """Queue ``record`` for writing; never waits. InvalidInput for an unstorable record."""
        if self._closed:
            raise StorageError("ledger writer is closed")
        self._buffer.append(self._insert.params_of(record))
        self._since.append(time.monotonic())
        self._submitted += 1
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    async def submit_durable(self, record: LedgerRecord) -> None:
        """Queue ``record`` and return once it is committed (shares a transaction with others).

        If the database is down this waits until it is back. If the caller is cancelled
        while waiting, the record is still written.
        """
        self._require_running()
        self.submit(record)
        await self._wait_for(self._submitted)

    async def flush(self) -> None:
        """Write everything submitted so far and return once it is committed."""
        if not self._buffer:
            return
        self._require_running()
        await self._wait_for(self._submitted)

    def _require_running(self) -> None:
        if self._closed:
            raise StorageError("ledger writer is closed")
        if self._task is None or self._task.done():
            raise StorageError("ledger writer is not running (call start() first)")

    async def _wait_for(self, seq: int) -> None:
        if self._done >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        self._wake.set()
        await future

    def _resolve_waiters(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._done:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)

    def _fail_waiters(self, exc: BaseException) -> None:
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(exc)

    # ---------------------------------------------------------------- the flusher

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug: writes themselves never raise out of _run
            logger.error("ledger writer task died: %s", _describe(exc), exc_info=exc)
            self._fail_waiters(StorageError("ledger writer task died"))

    async def _run(self) -> None:
        failures = 0  # consecutive failed attempts
        while True:
            if self._closing and not self._buffer:
                self._closed = True  # same step as the emptiness check: no race with submit
                return
            if not failures and not self._closing and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                except TimeoutError:
                    pass
            self._wake.clear()
            # Write what is buffered, batch by batch. What arrives meanwhile goes in the next
            # transaction at once only when someone waits for it (durable submitters share
            # it: group commit), a full batch is ready, or the writer is closing; otherwise it
            # waits for the next interval, so that a steady trickle of requests is not
            # written one transaction per row.
            draining = True
            while self._buffer and draining:
                count = min(len(self._buffer), self.max_batch)
                rows = list(itertools.islice(self._buffer, count))
                try:
                    await asyncio.to_thread(self._write_batch, rows)
                except Exception as exc:
                    failures += 1
                    self.failures += 1
                    self.last_error = _describe(exc)
                    delay = min(_MIN_BACKOFF * 2 ** (failures - 1), self.max_backoff)
                    log = logger.error if failures == 1 else logger.warning
                    log(
                        "ledger write of %d records failed (attempt %d, %d pending); "
                        "retrying in %.1fs: %s",
                        count,
                        failures,
                        len(self._buffer),
                        delay,
                        self.last_error,
                    )
                    await asyncio.sleep(delay)
                    break
                if failures:
                    logger.warning("ledger writes recovered after %d failed attempts", failures)
                    failures = 0
                    self.last_error = None
                for _ in range(count):
                    self._buffer.popleft()
                    self._since.popleft()
                self._done += count
                self.written += count
                self._resolve_waiters()
                draining = (
                    bool(self._waiters) or self._closing or len(self._buffer) >= self.max_batch
                )

    def _write_batch(self, rows: list[list[Any]]) -> None:
        """One transaction of multi-row INSERTs. Runs in a worker thread."""
        with self._engine.connect() as conn:
            is_sqlite = conn.dialect.name == "sqlite"
            if self.durable and is_sqlite:
                self._sqlite_synchronous(conn, "FULL")
            try:
                with conn.begin():
                    if self.durable and not is_sqlite:
                        conn.exec_driver_sql("SET LOCAL synchronous_commit = on")
                    cursor = conn.connection.cursor()
                    try:
                        inserted = self._insert.execute(cursor, rows)
                    finally:
                        cursor.close()
            finally:
                if self.durable and is_sqlite:
                    self._sqlite_synchronous(conn, "NORMAL")
        if inserted < len(rows):
            logger.warning(
                "%d of %d ledger rows were already recorded (same request_id); kept the first",
                len(rows) - inserted,
                len(rows),
            )

    @staticmethod
    def _sqlite_synchronous(conn: sa.Connection, level: str) -> None:
        # Straight on the driver connection: it is in autocommit mode (see db.py), so this
        # runs outside any transaction, where SQLite allows changing it.
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            return
        driver.execute(f"PRAGMA synchronous={level}")
