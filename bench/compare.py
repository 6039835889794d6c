"""The report's newer sections: streaming, LiteLLM beside costwarden, the targets (the
standing ones, and scale-out's), memory."""

from __future__ import annotations

import dataclasses
import math

from procs import mib
from results import BUDGETS, DIRECT, LEASED, LITELLM, Run, target_name

# The goals, checked against costwarden with all controls on (BUDGETS).
MEDIAN_OVERHEAD_MS = 0.6  # at c=1
P99_OVERHEAD_MS = 2.0  # at c=1
MIN_RPS = 3000.0  # at c=64
RPS_AT = 64
TTFT_OVERHEAD_MS = 1.0  # streaming, p50
LITELLM_FACTOR = 10.0  # costwarden's req/s at least this many times LiteLLM's, overhead 1/x
# Scale-out (issue 21), checked against the leased variant.
LEASED_OVERHEAD_MS = 0.45  # c=1 overhead p50, at most
LEASED_SHARE = 0.8  # of the in-process variant's req/s at c=RPS_AT, at least
LEASED_REDIS_USEC = 30.0  # Redis's time per request, at most
LEASED_ROUND_TRIPS = 0.2  # client round trips per request, fewer than
ALL_CONTROLS = (
    "costwarden with all controls on (the budgets in-process variant: virtual-key auth, "
    "budgets and rate limits reserving before each upstream call and settling after it, "
    "the ledger)"
)


