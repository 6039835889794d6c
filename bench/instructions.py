#!/usr/bin/env python
"""What the gateway costs per request in CPU instructions, which no machine can change.

    python bench/instructions.py [--ref c586336] [--requests 300] [--variant memory]
                                 [--out docs/benchmarks.md]

Milliseconds depend on the machine: on this project's 2-core VMs the same commit has run
2.5x slower from one day to the next. Instructions do not. This runs the gateway (budgets
in-process, every control on) under ``valgrind --tool=callgrind``, the mock upstream
beside it at full speed, sends ``--requests`` sequential requests on one keep-alive
connection and reads the instructions the gateway process executed for them, minus what
it executes in the same time when idle; and the same for its main thread alone, the event
loop's (the request path without the threads that write the ledger and the event log in
batches by wall time, whose share per request varies between runs). Its storage pollers,
which are off the request path, poll hourly during the measurement.

Each ``--ref`` (a commit, tag or branch) is measured the same way from a copy of that
commit's ``src/`` (``git archive``), beside the working tree, so a change's cost is a
difference of two counts taken on the same day. ``--variant leased`` (or ``redis``) counts
the gateway with its counters in Redis instead (``bench/variants.py``; Redis's own CPU is
not in the count, ``bench/run.py`` reports it). A leased count compares only with another
leased count: its slices flush every 20 ms of wall time, and under callgrind a request takes
tens of milliseconds, so each counted request carries a flush that at full speed serves tens
of requests. Needs valgrind (Debian package).
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import report
import stack
from loadgen import BenchError
from redis_calls import RedisProbe
from rich.console import Console
from session import BODY, PATH, auth_headers
from variants import SESSION, VARIANTS, Variant, apply_limits

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- instructions:start -->", "<!-- instructions:end -->"
WORKTREE = "working tree"
WARMUP_REQUESTS = 50
IDLE_SECONDS = 10.0
# The pollers (keys, limits, switches, routes, alert deliveries, forecasts and the ledger
# watch, the analytics rollup) are off the request path; polling hourly keeps their
# instructions out of the count instead of subtracting a noisy estimate.
_QUIET_POLLERS = {
    "COSTWARDEN_KEY_REFRESH_SECONDS": "3600",
    "COSTWARDEN_BUDGET_REFRESH_SECONDS": "3600",
    "COSTWARDEN_SWITCH_REFRESH_SECONDS": "3600",
    "COSTWARDEN_EVENTS_POLL_SECONDS": "3600",
    "COSTWARDEN_ALERTS_DELIVERY_POLL_SECONDS": "3600",
    "COSTWARDEN_ALERTS_FORECAST_INTERVAL_SECONDS": "3600",
    "COSTWARDEN_ALERTS_WATCH_INTERVAL_SECONDS": "3600",
    "COSTWARDEN_ANALYTICS_ROLLUP_INTERVAL_SECONDS": "3600",
}
_TOTALS = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ref", action="append", default=[], help="also measure this commit (repeatable)"
    )
    parser.add_argument(
        "--requests", type=int, default=300, help="measured sequential requests per target"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each target's callgrind dump of the measured requests in this directory "
        "(its main thread's, which runs the event loop; for callgrind_annotate)",
    )
    parser.add_argument(
        "--session",
        action="store_true",
        help="requests of an agent session (x-costwarden-session, with a session budget; "
        "a new question each, as an agent's steps are, so loop detection lets them be)",
    )
    parser.add_argument(
        "--variant",
        choices=[name for name, v in VARIANTS.items() if v.limits],
        default="memory",
        help="the gateway's configuration (bench/variants.py): memory (counters in-process), "
        "redis or leased (counters in Redis db 11, flushed first)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    # internal: measure the costwarden on PYTHONPATH only; the value is where to keep its dump
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        keep = None if args.one == "-" else Path(args.one)
        variant = VARIANTS[args.variant]
        print(json.dumps(_measure_here(args.requests, keep, args.session, variant)))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind)", file=sys.stderr)
        return 1
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="costwarden-instructions-"))
    rows: list[dict[str, object]] = []
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        for n, label in enumerate([*args.ref, WORKTREE], 1):
            with console.status(f"{label}: gateway under callgrind, {args.requests} requests"):
                src = ROOT / "src" if label == WORKTREE else _export(label, tmp)
                keep = (
                    args.keep / f"{n}-{label.replace('/', '_').replace(' ', '-')}.callgrind"
                    if args.keep
                    else None
                )
                measured = _measure_tree(src, args.requests, keep, args.session, args.variant)
                rows.append({"target": _describe(label), **measured})
            console.print(
                f"[green]✓[/] {rows[-1]['target']}: {_per_request(rows[-1]):,.0f}, "
                f"event loop {_per_request(rows[-1], 'loop'):,.0f}"
            )
    except BenchError as exc:
        console.print(f"[bold red]failed:[/] {exc}")
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    command = " ".join(["python bench/instructions.py", *(sys.argv[1:] if argv is None else argv)])
    section = _render(rows, command, VARIANTS[args.variant])
    report.write(args.out, section, START, END)
    console.print(section, markup=False, highlight=False)
    return 0


def _export(ref: str, tmp: Path) -> Path:
    """``src/`` as it is at ``ref``, extracted under ``tmp``."""
    dest = Path(tempfile.mkdtemp(dir=tmp))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, timeout=60
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {ref}: {archive.stderr.decode().strip()}")
    tar = dest / "src.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    return dest / "src"


def _describe(label: str) -> str:
    if label == WORKTREE:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = " + uncommitted changes" if _git("status", "--porcelain", "src") else ""
        return f"{WORKTREE} ({head}{dirty})"
    short = _git("rev-parse", "--short", label)
    return short if short.startswith(label) or label.startswith(short) else f"{short} ({label})"


def _git(*argv: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *argv], capture_output=True, text=True)
    return done.stdout.strip()


def _measure_tree(
    src: Path, requests: int, keep: Path | None, session: bool, variant: str
) -> dict[str, float]:
    """Measure in a child whose ``costwarden`` is imported from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    one = str(keep.resolve()) if keep else "-"
    cmd = [sys.executable, __file__, "--one", one, "--requests", str(requests)]
    cmd += ["--variant", variant]
    if session:
        cmd.append("--session")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise BenchError(f"measuring {src}: {done.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _measure_here(
    requests: int, keep: Path | None, session: bool, variant: Variant
) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="costwarden-callgrind-"))
    env = {**stack.clean_env(), "PYTHONHASHSEED": "0"}
    services: list[stack.Service] = []
    probe = RedisProbe() if variant.redis else None
    try:
        if probe is not None:
            why = probe.check()
            if why is not None:
                raise BenchError(f"the {variant.name} variant needs Redis at {probe.url}: {why}")
            probe.flush()  # counters of an earlier run would not match this ledger
        mock_port = stack.free_port()
        mock_cmd = [*stack.cli(), "mock-upstream", "--host", stack.HOST, "--port", str(mock_port)]
        services.append(stack.Service("mock", mock_cmd, tmp / "mock.log", env))
        stack.wait_ready(services[0], mock_port, "/_mock/health")
        port, db = stack.free_port(), tmp / "gateway.db"
        extra = variant.config_extra()
        config = stack.write_config(tmp / "gateway.toml", db, mock_port, port, extra)
        key, key_id = stack.create_key(config, env)
        apply_limits(db, key_id, **({"session": True} if session else {}))
        out = tmp / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",  # start-up runs at near full speed, uncounted
            f"--callgrind-out-file={out}",
            # A dump per thread: the event loop's (the request path) apart from the ledger
            # writer's and the event bus's batched writes, whose count per request depends on
            # how many requests a flush interval of wall time holds (under callgrind, a few).
            "--separate-threads=yes",
            sys.executable,
            "-m",
            "costwarden.cli",
            "serve",
            "--config",
            str(config),
        ]
        quiet = {**env, **_QUIET_POLLERS}
        gateway = stack.Service("gateway under callgrind", cmd, tmp / "gateway.log", quiet)
        services.append(gateway)
        stack.wait_ready(gateway, port, "/healthz", timeout=300)
        pid = gateway.proc.pid
        _control(pid, "--instr=on")
        _requests(port, key, WARMUP_REQUESTS, session)
        idle = _counted(pid, out, lambda: time.sleep(IDLE_SECONDS))
        busy = _counted(pid, out, lambda: _requests(port, key, requests, session))
        if keep is not None:
            shutil.copyfile(_loop_dump(out), keep)
        return {
            "requests": requests,
            "instructions": busy.instructions,
            "seconds": busy.seconds,
            "background": idle.instructions / idle.seconds * busy.seconds,
            "loop": busy.loop,
            "loop_background": idle.loop / idle.seconds * busy.seconds,
        }
    finally:
        for service in reversed(services):
            service.kill()
        if probe is not None:
            probe.flush()
            probe.close()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass(frozen=True, slots=True)
