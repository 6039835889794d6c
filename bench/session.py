"""What the benchmark's phases share: the request, the running gateways, the bookkeeping."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis
import stack
from redis_calls import RedisCalls, RedisProbe
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from variants import Variant

T = TypeVar("T")

PATH = "/v1/chat/completions"
BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
# The streaming request: as BODY, streamed with the usage chunk, and room for the mock's
# stream length (its output_tokens, set by --stream-tokens) below max_tokens.
STREAM_BODY = (
    '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":256,'
    '"stream":true,"stream_options":{"include_usage":true}}'
)



def prompt_body(chars: int) -> str:
    """BODY with bench/security.py's deterministic mixed prompt of ``chars`` characters."""
    from security import make_prompt  # bench/security.py

    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": make_prompt(chars)}],
            "max_tokens": 16,
        }
    )

def auth_headers(key: str) -> dict[str, str]:
    return {"content-type": "application/json", "authorization": f"Bearer {key}"}


@dataclasses.dataclass
class Gateway:
    """One variant's gateway process, and what was counted while it was being driven."""

    variant: Variant
    service: stack.Service
    port: int
    key: str
    db: Path
    responses: int = 0
    upstream_calls: int = 0
    redis: RedisCalls | None = None  # the Redis variant only

    @property
    def url(self) -> str:
        return f"http://{stack.HOST}:{self.port}{PATH}"


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    name: str  # report.DIRECT, a variant's label or report.LITELLM
    url: str
    headers: dict[str, str]  # of every request (wrk's script sends them too)
    script: Path  # wrk's Lua script
    gateway: Gateway | None  # None for the mock itself and for LiteLLM


@dataclasses.dataclass
class Bench:
    """What the phases share: the tools, the temp dir and the running services."""

    args: argparse.Namespace
    progress: Progress
    wrk: str = ""
    tmp: Path = Path()
    services: list[stack.Service] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    mock: stack.Service | None = None
    mock_port: int = 0
    body: str = BODY  # the measured request (run.py --prompt-chars makes a longer one)
    probe: RedisProbe | None = None  # set when the Redis variant runs

    def phase(self, label: str, work: Callable[[], T], *, gateway: Gateway | None = None) -> T:
        """Run one step under a status line, then log it as done.

        For traffic to a ``gateway``, the calls the mock received meanwhile are counted: its
        ledger must end up with exactly one row per upstream call. For the Redis variant,
        the Redis commands of the same span are counted too.
        """
        task = self.progress.add_task(escape(label), total=None)
        span: RedisCalls | None = None  # the Redis commands of this step, Redis variant only
        try:
            before = stack.mock_requests_settled(self.mock_port) if gateway else 0
            probe = self.probe if gateway and gateway.redis is not None else None
            redis_before = probe.snapshot() if probe else None
            result = work()
            if gateway:
                calls = stack.mock_requests_settled(self.mock_port) - before
                gateway.upstream_calls += calls
                if probe and redis_before is not None and gateway.redis is not None:
                    span = RedisCalls(calls, probe.since(redis_before))
                    gateway.redis += span
        finally:
            self.progress.remove_task(task)
        self.progress.console.print(f"[green]✓[/] {escape(label)}")
        if span is not None:
            self.note(
                f"Redis per request: {span.per_request(span.evalsha):.3f} EVALSHA, "
                f"{span.per_request(span.usage.reads):.3f} round trips ({span.requests} requests)"
            )
            if span.usage.disturbed:
                self.progress.console.print(
                    "[yellow]warning:[/] another client used Redis meanwhile: these Redis "
                    "figures include its commands"
                )
        return result

    def note(self, text: str) -> None:
        self.progress.console.print(f"  {escape(text)}", highlight=False)

    def problem(self, text: str) -> None:
        """Record what makes the run suspect; the caller fails after writing results."""
        self.problems.append(text)
        self.progress.console.print(f"[bold red]✗ {escape(text)}[/]", highlight=False)


def new_bench(args: argparse.Namespace, prefix: str) -> tuple[Bench, Console]:
    """A Bench with its own temp dir, and the console its progress and report print to."""
    # Piped into a file or a log, rich would wrap the tables at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 160)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    bench = Bench(args, Progress(*columns, console=console, transient=True))
    bench.tmp = Path(tempfile.mkdtemp(prefix=prefix))
    return bench, console


def show_logs(bench: Bench, console: Console) -> None:
    for service in bench.services:
        console.print(f"[bold]--- last lines of {service.name} log ({service.log}) ---[/]")
        console.print(service.tail(), markup=False, highlight=False)


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
