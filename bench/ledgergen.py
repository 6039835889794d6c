"""A generated ledger, written by the database itself: millions of rows in a few minutes.

Rows are made by one ``INSERT ... SELECT`` per chunk over a series of integers, with the
database's own ``random()``; Python never sees a row (building 10 M ``LedgerRecord`` objects
and their parameters would take longer than the benchmark it feeds). The spread is the one
``bench/rollups.py`` generates in Python:

- ``days`` days ending at ``end``, busier by day (UTC 08-20: three quarters of the rows)
  than by night;
- 1,000 orgs (``org_0000``... named ``acme-0000``... in the orgs table) with a long tail
  (log-uniform: org ``i`` about as likely as ``1 / (i + 1)``),
  3 projects and 5 keys each, 200 end users on 60 % of the rows, a ``team`` tag on a third;
- 20 models over 3 providers; 92 % successes, 4 % upstream errors, 3 % blocked, 1 % degraded;
- 10-8,000 input and 0-2,000 output tokens, a quarter at most of the input cached, priced
  150 and 600 nano-dollars a token, so every cost is exact;
- latency 50-4,000 ms, a time to first token on half the rows.

Request ids are the gateway's shape (``req_`` + 12 hex digits of milliseconds + 12 more), so
they sort by time as the gateway's do. ``written_ms`` is the database's clock, as the ledger's
own INSERT sets it. SQLite needs its math functions (``exp``, ``ln``: built in since 3.35
where compiled in, as in CPython's builds).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from costwarden.storage.ledger_rows import NOW_MS_SQL, DriverInsert
from costwarden.storage.schema import orgs

ORGS = 1000

_CHUNK = 250_000

# One uniform [0, 1) draw per use, in each dialect.
_UNIFORM = {
    "postgresql": "random()",
    "sqlite": "((random() & 281474976710655) / 281474976710656.0)",
}
_SERIES = {
    "postgresql": "SELECT g AS n FROM generate_series(:lo, :hi) AS g",
    "sqlite": "SELECT value AS n FROM generate_series(:lo, :hi)",
}
_SERIES_SQLITE_FALLBACK = (
    "WITH RECURSIVE s(n) AS (SELECT :lo UNION ALL SELECT n + 1 FROM s WHERE n < :hi) "
    "SELECT n FROM s"
)
# Dialect spellings of the few expressions that differ.
_HEX12 = {
    "postgresql": "lpad(to_hex({}), 12, '0')",
    "sqlite": "printf('%012x', {})",
}
_TS = {
    "postgresql": "to_timestamp({} / 1000.0)",
    "sqlite": "strftime('%Y-%m-%d %H:%M:%S', {0} / 1000, 'unixepoch') "
    "|| printf('.%06d', ({0} % 1000) * 1000)",
}
_DAY = {
    "postgresql": "to_char(to_timestamp({} / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "sqlite": "strftime('%Y-%m-%d', {} / 1000, 'unixepoch')",
}
_COST = {  # nano-dollars as the ledger's money: NUMERIC, or plain decimal text on SQLite
    "postgresql": "CAST({} AS NUMERIC) / 1000000000",
    "sqlite": "CAST({0} / 1000000000 AS TEXT) || printf('.%09d000', {0} % 1000000000)",
}
_INT = {"postgresql": "CAST(floor({}) AS BIGINT)", "sqlite": "CAST({} AS INTEGER)"}
_PAD = {"postgresql": "lpad(CAST({} AS TEXT), {}, '0')", "sqlite": "printf('%0{1}d', {0})"}
_FALSE = {"postgresql": "FALSE", "sqlite": "0"}


def _insert_sql(dialect: str, start_ms: int, days: int, series: str) -> str:
    u = _UNIFORM[dialect]
    i = _INT[dialect].format
    false = _FALSE[dialect]
    pad = _PAD[dialect].format
    draws = ", ".join(f"{u} AS r{k}" for k in range(18))
    # a day, then a millisecond of it: 08-20 UTC for three rows in four, else 20-08
    in_day = i(
        "CASE WHEN r1 < 0.75 THEN 28800000 + r2 * 43200000 ELSE 72000000 + r2 * 43200000 END"
    )
    ms = f"{start_ms} + {i(f'r0 * {days}')} * 86400000 + {in_day} % 86400000"
    org = f"'org_' || {pad(i('exp(r3 * ln(1001.0)) - 1'), 4)}"
    model = f"'model-' || {pad(i('r14 * 20'), 2)}"
    tokens_in = i("10 + r6 * 7990")
    tokens_out = i("r7 * 2000")
    cost = f"({tokens_in} * 150 + {tokens_out} * 600)"
    return f"""
