"""Ledger records as database rows: checked, converted, and bound straight to the driver.

:func:`record_to_row` checks a record field by field (InvalidInput for anything the database
would refuse) and returns the row SQLAlchemy would insert; :meth:`DriverInsert.params_of`
gives the same row as the driver's parameters, for the writer's multi-row INSERTs.
``params_of`` runs on the request path (``LedgerWriter.submit``), so the usual record -- text
that is ASCII without NUL, non-negative int tokens, finite float timings, a finite Decimal
cost and response-cache saving, UTC time, a dict of tags, a route reason of at most
:data:`MAX_ROUTE_REASON` characters -- is recognised with a few C-level checks over all its
fields at once and converted in one pass; any other record goes through ``record_to_row``'s
checks, which either refuse it or convert it the same way (``tests/storage/test_ledger_rows.py``
holds the two to the same parameters). Measured under callgrind on a typical row: the checked path
cost about 91,000 instructions, the one pass about 12,000.
"""

from __future__ import annotations

import itertools
import math
import operator
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput, StorageError
from costwarden.core.money import MONEY_CONTEXT
from costwarden.core.records import LEDGER_STATUSES, LedgerRecord
from costwarden.storage.schema import ledger
from costwarden.storage.sqltypes import MONEY_LIMIT, MONEY_QUANTUM, ensure_utc, to_money

_MAX_BIGINT = 2**63 - 1
# A power of two. 30 columns a row: 3,840 parameters a statement, well under SQLite's and
# PostgreSQL's caps.
_ROWS_PER_STATEMENT = 128
# The database's clock in epoch milliseconds, as SQL (ledger.written_ms; the rollup job
# reads the same clock).
NOW_MS_SQL = {
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
    "postgresql": "CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)",
}
# The ledger's columns in their table order (but written_ms, set by the INSERT itself): the
# order params_of builds a row in.
_COLUMNS = (
    "request_id", "ts", "day", "endpoint", "status", "http_status", "org_id", "project_id",
    "key_id", "end_user", "session_id", "tags", "provider", "requested_model", "served_model",
    "streamed", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "cost_estimated", "latency_ms", "ttft_ms", "overhead_ms",
    "error", "security", "route_reason", "saved_usd", "slice_holder",
)  # fmt: skip
# Parameters per row. A row spooled before the last columns were added has fewer: they are
# nullable, and its replay fills them with NULL (storage/spool.py).
COLUMN_COUNT = len(_COLUMNS)
# A route reason is a sentence or two (the strategy, the deployment chosen, what was skipped);
# a longer one is cut to this many characters when written, never refused.
MAX_ROUTE_REASON = 500
_BOOLEAN_COLUMNS = frozenset({"streamed", "cost_estimated"})
_FLOAT_COLUMNS = frozenset({"latency_ms", "ttft_ms", "overhead_ms"})
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
    "security",
    "slice_holder",
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


def _cost(value: object, field: str = "cost_usd") -> Decimal:
    cost = to_money(value)
    # top-N ranking (analytics.ranking) reads costs as never below 0; a saving below 0 (the
    # response cache's saved_usd) means nothing either.
    if cost < 0:
        raise InvalidInput(f"ledger record {field} must not be negative: {cost}")
    return cost


def _route_reason(value: object) -> str | None:
    if isinstance(value, str) and len(value) > MAX_ROUTE_REASON:
        value = value[:MAX_ROUTE_REASON]
    return None if value is None else _clean_text(value, "route_reason")


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
        "cost_usd": _cost(record.cost_usd),
        "cost_estimated": bool(record.cost_estimated),
        "latency_ms": _float(record.latency_ms, "latency_ms"),
        "ttft_ms": _float(record.ttft_ms, "ttft_ms", nullable=True),
        "overhead_ms": _float(record.overhead_ms, "overhead_ms"),
        "route_reason": _route_reason(record.route_reason),
        "saved_usd": _cost(record.saved_usd, "saved_usd"),
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
        security=row.get("security"),
        route_reason=row["route_reason"],
        saved_usd=row["saved_usd"],
        slice_holder=row.get("slice_holder"),
    )


