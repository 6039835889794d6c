"""The servers' processes: the mock, and each gateway variant with its checks after its runs."""

from __future__ import annotations

import functools
import signal

import stack
from loadgen import BenchError
from redis_calls import RedisCalls, RedisProbe
from results import MOCK_PROCESS, GatewayRun, LedgerCheck, target_name
from session import PATH, Bench, Gateway, auth_headers
from variants import BUDGET_HEADER, REDIS_URL, Variant, apply_limits

HEADER_SAMPLES = 500
STOP_TIMEOUT_S = 30.0


def start_mock(bench: Bench) -> int:
    """The mock upstream on a free port (``bench.mock``): its port."""
    port = stack.free_port()
    cmd = [*stack.cli(), "mock-upstream", "--host", stack.HOST, "--port", str(port)]
    mock = stack.Service(MOCK_PROCESS, cmd, bench.tmp / "mock.log", stack.clean_env())
    bench.services.append(mock)
    bench.mock = mock
    stack.wait_ready(mock, port, "/_mock/health")
    return port


def usable_variants(bench: Bench) -> list[Variant]:
    """The requested variants, without the Redis one if Redis does not answer."""
    chosen: list[Variant] = bench.args.variants
    if not any(v.redis for v in chosen):
        return chosen
    probe = RedisProbe()
    why = probe.check()
    if why is None:
        bench.probe = probe
        return chosen
    probe.close()
    skipped = [v for v in chosen if v.redis]
    for v in skipped:
        text = f"{target_name(v.label)} skipped, Redis at {REDIS_URL} unreachable ({why})"
        bench.notes.append(text)
        bench.progress.console.print(f"[bold yellow]! {text}[/]", highlight=False)
    left = [v for v in chosen if not v.redis]
    if not left:
        raise BenchError("no gateway variant left to measure")
    return left


def start_gateway(bench: Bench, variant: Variant, workers: int = 1) -> Gateway:
    """A fresh gateway process with its own database, key and (maybe) limits; ``workers``:
    ``serve --workers`` (bench/workers.py)."""
    port, db = stack.free_port(), bench.tmp / f"{variant.name}.db"
    toml = bench.tmp / f"{variant.name}.toml"
    config = stack.write_config(toml, db, bench.mock_port, port, variant.config_extra())
    env = stack.clean_env()
    key, key_id = stack.create_key(config, env)
    if variant.limits:
        apply_limits(db, key_id)
    if variant.redis and bench.probe:
        bench.probe.flush()  # counters of an earlier run would not match this ledger
    cmd = [*stack.cli(), "serve", "--config", str(config)]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    log = bench.tmp / f"gateway-{variant.name}.log"
    service = stack.Service(f"gateway ({variant.label})", cmd, log, env)
    bench.services.append(service)
    stack.wait_ready(service, port, "/healthz")
    calls = RedisCalls() if variant.redis else None
    return Gateway(variant, service, port, key, db, redis=calls)


def header_samples(bench: Bench, gw: Gateway) -> list[float]:
    label = f"{target_name(gw.variant.label)}: {HEADER_SAMPLES} sequential requests"
    work = functools.partial(
        stack.overhead_header_samples,
        gw.port,
        PATH,
        bench.body.encode(),
        auth_headers(gw.key),
        HEADER_SAMPLES,
    )
    samples = bench.phase(label, work, gateway=gw)
    gw.responses += len(samples)
    bench.note(f"median self-reported overhead {stack.median(samples):.3f} ms")
    return samples


def budget_header(bench: Bench, gw: Gateway) -> str | None:
    """Proof that the limits were on (or off): the budget header of one more response."""
    label = f"{target_name(gw.variant.label)}: sample request for {BUDGET_HEADER}"
    work = functools.partial(
        stack.response_headers, gw.port, PATH, bench.body.encode(), auth_headers(gw.key)
    )
    value = bench.phase(label, work, gateway=gw).get(BUDGET_HEADER)
    gw.responses += 1
    if gw.variant.limits and value is None:
        bench.problem(f"{gw.variant.label}: no {BUDGET_HEADER} header, budgets were not enforced")
    elif not gw.variant.limits and value is not None:
        bench.problem(f"{gw.variant.label}: {BUDGET_HEADER} is {value}, yet no limit was set")
    else:
        bench.note(f"{BUDGET_HEADER}: {value if value is not None else 'absent, as expected'}")
    return value


def ledger_check(bench: Bench, gw: Gateway, wrk_runs: int = 2) -> LedgerCheck:
    """SIGTERM (the gateway drains its ledger), then its rows against what was counted.

    ``wrk_runs``: wrk runs per concurrency that drove this gateway (warm-up and measured).
    """
    name = target_name(gw.variant.label)
    code = bench.phase(
        f"{name}: SIGTERM, waiting for it to drain and exit",
        lambda: gw.service.terminate(STOP_TIMEOUT_S),
    )
    # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit.
    if code not in (0, -signal.SIGTERM):
        bench.problem(f"{name} exited with status {code} after SIGTERM")
    rows = stack.count_ledger_rows(gw.db)
    abandoned = stack.count_ledger_rows(gw.db, abandoned=True)
    bound = wrk_runs * sum(bench.args.connections)  # one per connection per wrk run
    result = LedgerCheck(
        rows, gw.responses, gw.upstream_calls, bound, gw.variant.cache, abandoned=abandoned
    )
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
    for problem in result.problems():
        bench.problem(f"{name}: {problem}")
    return result


def finish(bench: Bench, gw: Gateway, wrk_runs: int = 2) -> GatewayRun:
    """After the wrk runs (``wrk_runs`` per concurrency): header samples, the budget header,
    then stop and count."""
    samples = header_samples(bench, gw)
    header = budget_header(bench, gw)
    ledger = ledger_check(bench, gw, wrk_runs)
    return GatewayRun(
        gw.variant.label, stack.median(samples), len(samples), header, ledger, gw.redis
    )