class _Count:
    instructions: int  # every thread's
    loop: int  # the main thread's: the event loop
    seconds: float


def _counted(pid: int, out: Path, work: Callable[[], None]) -> _Count:
    """Instructions the process executed during ``work()`` (zeroed before, dumped after)."""
    for old in out.parent.glob(out.name + "*"):
        old.unlink()
    _control(pid, "--zero")
    started = time.monotonic()
    work()
    seconds = time.monotonic() - started
    _control(pid, "--dump")
    dumps = list(out.parent.glob(out.name + "*"))
    total = 0
    for dump in dumps:
        total += _total(dump)
    if not dumps:
        raise BenchError("callgrind wrote no dump")
    return _Count(total, _total(_loop_dump(out)), seconds)


def _total(dump: Path) -> int:
    found = _TOTALS.search(dump.read_bytes())
    if found is None:
        raise BenchError(f"no totals in {dump.name}")
    return int(found.group(1))


def _loop_dump(out: Path) -> Path:
    """The dump of thread 1 (``<out>.<part>-01``): the main thread, which runs the event loop."""
    found = sorted(out.parent.glob(out.name + "*-01"))
    if not found:
        raise BenchError("callgrind wrote no dump of the main thread")
    return found[-1]


def _control(pid: int, option: str) -> None:
    cmd = ["callgrind_control", option, str(pid)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)}: {(done.stdout + done.stderr).strip()}")


