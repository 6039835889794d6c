#!/usr/bin/env python
"""Choose the gateway's HTTP server and upstream client by measurement.

    python bench/transports.py [--duration 5] [--connections 1,64] [--only uvicorn+none]
                               [--out docs/benchmarks.md]

Serves the bare pass-through of ``bench/passthrough.py`` under each server (uvicorn with
uvloop and httptools, granian) with each upstream client (none, aiohttp, httpx, the
gateway's own), drives it with wrk against the mock upstream, and reports latency,
throughput and the server's CPU time per request. Needs the ``bench`` extra (granian,
httpx): ``pip install -e ".[bench]"``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import procs
import report
import stack
from loadgen import BenchError, WrkResult, ensure_wrk, run_wrk, write_lua
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from session import BODY, PATH

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- transports:start -->", "<!-- transports:end -->"
WARMUP_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

# (server, client): the combinations measured, the server alone first.
COMBOS = [
    ("uvicorn", "none"),
    ("granian", "none"),
    ("uvicorn", "aiohttp"),
    ("uvicorn", "httpx"),
    ("uvicorn", "costwarden"),
    ("granian", "aiohttp"),
    ("granian", "costwarden"),
]


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    server: str
    client: str
    connections: int
    wrk: WrkResult
    cpu_us: float  # server process tree CPU (user + system) per request


def server_cmd(server: str, port: int) -> list[str]:
    common = ["--host", stack.HOST, "--port", str(port), "--log-level", "warning"]
    if server == "uvicorn":
        opts = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        return [sys.executable, "-m", "uvicorn", *common, *opts, "passthrough:app"]
    opts = ["--interface", "asgi", "--loop", "uvloop", "--http", "1", "--no-ws"]
    return [sys.executable, "-m", "granian", *common, *opts, "passthrough:app"]


def measure(
    server: str, client: str, args: argparse.Namespace, ctx: dict[str, object]
) -> list[Point]:
    port = stack.free_port()
    env = {
        **stack.clean_env(),
        "PYTHONPATH": str(Path(__file__).resolve().parent),
        "PASSTHROUGH_CLIENT": client,
        "PASSTHROUGH_UPSTREAM": f"http://{stack.HOST}:{ctx['mock_port']}{PATH}",
    }
    tmp = Path(str(ctx["tmp"]))
    log = tmp / f"{server}-{client}.log"
    service = stack.Service(f"{server}+{client}", server_cmd(server, port), log, env)
    points: list[Point] = []
    try:
        stack.wait_ready(service, port, "/healthz")
        url = f"http://{stack.HOST}:{port}{PATH}"
        script = Path(str(ctx["script"]))
        for c in args.connections:
            run_wrk(str(ctx["wrk"]), url, script, c, WARMUP_S)
            before = procs.cpu_ticks(service.proc.pid)
            result, _ = run_wrk(str(ctx["wrk"]), url, script, c, args.duration)
            ticks = procs.cpu_ticks(service.proc.pid) - before
            if result.non_2xx or result.errors:
                raise BenchError(
                    f"{server}+{client} c={c}: {result.non_2xx} non-2xx, "
                    f"{result.errors} socket errors"
                )
            cpu_us = ticks / CLK_TCK / max(result.requests, 1) * 1e6
            points.append(Point(server, client, c, result, cpu_us))
    finally:
        service.kill()
    return points


def render(points: list[Point], direct: list[Point], command: str) -> str:
    lines = [
        "## Choosing the server and the client",
        "",
        f"`{command}`: a bare ASGI pass-through (`bench/passthrough.py`: no auth, no "
        "metering, no ledger) under each server with each upstream client, against the "
        "mock; `none` answers without an upstream call (the server alone). CPU is the "
        "server's user + system time per request.",
        "",
        "| server | upstream client | connections | req/s | p50 ms | p99 ms | CPU µs/request |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in direct + points:
        lines.append(
            f"| {p.server} | {p.client} | {p.connections} | {p.wrk.rps:,.0f} | "
            f"{p.wrk.p50_ms:.2f} | {p.wrk.p99_ms:.2f} | "
            + ("–" if p.server == "mock direct" else f"{p.cpu_us:.0f}")
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--connections", default="1,64", help="comma-separated concurrencies")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated server+client pairs to measure (default: all); "
        "'uvicorn+none' with mock direct is a quick check of the machine's speed",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    combos = COMBOS
    if args.only:
        wanted = [tuple(pair.split("+", 1)) for pair in args.only.split(",")]
        unknown = [f"{s}+{c}" for s, c in wanted if (s, c) not in COMBOS]
        if unknown:
            parser.error(
                f"unknown pair(s) {', '.join(unknown)}; known: "
                + ", ".join(f"{s}+{c}" for s, c in COMBOS)
            )
        combos = [combo for combo in COMBOS if combo in wanted]
    args.connections = [int(c) for c in args.connections.split(",")]
    command = " ".join(["python bench/transports.py", *(sys.argv[1:] if argv is None else argv)])
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="costwarden-transports-"))
    services: list[stack.Service] = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            wrk = ensure_wrk()
            mock_port = stack.free_port()
            cmd = [*stack.cli(), "mock-upstream", "--host", stack.HOST, "--port", str(mock_port)]
            mock = stack.Service("mock", cmd, tmp / "mock.log", stack.clean_env())
            services.append(mock)
            stack.wait_ready(mock, mock_port, "/_mock/health")
            headers = {"content-type": "application/json", "authorization": "Bearer x"}
            script = write_lua(tmp / "post.lua", BODY, headers)
            ctx: dict[str, object] = {
                "wrk": wrk,
                "mock_port": mock_port,
                "script": script,
                "tmp": tmp,
            }
            direct: list[Point] = []
            mock_url = f"http://{stack.HOST}:{mock_port}{PATH}"
            for c in args.connections:
                run_wrk(wrk, mock_url, script, c, WARMUP_S)
                result, _ = run_wrk(wrk, mock_url, script, c, args.duration)
                direct.append(Point("mock direct", "–", c, result, 0.0))
            points: list[Point] = []
            for server, client in combos:
                task = progress.add_task(f"{server} + {client}", total=None)
                points += measure(server, client, args, ctx)
                progress.remove_task(task)
                console.print(f"[green]✓[/] {server} + {client}")
    except BenchError as exc:
        console.print(f"[bold red]failed:[/] {exc}")
        return 1
    finally:
        for service in services:
            service.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    section = render(points, direct, command)
    report.write(args.out, section, START, END)
    console.print(section, markup=False, highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
