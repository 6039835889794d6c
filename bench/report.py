"""Turning one benchmark run into the results section of docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from loadgen import WrkResult
from redis_calls import RedisCalls
from variants import VARIANTS

START = "<!-- results:start -->"
END = "<!-- results:end -->"
PACKAGES = ("costwarden", "uvicorn", "aiohttp", "uvloop")

# Written only when the output file does not exist yet; after that the prose is the
# document's own and a rerun replaces nothing but the text between the markers.
INTRO = """# Benchmarks

How much latency does the gateway add to an LLM call, how many requests per second can it
relay, and how much of that do budgets and rate limits cost? `bench/run.py` answers all three
against the bundled mock upstream (`costwarden mock-upstream`, zero latency), so that the
upstream costs almost nothing and what remains is the gateway's own work.

## Method

- Everything runs on one machine: the load generator (`wrk`, Debian package `wrk`),
  the mock upstream, the gateway processes and, for one variant, Redis. On a 2-core machine
  they share those two cores, so the absolute numbers are pessimistic: under load the
  gateway competes for CPU with wrk and the mock.
- The gateway is measured in up to three **variants** (`--variants`, default
  `off,memory,redis`), each a gateway process of its own with its own SQLite database:
  - **ledger only** (`off`): no limit applies; the gateway authenticates, relays and bills.
  - **budgets in-process** (`memory`): the org has hard budgets of $1,000,000 a day and
    $9,000,000 a month and a rate limit of 100,000,000 requests per minute, its key one of
    10^12 tokens per minute. They never refuse, but every request reserves in these four
    counters before the upstream call and settles after it; the counters live in the
    gateway process.
  - **budgets on Redis** (`redis`): the same limits with the counters in Redis
    (`redis://127.0.0.1:6379/11`, flushed before and after): one `EVALSHA` to reserve, one
    to settle. When that Redis does not answer, the variant is skipped and the results say so.
- For each concurrency, wrk hits the mock **directly**, then each gateway variant in turn
  (`POST /v1/chat/completions`, the same small non-streaming body, the gateway with a
  virtual key). Each measured run follows a 2 s warm-up. The gateways all run for the whole
  benchmark (idle when not driven), so the variants are interleaved per concurrency and a
  slow drift of the machine does not fall on one variant only.
- **Overhead** is gateway latency minus direct latency at the same percentile and
  concurrency, measured in the same run. At high concurrency it includes queueing on the
  shared CPU, so the c=1 figure is the best estimate of the per-request cost.
- **Enforcement cost** is a budgets variant's latency minus the ledger-only variant's, at the
  same percentile and concurrency: what the limits add to the rest of the gateway's work.
  On a shared 2-core machine the c=1 p50 difference moves by up to about 0.1 ms between
  runs, and the c=1 p99 (milliseconds, against a p50 of half a millisecond) comes from
  occasional pauses seen with and without limits: compare several runs before reading much
  into either.
- The gateway's **self-reported** overhead is the median of its `x-costwarden-overhead-ms`
  response header over sequential requests on one keep-alive connection, per variant. It is
  timed inside the request handler, minus the whole upstream call, so it leaves out the HTTP
  server's parsing and writing, the ASGI dispatch and the HTTP client's own work (all
  counted as "upstream"). It is a lower bound; the wrk difference is what a client sees.
- **Budgets on**: after its runs each variant answers one more request, which must carry
  `x-costwarden-budget-remaining-usd` for the budgets variants and must not for the
  ledger-only one; otherwise the run fails.
- **Redis calls** are server-wide `INFO stats commandstats` deltas around every phase that
  drives the Redis variant, divided by the requests that reached the upstream meanwhile
  (each of them reserved and settled): `EVALSHA` calls (2 expected; lease renewals add a
  few), all commands (including those the scripts run inside Redis), and socket reads, i.e.
  client round trips (a pipeline counts once). Anything else using that Redis meanwhile is
  counted too.
- The gateways run as configured by default otherwise: SQLite storage and the ledger in
  batched mode. After the runs each is stopped with SIGTERM (it drains its ledger) and its
  ledger rows are counted. They must equal the calls the mock received while that variant
  was driven (one per request) exactly. They may exceed the responses wrk counted by at
  most one per connection per run: wrk drops the requests still in flight when a run ends,
  and the gateway still completes and bills them.

