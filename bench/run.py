#!/usr/bin/env python
"""Measure the gateway's overhead against the mock upstream, and record it in the docs.

    python bench/run.py [--duration 10] [--connections 1,64] [--variants off,memory,redis]
                        [--out docs/benchmarks.md]

wrk drives the mock directly and then each gateway variant (no limits, budgets with
in-process counters, budgets on Redis) at each concurrency; the differences are the
gateway's cost and the cost of enforcing limits. See docs/benchmarks.md for the method.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import redis
import report
import stack
from gateways import finish, start_gateway, usable_variants
from loadgen import BenchError, WrkResult, ensure_wrk, run_wrk, write_lua, wrk_version
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from session import BODY, PATH, Bench, Gateway, Target, auth_headers
from variants import parse_variants

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument(
        "--connections", type=_int_list, default=[1, 64], help="comma-separated concurrencies"
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=parse_variants("off,memory,redis"),
        help="gateway variants to measure, comma-separated: off (no limits), memory (budgets, "
        "in-process counters), redis (budgets, counters in Redis db 11; skipped if unreachable)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to update"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("connections must be positive integers")
    return values


def start_mock(bench: Bench) -> int:
    port = stack.free_port()
    cmd = [*stack.cli(), "mock-upstream", "--host", stack.HOST, "--port", str(port)]
    mock = stack.Service("mock upstream", cmd, bench.tmp / "mock.log", stack.clean_env())
    bench.services.append(mock)
    stack.wait_ready(mock, port, "/_mock/health")
    return port


def wrk_point(bench: Bench, c: int, target: Target) -> report.Point:
    """One target at one concurrency: a warm-up, then the measured run."""
    measured: WrkResult | None = None
    for warmup in (True, False):
        seconds = WARMUP_S if warmup else bench.args.duration
        kind = "warm-up" if warmup else "measure"
        label = f"wrk {kind} {report.target_name(target.name)} c={c} ({seconds:g} s)"
        work = functools.partial(run_wrk, bench.wrk, target.url, target.script, c, seconds)
        result, _ = bench.phase(label, work, gateway=target.gateway)
        check(bench, f"{target.name} c={c} {kind}", result)
        if target.gateway:
            target.gateway.responses += result.requests
        measured = result
    assert measured is not None
    bench.note(
        f"{measured.rps:,.0f} req/s, p50 {measured.p50_ms:.2f} ms, "
        f"p99 {measured.p99_ms:.2f} ms, {measured.requests} requests"
    )
    return report.Point(target.name, c, measured)


def check(bench: Bench, what: str, result: WrkResult) -> None:
    if result.non_2xx:
        bench.problem(f"{what}: {result.non_2xx} non-2xx responses")
    if result.errors:
        errors = ", ".join(f"{k} {v}" for k, v in result.socket_errors.items() if v)
        bench.problem(f"{what}: socket errors ({errors})")


def targets_for(bench: Bench, gateways: list[Gateway]) -> list[Target]:
    # The direct run carries an upstream-style credential, as the gateway's own call does.
    direct_headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {stack.UPSTREAM_ENV['OPENAI_API_KEY']}",
    }
    direct_url = f"http://{stack.HOST}:{bench.mock_port}{PATH}"
    targets = [
        Target(
            report.DIRECT,
            direct_url,
            write_lua(bench.tmp / "direct.lua", BODY, direct_headers),
            None,
        )
    ]
    for gw in gateways:
        script = write_lua(bench.tmp / f"{gw.variant.name}.lua", BODY, auth_headers(gw.key))
        targets.append(Target(gw.variant.label, gw.url, script, gw))
    return targets


def measure(bench: Bench, command: str) -> report.Run:
    bench.wrk = bench.phase("wrk available (installing it if missing)", ensure_wrk)
    bench.mock_port = bench.phase("mock upstream started", lambda: start_mock(bench))
    gateways = [
        bench.phase(
            f"{report.target_name(v.label)} started (SQLite, batched ledger)",
            functools.partial(start_gateway, bench, v),
        )
        for v in usable_variants(bench)
    ]
    targets = targets_for(bench, gateways)
    # Interleaved per concurrency: a drift of the machine over the run hits every target.
    points = [wrk_point(bench, c, t) for c in bench.args.connections for t in targets]
    runs = [finish(bench, gw) for gw in gateways]
    return report.Run(
        command=command,
        duration_s=bench.args.duration,
        wrk_version=wrk_version(bench.wrk),
        points=points,
        gateways=runs,
        notes=bench.notes,
        problems=bench.problems,
    )


def show_logs(bench: Bench, console: Console) -> None:
    for service in bench.services:
        console.print(f"[bold]--- last lines of {service.name} log ({service.log}) ---[/]")
        console.print(service.tail(), markup=False, highlight=False)


def print_table(console: Console, run: report.Run) -> None:
    blocks = [report.main_table(run), report.enforcement_table(run)]
    blocks += [
        f"{report.target_name(g.label)}: self-reported overhead {g.self_reported_ms:.3f} ms"
        for g in run.gateways
    ]
    blocks += [report.redis_text(g.label, g.redis) for g in run.gateways if g.redis]
    blocks += run.notes
    text = "\n\n".join(b for b in blocks if b)
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def cleanup(bench: Bench, console: Console) -> None:
    """Kill what is still running, then empty the Redis database the run used."""
    for service in reversed(bench.services):
        service.kill()
    if bench.probe is not None:
        with contextlib.suppress(redis.RedisError, OSError):
            bench.probe.flush()
        bench.probe.close()
    if bench.args.keep_temp:
        console.print(f"temp dir kept: {bench.tmp}")
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM would otherwise end Python without running the cleanup below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    console = Console()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    bench = Bench(args, Progress(*columns, console=console, transient=True))
    bench.tmp = Path(tempfile.mkdtemp(prefix="costwarden-bench-"))
    try:
        with bench.progress:
            run = measure(bench, command)
        if run.problems:
            show_logs(bench, console)  # now: the logs go with the temp dir
    except (BenchError, OSError, redis.RedisError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}", highlight=False)
        show_logs(bench, console)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    finally:
        cleanup(bench, console)
    report.write(args.out, report.render(run))
    print_table(console, run)
    console.print(f"results written to {args.out}")
    if run.problems:
        console.print("[bold red]problems:[/]\n" + "\n".join(f"- {p}" for p in run.problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
