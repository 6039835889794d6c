"""Each deployment's live figures in this process: a moving average of its upstream latency
and its requests in flight, what the ``lowest-latency`` and ``least-busy`` strategies rank
by. Per process by design: a replica ranks by what it sees itself, with no shared state to
wait on (and each replica's own load is what least-busy should spread).
"""

from __future__ import annotations

from costwarden.routing.strategy import Strategy, ewma

# The strategies that rank by these figures: without a route using one they are not kept.
LIVE_STRATEGIES: frozenset[Strategy] = frozenset({"lowest-latency", "least-busy"})


class LiveFigures:
    __slots__ = ("latency_ms", "in_flight")

    def __init__(self) -> None:
        self.latency_ms: dict[str, float] = {}
        self.in_flight: dict[str, int] = {}

    def started(self, deployment: str) -> None:
        self.in_flight[deployment] = self.in_flight.get(deployment, 0) + 1

    def ended(self, deployment: str) -> None:
        self.in_flight[deployment] = max(0, self.in_flight.get(deployment, 0) - 1)

    def measured(self, deployment: str, latency_ms: float) -> None:
        """An upstream's time to its response headers (a failed try is not a sample: its
        breaker, not its speed, decides whether it is tried)."""
        self.latency_ms[deployment] = ewma(self.latency_ms.get(deployment), latency_ms)
