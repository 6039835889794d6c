"""Streamed requests: the shape of the mock's streams, and bench/streamgen.py per target."""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
import subprocess
import sys
from pathlib import Path

import stack
from loadgen import BenchError
from results import StreamPoint, StreamResult, target_name
from session import STREAM_BODY, Bench, Target

STREAMGEN = Path(__file__).resolve().with_name("streamgen.py")
WARMUP_S = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """What every stream of the mock looks like, whichever target relays it."""

    tokens: int  # content events per stream (the mock's output_tokens)
    ttft_ms: float  # the mock's pause before the first content event
    tokens_per_second: float  # its pace after that; 0 sends them back to back

    def text(self) -> str:
        pace = (
            f"{self.tokens_per_second:g} tokens/s"
            if self.tokens_per_second
            else "no pause between tokens"
        )
        wait = f"{self.ttft_ms:g} ms before the first" if self.ttft_ms else "no initial wait"
        return f"{self.tokens} content events per stream, {wait}, {pace}"


def set_shape(mock_port: int, shape: Shape) -> None:
    """Configure the mock's streams (non-streamed answers are capped by BODY's max_tokens)."""
    payload = {
        "output_tokens": shape.tokens,
        "ttft_ms": shape.ttft_ms,
        "tokens_per_second": shape.tokens_per_second,
    }
    conn = http.client.HTTPConnection(stack.HOST, mock_port, timeout=10)
    try:
        conn.request(
            "POST",
            "/_mock/config",
            body=json.dumps(payload).encode(),
            headers={"content-type": "application/json"},
        )
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
    finally:
        conn.close()
    if resp.status != 200:
        raise BenchError(f"mock refused the stream shape {payload}: {resp.status} {text}")


def run_streamgen(target: Target, body: Path, connections: int, duration_s: float) -> StreamResult:
    """One warm-up plus measured run of the generator, in a process of its own."""
    cmd = [
        sys.executable,
        str(STREAMGEN),
        "--url", target.url,
        "--body-file", str(body),
        "--connections", str(connections),
        "--duration", f"{duration_s:g}",
        "--warmup", f"{WARMUP_S:g}",
    ]  # fmt: skip
    for name, value in target.headers.items():
        cmd += ["--header", f"{name}: {value}"]
    timeout = WARMUP_S + duration_s + 90  # the drain of the last streams included
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"streamgen did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        raise BenchError(f"streamgen exited {done.returncode}: {done.stderr.strip()}")
    try:
        raw = json.loads(done.stdout)
        return StreamResult(
            streams=int(raw["streams"]),
            streams_per_s=float(raw["streams_per_s"]),
            ttft_ms={k: float(v) for k, v in raw["ttft_ms"].items()},
            total_ms={k: float(v) for k, v in raw["total_ms"].items()},
            ok_responses=int(raw["ok_responses"]),
            sent=int(raw["sent"]),
            errors={str(k): int(v) for k, v in raw["errors"].items()},
            cpu_share=float(raw["cpu_share"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BenchError(f"cannot read streamgen's output: {done.stdout!r}") from None


def stream_point(bench: Bench, c: int, target: Target) -> StreamPoint:
    """One target's streams at concurrency ``c``: warm-up and measured run in one go."""
    body = bench.tmp / "stream-body.json"
    if not body.exists():
        body.write_text(STREAM_BODY, encoding="utf-8")
    seconds = bench.args.duration
    label = f"streams {target_name(target.name)} c={c} ({WARMUP_S:g} s warm-up + {seconds:g} s)"
    result = bench.phase(
        label, lambda: run_streamgen(target, body, c, seconds), gateway=target.gateway
    )
    if target.gateway:
        target.gateway.responses += result.ok_responses
    what = f"{target.name} streams c={c}"
    if result.errors:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items()))
        bench.problem(f"{what}: {result.error_count} bad streams ({errors})")
    if not result.streams or math.isnan(result.ttft_ms["p50"]):
        bench.problem(f"{what}: no stream completed in the measured duration")
    bench.note(
        f"{result.streams_per_s:,.0f} streams/s, TTFT p50 {result.ttft_ms['p50']:.2f} ms, "
        f"total p50 {result.total_ms['p50']:.2f} ms, {result.streams} streams "
        f"(generator at {result.cpu_share:.0%} of a core)"
    )
    return StreamPoint(target.name, c, result)
