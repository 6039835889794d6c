"""The process's one Redis client: one connection pool, shared by everything that keeps state
in Redis -- the budget counters (``budgets.redis_store.RedisStore``) and the circuit breakers'
shared state (``routing.breakers.BreakerBoard``).

Why here: connections are made in storage, like the database engines. The domain packages
that use Redis (budgets, routing) import neither storage nor config, so they cannot build a
client themselves and cannot each build one differently: the composition root
(``app/factory.py``) builds the client from ``[redis]`` and hands the same one to each, and a
CLI command that reads Redis builds its own here too. (In ``core`` the domain could build
clients of its own again; ``config`` imports this module only for its limits and URL check.)

How the client is built, and why:

- **One pool of at most ``max_connections``** (a ``BlockingConnectionPool``): past it a
  command waits for a free connection, up to the timeout, instead of failing at once (as
  redis-py's default pool does at its limit).
- **A timeout on everything** (``timeout``: connecting, waiting for a pooled connection,
  every answer): a stalled Redis fails a command within it rather than hanging a request.
- **No retries by redis-py**, set explicitly: its default varies by version and constructor
  (8.1: ``Redis(host=...)`` resends up to ten times, ``from_url`` not at all). A command that
  timed out may still run when Redis resumes, so sending it again may run it twice -- for a
  counter script an unknown-outcome duplicate. The budget store makes one
  late copy harmless (settles idempotent per lease, abandons); copies it never sent are
  beyond it. Callers that want another try decide it themselves.
- **Replies are bytes** (``decode_responses`` off): the counter scripts' JSON is read from
  bytes; the breaker board decodes the few strings it reads.
- **Named** ``costwarden`` (``CLIENT SETNAME`` as each connection opens), so an operator
  can tell the gateway's connections apart in ``CLIENT LIST``.
- **Pub/sub**: a redis-py ``PubSub`` takes a connection from this pool when it subscribes and
  holds it until it is closed, so every subscription counts against ``max_connections``
  (hence at least :data:`MIN_CONNECTIONS`).

Lifetime: building opens no connection (the pool connects on first use); the owner closes
the client (``await client.aclose()``, which closes the pool) once, after its users stopped.

**Redis Cluster** (``[redis] cluster = true``; ``url`` names any one node, the client learns
the others and the slot map from it): a ``redis.asyncio.RedisCluster`` built with the same
timeout, client name, bytes replies and no retries. What redis-py 8.1's cluster client does,
and why that is still "never resends a command that may have run":

- Its own retry loop (``retry``: after a ``ConnectionError``, ``TimeoutError``,
  ``ClusterDownError`` or ``SlotNotCoveredError`` it refreshes the slot map and sends the
  command again) runs ``retry.get_retries()`` times: set to 0 here, so such an error is
  raised to the caller at once (its default, 3, would resend a timed-out script).
- Each node's connections are made by redis-py with ``Retry(NoBackoff(), 0)`` whatever the
  client is given (``ClusterNode.acquire_connection``): no resend below the cluster loop.
- ``MOVED``, ``ASK`` and ``TRYAGAIN`` replies are followed (up to 16 hops per command) even
  so: the node that answers one did *not* run the command (a redirection is refused before
  execution), so following it sends the command once to where it runs. That is not a retry
  of an unknown outcome.
- Waiting for a connection: redis-py's cluster nodes have no blocking pool (a command that
  finds all of its node's ``max_connections`` busy fails at once, ``MaxConnectionsError``).
  So the client here (:class:`WaitingCluster`) lets at most ``max_connections -``
  :data:`MIN_CONNECTIONS` commands be in flight per process -- never more than one node
  has connections for -- and a command past that waits for one to finish, up to the timeout
  (then a ``ConnectionError``, as the one-node pool's). The rest of each node's connections
  are for what does not pass through ``execute_command``: pipelines (the heartbeat, reads
  of several counters) and pub/sub subscriptions.
- After a connection error the next command first re-reads the slot map (a ``CLUSTER
  SLOTS`` to a known node, each with the timeout). A key-based command is sent to the
  primary owning its slot; a script's keys must share one slot (the budget keys carry
  their tenant as a hash tag, see budgets/redis_store.py). Pub/sub (``SUBSCRIBE`` and
  ``PUBLISH``) works across the nodes: Redis forwards every message on the cluster bus.
- ``SCRIPT LOAD`` goes to every primary (redis-py fans it out), and a script missing on a node
  (a failover, a new node) is loaded again on ``NOSCRIPT`` by redis-py's ``AsyncScript``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.typing import EncodableT

# Connections per process by default (the counter store's own pool had 64).
MAX_CONNECTIONS = 64
# Fewer would let subscriptions (each holds one) starve commands, or one another.
MIN_CONNECTIONS = 4

# What CLIENT LIST shows for the gateway's connections (set once per connection, as it opens).
CLIENT_NAME = "costwarden"

SCHEMES = ("redis", "rediss", "unix")
_SECRET_QUERY_KEYS = frozenset({"password", "pass", "passwd", "pwd"})


class WaitingCluster(RedisCluster):
    """A ``RedisCluster`` whose commands wait, up to ``wait_timeout``, for one of ``slots``
    (see the module docstring) instead of failing when a node's connections are all busy."""

    def __init__(self, *args: Any, wait_timeout: float, slots: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting_slots = asyncio.Semaphore(slots)
        self._wait_timeout = wait_timeout

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_timeout):
                await self._waiting_slots.acquire()
        except TimeoutError:
            raise RedisConnectionError("no free Redis Cluster connection in time") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._waiting_slots.release()


