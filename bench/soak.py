#!/usr/bin/env python
"""Soak the gateway: steady load for minutes, its memory sampled, its ledger checked after.

    python bench/soak.py [--minutes 10] [--connections 16] [--interval 5]
                         [--out docs/benchmarks.md]

One gateway with all controls on (budgets in-process: limits, SQLite ledger, batched) in
front of the mock, driven by wrk for the whole time while its resident set (VmRSS, summed
over its process tree) is sampled. It passes if the resident set at the end is within 10 %
of the one after the first minute, no request failed, and after SIGTERM its ledger holds
exactly one row per upstream call. The results go between the soak markers of the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import procs
import redis
import report
from gateways import ledger_check, start_gateway, start_mock
from loadgen import BenchError, WrkResult, ensure_wrk, write_lua, wrk_command, wrk_report
from results import LedgerCheck
from rich.markdown import Markdown
from rich.markup import escape
from session import BODY, Bench, Gateway, auth_headers, cleanup, new_bench, show_logs
from variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- soak:start -->"
END = "<!-- soak:end -->"
MAX_GROWTH = 0.10  # of the resident set after the first minute
BASELINE_S = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Soak:
    command: str
    seconds: float
    connections: int
    samples: list[tuple[float, int]]  # (seconds since the load started, VmRSS KiB)
    peak_kib: int  # VmHWM before SIGTERM
    wrk: WrkResult
    ledger: LedgerCheck

    @property
    def baseline_s(self) -> float:
        """After the first minute, or half-way through a soak shorter than two minutes."""
        return min(BASELINE_S, self.seconds / 2)

    def rss_at(self, seconds: float) -> int:
        return min(self.samples, key=lambda s: abs(s[0] - seconds))[1]

    @property
    def growth(self) -> float:
        base = self.rss_at(self.baseline_s)
        return (self.samples[-1][1] - base) / base if base else float("nan")

    @property
    def errors(self) -> int:
        return self.wrk.non_2xx + self.wrk.errors

    def checks(self) -> list[tuple[str, bool]]:
        rows, calls = self.ledger.rows, self.ledger.upstream_calls
        base = f"{self.baseline_s / 60:g} min"
        return [
            (
                f"RSS at the end within {MAX_GROWTH:.0%} of RSS after {base}: {self.growth:+.1%}",
                abs(self.growth) <= MAX_GROWTH,
            ),
            (f"no errors: {self.errors}", self.errors == 0),
            (f"ledger rows = upstream calls: {rows} and {calls}", rows == calls),
            (
                f"ledger rows minus wrk's responses within 0..{self.ledger.in_flight_bound}: "
                f"{self.ledger.difference:+d}",
                0 <= self.ledger.difference <= self.ledger.in_flight_bound,
            ),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load lasts")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to update"
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.connections < 1 or args.interval <= 0:
        parser.error("--minutes, --connections and --interval must be positive")
    args.connections = [args.connections]  # as bench/run.py's, for the ledger's bound
    return args


def drive(bench: Bench, gw: Gateway, seconds: float) -> tuple[WrkResult, list[tuple[float, int]]]:
    """wrk for ``seconds`` while the gateway's VmRSS is sampled under a progress bar."""
    c = bench.args.connections[0]
    script = write_lua(bench.tmp / "soak.lua", BODY, auth_headers(gw.key))
    cmd = wrk_command(bench.wrk, gw.url, script, c, seconds)
    samples: list[tuple[float, int]] = []
    task = bench.progress.add_task("RSS", total=seconds)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            rss = procs.rss_kib(gw.service.proc.pid)
            if not gw.service.alive():
                raise BenchError("the gateway exited during the soak")
            samples.append((elapsed, rss))
            bench.progress.update(
                task, completed=min(elapsed, seconds), description=f"RSS {procs.mib(rss)}"
            )
            time.sleep(min(bench.args.interval, max(0.1, seconds - elapsed)))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bench.progress.remove_task(task)
    samples.append((time.monotonic() - started, procs.rss_kib(gw.service.proc.pid)))
    return wrk_report(proc.returncode, out, err), samples


