"""The load generator: installing wrk, scripting its POSTs and reading its report."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import statistics
import subprocess
from collections import Counter
from pathlib import Path


class BenchError(RuntimeError):
    """A failure that ends the benchmark with a one-line message (and a non-zero exit)."""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # responses wrk received, whatever their status
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())


def ensure_wrk() -> str:
    """Path of ``wrk``; installs Debian's package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    done = _quiet(install, env)
    if done is None or done.returncode != 0:
        # A fresh machine's package lists may be empty or stale: update only when the
        # plain install fails, so a warm machine does not pay for it.
        updated = _quiet(["apt-get", "update", "-q"], env)
        if updated is None or updated.returncode != 0:
            raise BenchError(f"could not install wrk (apt-get update: {_why(updated)})")
        done = _quiet(install, env)
    if done is None or done.returncode != 0:
        raise BenchError(f"could not install wrk (apt-get install: {_why(done)})")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH")
    return found


def _quiet(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _why(done: subprocess.CompletedProcess[str] | None) -> str:
    if done is None:
        return "apt-get is not available or timed out"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"apt-get exited {done.returncode}"


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its banner and exits 1; only the first line matters.
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk (unknown version)"


def write_lua(path: Path, body: str, headers: dict[str, str]) -> Path:
    """A wrk script that sends ``body`` as a POST with ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(body)}"]
    # The spaces matter: "[[[" would open a long string instead of indexing with one.
    lines += [f"wrk.headers[ {_lua_str(k)} ] = {_lua_str(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _lua_str(value: str) -> str:
    # A long bracket takes the text verbatim (JSON quotes and backslashes included);
    # the level is raised until the closing bracket cannot occur in the text.
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def wrk_command(wrk: str, url: str, script: Path, connections: int, duration_s: float) -> list[str]:
    threads = min(connections, 2)  # two cores: more threads would only fight the servers
    return [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run_wrk(
    wrk: str, url: str, script: Path, connections: int, duration_s: float
) -> tuple[WrkResult, str]:
    """Run wrk once; returns the parsed figures and the raw report."""
    cmd = wrk_command(wrk, url, script, connections, duration_s)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from None
    return wrk_report(done.returncode, done.stdout, done.stderr), done.stdout


def wrk_report(code: int, stdout: str, stderr: str) -> WrkResult:
    """The figures of a finished wrk, or why there are none."""
    # A broken Lua script is only reported on stderr while wrk goes on with plain GETs.
    if code != 0 or stderr.strip():
        raise BenchError(f"wrk exited {code}: {stderr.strip() or stdout}")
    return parse_wrk(stdout)


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PCT = re.compile(r"^\s*(50|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_REQS = re.compile(r"^\s*(\d+) requests in ", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.M)


def combine_rounds(rounds: list[WrkResult]) -> WrkResult:
    """One target's figures over several equal-length wrk runs taken in turn with the other
    targets': requests and errors summed, req/s averaged, each percentile the median of the
    rounds' (wrk reports percentiles, not its histogram, so they cannot be merged exactly)."""
    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r.socket_errors)
    return WrkResult(
        requests=sum(r.requests for r in rounds),
        rps=statistics.fmean(r.rps for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p90_ms=statistics.median(r.p90_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        non_2xx=sum(r.non_2xx for r in rounds),
        socket_errors=dict(errors),
    )


def parse_wrk(text: str) -> WrkResult:
    """Figures from wrk's text report (run with --latency)."""
    pct = {int(p): float(v) * _UNITS_MS[u] for p, v, u in _PCT.findall(text)}
    reqs, rps = _REQS.search(text), _RPS.search(text)
    if reqs is None or rps is None or set(pct) != {50, 90, 99}:
        raise BenchError(f"cannot read wrk's report:\n{text}")
    non_2xx = _NON2XX.search(text)
    sock = _SOCKET.search(text)
    names = ("connect", "read", "write", "timeout")
    return WrkResult(
        requests=int(reqs.group(1)),
        rps=float(rps.group(1)),
        p50_ms=pct[50],
        p90_ms=pct[90],
        p99_ms=pct[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(zip(names, map(int, sock.groups()), strict=True)) if sock else {},
    )