def _requests(port: int, key: str, count: int, session: bool = False) -> None:
    conn = http.client.HTTPConnection(stack.HOST, port, timeout=120)
    headers = auth_headers(key)
    if session:
        headers["x-costwarden-session"] = SESSION
    try:
        for i in range(count):
            # An agent's steps: a new question each (the same one thrice is a loop).
            body = BODY.replace('"hello"', f'"hello {i}"') if session else BODY
            conn.request("POST", PATH, body=body.encode(), headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise BenchError(f"gateway answered {resp.status}")
    finally:
        conn.close()


def _per_request(row: dict[str, object], thread: str = "") -> float:
    """Per request, less the idle background (``thread`` "loop": the event loop's only)."""
    total, idle = ("loop", "loop_background") if thread else ("instructions", "background")
    work = float(row[total]) - float(row[idle])  # type: ignore[arg-type]
    return work / float(row["requests"])  # type: ignore[arg-type]


def _render(rows: list[dict[str, object]], command: str, variant: Variant) -> str:
    lines = [
        "## Instructions per request",
        "",
        f"`{command}`: the gateway ({variant.label}: auth, budgets and rate limits, "
        "ledger) under callgrind, sequential requests on one connection; instructions its "
        "process executed for them, minus what its background loops execute in the same "
        "time when idle. Counts, not seconds: the machine's speed on the day does not enter. "
        "The event loop's column is the main thread's alone: the request path, without the "
        "threads that write the ledger and the event log in batches (their share of a request "
        "depends on how many requests a flush interval holds, a few under callgrind; it makes "
        "the all-threads count vary by about 5 % between runs of one commit).",
        "",
        "| code | requests | instructions per request | on the event loop | "
        "idle background subtracted |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        background = float(row["background"]) / float(row["requests"])  # type: ignore[arg-type]
        lines.append(
            f"| {row['target']} | {row['requests']} | {_per_request(row):,.0f} | "
            f"{_per_request(row, 'loop'):,.0f} | {background:,.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