class DriverInsert:
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
        names = [column.name for column in ledger.columns if column.name != "written_ms"]
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        columns = ", ".join(map(quote, [*names, "written_ms"]))
        head = f"INSERT INTO {quote(ledger.name)} ({columns}) VALUES "
        # written_ms is the database's clock when the row is inserted, not a parameter: the
        # rollup's watermark runs over it (analytics), whatever the writers' clocks say.
        one = "(" + ", ".join([mark] * len(names)) + ", " + NOW_MS_SQL[dialect.name] + ")"
        tail = f" ON CONFLICT ({quote('request_id')}) DO NOTHING"
        # Power-of-two sizes only: few prepared statements, and each connection caches its
        # own (a statement for every size up to the maximum held tens of MB).
        self._sql = {
            size: head + ", ".join([one] * size) + tail
            for size in (1 << k for k in range(_ROWS_PER_STATEMENT.bit_length()))
        }
        processors: dict[str, Callable[[Any], Any] | None] = {
            column.name: column.type._cached_bind_processor(dialect) for column in ledger.columns
        }  # (written_ms's is never used: see above)
        self._sqlite = dialect.name == "sqlite"
        if self._sqlite:
            # record_to_row has already checked and quantized these; SQLAlchemy's processors
            # would check again and format through slow generic code (about 7 µs a row). The
            # text is the same (tests/storage/test_ledger.py compares it with SQLAlchemy's).
            processors["ts"] = _sqlite_timestamp
            processors["cost_usd"] = _plain_decimal
            processors["saved_usd"] = _plain_decimal
            # sqlite3 binds only exact int, float, str and bytes directly; every None goes
            # through its adapter lookup, which raises and swallows two AttributeErrors
            # (about 0.7 µs a parameter, and a row has several NULLs). An adapter for None
            # that returns None is found at once and still binds NULL.
            sqlite3.register_adapter(type(None), _NO_ADAPTATION.get)
            # Checked rows hold exact bools and finite floats: int() is SQLAlchemy's SQLite
            # Boolean conversion of a bool, and sqlite3 binds a float as it is.
            for column in ledger.columns:
                if column.name in _BOOLEAN_COLUMNS:
                    processors[column.name] = int
                elif column.name in _FLOAT_COLUMNS:
                    processors[column.name] = None
        if tuple(names) != _COLUMNS:  # pragma: no cover - the schema and this module agree
            raise StorageError("the ledger's columns are not the ones params_of writes")
        self._pick = operator.itemgetter(*names)
        self._convert = [(i, p) for i, p in enumerate(map(processors.get, names)) if p]

    def params(self, row: dict[str, Any]) -> list[Any]:
        """The parameters of a row :func:`record_to_row` made."""
        values = list(self._pick(row))
        for i, processor in self._convert:
            values[i] = processor(values[i])
        return values

    def params_of(self, record: LedgerRecord) -> list[Any]:
        """The parameters of ``record``'s row: ``params(record_to_row(record))``, the usual
        record in one pass (see the module docstring). InvalidInput as ``record_to_row``."""
        r = record
        ts, cost, tags = r.ts, r.cost_usd, r.tags
        latency, ttft, overhead = r.latency_ms, r.ttft_ms, r.overhead_ms
        request_id, endpoint, org, project, key = (
            r.request_id, r.endpoint, r.org_id, r.project_id, r.key_id,
        )  # fmt: skip
        user, session, provider, requested, served, error = (
            r.end_user, r.session_id, r.provider, r.requested_model, r.served_model, r.error,
        )  # fmt: skip
        security, reason, saved, holder = r.security, r.route_reason, r.saved_usd, r.slice_holder
        http, tokens_in, cached, written, tokens_out, reasoning = (
            r.http_status, r.input_tokens, r.cached_input_tokens, r.cache_write_tokens,
            r.output_tokens, r.reasoning_tokens,
        )  # fmt: skip
        # Inline tests, not helpers or set operations over the fields: a call costs more
        # than the test it makes. The int fields are non-negative and below 2**63 together
        # exactly when their bitwise or is (2**63 - 1 is all ones).
        if not (
            type(request_id) is str
            and request_id
            and type(endpoint) is str
            and endpoint
            and (org is None or type(org) is str)
            and (project is None or type(project) is str)
            and (key is None or type(key) is str)
            and (user is None or type(user) is str)
            and (session is None or type(session) is str)
            and (provider is None or type(provider) is str)
            and (requested is None or type(requested) is str)
            and (served is None or type(served) is str)
            and (error is None or type(error) is str)
            and (security is None or type(security) is str)
            and (holder is None or type(holder) is str)
            and (reason is None or (type(reason) is str and len(reason) <= MAX_ROUTE_REASON))
            and type(http) is int
            and type(tokens_in) is int
            and type(cached) is int
            and type(written) is int
            and type(tokens_out) is int
            and type(reasoning) is int
            and 0 <= (http | tokens_in | cached | written | tokens_out | reasoning) <= _MAX_BIGINT
            and http <= 999
            and r.status in LEDGER_STATUSES
            and type(ts) is datetime
            and ts.tzinfo is UTC
            and type(cost) is Decimal
            and cost.is_finite()
            and type(saved) is Decimal
            and saved.is_finite()
            and type(tags) is dict
            and type(latency) is float
            and type(overhead) is float
            and -math.inf < latency < math.inf
            and -math.inf < overhead < math.inf
            and (ttft is None or (type(ttft) is float and -math.inf < ttft < math.inf))
        ):
            return self.params(record_to_row(record))
        texts = (request_id, endpoint, org, project, key, user, session, provider, requested)
        joined = "".join(filter(None, (*texts, served, error, security, reason, holder)))
        if not joined.isascii() or "\x00" in joined:
            return self.params(record_to_row(record))  # cleaned there
        money = cost.quantize(MONEY_QUANTUM, context=MONEY_CONTEXT)
        # Nearly every row saves nothing: its 0 as quantized once (half a µs less a row).
        if not saved and not saved.is_signed():
            saved_money = _NO_SAVING
        else:
            saved_money = saved.quantize(MONEY_QUANTUM, context=MONEY_CONTEXT)
        if not (0 <= money < MONEY_LIMIT and 0 <= saved_money < MONEY_LIMIT):
            return self.params(record_to_row(record))  # refused there
        try:
            tags_json = orjson.dumps(tags, option=orjson.OPT_SORT_KEYS).decode() if tags else "{}"
        except (TypeError, orjson.JSONEncodeError):
            return self.params(record_to_row(record))  # refused there
        if self._sqlite:  # the processors' results, written out
            stamp = _sqlite_timestamp(ts)
            return [
                request_id, stamp, stamp[:10], endpoint, r.status, http, org, project, key,
                user, session, tags_json, provider, requested, served, 1 if r.streamed else 0,
                tokens_in, cached, written, tokens_out, reasoning, format(money, "f"),
                1 if r.cost_estimated else 0, latency, ttft, overhead, error, security, reason,
                _NO_SAVING_TEXT if saved_money is _NO_SAVING else format(saved_money, "f"),
                holder,
            ]  # fmt: skip
        values = [
            request_id, ts, ts.date().isoformat(), endpoint, r.status, http, org, project, key,
            user, session, tags_json, provider, requested, served, bool(r.streamed),
            tokens_in, cached, written, tokens_out, reasoning, money, bool(r.cost_estimated),
            latency, ttft, overhead, error, security, reason, saved_money, holder,
        ]  # fmt: skip
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


# A row's saved_usd of 0 as record_to_row makes it, and its SQLite text.
_NO_SAVING = Decimal(0).quantize(MONEY_QUANTUM, context=MONEY_CONTEXT)
_NO_SAVING_TEXT = format(_NO_SAVING, "f")
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