## Run it

```sh
. .venv/bin/activate
python bench/run.py --duration 10 --connections 1,64 --out docs/benchmarks.md
```

It installs `wrk` with `apt-get` if it is missing, starts its own mock and gateways on free
loopback ports with throw-away SQLite databases, and rewrites the section below.

"""

DIRECT = "mock direct"
VARIANT_OFF_LABEL = VARIANTS["off"].label


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One measured wrk run: a target (the mock or a gateway variant) at one concurrency."""

    target: str  # DIRECT or a variant's label
    connections: int
    result: WrkResult


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerCheck:
    rows: int
    responses: int  # gateway responses wrk counted (warm-ups included) + sample requests
    upstream_calls: int  # requests the mock received while this gateway was being driven
    in_flight_bound: int  # requests wrk may have abandoned mid-flight when a run ended

    @property
    def difference(self) -> int:
        return self.rows - self.responses

    def problems(self) -> list[str]:
        """What cannot be explained by requests wrk abandoned at the end of a run."""
        found = []
        if self.rows != self.upstream_calls:
            found.append(
                f"ledger has {self.rows} rows but the gateway made {self.upstream_calls} "
                f"upstream calls (difference {self.rows - self.upstream_calls:+d})"
            )
        if not 0 <= self.difference <= self.in_flight_bound:
            found.append(
                f"ledger rows minus counted responses is {self.difference:+d}, outside "
                f"0..{self.in_flight_bound} (the requests wrk can abandon)"
            )
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayRun:
    """What one variant's gateway process showed besides its wrk figures."""

    label: str
    self_reported_ms: float
    header_samples: int
    budget_header: str | None  # x-costwarden-budget-remaining-usd of the sample request
    ledger: LedgerCheck
    redis: RedisCalls | None  # the Redis variant only


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    command: str
    duration_s: float
    wrk_version: str
    points: list[Point]
    gateways: list[GatewayRun]
    notes: list[str]  # variants skipped, and why
    problems: list[str]

    def result(self, target: str, connections: int) -> WrkResult | None:
        for p in self.points:
            if p.target == target and p.connections == connections:
                return p.result
        return None


