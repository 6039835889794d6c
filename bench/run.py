#!/usr/bin/env python
"""Measure the gateway's overhead against the mock upstream, and record it in the docs.

    python bench/run.py [--duration 10] [--connections 1,64] [--out docs/benchmarks.md]

wrk drives the mock directly and then through the gateway at each concurrency; the
difference between the two is the gateway's cost. See docs/benchmarks.md for the method.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import report
import stack
from loadgen import BenchError, WrkResult, ensure_wrk, run_wrk, write_lua, wrk_version
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PATH = "/v1/chat/completions"
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
WARMUP_S = 2.0
HEADER_SAMPLES = 500
STOP_TIMEOUT_S = 30.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument(
        "--connections", type=_int_list, default=[1, 64], help="comma-separated concurrencies"
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


@dataclasses.dataclass
class Bench:
    """What the phases share: the tools, the temp dir and the running services."""

    args: argparse.Namespace
    progress: Progress
    wrk: str = ""
    tmp: Path = Path()
    services: list[stack.Service] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    mock_port: int = 0
    gateway_responses: int = 0
    upstream_calls: int = 0

    def phase(self, label: str, work: Callable[[], T], *, via_gateway: bool = False) -> T:
        """Run one step under a status line, then log it as done.

        For traffic ``via_gateway``, the calls the mock received meanwhile are counted: the
        ledger must end up with exactly one row per upstream call.
        """
        task = self.progress.add_task(label, total=None)
        try:
            before = stack.mock_requests_settled(self.mock_port) if via_gateway else 0
            result = work()
            if via_gateway:
                self.upstream_calls += stack.mock_requests_settled(self.mock_port) - before
        finally:
            self.progress.remove_task(task)
        self.progress.console.print(f"[green]✓[/] {label}")
        return result

    def note(self, text: str) -> None:
        self.progress.console.print(f"  {text}", highlight=False)


def start_mock(bench: Bench) -> int:
    port = stack.free_port()
    cmd = [*stack.cli(), "mock-upstream", "--host", stack.HOST, "--port", str(port)]
    mock = stack.Service("mock upstream", cmd, bench.tmp / "mock.log", stack.clean_env())
    bench.services.append(mock)
    stack.wait_ready(mock, port, "/_mock/health")
    return port


def start_gateway(bench: Bench, mock_port: int) -> tuple[stack.Service, int, str, Path]:
    port, db = stack.free_port(), bench.tmp / "costwarden.db"
    config = stack.write_config(bench.tmp / "costwarden.toml", db, mock_port, port)
    env = stack.clean_env()
    key = stack.create_key(config, env)
    cmd = [*stack.cli(), "serve", "--config", str(config)]
    gateway = stack.Service("gateway", cmd, bench.tmp / "gateway.log", env)
    bench.services.append(gateway)
    stack.wait_ready(gateway, port, "/healthz")
    return gateway, port, key, db


def wrk_pair(bench: Bench, c: int, scripts: dict[str, Path], urls: dict[str, str]) -> report.Pair:
    """Direct, then through the gateway, each after its own warm-up."""
    results: dict[str, WrkResult] = {}
    for target in ("direct", "gateway"):
        for warmup in (True, False):
            seconds = WARMUP_S if warmup else bench.args.duration
            kind = "warm-up" if warmup else "measure"
            label = f"wrk {kind} {target} c={c} ({seconds:g} s)"
            work = functools.partial(run_wrk, bench.wrk, urls[target], scripts[target], c, seconds)
            result, _ = bench.phase(label, work, via_gateway=target == "gateway")
            check(bench, f"{target} c={c} {kind}", result)
            if target == "gateway":
                bench.gateway_responses += result.requests
            if not warmup:
                results[target] = result
                bench.note(
                    f"{result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                    f"p99 {result.p99_ms:.2f} ms, {result.requests} requests"
                )
    return report.Pair(c, results["direct"], results["gateway"])


def check(bench: Bench, what: str, result: WrkResult) -> None:
    """Record anything that makes a run suspect; the caller fails after writing results."""
    if result.non_2xx:
        bench.problems.append(f"{what}: {result.non_2xx} non-2xx responses")
    if result.errors:
        errors = ", ".join(f"{k} {v}" for k, v in result.socket_errors.items() if v)
        bench.problems.append(f"{what}: socket errors ({errors})")
    if result.non_2xx or result.errors:
        bench.progress.console.print(f"[bold red]✗ {bench.problems[-1]}[/]")


def header_samples(bench: Bench, port: int, key: str) -> list[float]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    label = f"{HEADER_SAMPLES} sequential requests for x-costwarden-overhead-ms"
    work = functools.partial(
        stack.overhead_header_samples, port, PATH, BODY.encode(), headers, HEADER_SAMPLES
    )
    samples = bench.phase(label, work, via_gateway=True)
    bench.gateway_responses += len(samples)
    bench.note(f"median self-reported overhead {stack.median(samples):.3f} ms")
    return samples


def ledger_check(bench: Bench, gateway: stack.Service, db: Path) -> report.LedgerCheck:
    code = bench.phase(
        "SIGTERM to the gateway, waiting for it to drain and exit",
        lambda: gateway.terminate(STOP_TIMEOUT_S),
    )
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
    if code not in (0, -signal.SIGTERM):
        bench.problems.append(f"gateway exited with status {code} after SIGTERM")
    rows = stack.count_ledger_rows(db)
    bound = 2 * sum(bench.args.connections)  # one per connection per gateway wrk run
    result = report.LedgerCheck(rows, bench.gateway_responses, bench.upstream_calls, bound)
    bench.note(
        f"ledger rows {rows}, gateway responses {result.responses}, "
        f"upstream calls {result.upstream_calls}"
    )
    if result.difference:
        bench.progress.console.print(
            f"[yellow]warning:[/] ledger rows and counted responses differ by "
            f"{result.difference:+d} (up to {bound} requests may have been in flight when wrk "
            f"stopped)"
        )
    bench.problems.extend(result.problems())
    return result


def scripts_for(bench: Bench, key: str) -> dict[str, Path]:
    base = {"content-type": "application/json"}
    # The direct run carries an upstream-style credential, as the gateway's own call does.
    direct = {**base, "authorization": f"Bearer {stack.UPSTREAM_ENV['OPENAI_API_KEY']}"}
    gateway = {**base, "authorization": f"Bearer {key}"}
    return {
        "direct": write_lua(bench.tmp / "direct.lua", BODY, direct),
        "gateway": write_lua(bench.tmp / "gateway.lua", BODY, gateway),
    }


def measure(bench: Bench, command: str) -> report.Run:
    bench.wrk = bench.phase("wrk available (installing it if missing)", ensure_wrk)
    mock_port = bench.mock_port = bench.phase("mock upstream started", lambda: start_mock(bench))
    gateway, gw_port, key, db = bench.phase(
        "gateway started (SQLite, batched ledger)", lambda: start_gateway(bench, mock_port)
    )
    scripts = scripts_for(bench, key)
    urls = {
        "direct": f"http://{stack.HOST}:{mock_port}{PATH}",
        "gateway": f"http://{stack.HOST}:{gw_port}{PATH}",
    }
    pairs = [wrk_pair(bench, c, scripts, urls) for c in bench.args.connections]
    samples = header_samples(bench, gw_port, key)
    ledger = ledger_check(bench, gateway, db)
    return report.Run(
        command=command,
        duration_s=bench.args.duration,
        wrk_version=wrk_version(bench.wrk),
        pairs=pairs,
        self_reported_ms=stack.median(samples),
        header_samples=len(samples),
        ledger=ledger,
        problems=bench.problems,
    )


def show_logs(bench: Bench, console: Console) -> None:
    for service in bench.services:
        console.print(f"[bold]--- last lines of {service.name} log ({service.log}) ---[/]")
        console.print(service.tail(), markup=False, highlight=False)


def print_table(console: Console, run: report.Run) -> None:
    for p in run.pairs:
        console.print(
            f"c={p.connections:<4} direct p50 {p.direct.p50_ms:7.2f} ms  "
            f"gateway p50 {p.gateway.p50_ms:7.2f} ms  "
            f"overhead p50 {p.gateway.p50_ms - p.direct.p50_ms:+.2f} ms, "
            f"p99 {p.gateway.p99_ms - p.direct.p99_ms:+.2f} ms",
            highlight=False,
        )


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
    except (BenchError, OSError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {exc}", highlight=False)
        show_logs(bench, console)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    finally:
        for service in reversed(bench.services):
            service.kill()
        if args.keep_temp:
            console.print(f"temp dir kept: {bench.tmp}")
        else:
            shutil.rmtree(bench.tmp, ignore_errors=True)
    report.write(args.out, report.render(run))
    print_table(console, run)
    console.print(f"results written to {args.out}")
    if run.problems:
        console.print("[bold red]problems:[/]\n" + "\n".join(f"- {p}" for p in run.problems))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
