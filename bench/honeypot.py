"""Honeypot keys: is a honeypot key's answer as fast as an unknown key's?

A gateway process (``costwarden serve``, uvloop + httptools, SQLite, alerts on) gets requests
with an unknown key and with a honeypot key, interleaved in a shuffled order on one keep-alive
connection (so neither kind always follows the other), for each body size; the client times
each request (send to last byte) and the report gives the percentiles of both kinds and their
difference. Every answer is checked: status and body identical for both kinds. At the end the
honeypot alert is looked up in the database (one per key, source and hour) and the time from
the first honeypot answer to its row is reported (one honeypot request before the runs).

    python bench/honeypot.py                       # 500 of each, bodies of 100 B, 32 KiB, 1 MiB
    python bench/honeypot.py --requests 2000 --bodies 100

Neither kind's body is read on the request path (gateway/honeypot.py): the sizes show that
a large body costs both the same (uvicorn reads and drops what comes after the answer).
http.client writes a request's head and body apart, so the honeypot's model is mostly
unknown here; the alert is raised either way. ``--pin`` puts the gateway and this client on
CPUs of their own.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import stack
from loadgen import BenchError

PATH = "/v1/chat/completions"
WARMUP = 200


def _body(size: int) -> bytes:
    """A chat request of about ``size`` bytes."""
    head = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"'
    tail = '"}]}'
    return (head + "x" * max(0, size - len(head) - len(tail)) + tail).encode()


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


def _stats(seconds: list[float]) -> list[float]:
    """p50, p90, p99 and the mean, in microseconds."""
    us = [t * 1e6 for t in seconds]
    return [statistics.median(us), _percentile(us, 90), _percentile(us, 99), statistics.fmean(us)]


def _line(size: int, kind: str, values: list[float], sign: str = "") -> str:
    return f"{size:>9} {kind:>9} " + " ".join(f"{v:>{sign}8.1f}" for v in values)


def _honeypot_key(config: Path, env: dict[str, str]) -> tuple[str, str]:
    cmd = [*stack.cli(), "keys", "create", "--config", str(config), "--org", "bench",
           "--name", "planted", "--honeypot", "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"keys create exited {done.returncode}: {done.stderr.strip()}")
    made = json.loads(done.stdout)
    return str(made["key"]), str(made["id"])


def _measure(
    port: int,
    keys: dict[str, str],
    body: bytes,
    count: int,
    rng: random.Random,
    warmup: int = WARMUP,
) -> tuple[dict[str, list[float]], float]:
    """{kind: seconds per request}, and when the first honeypot answer came (monotonic)."""
    conn = http.client.HTTPConnection(stack.HOST, port, timeout=30)
    answers: dict[str, tuple[int, bytes]] = {}
    times: dict[str, list[float]] = {kind: [] for kind in keys}
    first_honeypot = 0.0
    order = [kind for kind in keys for _ in range(warmup + count)]
    rng.shuffle(order)
    seen = dict.fromkeys(keys, 0)
    try:
        for kind in order:
            headers = {
                "content-type": "application/json",
                "authorization": f"Bearer {keys[kind]}",
                "user-agent": "bench-honeypot/1.0",
            }
            t0 = time.perf_counter()
            conn.request("POST", PATH, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - t0
            if not first_honeypot and kind == "honeypot":
                first_honeypot = time.monotonic()
            answer = (response.status, data)
            if answers.setdefault(kind, answer) != answer:
                raise BenchError(f"{kind}: the answer changed: {answer!r}")
            seen[kind] += 1
            if seen[kind] > warmup:
                times[kind].append(elapsed)
    finally:
        conn.close()
    if len(set(answers.values())) != 1 or next(iter(answers.values()))[0] != 401:
        raise BenchError(f"the answers differ, or are no 401: {answers!r}")
    return times, first_honeypot


def _alert_seconds(db: Path, key_id: str, since: float, timeout: float = 10.0) -> float:
    """Seconds from ``since`` (monotonic) until the honeypot alert's row is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            found = conn.execute(
                "SELECT count(*) FROM alerts WHERE rule = 'security-honeypot-key' AND scope_id = ?",
                (key_id,),
            ).fetchone()[0]
        if found:
            return time.monotonic() - since
        time.sleep(0.005)
    raise BenchError("no honeypot alert in the database")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="of each kind, per body")
    parser.add_argument("--bodies", default="100,32768,1048576", help="body sizes, bytes")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the gateway on CPU 0, this client on CPU 1 (Linux): the gateway's work after an "
        "answer (the hit's event, its log line) then cannot take the client's CPU while it "
        "times the answer, as it cannot a remote client's",
    )
    args = parser.parse_args()
    pin: list[str] = []
    if args.pin:
        os.sched_setaffinity(0, {1})
        pin = ["taskset", "-c", "0"]
    rng = random.Random(args.seed)
    sizes = [int(s) for s in args.bodies.split(",")]
    env = stack.clean_env()
    with tempfile.TemporaryDirectory(prefix="cw-honeypot-") as tmp:
        work = Path(tmp)
        port = stack.free_port()
        db = work / "cw.db"
        # Nothing reaches the upstream: the mock's port has no listener.
        config = stack.write_config(work / "gw.toml", db, stack.free_port(), port)
        honeypot, key_id = _honeypot_key(config, env)
        keys = {"unknown": "cw-" + secrets.token_urlsafe(32), "honeypot": honeypot}
        service = stack.Service(
            "gateway", [*pin, *stack.cli(), "serve", "--config", str(config)], work / "gw.log", env
        )
        try:
            stack.wait_ready(service, port, "/healthz")
            _, answered = _measure(port, {"honeypot": honeypot}, _body(100), 1, rng, warmup=0)
            alert = _alert_seconds(db, key_id, answered)
            print(f"{args.requests} requests of each kind per body, interleaved, "
                  f"one keep-alive connection; times in microseconds")  # fmt: skip
            print(f"{'body':>9} {'kind':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'mean':>8}")
            for size in sizes:
                times, _ = _measure(port, keys, _body(size), args.requests, rng)
                unknown, trapped = _stats(times["unknown"]), _stats(times["honeypot"])
                print(_line(size, "unknown", unknown))
                print(_line(size, "honeypot", trapped))
                diff = [h - u for h, u in zip(trapped, unknown, strict=True)]
                print(_line(size, "diff", diff, sign="+"))
            with sqlite3.connect(db) as conn:
                alerts = conn.execute(
                    "SELECT count(*) FROM alerts WHERE rule = 'security-honeypot-key'"
                ).fetchone()[0]
                rows = conn.execute("SELECT count(*) FROM ledger").fetchone()[0]
            print(
                f"honeypot alert row {alert * 1000:.0f} ms after the first honeypot answer; "
                f"alerts: {alerts} (one per key, source and hour); ledger rows: {rows}"
            )
            service.terminate(30)
        finally:
            service.kill()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
