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
  event loop (see :class:`_DriverInsert`).
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
import math
import operator
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, StorageError
from costwarden.core.records import LEDGER_STATUSES, LedgerRecord
from costwarden.storage.schema import ledger
from costwarden.storage.sqltypes import ensure_utc, to_money

logger = logging.getLogger(__name__)

_MAX_BIGINT = 2**63 - 1
_MIN_BACKOFF = 0.1
# A power of two. 27 columns a row: 3,456 parameters a statement, well under SQLite's and
# PostgreSQL's caps.
_ROWS_PER_STATEMENT = 128
_TEXT_FIELDS = (
    "org_id",
    "project_id",
    "key_id",
    "end_user",
    "session_id",
    "provider",
    "requested_model",
    "served_model",
    "error",
)
_TOKEN_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


# --------------------------------------------------------------------------- row conversion


def _clean_text(value: object, field: str, *, required: bool = False) -> str | None:
    # Nearly every value is non-empty ASCII without NUL, which any database stores: checking
    # that costs no copy, where encoding it to look for lone surrogates allocated one.
    if type(value) is str and value and value.isascii() and "\x00" not in value:
        return value
    if value is None:
        if required:
            raise InvalidInput(f"ledger record field {field} is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"ledger record field {field} must be a string")
    if required and not value:
        raise InvalidInput(f"ledger record field {field} must not be empty")
    # PostgreSQL text cannot hold NUL and no driver can encode lone surrogates; an upstream
    # error message may contain either. Replace rather than refuse: keep the row.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _int(value: object, field: str, *, lo: int = 0, hi: int = _MAX_BIGINT) -> int:
    if type(value) is int and lo <= value <= hi:  # the common case, in one test
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"ledger record field {field} must be an int")
    if not lo <= value <= hi:
        raise InvalidInput(f"ledger record field {field} out of range: {value}")
    return value


def _float(value: object, field: str, *, nullable: bool = False) -> float | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"ledger record field {field} must be a number")
    result = float(value)
    if not math.isfinite(result):  # SQLite would store NaN as NULL
        raise InvalidInput(f"ledger record field {field} must be finite")
    return result


def record_to_row(record: LedgerRecord) -> dict[str, Any]:
    """Validate ``record`` and return the ``ledger`` row for it.

    Raises InvalidInput for anything the database would refuse, so such a record is rejected
    by ``submit`` rather than failing a whole batch later.
    """
    ts = ensure_utc(record.ts, "ledger record ts")
    if record.status not in LEDGER_STATUSES:
        raise InvalidInput(f"unknown ledger status {record.status!r}")
    if not isinstance(record.tags, Mapping):
        raise InvalidInput("ledger record tags must be a mapping")
    try:
        tags = orjson.dumps(dict(record.tags), option=orjson.OPT_SORT_KEYS).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidInput(f"ledger record tags are not JSON-serializable: {exc}") from None
    row: dict[str, Any] = {
        "request_id": _clean_text(record.request_id, "request_id", required=True),
        "ts": ts,
        "day": ts.date().isoformat(),
        "endpoint": _clean_text(record.endpoint, "endpoint", required=True),
        "status": record.status,
        "http_status": _int(record.http_status, "http_status", hi=999),
        "tags": tags,
        "streamed": bool(record.streamed),
        "cost_usd": to_money(record.cost_usd),
        "cost_estimated": bool(record.cost_estimated),
        "latency_ms": _float(record.latency_ms, "latency_ms"),
        "ttft_ms": _float(record.ttft_ms, "ttft_ms", nullable=True),
        "overhead_ms": _float(record.overhead_ms, "overhead_ms"),
    }
    for field in _TEXT_FIELDS:
        value = getattr(record, field)
        row[field] = None if value is None else _clean_text(value, field)
    for field in _TOKEN_FIELDS:
        row[field] = _int(getattr(record, field), field)
    return row


