#!/usr/bin/env python
"""Measure the gateway's overhead against the mock upstream, and record it in the docs.

    python bench/run.py [--duration 10] [--rounds 5] [--connections 1,16,64]
                        [--stream-connections 16]
                        [--variants off,memory,redis,leased,noscan,cached] [--litellm]
                        [--out docs/benchmarks.md]

wrk drives the mock directly and then each gateway variant (no limits, budgets with
in-process counters, budgets on Redis), and LiteLLM's proxy with --litellm, at each
concurrency; bench/streamgen.py then does the same with streamed requests. The differences
are each gateway's cost and the cost of enforcing limits. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import shlex
import signal
import sys
from pathlib import Path

import interpreter
import litellm_proxy
import procs
import redis
import report
import stack
from gateways import finish, start_gateway, start_mock, usable_variants
from loadgen import (
    BenchError,
    WrkResult,
    combine_rounds,
    ensure_wrk,
    run_wrk,
    write_lua,
    wrk_version,
)
from results import DIRECT, LITELLM, MOCK_PROCESS, Point, Run, target_name
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from session import (
    PATH,
    Bench,
    Gateway,
    Target,
    auth_headers,
    cleanup,
    new_bench,
    prompt_body,
    show_logs,
)
from streaming import Shape, set_shape, stream_point
from variants import parse_variants

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per target and concurrency"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="split each target's measured seconds at a concurrency into this many wrk runs, "
        "taken in turn across the targets (the machine's drift then falls on all of them)",
    )
    parser.add_argument(
        "--connections", type=_int_list, default=[1, 16, 64], help="comma-separated concurrencies"
    )
    parser.add_argument(
        "--stream-connections",
        type=lambda text: [] if text.strip() in ("", "0") else _int_list(text),
        default=[16],
        help="concurrencies of the streaming runs, comma-separated (0: none)",
    )
    parser.add_argument("--stream-tokens", type=int, default=32, help="content events a stream")
    parser.add_argument(
        "--stream-ttft-ms", type=float, default=0.0, help="the mock's wait before the first token"
    )
    parser.add_argument(
        "--stream-tps", type=float, default=200.0, help="the mock's tokens/s (0: no pause)"
    )
    parser.add_argument(
        "--litellm",
        action="store_true",
        help=f"also measure LiteLLM's proxy (installs {' '.join(litellm_proxy.REQUIREMENTS)} "
        f"into bench/{litellm_proxy.VENV.name} on first use)",
    )
    parser.add_argument(
        "--variants",
        type=parse_variants,
        default=parse_variants("off,memory,redis,leased"),
        help="gateway variants to measure, comma-separated: off (no limits), memory (budgets, "
        "in-process counters), redis (budgets, counters in Redis db 11; skipped if unreachable), "
        "leased (the same, each process spending leased slices: budgets.leased_slices), "
        "noscan (memory with the prompt security scan off), cached (every answer from the "
        "response cache after the first)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="Markdown file to update"
    )
    parser.add_argument(
        "--prompt-chars",
        type=int,
        default=0,
        help="send bench/security.py's mixed chat/code prompt of this many characters instead "
        'of "hello" (the streaming runs keep "hello")',
    )
    parser.add_argument("--keep-temp", action="store_true", help="keep the temp dir (logs, db)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.rounds < 1 or not (args.duration / args.rounds).is_integer():
        # wrk's -d takes whole seconds
        parser.error("--rounds must be at least 1 and split --duration into whole seconds")
    if args.prompt_chars < 0:
        parser.error("--prompt-chars must not be negative")
    if args.stream_tokens < 1 or args.stream_ttft_ms < 0 or args.stream_tps < 0:
        parser.error("--stream-tokens must be positive, --stream-ttft-ms/--stream-tps not negative")
    args.shape = Shape(args.stream_tokens, args.stream_ttft_ms, args.stream_tps)
    return args


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("connections must be positive integers")
    return values


def wrk_point(bench: Bench, c: int, target: Target) -> Point:
    """One target at one concurrency on its own: a warm-up, then one measured run
    (bench/workers.py, which reads each gateway's CPU time around it)."""
    _wrk_run(bench, c, target, WARMUP_S, "warm-up")
    measured = _wrk_run(bench, c, target, bench.args.duration, "measure")
    bench.note(
        f"{measured.rps:,.0f} req/s, p50 {measured.p50_ms:.2f} ms, "
        f"p99 {measured.p99_ms:.2f} ms, {measured.requests} requests"
    )
    return Point(target.name, c, measured)


def wrk_points(bench: Bench, c: int, targets: list[Target]) -> list[Point]:
    """Every target at one concurrency: a warm-up each, then ``--rounds`` measured runs of
    each in turn (direct, the variants, LiteLLM; again), combined per target.

    Taken in turn because the machine's speed drifts by more than the differences measured:
    the mock alone has read 0.14 ms and then 0.21 ms p50 at c=1 a minute later, so a target
    measured a minute after another would carry the drift as its own cost.
    """
    rounds = bench.args.rounds
    seconds = bench.args.duration / rounds
    for target in targets:
        _wrk_run(bench, c, target, WARMUP_S, "warm-up")
    measured: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
    for n in range(1, rounds + 1):
        for target in targets:
            kind = f"measure {n}/{rounds}" if rounds > 1 else "measure"
            measured[target.name].append(_wrk_run(bench, c, target, seconds, kind))
    points = []
    for target in targets:
        result = combine_rounds(measured[target.name])
        bench.note(
            f"{target_name(target.name)} c={c}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.3f} "
            f"ms, p99 {result.p99_ms:.2f} ms, {result.requests} requests ({rounds} rounds, "
            f"p50 {min(r.p50_ms for r in measured[target.name]):.2f}-"
            f"{max(r.p50_ms for r in measured[target.name]):.2f} ms)"
        )
        points.append(Point(target.name, c, result))
    return points


def _wrk_run(bench: Bench, c: int, target: Target, seconds: float, kind: str) -> WrkResult:
    label = f"wrk {kind} {target_name(target.name)} c={c} ({seconds:g} s)"
    work = functools.partial(run_wrk, bench.wrk, target.url, target.script, c, seconds)
    result, _ = bench.phase(label, work, gateway=target.gateway)
    check(bench, f"{target.name} c={c} {kind}", result, ours=target.name != LITELLM)
    if target.gateway:
        target.gateway.responses += result.requests
    return result


def check(bench: Bench, what: str, result: WrkResult, *, ours: bool = True) -> None:
    """Errors of the mock or costwarden fail the run; LiteLLM's are its measured behaviour.

    (Under load LiteLLM leaves some requests unanswered past wrk's 2 s timeout.)
    """
    found: list[str] = []
    if result.non_2xx:
        found.append(f"{what}: {result.non_2xx} non-2xx responses")
    if result.errors:
        errors = ", ".join(f"{k} {v}" for k, v in result.socket_errors.items() if v)
        found.append(f"{what}: socket errors ({errors})")
    for text in found:
        if ours:
            bench.problem(text)
        else:
            bench.notes.append(f"{text} (not counted as a failure of the run)")


def targets_for(
    bench: Bench, gateways: list[Gateway], proxy: litellm_proxy.LiteLLM | None
) -> list[Target]:
    # The direct run carries an upstream-style credential, as the gateway's own call does.
    direct_headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {stack.UPSTREAM_ENV['OPENAI_API_KEY']}",
    }
    direct_url = f"http://{stack.HOST}:{bench.mock_port}{PATH}"
    direct_script = write_lua(bench.tmp / "direct.lua", bench.body, direct_headers)
    targets = [Target(DIRECT, direct_url, direct_headers, direct_script, None)]
    for gw in gateways:
        headers = auth_headers(gw.key)
        script = write_lua(bench.tmp / f"{gw.variant.name}.lua", bench.body, headers)
        targets.append(Target(gw.variant.label, gw.url, headers, script, gw))
    if proxy is not None:
        headers = auth_headers(litellm_proxy.MASTER_KEY)
        script = write_lua(bench.tmp / "litellm.lua", bench.body, headers)
        targets.append(Target(LITELLM, proxy.url, headers, script, None))
    return targets


