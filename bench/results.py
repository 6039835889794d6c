"""What one benchmark run measured: the figures the report and the comparison are made of."""

from __future__ import annotations

import dataclasses

from loadgen import WrkResult
from redis_calls import RedisCalls
from variants import VARIANTS

DIRECT = "mock direct"
LITELLM = "LiteLLM proxy"
MOCK_PROCESS = "mock upstream"
VARIANT_LABELS = frozenset(v.label for v in VARIANTS.values())
LEDGER_ONLY = VARIANTS["off"].label
BUDGETS = VARIANTS["memory"].label  # all controls on, counters in the gateway process
LEASED = VARIANTS["leased"].label  # counters in Redis, spent in leased slices


def target_name(target: str) -> str:
    """How a target is shown: the mock and LiteLLM as such, a variant as costwarden's."""
    return f"costwarden: {target}" if target in VARIANT_LABELS else target


@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    """One measured wrk run: a target at one concurrency."""

    target: str  # DIRECT, a variant's label or LITELLM
    connections: int
    result: WrkResult


@dataclasses.dataclass(frozen=True, slots=True)
class StreamResult:
    """bench/streamgen.py's figures for one target at one concurrency."""

    streams: int  # measured streams (started within the measured duration)
    streams_per_s: float
    ttft_ms: dict[str, float]  # p50, p90, p99
    total_ms: dict[str, float]
    ok_responses: int  # 200s read to their end, warm-up included
    sent: int
    errors: dict[str, int]
    cpu_share: float  # the generator's CPU time over wall time (1.0 = a whole core)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclasses.dataclass(frozen=True, slots=True)
class StreamPoint:
    target: str
    connections: int
    result: StreamResult


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerCheck:
    rows: int
    responses: int  # gateway responses its clients counted (warm-ups included) + samples
    upstream_calls: int  # requests the mock received while this gateway was being driven
    in_flight_bound: int  # requests wrk may have abandoned mid-flight when a run ended
    cached: bool = False  # a response cache answered: most rows had no upstream call
    # rows of requests wrk gave up on (499): some ended before their upstream call (waiting
    # for a Redis reservation, say), so they have a row and no call
    abandoned: int = 0

    @property
    def difference(self) -> int:
        return self.rows - self.responses

    def problems(self) -> list[str]:
        """What cannot be explained by requests wrk abandoned at the end of a run."""
        found = []
        if self.cached:
            if self.upstream_calls > self.rows:
                found.append(
                    f"the gateway made {self.upstream_calls} upstream calls for {self.rows} "
                    "ledger rows"
                )
        elif not 0 <= self.rows - self.upstream_calls <= self.abandoned:
            found.append(
                f"ledger has {self.rows} rows but the gateway made {self.upstream_calls} "
                f"upstream calls (difference {self.rows - self.upstream_calls:+d}; "
                f"{self.abandoned} rows of requests the client abandoned)"
            )
        if not 0 <= self.difference <= self.in_flight_bound:
            found.append(
                f"ledger rows minus counted responses is {self.difference:+d}, outside "
                f"0..{self.in_flight_bound} (the requests wrk can abandon)"
            )
        return found


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayRun:
    """What one variant's gateway process showed besides its load figures."""

    label: str
    self_reported_ms: float
    header_samples: int
    budget_header: str | None  # x-costwarden-budget-remaining-usd of the sample request
    ledger: LedgerCheck
    redis: RedisCalls | None  # the Redis variant only


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    command: str
    duration_s: float
    wrk_version: str
    points: list[Point]
    gateways: list[GatewayRun]
    notes: list[str]  # what was not measured, and why
    problems: list[str]
    streams: list[StreamPoint] = dataclasses.field(default_factory=list)
    stream_shape: str = ""  # the mock's streams, in words
    peak_rss_kib: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    litellm_versions: dict[str, str] | None = None  # its virtualenv's, when it ran
    # bench/interpreter.py's reading before the first and after the last measured run
    python_speed_ms: tuple[float, float] | None = None
    rounds: int = 1  # wrk runs per target and concurrency, taken in turn across targets

    def result(self, target: str, connections: int) -> WrkResult | None:
        for p in self.points:
            if p.target == target and p.connections == connections:
                return p.result
        return None

    def stream(self, target: str, connections: int) -> StreamResult | None:
        for p in self.streams:
            if p.target == target and p.connections == connections:
                return p.result
        return None