def machine() -> dict[str, str]:
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        **{name: _version(name) for name in PACKAGES},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def render(run: Run) -> str:
    parts = [
        "## Results",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{run.command}` "
        f"({run.duration_s:g} s per measured run, {run.wrk_version}).",
        _machine_table(),
    ]
    if run.notes:
        parts.append("**Not measured**: " + "; ".join(run.notes) + ".")
    parts += ["### Latency and throughput", main_table(run)]
    cost = enforcement_table(run)
    if cost:
        parts += ["### Enforcement cost", _ENFORCEMENT_TEXT, cost]
    parts += ["### Per gateway process", _gateway_table(run.gateways), _LEDGER_TEXT]
    parts += [redis_text(g.label, g.redis) for g in run.gateways if g.redis is not None]
    parts += ["### Raw wrk figures (measured runs)", _raw_table(run.points)]
    if run.problems:
        parts.append("### Problems seen\n\n" + "\n".join(f"- {p}" for p in run.problems))
    return "\n\n".join(parts)


def _machine_table() -> str:
    rows = [f"| {k} | {v} |" for k, v in machine().items()]
    return "\n".join(["| machine | |", "| --- | --- |", *rows])


def target_name(target: str) -> str:
    return target if target == DIRECT else f"gateway: {target}"


def main_table(run: Run) -> str:
    rows = [
        "| target | connections | req/s | p50 ms | p99 ms | overhead p50 ms | overhead p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in run.points:
        r, d = p.result, run.result(DIRECT, p.connections)
        overhead = "| – | –"
        if p.target != DIRECT and d is not None:
            overhead = f"| {r.p50_ms - d.p50_ms:+.2f} | {r.p99_ms - d.p99_ms:+.2f}"
        rows.append(
            f"| {target_name(p.target)} | {p.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} {overhead} |"
        )
    return "\n".join(rows)


_ENFORCEMENT_TEXT = (
    "A budgets variant minus the ledger-only variant at the same concurrency: what reserving "
    "before the upstream call and settling after it add."
)


def enforcement_table(run: Run) -> str:
    """Budgets variants minus ledger only; empty when either side was not measured."""
    base = VARIANT_OFF_LABEL
    rows = []
    for p in run.points:
        ledger_only = run.result(base, p.connections)
        if p.target in (DIRECT, base) or ledger_only is None:
            continue
        r = p.result
        rps = (r.rps / ledger_only.rps - 1) * 100 if ledger_only.rps else float("nan")
        rows.append(
            f"| {p.target} | {p.connections} | {r.p50_ms - ledger_only.p50_ms:+.2f} "
            f"| {r.p99_ms - ledger_only.p99_ms:+.2f} | {rps:+.1f} % |"
        )
    if not rows:
        return ""
    head = [
        f"| controls | connections | p50 ms vs {base} | p99 ms vs {base} | req/s vs {base} |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    return "\n".join(head + rows)


def _gateway_table(gateways: list[GatewayRun]) -> str:
    rows = [
        "| gateway | self-reported overhead (median ms) | budget header | ledger rows "
        "| upstream calls | responses counted |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for g in gateways:
        check = g.ledger
        match = "=" if check.rows == check.upstream_calls else "≠"
        header = f"`{g.budget_header}` remaining" if g.budget_header is not None else "absent"
        rows.append(
            f"| {g.label} | {g.self_reported_ms:.3f} | {header} | {check.rows} "
            f"| {match} {check.upstream_calls} | {check.responses} ({check.difference:+d}) |"
        )
    n = max((g.header_samples for g in gateways), default=0)
    return "\n".join(rows) + (
        f"\n\nSelf-reported overhead: median `x-costwarden-overhead-ms` over {n} sequential "
        f"requests on one keep-alive connection. Budget header: "
        f"`x-costwarden-budget-remaining-usd` of one request after the runs."
    )


_LEDGER_TEXT = (
    "**Ledger check**: rows in each gateway's `ledger` after SIGTERM, against the calls the "
    "mock received while that gateway was driven (they must be equal: one per request) and "
    "the gateway responses its clients counted (wrk, warm-ups included, plus the sample "
    "requests). Rows may exceed responses by up to one per connection per wrk run: when a "
    "run ends wrk closes its connections with a request each in flight, which the gateway "
    "still completes and bills but wrk does not count."
)


def redis_text(label: str, calls: RedisCalls) -> str:
    return (
        f"**Redis calls** ({target_name(label)}; server-wide `INFO stats commandstats` "
        f"deltas over the phases driving it, {calls.requests} requests reaching the "
        f"upstream): **{calls.per_request(calls.evalsha):.3f} EVALSHA per request** "
        f"({calls.evalsha_usec:.0f} µs of Redis time each), "
        f"{calls.per_request(calls.usage.reads):.3f} client round trips (socket reads) and "
        f"{calls.per_request(calls.commands):.2f} commands per request, counting those the "
        f"scripts run inside Redis (most called: {calls.busiest()})."
    ) + (_disturbed_text(calls.usage.disturbed) if calls.usage.disturbed else "")


def _disturbed_text(spans: int) -> str:
    return (
        f" **Other clients used this Redis during {spans} of the measured spans**: these "
        f"figures include their commands and overstate the gateway's."
    )


def _raw_table(points: list[Point]) -> str:
    rows = [
        "| target | connections | requests | p90 ms | non-2xx | socket errors |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in points:
        r = p.result
        errors = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v) or "0"
        rows.append(
            f"| {target_name(p.target)} | {p.connections} | {r.requests} | {r.p90_ms:.2f} "
            f"| {r.non_2xx} | {errors} |"
        )
    return "\n".join(rows)


def write(out: Path, section: str) -> None:
    """Replace the text between the markers (adding them, or the whole file, if missing)."""
    block = f"{START}\n{section}\n{END}"
    text = out.read_text(encoding="utf-8") if out.exists() else INTRO
    start, end = text.find(START), text.find(END)
    if start >= 0 and end > start:
        text = text[:start] + block + text[end + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
