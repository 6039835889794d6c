#!/usr/bin/env python
"""req/s of ``costwarden serve --workers N`` for several N, and the mock's direct figure.

    python bench/workers.py [--workers 1,2] [--connections 64] [--duration 10]
                            [--out docs/benchmarks.md]

One gateway per N (``serve --workers N``), each with its own SQLite database and its budget
counters on Redis (db 11 of the local Redis, flushed; more than one worker needs Redis), the
org and key under limits that never refuse, as run.py's "budgets on Redis" variant. wrk
drives the mock directly, then each gateway, interleaved per concurrency; then each gateway
gets SIGTERM and its ledger must hold one row per upstream call (every worker drained). The
load average of the machine before and after is printed with the figures: on a shared
machine they say how much the other work weighed. Results go between the ``workers`` (or,
with --no-limits, ``workers-nolimits``) markers of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shlex
import signal
import sys
from pathlib import Path

import procs
import redis
import report
from gateways import finish, start_gateway, start_mock, usable_variants
from loadgen import BenchError, ensure_wrk, wrk_version
from results import DIRECT, Point
from rich.markdown import Markdown
from rich.markup import escape
from run import targets_for, wrk_point
from session import Bench, Gateway, cleanup, new_bench, show_logs
from variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

def _markers(no_limits: bool) -> tuple[str, str]:
    """Where the results go in docs/benchmarks.md: one block per kind of run."""
    name = "workers-nolimits" if no_limits else "workers"
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0))
    parser.add_argument(
        "--workers",
        type=_int_list,
        default=sorted({1, cores}),
        help=f"comma-separated worker counts (default: 1 and the cores, here {cores})",
    )
    parser.add_argument(
        "--connections", type=_int_list, default=[64], help="comma-separated concurrencies"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument(
        "--no-limits",
        action="store_true",
        help="no budget or rate limit on the org and key (Redis still configured, as "
        "--workers needs): the gateway's own work without the counters' Redis calls",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to update"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    # What run.py's helpers read of the arguments.
    variant = VARIANTS["redis"]
    args.variants = [dataclasses.replace(variant, limits=False) if args.no_limits else variant]
    args.stream_connections = []
    return args


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _label(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers > 1 else "")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


@dataclasses.dataclass
class _Result:
    points: list[Point]
    peaks: dict[str, int]  # label -> peak RSS of the process tree (KiB)
    cpu_ms: dict[tuple[str, int], float]  # (label, connections) -> CPU ms per response
    load_before: str
    load_after: str
    problems: list[str]


def measure(bench: Bench) -> _Result:
    args = bench.args
    load_before = _load()
    bench.wrk = bench.phase("wrk available (installing it if missing)", ensure_wrk)
    bench.mock_port = bench.phase("mock upstream started", lambda: start_mock(bench))
    if not usable_variants(bench):  # probes Redis: a note and no gateway when unreachable
        raise BenchError("Redis unreachable")
    if bench.notes:
        raise BenchError(bench.notes[0])
    redis_variant = args.variants[0]
    # Flushed once, here: start_gateway flushes before each gateway it starts, which would
    # drop the counters of those started before (each has its own org, so they never meet).
    probe, bench.probe = bench.probe, None
    if probe is not None:
        probe.flush()
    gateways: list[Gateway] = []
    try:
        for n in args.workers:
            variant = dataclasses.replace(redis_variant, name=f"workers{n}", label=_label(n))
            gw = bench.phase(
                f"serve --workers {n} started (SQLite, Redis)",
                functools.partial(start_gateway, bench, variant, n),
            )
            gw.redis = None  # Redis commands not counted: the gateways share the database
            gateways.append(gw)
    finally:
        bench.probe = probe  # emptied by cleanup()
    targets = targets_for(bench, gateways, None)
    points: list[Point] = []
    cpu_ms: dict[tuple[str, int], float] = {}
    for c in args.connections:
        for target in targets:
            gw = target.gateway
            if gw is None:
                points.append(wrk_point(bench, c, target))
                continue
            # CPU time of the supervisor and its workers over the warm-up and measured runs,
            # per response: what the machine's other load does not change much.
            ticks, responses = procs.cpu_ticks(gw.service.proc.pid), gw.responses
            points.append(wrk_point(bench, c, target))
            spent = procs.cpu_ticks(gw.service.proc.pid) - ticks
            answered = gw.responses - responses
            if answered:
                cpu_ms[(target.name, c)] = spent * 1000 / _TICKS_PER_S / answered
    peaks = {gw.variant.label: procs.peak_rss_kib(gw.service.proc.pid) for gw in gateways}
    load_after = _load()
    for gw in gateways:
        finish(bench, gw)
    return _Result(points, peaks, cpu_ms, load_before, load_after, bench.problems)


def render(result: _Result, command: str, wrk: str, no_limits: bool) -> str:
    rows = [
        "| target | connections | req/s | p50 ms | p99 ms | vs 1 worker | CPU ms/request "
        "| peak RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    one = {p.connections: p.result.rps for p in result.points if p.target == _label(1)}
    for p in result.points:
        r = p.result
        base = one.get(p.connections)
        ratio = "" if p.target == DIRECT or not base else f"{r.rps / base:.2f} x"
        peak = result.peaks.get(p.target)
        cpu = result.cpu_ms.get((p.target, p.connections))
        rows.append(
            f"| {p.target} | {p.connections} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {ratio} | {'' if cpu is None else f'{cpu:.3f}'} "
            f"| {'' if peak is None else procs.mib(peak)} |"
        )
    machine = report.machine()
    title = "no limits" if no_limits else "budgets on Redis"
    lines = [
        f"### req/s by `serve --workers N`: {title}",
        "",
        f"`{command}` (wrk {wrk}). Each gateway: SQLite ledger (batched), Redis, "
        f"{'no limits' if no_limits else 'budgets and rate limits on Redis'}, "
        "the mock upstream on the same machine. CPU ms/request: CPU time of the supervisor "
        "and its workers over the warm-up and measured runs, per response (the other load "
        "of the machine changes it less than req/s). Peak RSS: the sum over the supervisor "
        "and its workers.",
        "",
        f"Machine: {machine['CPUs (nproc)']} CPUs ({machine['CPU']}), load average before "
        f"{result.load_before}, after {result.load_after}.",
        "",
        *rows,
    ]
    if result.problems:
        lines += ["", "Problems of this run:", *(f"- {p}" for p in result.problems)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = shlex.join(["python", "bench/workers.py", *(sys.argv[1:] if argv is None else argv)])
    bench, console = new_bench(args, "costwarden-workers-bench-")
    try:
        with bench.progress:
            result = measure(bench)
        if result.problems:
            show_logs(bench, console)
    except (BenchError, OSError, redis.RedisError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {escape(str(exc))}", highlight=False)
        show_logs(bench, console)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    finally:
        cleanup(bench, console)
    section = render(result, command, wrk_version(bench.wrk), args.no_limits)
    report.write(args.out, section, *_markers(args.no_limits))
    console.print(Markdown(section))
    console.print(f"results written to {args.out}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