def row_to_record(row: Mapping[Any, Any]) -> LedgerRecord:
    """The LedgerRecord for a ``ledger`` row read back from the database."""
    tags = orjson.loads(row["tags"]) if row["tags"] else {}
    return LedgerRecord(
        request_id=row["request_id"],
        ts=row["ts"],
        endpoint=row["endpoint"],
        status=row["status"],
        http_status=row["http_status"],
        org_id=row["org_id"],
        project_id=row["project_id"],
        key_id=row["key_id"],
        end_user=row["end_user"],
        session_id=row["session_id"],
        tags=tags,
        provider=row["provider"],
        requested_model=row["requested_model"],
        served_model=row["served_model"],
        streamed=bool(row["streamed"]),
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        cache_write_tokens=int(row["cache_write_tokens"]),
        output_tokens=int(row["output_tokens"]),
        reasoning_tokens=int(row["reasoning_tokens"]),
        cost_usd=row["cost_usd"],
        cost_estimated=bool(row["cost_estimated"]),
        latency_ms=float(row["latency_ms"]),
        ttft_ms=None if row["ttft_ms"] is None else float(row["ttft_ms"]),
        overhead_ms=float(row["overhead_ms"]),
        error=row["error"],
    )


def _describe(exc: BaseException) -> str:
    """Class and driver message of a database error: no SQL, no bound parameters, no URL."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    message = str(source).strip().splitlines()[0] if str(source).strip() else ""
    return f"{type(source).__name__}: {message[:300]}"


class _DriverInsert:
    """The ledger INSERT in the driver's own terms: SQL for n rows, and a row's parameters.

    One statement carries up to ``_ROWS_PER_STATEMENT`` rows. The writer thread must take
    the GIL for every statement it executes (the drivers release it while the database
    works); row by row, a thread that competes with a busy event loop for the GIL got a
    few hundred rows a second through and the buffer grew without bound. The parameters
    are what SQLAlchemy would bind (its bind processors per column and dialect), so the rows
    read back exactly as rows written through SQLAlchemy.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        if dialect.name not in ("postgresql", "sqlite"):  # pragma: no cover
            raise StorageError(f"unsupported database dialect {dialect.name!r}")
        names = [column.name for column in ledger.columns]
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        head = f"INSERT INTO {quote(ledger.name)} ({', '.join(map(quote, names))}) VALUES "
        one = "(" + ", ".join([mark] * len(names)) + ")"
        tail = f" ON CONFLICT ({quote('request_id')}) DO NOTHING"
        # Power-of-two sizes only: few prepared statements, and each connection caches its
        # own (a statement for every size up to the maximum held tens of MB).
        self._sql = {
            size: head + ", ".join([one] * size) + tail
            for size in (1 << k for k in range(_ROWS_PER_STATEMENT.bit_length()))
        }
        processors: dict[str, Callable[[Any], Any] | None] = {
            column.name: column.type._cached_bind_processor(dialect) for column in ledger.columns
        }
        if dialect.name == "sqlite":
            # record_to_row has already checked and quantized these; SQLAlchemy's processors
            # would check again and format through slow generic code (about 7 µs a row). The
            # text is the same (tests/storage/test_ledger.py compares it with SQLAlchemy's).
            processors["ts"] = _sqlite_timestamp
            processors["cost_usd"] = _plain_decimal
            # sqlite3 binds only exact int, float, str and bytes directly; every None goes
            # through its adapter lookup, which raises and swallows two AttributeErrors
            # (about 0.7 µs a parameter, and a row has several NULLs). An adapter for None
            # that returns None is found at once and still binds NULL.
            sqlite3.register_adapter(type(None), _NO_ADAPTATION.get)
        self._pick = operator.itemgetter(*names)
        self._convert = [(i, p) for i, p in enumerate(map(processors.get, names)) if p]

    def params(self, row: dict[str, Any]) -> list[Any]:
        values = list(self._pick(row))
        for i, processor in self._convert:
            values[i] = processor(values[i])
        return values

    def execute(self, cursor: Any, rows: list[list[Any]]) -> int:
        """Insert ``rows`` in statements of power-of-two sizes; returns how many were new."""
        inserted = 0
        start = 0
        while start < len(rows):
            size = min(_ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
            chunk = rows[start : start + size]
            cursor.execute(self._sql[size], list(itertools.chain.from_iterable(chunk)))
            inserted += max(cursor.rowcount, 0)
            start += size
        return inserted


# Its get is a C method returning None for any argument: no Python frame per NULL.
_NO_ADAPTATION: dict[object, None] = {}


def _sqlite_timestamp(utc: datetime) -> str:
    # SQLAlchemy's SQLite DATETIME text; %-formatting in C is ~3x isoformat(" ", ...).
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031
        utc.year,
        utc.month,
        utc.day,
        utc.hour,
        utc.minute,
        utc.second,
        utc.microsecond,
    )


def _plain_decimal(value: Decimal) -> str:
    return format(value, "f")


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
        self._insert = _DriverInsert(engine)
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
        self._buffer.append(self._insert.params(record_to_row(record)))
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
