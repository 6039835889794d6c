"""Turning one benchmark run into the results section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import compare
import interpreter
from redis_calls import RedisCalls
from results import DIRECT, LEDGER_ONLY, VARIANT_LABELS, GatewayRun, Point, Run, target_name

START = "<!-- results:start -->"
END = "<!-- results:end -->"
# The prose of a new output file is the repository's own document, blocks emptied.
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
# The gateway's and the load generators' stacks (streamgen: uvloop and httptools).
PACKAGES = ("costwarden", "uvicorn", "aiohttp", "uvloop", "httptools")


def machine(speeds: tuple[float, float] | None = None) -> dict[str, str]:
    """The machine and the software measured; ``speeds``: the interpreter's speed read at
    the start and at the end of the run (read now, once, without them)."""
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": _cpu_model(),
        "RAM": _ram(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": interpreter.describe(),
        "Python speed": _speed(speeds),
        **{name: _version(name) for name in PACKAGES},
    }


def _speed(speeds: tuple[float, float] | None) -> str:
    work = "for bench/interpreter.py's reference work (lower is faster)"
    if speeds is None:
        return f"{interpreter.reference_ms():.0f} ms {work}"
    return f"{speeds[0]:.0f} ms at the start and {speeds[1]:.0f} ms at the end {work}"


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


def _measured(run: Run) -> str:
    if run.rounds == 1:
        return f"{run.duration_s:g} s per measured run"
    return (
        f"{run.duration_s:g} s per target and concurrency, in {run.rounds} runs of "
        f"{run.duration_s / run.rounds:g} s taken in turn across the targets; a target's "
        f"percentiles are the median of its runs'"
    )


def render(run: Run) -> str:
    parts = [
        "## Results",
        f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{run.command}` "
        f"({_measured(run)}, {run.wrk_version}).",
        _machine_table(run),
    ]
    if run.notes:
        parts.append("**Not measured**: " + "; ".join(run.notes) + ".")
    parts += summary(run)
    parts += ["### Per gateway process", _gateway_table(run.gateways), _LEDGER_TEXT]
    parts += [redis_text(g.label, g.redis) for g in run.gateways if g.redis is not None]
    parts += ["### Raw wrk figures (measured runs)", _raw_table(run.points)]
    if run.problems:
        parts.append("### Problems seen\n\n" + "\n".join(f"- {p}" for p in run.problems))
    return "\n\n".join(parts)


def summary(run: Run) -> list[str]:
    """The headline sections, in the document and in the terminal alike."""
    parts = ["### Latency and throughput", main_table(run)]
    cost = enforcement_table(run)
    if cost:
        parts += ["### Enforcement cost", _ENFORCEMENT_TEXT, cost]
    parts += compare.stream_section(run)
    parts += compare.litellm_section(run)
    parts += compare.goals_section(run)
    parts += compare.scale_out_section(run)
    parts += compare.rss_section(run)
    return parts


def _machine_table(run: Run) -> str:
    facts = machine(run.python_speed_ms)
    for name, version in (run.litellm_versions or {}).items():
        facts[f"{name} (LiteLLM's virtualenv)"] = version
    rows = [f"| {k} | {v} |" for k, v in facts.items()]
    return "\n".join(["| machine | |", "| --- | --- |", *rows])


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
    base = LEDGER_ONLY
    rows = []
    for p in run.points:
        ledger_only = run.result(base, p.connections)
        if p.target not in VARIANT_LABELS or p.target == base or ledger_only is None:
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
    "the gateway responses its clients counted (wrk and streamgen, warm-ups included, plus "
    "the sample requests). Rows may exceed responses by up to one per connection per wrk run: "
    "when a run ends wrk closes its connections with a request each in flight, which the "
    "gateway still completes and bills but wrk does not count (streamgen reads every stream "
    "it started to its end)."
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


def write(out: Path, section: str, start: str = START, end: str = END) -> None:
    """Replace the text between the markers (adding them, or the whole file, if missing)."""
    block = f"{start}\n{section}\n{end}"
    text = out.read_text(encoding="utf-8") if out.exists() else intro()
    first, last = text.find(start), text.find(end)
    if first >= 0 and last > first:
        text = text[:first] + block + text[last + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")


_BLOCK = re.compile(r"(<!-- (\w+):start -->).*?(<!-- \2:end -->)", re.S)


def intro() -> str:
    """The repository's docs/benchmarks.md with its generated blocks emptied."""
    try:
        text = DOCS.read_text(encoding="utf-8")
    except OSError:
        return "# Benchmarks\n"
    return _BLOCK.sub(lambda m: f"{m.group(1)}\n{m.group(3)}", text)
