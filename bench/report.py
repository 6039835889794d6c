"""Turning one benchmark run into the results section of docs/benchmarks.md."""

from __future__ import annotations

import dataclasses
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from loadgen import WrkResult

START = "<!-- results:start -->"
END = "<!-- results:end -->"
PACKAGES = ("costwarden", "uvicorn", "aiohttp", "uvloop")

# Written only when the output file does not exist yet; after that the prose is the
# document's own and a rerun replaces nothing but the text between the markers.
INTRO = """# Benchmarks

How much latency does the gateway add to an LLM call, and how many requests per second can
it relay? `bench/run.py` answers both against the bundled mock upstream
(`costwarden mock-upstream`, zero latency), so that the upstream costs almost nothing and
what remains is the gateway's own work.

## Method

- Everything runs on one machine: the load generator (`wrk`, Debian package `wrk`),
  the mock upstream and the gateway. On a 2-core machine they share those two cores, so the
  absolute numbers are pessimistic: under load the gateway competes for CPU with wrk and the
  mock.
- For each concurrency, wrk first hits the mock **directly**, then **through the gateway**
  (`POST /v1/chat/completions`, the same small non-streaming body, the gateway with a
  virtual key). Each measured run follows a 2 s warm-up.
- **Overhead** is gateway latency minus direct latency at the same percentile and
  concurrency, measured in the same run. At high concurrency it includes queueing on the
  shared CPU, so the c=1 figure is the best estimate of the per-request cost.
- The gateway's **self-reported** overhead is the median of its `x-costwarden-overhead-ms`
  response header over sequential requests on one keep-alive connection. It is timed
  inside the request handler, minus the whole upstream call, so it leaves out the HTTP
  server's parsing and writing, the ASGI dispatch and the HTTP client's own work (all
  counted as "upstream"). It is a lower bound; the wrk difference is what a client sees.
- The gateway runs as configured by default otherwise: SQLite storage and the ledger in
  batched mode. After the runs it is stopped with SIGTERM (it drains its ledger) and the
  ledger rows are counted. They must equal the calls the mock received from the gateway
  (one per request) exactly. They may exceed the responses wrk counted by at most one per
  connection per run: wrk drops the requests still in flight when a run ends, and the
  gateway still completes and bills them.

## Run it

```sh
. .venv/bin/activate
python bench/run.py --duration 10 --connections 1,64 --out docs/benchmarks.md
```

It installs `wrk` with `apt-get` if it is missing, starts its own mock and gateway on free
loopback ports with a throw-away SQLite database, and rewrites the section below.

"""


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    connections: int
    direct: WrkResult
    gateway: WrkResult


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerCheck:
    rows: int
    responses: int  # gateway responses wrk counted (warm-ups included) + header samples
    upstream_calls: int  # requests the mock received while the gateway was being driven
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
class Run:
    command: str
    duration_s: float
    wrk_version: str
    pairs: list[Pair]
    self_reported_ms: float
    header_samples: int
    ledger: LedgerCheck
    problems: list[str]


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
        "### Latency and throughput",
        _main_table(run.pairs),
        _self_reported(run),
        _ledger_text(run.ledger),
        "### Raw wrk figures (measured runs)",
        _raw_table(run.pairs),
    ]
    if run.problems:
        parts.append("### Problems seen\n\n" + "\n".join(f"- {p}" for p in run.problems))
    return "\n\n".join(parts)


def _machine_table() -> str:
    rows = [f"| {k} | {v} |" for k, v in machine().items()]
    return "\n".join(["| machine | |", "| --- | --- |", *rows])


def _main_table(pairs: list[Pair]) -> str:
    rows = [
        "| target | connections | req/s | p50 ms | p99 ms | overhead p50 ms | overhead p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in pairs:
        d, g = p.direct, p.gateway
        rows.append(
            f"| mock direct | {p.connections} | {d.rps:,.0f} | {d.p50_ms:.2f} "
            f"| {d.p99_ms:.2f} | – | – |"
        )
        rows.append(
            f"| via gateway | {p.connections} | {g.rps:,.0f} | {g.p50_ms:.2f} "
            f"| {g.p99_ms:.2f} | {g.p50_ms - d.p50_ms:+.2f} | {g.p99_ms - d.p99_ms:+.2f} |"
        )
    return "\n".join(rows)


def _self_reported(run: Run) -> str:
    return (
        f"**Self-reported overhead** (median `x-costwarden-overhead-ms` over "
        f"{run.header_samples} sequential requests on one keep-alive connection): "
        f"**{run.self_reported_ms:.3f} ms**."
    )


def _ledger_text(check: LedgerCheck) -> str:
    text = (
        f"**Ledger check**: {check.rows} rows in `ledger` after SIGTERM; "
        f"{check.responses} gateway responses counted by the clients (wrk, warm-ups "
        f"included, plus the header samples)"
    )
    if check.difference == 0:
        text += ": they match."
    else:
        text += (
            f": difference {check.difference:+d}. When a run ends wrk closes its connections "
            f"with up to one request each in flight (at most {check.in_flight_bound} over all "
            f"gateway runs); the gateway still completes and bills those, but wrk does not "
            f"count them."
        )
    match = "matches" if check.rows == check.upstream_calls else "does NOT match"
    return text + (
        f" The mock received {check.upstream_calls} calls from the gateway, one per request: "
        f"the row count {match} that exactly."
    )


def _raw_table(pairs: list[Pair]) -> str:
    rows = [
        "| target | connections | requests | p90 ms | non-2xx | socket errors |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for p in pairs:
        for name, r in (("mock direct", p.direct), ("via gateway", p.gateway)):
            errors = ", ".join(f"{k} {v}" for k, v in r.socket_errors.items() if v) or "0"
            rows.append(
                f"| {name} | {p.connections} | {r.requests} | {r.p90_ms:.2f} "
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