def peak_memory(
    bench: Bench, gateways: list[Gateway], proxy: litellm_proxy.LiteLLM | None
) -> list[tuple[str, int]]:
    """VmHWM of every server process, read while they all still run (before SIGTERM)."""
    found = [(gw.variant.label, gw.service) for gw in gateways]
    found += [(LITELLM, proxy.service)] if proxy else []
    found += [(MOCK_PROCESS, bench.mock)] if bench.mock else []
    peaks = [(name, procs.peak_rss_kib(service.proc.pid)) for name, service in found]
    bench.note(", ".join(f"{target_name(n)} {procs.mib(kib)}" for n, kib in peaks))
    return peaks


def measure(bench: Bench, command: str) -> Run:
    args = bench.args
    bench.wrk = bench.phase("wrk available (installing it if missing)", ensure_wrk)
    bench.mock_port = bench.phase("mock upstream started", lambda: start_mock(bench))
    bench.phase(
        f"mock streams: {args.shape.text()}", lambda: set_shape(bench.mock_port, args.shape)
    )
    gateways = [
        bench.phase(
            f"{target_name(v.label)} started (SQLite, batched ledger)",
            functools.partial(start_gateway, bench, v),
        )
        for v in usable_variants(bench)
    ]
    proxy = litellm_proxy.maybe_start(bench) if args.litellm else None
    targets = targets_for(bench, gateways, proxy)
    speed_first = interpreter.reference_ms()  # the machine drifts: read before and after
    points = [p for c in args.connections for p in wrk_points(bench, c, targets)]
    streams = [stream_point(bench, c, t) for c in args.stream_connections for t in targets]
    speeds = (speed_first, interpreter.reference_ms())
    peaks = bench.phase(
        "peak memory (VmHWM) of the servers", lambda: peak_memory(bench, gateways, proxy)
    )
    runs = [finish(bench, gw, wrk_runs=1 + args.rounds) for gw in gateways]
    return Run(
        command=command,
        duration_s=args.duration,
        wrk_version=wrk_version(bench.wrk),
        points=points,
        gateways=runs,
        notes=bench.notes,
        problems=bench.problems,
        streams=streams,
        stream_shape=args.shape.text(),
        peak_rss_kib=peaks,
        litellm_versions=proxy.versions if proxy else None,
        python_speed_ms=speeds,
        rounds=args.rounds,
    )


def print_table(console: Console, run: Run) -> None:
    blocks = report.summary(run)
    blocks += [
        f"{target_name(g.label)}: self-reported overhead {g.self_reported_ms:.3f} ms"
        for g in run.gateways
    ]
    blocks += [report.redis_text(g.label, g.redis) for g in run.gateways if g.redis]
    blocks += [f"**Not measured**: {note}" for note in run.notes]
    console.print(Markdown("\n\n".join(b for b in blocks if b)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM would otherwise end Python without running the cleanup below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    bench, console = new_bench(args, "costwarden-bench-")
    if args.prompt_chars:
        bench.body = prompt_body(args.prompt_chars)
        bench.note(f"prompt: bench/security.py's mixed prompt, {args.prompt_chars:,} characters")
    try:
        with bench.progress:
            run = measure(bench, command)
        if run.problems:
            show_logs(bench, console)  # now: the logs go with the temp dir
    except (BenchError, OSError, redis.RedisError) as exc:
        console.print(f"[bold red]benchmark failed:[/] {escape(str(exc))}", highlight=False)
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