def soak(bench: Bench, command: str) -> Soak:
    args = bench.args
    bench.wrk = bench.phase("wrk available (installing it if missing)", ensure_wrk)
    bench.mock_port = bench.phase("mock upstream started", lambda: start_mock(bench))
    variant = VARIANTS["memory"]
    gw = bench.phase(
        f"costwarden: {variant.label} started (limits on, SQLite, batched ledger)",
        lambda: start_gateway(bench, variant),
    )
    seconds = args.minutes * 60
    label = f"wrk c={args.connections[0]} for {args.minutes:g} min, VmRSS every {args.interval:g} s"
    result, samples = bench.phase(label, lambda: drive(bench, gw, seconds), gateway=gw)
    gw.responses += result.requests
    bench.note(f"{result.requests} responses, {result.rps:,.0f} req/s, p99 {result.p99_ms:.2f} ms")
    peak = procs.peak_rss_kib(gw.service.proc.pid)
    ledger = ledger_check(bench, gw, wrk_runs=1)
    return Soak(command, seconds, args.connections[0], samples, peak, result, ledger)


def render(s: Soak) -> str:
    base = s.rss_at(s.baseline_s)
    figures = [
        ("RSS after the first minute" if s.baseline_s == BASELINE_S else "RSS half-way", base),
        ("RSS at the end", s.samples[-1][1]),
        ("peak RSS (VmHWM)", s.peak_kib),
    ]
    rows = ["| soak | |", "| --- | ---: |"]
    rows += [f"| {name} | {procs.mib(kib)} |" for name, kib in figures]
    rows += [
        f"| change, end against {s.baseline_s / 60:g} min | {s.growth:+.1%} |",
        f"| requests wrk counted | {s.wrk.requests} ({s.wrk.rps:,.0f} req/s) |",
        f"| latency p50 / p99 | {s.wrk.p50_ms:.2f} ms / {s.wrk.p99_ms:.2f} ms |",
        f"| errors (non-2xx + socket errors) | {s.errors} |",
        f"| upstream calls (mock) | {s.ledger.upstream_calls} |",
        f"| ledger rows after SIGTERM | {s.ledger.rows} |",
    ]
    samples = ["| elapsed | RSS |", "| ---: | ---: |"]
    samples += [f"| {int(t // 60)}:{int(t % 60):02d} | {procs.mib(kib)} |" for t, kib in _shown(s)]
    checks = "\n".join(f"- {'✓' if ok else '✗'} {text}" for text, ok in s.checks())
    verdict = "**passed**" if s.passed else "**failed**"
    return "\n\n".join(
        [
            "### Soak results",
            f"Run on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `{s.command}`: "
            f"{s.seconds / 60:g} min at {s.connections} connections, {verdict}.",
            _machine(),
            "\n".join(rows),
            checks,
            "Resident set (VmRSS, summed over its process tree) over the run, minutes:seconds "
            "since the load started:",
            "\n".join(samples),
        ]
    )


def _shown(s: Soak) -> list[tuple[float, int]]:
    """The first and last samples, and the ones nearest each minute (each 10 s if short)."""
    step = 60.0 if s.seconds >= 300 else 10.0
    marks = [step * n for n in range(1, int(s.seconds // step) + 1)]
    picked = [s.samples[0], *(min(s.samples, key=lambda x, m=m: abs(x[0] - m)) for m in marks)]
    if s.samples[-1][0] - picked[-1][0] > step / 2:
        picked.append(s.samples[-1])
    return list(dict.fromkeys(picked))


def _machine() -> str:
    rows = [f"| {k} | {v} |" for k, v in report.machine().items()]
    return "\n".join(["| machine | |", "| --- | --- |", *rows])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # so cleanup runs on SIGTERM
    command = shlex.join(["python", "bench/soak.py", *(sys.argv[1:] if argv is None else argv)])
    bench, console = new_bench(args, "costwarden-soak-")
    try:
        with bench.progress:
            result = soak(bench, command)
        if not result.passed or bench.problems:
            show_logs(bench, console)
    except (BenchError, OSError, redis.RedisError) as exc:
        console.print(f"[bold red]soak failed:[/] {escape(str(exc))}", highlight=False)
        show_logs(bench, console)
        return 1
    except KeyboardInterrupt:
        console.print("[bold red]interrupted[/]")
        return 130
    finally:
        cleanup(bench, console)
    text = render(result)
    report.write(args.out, text, START, END)
    console.print(Markdown(text))
    console.print(f"results written to {args.out}")
    return 0 if result.passed and not bench.problems else 1


if __name__ == "__main__":
    sys.exit(main())