def db_tag(client: Redis | RedisCluster) -> str:
    """What a pub/sub channel's name carries of ``client``'s database: ``""`` on database 0
    and on a Cluster (which has only that one), else ``":db<n>"``.

    Channels are server-wide, not per database: two deployments sharing one Redis on two
    databases heard each other's events and breaker changes (a foreign event whose id
    happened to be the next one expected was delivered to the other's streams)."""
    if isinstance(client, RedisCluster):
        return ""
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return f":db{db}" if db else ""


def redis_client(
    url: str, *, timeout: float, max_connections: int, cluster: bool = False
) -> Redis | RedisCluster:
    """The client every user of Redis in this process shares (see the module docstring):
    a Redis Cluster client when ``cluster``.

    Opens no connection, logs nothing (the owner logs :func:`describe` when it starts, once
    logging is set up). ``url`` must have passed :func:`url_problem`; config does that.
    """
    if cluster:
        return WaitingCluster.from_url(
            url,
            wait_timeout=timeout,
            slots=max(1, max_connections - MIN_CONNECTIONS),
            max_connections=max_connections,  # per node
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            client_name=CLIENT_NAME,
            require_full_coverage=True,  # a slot nobody serves: an error, not a guess
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,  # waiting for a free connection
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        client_name=CLIENT_NAME,
    )
    return Redis.from_pool(pool)


def describe(url: str, *, timeout: float, max_connections: int, cluster: bool = False) -> str:
    """The line a process logs about its client when it starts: no password in it."""
    if cluster:
        return (
            f"redis cluster from {redact_url(url)}: at most {max_connections} connections per "
            f"node, command timeout {timeout:g}s, no client retries "
            "(MOVED/ASK redirections followed)"
        )
    return (
        f"redis at {redact_url(url)}: one pool of at most {max_connections} connections, "
        f"command timeout {timeout:g}s, no client retries"
    )


def cluster_url_problem(url: str) -> str | None:
    """What keeps ``url`` (a valid Redis URL) from naming a Redis Cluster node, or None."""
    scheme = url.partition("://")[0].lower()
    if scheme == "unix":
        return "a Redis Cluster is reached over TCP: use a redis:// or rediss:// URL"
    if urllib.parse.urlsplit(url).path.strip("/") not in ("", "0"):
        return "a Redis Cluster has only database 0: name no other in the URL"
    return None


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a Redis URL, or None. Never quotes the URL (it may carry
    a password)."""
    expected = "must be a redis://, rediss:// or unix:// URL"
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        return expected
    details = f"{expected} (host, port, database number and options as redis-py reads them)"
    try:
        parse_url(url)
        path = urllib.parse.urlsplit(url).path
    except ValueError:
        return details
    # redis-py ignores a database it cannot read (redis://host/zero is database 0).
    if scheme.lower() != "unix" and path.strip("/") and not path.strip("/").isdigit():
        return details
    return None


def redact_url(url: str) -> str:
    """``url`` for a log line: user and password (``user:password@``) and a ``password``
    query parameter replaced by ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    except ValueError:  # unparseable: keep only what cannot be a secret
        return url.partition("://")[0] + "://***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_QUERY_KEYS else urllib.parse.urlencode({k: v})
        for k, v in pairs
    )
    # Not urlunsplit: it writes unix:///path as unix:/path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
