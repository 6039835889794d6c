"""Engines for SQLite and PostgreSQL, configured so both behave the same for costwarden.

Why this module exists rather than a bare ``sqlalchemy.create_engine`` call:

- One URL vocabulary for operators: ``sqlite:///path.db`` (the parent directory is created),
  ``postgresql://`` and ``postgres://`` (both mapped to the psycopg 3 driver).
- SQLite needs per-connection settings to be a serious single-node store: WAL so readers
  (key-cache polls, usage reports) never block the ledger writer, ``synchronous=NORMAL``
  (durable against process crashes, fast), a busy timeout instead of instant "database is
  locked", and enforced foreign keys. Write transactions start with ``BEGIN IMMEDIATE`` (see
  :func:`begin_write`) so a read-then-write transaction cannot dead-end in SQLITE_BUSY.
- Money must be summed exactly. PostgreSQL's ``sum(numeric)`` is exact; SQLite stores money
  as decimal strings (see :mod:`costwarden.storage.sqltypes`) and gets an aggregate
  ``dsum(text)`` that adds them as Decimals. :func:`money_sum` picks the right one when the
  statement is compiled, so query code is written once. Budget counters count USD in
  nano-dollars, each row rounded *up* to a whole nano-dollar; :func:`nanos_sum` is that sum
  (``sum(ceil(x * 1e9))`` on PostgreSQL, the exact ``nanosum(text)`` aggregate on SQLite).
- Database URLs can carry passwords; :func:`redact_url` is what goes into logs.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from costwarden.core.errors import InvalidInput
from costwarden.core.money import MONEY_CONTEXT, NANOS_PER_USD, usd_to_nanos
from costwarden.storage.sqltypes import Money

logger = logging.getLogger(__name__)

Bind = Engine | Connection

SQLITE_BUSY_TIMEOUT_S = 10.0
SQLITE_PRAGMAS = (
    f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)

# Execution option read by the SQLite "begin" hook: start the transaction with
# BEGIN IMMEDIATE (take the write lock up front, waiting up to busy_timeout for it).
SQLITE_BEGIN_IMMEDIATE = "costwarden_sqlite_begin_immediate"

_PG_DRIVERS = {"postgresql", "postgres", "postgresql+psycopg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}
_SECRET_QUERY_KEYS = {"password", "sslpassword", "passfile"}


# --------------------------------------------------------------------------- URLs


def normalize_url(url: str | URL) -> URL:
    """Parse an operator-supplied database URL into the URL costwarden connects with."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidInput(f"not a database URL: {redact_url(url)}") from None
    driver = parsed.drivername
    if driver in _PG_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if driver in _SQLITE_DRIVERS:
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise InvalidInput(
                "in-memory SQLite is not supported (every connection would see a different "
                "database); use sqlite:///path/to/file.db"
            )
        return parsed.set(drivername="sqlite")
    raise InvalidInput(
        f"unsupported database URL scheme {driver!r}: use sqlite:///path.db or postgresql://..."
    )


def redact_url(url: str | URL) -> str:
    """Return ``url`` with its password (and password-like query parameters) hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not parseable by SQLAlchemy: drop any userinfo and query string by hand rather
        # than echo something that may contain a password.
        text = re.sub(r"[^/\s@]*@", "***@", str(url).split("?", 1)[0])
        return text
    if parsed.query:
        query = {
            k: ("***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in parsed.query.items()
        }
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=True)


# --------------------------------------------------------------------------- engines


def create_engine_for(url: str | URL) -> Engine:
    """Create a sync SQLAlchemy engine for a SQLite or PostgreSQL URL, fully configured."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _create_sqlite_engine(parsed)
    else:
        engine = _create_pg_engine(parsed)
    logger.debug("created engine for %s", redact_url(parsed))
    return engine


def _create_sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _create_pg_engine(url: URL) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = 10
    if "application_name" not in url.query:
        connect_args["application_name"] = "costwarden"
    # pre_ping: after a database restart, pooled connections are dead; find out at checkout
    # rather than failing the first statement.
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # Take transaction control away from the sqlite3 module (it would BEGIN lazily, and only
    # DEFERRED); _sqlite_on_begin emits BEGIN itself. This is SQLAlchemy's documented recipe.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        _enable_wal(cursor)
    finally:
        cursor.close()
    dbapi_connection.create_aggregate("dsum", 1, DecimalSum)
    dbapi_connection.create_aggregate("nanosum", 1, NanoSum)


