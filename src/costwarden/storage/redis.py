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
"""

from __future__ import annotations

import urllib.parse

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

# Connections per process by default (the counter store's own pool had 64).
MAX_CONNECTIONS = 64
# Fewer would let subscriptions (each holds one) starve commands, or one another.
MIN_CONNECTIONS = 4

# What CLIENT LIST shows for the gateway's connections (set once per connection, as it opens).
CLIENT_NAME = "costwarden"

SCHEMES = ("redis", "rediss", "unix")
_SECRET_QUERY_KEYS = frozenset({"password", "pass", "passwd", "pwd"})


def redis_client(url: str, *, timeout: float, max_connections: int) -> Redis:
    """The client every user of Redis in this process shares (see the module docstring).

    Opens no connection, logs nothing (the owner logs :func:`describe` when it starts, once
    logging is set up). ``url`` must have passed :func:`url_problem`; config does that.
    """
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


def describe(url: str, *, timeout: float, max_connections: int) -> str:
    """The line a process logs about its client when it starts: no password in it."""
    return (
        f"redis at {redact_url(url)}: one pool of at most {max_connections} connections, "
        f"command timeout {timeout:g}s, no client retries"
    )


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
