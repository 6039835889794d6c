"""Counting what the Redis variant asks of Redis, from the server's own statistics.

Redis 7.0 keeps no per-client command count, so the figures are server-wide deltas of
``INFO stats commandstats`` taken around each phase that drives the Redis gateway. Anything
else using the same Redis meanwhile would be counted too, so each span also checks for
other clients: the report says when the figures may include theirs.
"""

from __future__ import annotations

import dataclasses

import redis
from variants import REDIS_URL

# The probe's own commands per snapshot: taken out of every span.
_OWN = {"client|list": 1, "info": 1}


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's cumulative counters, and who is connected, at one moment."""

    commands: dict[str, int]  # calls per command name, commands run inside scripts included
    usec: dict[str, int]  # server time per command name (a script's includes its commands')
    reads: int  # socket reads processed: client round trips, a pipeline counting once
    connections: int  # connections accepted so far
    ours: int  # clients on the benchmark's database now (the gateway's and the probe)
    others: int  # clients on any other database now


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What the server did over one or more spans, without the probe's own commands."""

    commands: dict[str, int] = dataclasses.field(default_factory=dict)
    usec: dict[str, int] = dataclasses.field(default_factory=dict)
    reads: int = 0
    disturbed: int = 0  # spans during which another client was connected

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            _combine(self.commands, other.commands, 1),
            _combine(self.usec, other.usec, 1),
            self.reads + other.reads,
            self.disturbed + other.disturbed,
        )


def _combine(a: dict[str, int], b: dict[str, int], sign: int) -> dict[str, int]:
    """``a + sign * b`` per name, leaving out the names that come to zero."""
    both = {n: a.get(n, 0) + sign * b.get(n, 0) for n in a.keys() | b.keys()}
    return {n: v for n, v in both.items() if v}


@dataclasses.dataclass(frozen=True, slots=True)
class RedisCalls:
    """Redis work of the gateway requests that reached the upstream (so reserved and settled)."""

    requests: int = 0
    usage: Usage = Usage()

    def __add__(self, other: RedisCalls) -> RedisCalls:
        return RedisCalls(self.requests + other.requests, self.usage + other.usage)

    @property
    def evalsha(self) -> int:
        return self.usage.commands.get("evalsha", 0)

    @property
    def commands(self) -> int:
        return sum(self.usage.commands.values())

    @property
    def evalsha_usec(self) -> float:
        """Redis's own time per EVALSHA, in microseconds: the rest of a call is the trip."""
        calls = self.evalsha
        return self.usage.usec.get("evalsha", 0) / calls if calls else float("nan")

    def per_request(self, count: int) -> float:
        return count / self.requests if self.requests else float("nan")

    def busiest(self, n: int = 6) -> str:
        """The most called commands, per request: which of them the scripts run is visible."""
        top = sorted(self.usage.commands.items(), key=lambda kv: -kv[1])[:n]
        return ", ".join(f"{name} {self.per_request(v):.2f}" for name, v in top)


class RedisProbe:
    """One connection to the benchmark's Redis database, for the variant's whole life."""

    def __init__(self, url: str = REDIS_URL) -> None:
        self.url = url
        self._client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._db = str(self._client.connection_pool.connection_kwargs.get("db", 0))

    def check(self) -> str | None:
        """None if Redis answers, else why not (the Redis variant is then skipped)."""
        try:
            self._client.ping()
        except (redis.RedisError, OSError) as exc:
            return f"{type(exc).__name__}: {str(exc).rstrip('.')}"
        return None

    def flush(self) -> None:
        """Empty the benchmark's database: counters of an earlier run must not be found."""
        self._client.flushdb()

    def snapshot(self) -> Snapshot:
        """CLIENT LIST, then INFO: two commands, two reads, in this order every time."""
        clients = self._client.client_list()
        ours = sum(1 for c in clients if str(c.get("db")) == self._db)
        info = self._client.info("stats", "commandstats")
        stats = {k.removeprefix("cmdstat_"): v for k, v in info.items() if k.startswith("cmdstat_")}
        return Snapshot(
            commands={name: int(s["calls"]) for name, s in stats.items()},
            usec={name: int(s["usec"]) for name, s in stats.items()},
            reads=int(info["total_reads_processed"]),
            connections=int(info["total_connections_received"]),
            ours=ours,
            others=len(clients) - ours,
        )

    def since(self, before: Snapshot) -> Usage:
        """What the server did since ``before``, without the probe's own commands.

        INFO counts its own read but not its own call, so the difference holds the first
        snapshot's INFO and the second's CLIENT LIST (calls), and the second snapshot's two
        reads: all are taken out. A span is disturbed if another database had clients at
        either end, or more connections were opened than the gateway's pool grew by.
        """
        after = self.snapshot()
        opened = after.connections - before.connections
        strangers = opened - max(0, after.ours - before.ours)
        return Usage(
            commands=_combine(_combine(after.commands, before.commands, -1), _OWN, -1),
            usec={n: v for n, v in _combine(after.usec, before.usec, -1).items() if n not in _OWN},
            reads=after.reads - before.reads - 2,
            disturbed=int(bool(before.others or after.others or strangers > 0)),
        )

    def close(self) -> None:
        self._client.close()