def _enable_wal(cursor: Any) -> None:
    # Switching a fresh database to WAL needs an exclusive lock, and SQLite answers "database
    # is locked" at once, without its busy handler, while another connection holds one (two
    # processes migrating a new database together). Wait for it like busy_timeout would.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_on_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(SQLITE_BEGIN_IMMEDIATE):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


@contextmanager
def begin_write(bind: Bind) -> Iterator[Connection]:
    """A connection inside a write transaction, committed on success.

    Given an Engine, opens a connection and a transaction (``BEGIN IMMEDIATE`` on SQLite) and
    commits it when the block ends. Given a Connection, the caller owns the transaction:
    the connection is used as-is and nothing is committed here.
    """
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
        with conn.begin():
            yield conn


@contextmanager
def connect_read(bind: Bind) -> Iterator[Connection]:
    """A connection for reading; an Engine's connection is closed (and rolled back) after."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


def dialect_name(bind: Bind) -> str:
    return bind.dialect.name


# --------------------------------------------------------------------------- exact sums


def _decimal_arg(function: str, value: object) -> Decimal | None:
    """A money aggregate's input as a Decimal (None for NULL); floats and junk refused."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii")
    if isinstance(value, float):
        raise ValueError(f"{function}() refuses REAL input: money must be stored as text")
    if not isinstance(value, int | str):
        raise ValueError(f"{function}() cannot add {type(value).__name__}")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{function}(): not a decimal: {value!r:.40}") from None


class DecimalSum:
    """SQLite aggregate ``dsum(x)``: exact sum of decimal strings, as a decimal string.

    NULLs are skipped; no non-NULL input gives NULL (like SQL ``sum``). Integers are accepted;
    a float input means the column is not a money column and is refused rather than summed
    inexactly.
    """

    def __init__(self) -> None:
        self._total: Decimal | None = None

    def step(self, value: object) -> None:
        amount = _decimal_arg("dsum", value)
        if amount is None:
            return
        if self._total is None:
            self._total = amount
        else:
            self._total = MONEY_CONTEXT.add(self._total, amount)

    def finalize(self) -> str | None:
        if self._total is None:
            return None
        return format(self._total, "f")


class _MoneySum(FunctionElement[Decimal]):
    """``sum(x)`` on PostgreSQL, ``dsum(x)`` on SQLite; result typed as :class:`Money`."""

    name = "money_sum"
    type = Money()
    inherit_cache = True


@compiles(_MoneySum)
def _compile_money_sum(element: _MoneySum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(_MoneySum, "sqlite")
def _compile_money_sum_sqlite(element: _MoneySum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"dsum({compiler.process(element.clauses, **kw)})"


def money_sum(column: ColumnElement[Any]) -> ColumnElement[Decimal]:
    """An exact SUM over a money column, valid on both dialects (NULL when no rows)."""
    return _MoneySum(column)


# --------------------------------------------------------------------------- nano-dollars


class NanoSum:
    """SQLite aggregate ``nanosum(x)``: the exact integer sum of ``ceil(x * 1e9)`` over rows.

    ``x`` is a money column's decimal text (see :class:`DecimalSum` for what is accepted and
    refused). NULLs are skipped; no non-NULL input gives NULL (like SQL ``sum``).
    """

    def __init__(self) -> None:
        self._total: int | None = None

    def step(self, value: object) -> None:
        amount = _decimal_arg("nanosum", value)
        if amount is None:
            return
        if not amount.is_finite():
            raise ValueError(f"nanosum(): not a finite decimal: {value!r:.40}")
        self._total = (self._total or 0) + usd_to_nanos(amount)

    def finalize(self) -> int | None:
        return self._total


class _NanosSum(FunctionElement[int]):
    """``sum(ceil(x * 1e9))`` as a BIGINT on PostgreSQL, ``nanosum(x)`` on SQLite."""

    name = "nanos_sum"
    type = sa.BigInteger()
    inherit_cache = True


@compiles(_NanosSum)
def _compile_nanos_sum(element: _NanosSum, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"CAST(sum(ceil(({column}) * {NANOS_PER_USD})) AS BIGINT)"


@compiles(_NanosSum, "sqlite")
def _compile_nanos_sum_sqlite(element: _NanosSum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"nanosum({compiler.process(element.clauses, **kw)})"


def nanos_sum(column: ColumnElement[Any]) -> ColumnElement[int]:
    """The exact sum over rows of ``ceil(column * 1e9)`` (a money column in nano-dollars).

    Valid on both dialects (chosen when the statement is compiled); NULL when no rows.
    """
    return _NanosSum(column)