INSERT INTO ledger (request_id, ts, day, endpoint, status, http_status, org_id, project_id,
    key_id, end_user, session_id, tags, provider, requested_model, served_model, streamed,
    input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
    cost_usd, cost_estimated, latency_ms, ttft_ms, overhead_ms, error, written_ms)
WITH r AS MATERIALIZED (SELECT n, {draws} FROM ({series}) AS s),
     t AS MATERIALIZED (SELECT r.*, {ms} AS ms, {org} AS org FROM r)
SELECT
    'req_' || {_HEX12[dialect].format("ms")} || {_HEX12[dialect].format("n")},
    {_TS[dialect].format("ms")}, {_DAY[dialect].format("ms")}, 'chat.completions',
    CASE WHEN r4 < 0.92 THEN 'success' WHEN r4 < 0.96 THEN 'upstream_error'
         WHEN r4 < 0.99 THEN 'blocked' ELSE 'degraded' END,
    200, org, org || '_prj_' || {i("r5 * 3")}, org || '_key_' || {i("r8 * 5")},
    CASE WHEN r9 < 0.6 THEN 'user_' || {i("r10 * 200")} END, NULL,
    CASE WHEN r11 < 0.33 THEN '{{"team":"' ||
        CASE {i("r12 * 3")} WHEN 0 THEN 'ml' WHEN 1 THEN 'web' ELSE 'data' END || '"}}'
        ELSE '{{}}' END,
    CASE {i("r13 * 3")} WHEN 0 THEN 'openai' WHEN 1 THEN 'anthropic' ELSE 'bedrock' END,
    {model}, {model}, {false},
    {tokens_in}, {i(f"r15 * ({tokens_in} / 4 + 1)")}, 0, {tokens_out}, 0,
    {_COST[dialect].format(cost)}, {false},
    50 + r16 * 3950, CASE WHEN r17 < 0.5 THEN 20 + r17 * 1560 END, 0.3, NULL,
    {NOW_MS_SQL[dialect]}
FROM t
"""


def _has_series(conn: sa.Connection) -> bool:
    try:
        conn.exec_driver_sql("SELECT value FROM generate_series(1, 1)").all()
    except sa.exc.OperationalError:
        return False
    return True


def ensure_orgs(engine: sa.Engine, created: datetime) -> None:
    """The generated orgs in the orgs table (the API names them), unless it has some."""
    with engine.begin() as conn:
        if not conn.execute(sa.select(sa.func.count()).select_from(orgs)).scalar_one():
            conn.execute(orgs.insert(), [
                {"id": f"org_{i:04d}", "name": f"acme-{i:04d}", "created_at": created}
                for i in range(ORGS)
            ])  # fmt: skip


def generate(
    engine: sa.Engine,
    rows: int,
    *,
    days: int,
    end: datetime,
    on_chunk: Callable[[int], None] | None = None,
) -> None:
    """Write ``rows`` rows spread over the ``days`` days before ``end``, a chunk per
    transaction; ``on_chunk`` gets each chunk's row count (progress)."""
    dialect = engine.dialect.name
    ensure_orgs(engine, end - timedelta(days=days))
    start_ms = int((end - timedelta(days=days)).timestamp() * 1000)
    with engine.connect() as conn:
        series = _SERIES[dialect]
        if dialect == "sqlite" and not _has_series(conn):
            series = _SERIES_SQLITE_FALLBACK
        conn.rollback()  # the probe's implicit transaction
        sql = sa.text(_insert_sql(dialect, start_ms, days, series))
        for lo in range(1, rows + 1, _CHUNK):
            hi = min(lo + _CHUNK - 1, rows)
            with conn.begin():
                conn.execute(sql, {"lo": lo, "hi": hi})
            if on_chunk is not None:
                on_chunk(hi - lo + 1)


def insert_rows(conn: sa.Connection, insert: DriverInsert, batch: list[list[object]]) -> None:
    """Rows made by ``DriverInsert.params_of`` (LedgerRecords built in Python), written
    through the ledger's own INSERT in one transaction."""
    with conn.begin():
        cursor = conn.connection.cursor()
        try:
            insert.execute(cursor, batch)
        finally:
            cursor.close()