def _fmt(value: float, digits: int = 2, sign: bool = False) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def stream_section(run: Run) -> list[str]:
    if not run.streams:
        return []
    rows = [
        "| target | connections | streams/s | TTFT p50 ms | TTFT p99 ms | TTFT overhead p50 ms "
        "| TTFT overhead p99 ms | total p50 ms | total p99 ms | bad streams |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in run.streams:
        r, d = p.result, run.stream(DIRECT, p.connections)
        over = "| – | –"
        if p.target != DIRECT and d is not None:
            over = (
                f"| {_fmt(r.ttft_ms['p50'] - d.ttft_ms['p50'], sign=True)} "
                f"| {_fmt(r.ttft_ms['p99'] - d.ttft_ms['p99'], sign=True)}"
            )
        rows.append(
            f"| {target_name(p.target)} | {p.connections} | {r.streams_per_s:,.0f} "
            f"| {_fmt(r.ttft_ms['p50'])} | {_fmt(r.ttft_ms['p99'])} {over} "
            f"| {_fmt(r.total_ms['p50'])} | {_fmt(r.total_ms['p99'])} | {r.error_count} |"
        )
    busiest = max(p.result.cpu_share for p in run.streams)
    text = (
        f"`stream: true` with `stream_options.include_usage`, driven by `bench/streamgen.py`; "
        f"the mock sends {run.stream_shape}. TTFT: from writing the request to receiving the "
        f"first event with generated content; total: to the end of the stream (`data: [DONE]`). "
        f"Overheads against the mock direct at the same concurrency. The generator used at "
        f"most {busiest:.0%} of a core."
    )
    return ["### Streaming", text, "\n".join(rows)]


def _overhead_p50(run: Run, target: str, c: int) -> float:
    r, d = run.result(target, c), run.result(DIRECT, c)
    return r.p50_ms - d.p50_ms if r and d else math.nan


def _ttft_overhead_p50(run: Run, target: str, c: int) -> float:
    r, d = run.stream(target, c), run.stream(DIRECT, c)
    return r.ttft_ms["p50"] - d.ttft_ms["p50"] if r and d else math.nan


def _times(value: float) -> str:
    return "–" if math.isnan(value) else ("∞" if math.isinf(value) else f"{value:,.1f}×")


def _ratio(num: float, den: float) -> float:
    """num / den; infinite when only den is at or below zero (an overhead lost in noise)."""
    if math.isnan(num) or math.isnan(den) or num <= 0:
        return math.nan
    return num / den if den > 0 else math.inf


def litellm_section(run: Run) -> list[str]:
    measured = [p.target for p in run.points] + [p.target for p in run.streams]
    if LITELLM not in measured:
        return []
    rows = [
        "| load | connections | costwarden /s | LiteLLM /s | costwarden ÷ LiteLLM "
        "| costwarden overhead p50 ms | LiteLLM overhead p50 ms | LiteLLM ÷ costwarden |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in sorted({p.connections for p in run.points}):
        ours, theirs = run.result(BUDGETS, c), run.result(LITELLM, c)
        if ours is None or theirs is None:
            continue
        mine, other = _overhead_p50(run, BUDGETS, c), _overhead_p50(run, LITELLM, c)
        rows.append(
            f"| requests | {c} | {ours.rps:,.0f} | {theirs.rps:,.0f} "
            f"| {_times(_ratio(ours.rps, theirs.rps))} | {_fmt(mine, sign=True)} "
            f"| {_fmt(other, sign=True)} | {_times(_ratio(other, mine))} |"
        )
    for c in sorted({p.connections for p in run.streams}):
        s_ours, s_theirs = run.stream(BUDGETS, c), run.stream(LITELLM, c)
        if s_ours is None or s_theirs is None:
            continue
        mine, other = _ttft_overhead_p50(run, BUDGETS, c), _ttft_overhead_p50(run, LITELLM, c)
        rows.append(
            f"| streams (overhead: TTFT) | {c} | {s_ours.streams_per_s:,.0f} "
            f"| {s_theirs.streams_per_s:,.0f} "
            f"| {_times(_ratio(s_ours.streams_per_s, s_theirs.streams_per_s))} "
            f"| {_fmt(mine, sign=True)} | {_fmt(other, sign=True)} "
            f"| {_times(_ratio(other, mine))} |"
        )
    text = (
        f"Side by side: {ALL_CONTROLS}, and LiteLLM's proxy (one worker, no database, "
        f"master-key auth) relaying to the same mock, under the same load in the same run. "
        f"Throughput ratio: costwarden's req/s (streams/s) over LiteLLM's; overhead ratio: "
        f"LiteLLM's median overhead over costwarden's (∞ when costwarden's is within noise of "
        f"zero)."
    )
    return ["### costwarden beside LiteLLM", text, "\n".join(rows)]


@dataclasses.dataclass(frozen=True, slots=True)
class Goal:
    text: str
    figure: str
    met: bool | None  # None: not measured in this run

    def line(self) -> str:
        mark = "–" if self.met is None else ("✓" if self.met else "✗")
        return f"- {mark} {self.text}: {self.figure if self.met is not None else 'not measured'}"


def goals(run: Run) -> list[Goal]:
    ours, direct = run.result(BUDGETS, 1), run.result(DIRECT, 1)
    over = over99 = math.nan
    raw = ""
    if ours and direct:
        over, over99 = ours.p50_ms - direct.p50_ms, ours.p99_ms - direct.p99_ms
        raw = f"{over99:+.2f} ms (its p99 {ours.p99_ms:.2f} ms, direct {direct.p99_ms:.2f} ms)"
    busy = run.result(BUDGETS, RPS_AT)
    rps = busy.rps if busy else math.nan
    found = [
        _goal(f"median overhead ≤ {MEDIAN_OVERHEAD_MS:g} ms at c=1", over, MEDIAN_OVERHEAD_MS),
        _goal(
            f"p99 overhead ≤ {P99_OVERHEAD_MS:g} ms at c=1 (checked: p99 minus the direct p99)",
            over99,
            P99_OVERHEAD_MS,
            raw or None,
        ),
        _goal(f"≥ {MIN_RPS:,.0f} req/s at c={RPS_AT}", -rps, -MIN_RPS, f"{rps:,.0f} req/s"),
    ]
    for c in sorted({p.connections for p in run.streams}):
        text = f"streaming TTFT overhead p50 ≤ {TTFT_OVERHEAD_MS:g} ms at c={c}"
        found.append(_goal(text, _ttft_overhead_p50(run, BUDGETS, c), TTFT_OVERHEAD_MS))
    if not run.streams:
        found.append(Goal(f"streaming TTFT overhead p50 ≤ {TTFT_OVERHEAD_MS:g} ms", "", None))
    return found + _litellm_goals(run)


def _goal(text: str, value: float, limit: float, figure: str | None = None) -> Goal:
    """Met if ``value <= limit`` (both negated for "at least"); figure: the value in ms."""
    shown = f"{value:+.2f} ms" if figure is None else figure
    return Goal(text, shown, None if math.isnan(value) else value <= limit)


def _litellm_goals(run: Run) -> list[Goal]:
    cs = sorted({p.connections for p in run.points if p.target == LITELLM})
    if not cs:
        return [
            Goal(f"req/s ≥ {LITELLM_FACTOR:g}× LiteLLM's", "", None),
            Goal(f"median overhead ≤ 1/{LITELLM_FACTOR:g} of LiteLLM's", "", None),
        ]
    found = []
    for c in cs:
        ours, theirs = run.result(BUDGETS, c), run.result(LITELLM, c)
        times = _ratio(ours.rps, theirs.rps) if ours and theirs else math.nan
        text = f"req/s ≥ {LITELLM_FACTOR:g}× LiteLLM's at c={c}"
        found.append(_goal(text, -times, -LITELLM_FACTOR, _times(times)))
    for c in cs:
        mine, other = _overhead_p50(run, BUDGETS, c), _overhead_p50(run, LITELLM, c)
        times = _ratio(other, mine)
        figure = f"{_fmt(mine, sign=True)} ms, LiteLLM's {_times(times)} that"
        text = f"median overhead ≤ 1/{LITELLM_FACTOR:g} of LiteLLM's at c={c}"
        found.append(_goal(text, -times, -LITELLM_FACTOR, figure))
    return found


def goals_section(run: Run) -> list[str]:
    text = f"The issue's goals, checked against {ALL_CONTROLS}:"
    return ["### Targets", text + "\n\n" + "\n".join(g.line() for g in goals(run))]


def scale_out_goals(run: Run) -> list[Goal]:
    """Issue 21's targets for the leased variant, in this run (empty when it did not run)."""
    leased = next((g for g in run.gateways if g.label == LEASED), None)
    if leased is None:
        return []
    over = _overhead_p50(run, LEASED, 1)
    ours, theirs = run.result(LEASED, RPS_AT), run.result(BUDGETS, RPS_AT)
    share, rates = math.nan, "–"
    if ours and theirs and theirs.rps:
        share = ours.rps / theirs.rps
        rates = f"{share:.0%} ({ours.rps:,.0f} against {theirs.rps:,.0f} req/s)"
    found = [
        _goal(
            f"c=1 overhead p50 ≤ {LEASED_OVERHEAD_MS:g} ms",
            over,
            LEASED_OVERHEAD_MS,
            None if math.isnan(over) else f"{over:+.3f} ms",
        ),
        _goal(
            f"c={RPS_AT} req/s ≥ {LEASED_SHARE:.0%} of in-process",
            -share,
            -LEASED_SHARE,
            rates,
        ),
    ]
    calls = leased.redis
    if calls is None or not calls.requests:
        return found + [Goal("Redis time and round trips per request", "", None)]
    scripts = calls.per_request(calls.usage.usec.get("evalsha", 0))
    # Every command's time summed counts a script's commands twice (in it and on their own):
    # an upper bound, shown beside.
    bound = calls.per_request(sum(calls.usage.usec.values()))
    trips = calls.per_request(calls.usage.reads)
    return [
        *found,
        _goal(
            f"Redis time per request ≤ {LEASED_REDIS_USEC:g} µs",
            scripts,
            LEASED_REDIS_USEC,
            f"{scripts:.1f} µs in scripts (every command's time summed: {bound:.1f} µs)",
        ),
        Goal(
            f"client round trips per request < {LEASED_ROUND_TRIPS:g}",
            f"{trips:.3f}",
            trips < LEASED_ROUND_TRIPS,
        ),
    ]


def scale_out_section(run: Run) -> list[str]:
    found = scale_out_goals(run)
    if not found:
        return []
    text = (
        f"Issue 21's goals, checked against {target_name(LEASED)} (Redis figures: the "
        f"**Redis calls** paragraph below):"
    )
    return ["### Scale-out targets", text + "\n\n" + "\n".join(g.line() for g in found)]


def rss_section(run: Run) -> list[str]:
    if not run.peak_rss_kib:
        return []
    rows = ["| process | peak RSS |", "| --- | ---: |"]
    rows += [f"| {target_name(name)} | {mib(kib)} |" for name, kib in run.peak_rss_kib]
    text = (
        "Peak resident set of each server process after all its runs: `VmHWM` from "
        "`/proc/<pid>/status`, summed over the process and any children it forked (the mock "
        "for reference)."
    )
    return ["### Peak memory", text, "\n".join(rows)]
