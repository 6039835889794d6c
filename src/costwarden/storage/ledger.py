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
- When a write fails (database down, restarted, locked, table missing...), the error is
  logged (exception class and driver message only: no URL, no parameters) and the batch goes
  to the **spool** (:mod:`costwarden.storage.spool`, a local append-only file, fsync'd):
  durable submitters are answered once it is there, and the gateway goes on serving. While
  the database is out of reach every batch goes straight to the spool (no request waits for
  a connection attempt); a replay of the spool probes the database with exponential backoff
  and, once every spooled row is committed, batches go to the database again. Without a
  spool (or when the spool cannot be written either: no room on the disk) the batch stays
  at the head of the buffer and the write is retried with backoff until it succeeds.
  Records are never dropped silently; a record the database could never accept is refused
  up front by ``submit`` with InvalidInput, so it cannot poison a batch forever.
- Inserts are ``ON CONFLICT (request_id) DO NOTHING``: if a commit succeeded but its
  acknowledgement was lost, the retry does not fail on, or duplicate, the rows.
- :meth:`LedgerWriter.close` drains everything; call it on graceful shutdown (SIGTERM). With
  the database down it drains into the spool, which the next start (or another process
  sharing the spool directory) replays.

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
from costwarden.core.tasks import cancel_and_wait
from costwarden.storage.ledger_rows import DriverInsert
from costwarden.storage.spool import LedgerSpool

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
        spool: LedgerSpool | None = None,
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
        self._spool = spool
        # True while the database is out of reach: batches go to the spool, and a replay of
        # the spool probes the database once _retry_at (time.monotonic) has passed.
        self._spooling = False
        self._retry_at = 0.0
        self._probes = 0  # consecutive failed replays
        self._spool_empty = asyncio.Event()
        self._spool_empty.set()
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
    def spooled(self) -> int:
        """Rows in the spool, not yet committed to the database (0 without a spool)."""
        return 0 if self._spool is None else self._spool.depth

    @property
    def spooling(self) -> bool:
        """Whether the database is out of reach and batches go to the spool."""
        return self._spooling

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the background flusher (idempotent); first, replay what an earlier process
        left in the spool, so that whoever reads the ledger next finds its rows."""
        if self._closed or self._closing:
            raise StorageError("ledger writer is closed")
        if self._task is None and self._spool is not None and self._spool.pending_files():
            await self._replay()
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
            await cancel_and_wait((task,))
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
        """Write everything submitted so far and return once it is committed to the database
        (spooled rows included: this waits for the database to be back)."""
        if self._buffer:
            self._require_running()
            await self._wait_for(self._submitted)
        if not self._spool_empty.is_set():
            self._require_running()
            self._retry_at = 0.0  # someone waits: probe now rather than after the backoff
            self._wake.set()
            await self._spool_empty.wait()

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
        replayed_at_close = False
        while True:
            if self._closing and not self._buffer:
                if self._spool is not None and not replayed_at_close:
                    # One last replay, so a clean stop leaves no spool behind if it can.
                    replayed_at_close = True
                    if self._spool.depth:
                        await self._replay()
                    continue  # the buffer may have grown meanwhile
                if self._spool is not None:
                    self._spool.close()
                self._closed = True  # same step as the emptiness check: no race with submit
                return
            if self._spooling and time.monotonic() >= self._retry_at:
                await self._replay()
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
                if self._spooling:
                    written = await self._to_spool(rows)
                    if not written:
                        failures += 1
                        self.failures += 1
                else:
                    try:
                        await asyncio.to_thread(self._write_batch, rows)
                        written = True
                    except Exception as exc:
                        failures += 1
                        self.failures += 1
                        self.last_error = _describe(exc)
                        written = self._spool is not None and await self._to_spool(rows)
                        if written:
                            self._start_spooling(count)
                            failures = 0
                if not written:
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
                if not self._spooling:
                    self.written += count
                self._resolve_waiters()
                draining = (
                    bool(self._waiters) or self._closing or len(self._buffer) >= self.max_batch
                )

    # ---------------------------------------------------------------- the spool

    async def _to_spool(self, rows: list[list[Any]]) -> bool:
        """Append ``rows`` to the spool (on stable storage when it returns True)."""
        assert self._spool is not None
        try:
            await asyncio.to_thread(self._spool.append, rows)
        except StorageError as exc:
            self.last_error = str(exc)
            return False
        self._spool_empty.clear()
        return True

    def _start_spooling(self, count: int) -> None:
        self._spooling = True
        self._probes = 0
        self._retry_at = time.monotonic() + _MIN_BACKOFF
        logger.error(
            "the ledger database is out of reach (%s): spooling ledger rows to %s (%d so "
            "far) and serving on; they are replayed when it answers",
            self.last_error,
            self._spool.directory if self._spool is not None else "-",
            count,
        )

    async def _replay(self) -> None:
        """Replay the spool into the database; on failure, spool on and probe again later."""
        assert self._spool is not None
        try:
            count = await asyncio.to_thread(self._spool.replay, self._write_replayed)
        except Exception as exc:
            self.failures += 1
            self.last_error = _describe(exc)
            self._probes += 1
            self._spooling = True
            self._retry_at = time.monotonic() + min(
                _MIN_BACKOFF * 2 ** (self._probes - 1), self.max_backoff
            )
            if self._probes == 1 or self._probes % 20 == 0:
                logger.warning(
                    "ledger database still out of reach (replay attempt %d, %d rows spooled): "
                    "%s",
                    self._probes,
                    self._spool.depth,
                    self.last_error,
                )
            return
        self.written += count
        if self._spooling or count:
            logger.warning(
                "the ledger database answers again: %d spooled rows replayed, writing directly",
                count,
            )
        self._spooling = False
        self._probes = 0
        self.last_error = None
        if not self._spool.depth:
            self._spool_empty.set()

    def _write_replayed(self, rows: list[list[Any]]) -> int:
        # Rows already recorded are expected here (a replay cut short and run again).
        return self._write_batch(rows, quiet=True)

    def _write_batch(self, rows: list[list[Any]], *, quiet: bool = False) -> int:
        """One transaction of multi-row INSERTs; returns the rows that were new. Runs in a
        worker thread."""
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
        if inserted < len(rows) and not quiet:
            logger.warning(
                "%d of %d ledger rows were already recorded (same request_id); kept the first",
                len(rows) - inserted,
                len(rows),
            )
        return inserted

    @staticmethod
    def _sqlite_synchronous(conn: sa.Connection, level: str) -> None:
        # Straight on the driver connection: it is in autocommit mode (see db.py), so this
        # runs outside any transaction, where SQLite allows changing it.
        driver = conn.connection.driver_connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            return
        driver.execute(f"PRAGMA synchronous={level}")
