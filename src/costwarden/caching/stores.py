"""Where cache entries live: in this process (:class:`MemoryCache`) or in Redis, shared by the
gateway's processes (:class:`RedisCache`). Both keep bytes (``entry.encode``) under the cache
key (``keys.cache_key``, the namespace already inside its hash) for a time to live.

A cache is an optimisation, never a dependency: a store that fails answers "not there" and
drops the write, logging a warning, and the request goes to the model as if the cache were
empty. Nothing here raises into the request path.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cw:cache:"
# Longer would be no cache but an archive (and an infinite ttl has no PX to give Redis).
MAX_TTL = 2.0**31


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None:
        """The entry under ``key``, or None (absent, expired, or the store failed)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (best effort)."""
        ...


class MemoryCache:
    """An in-process LRU bounded in bytes, each entry with an expiry.

    An entry's size is its value's bytes plus its key's (the dict and tuple around them are
    left out: a constant per entry, small beside an answer's body). A value that could never
    fit is not stored. Expired entries are dropped when read, and otherwise age out of the
    LRU order like any other. Every operation is O(1) (one ``OrderedDict``), and needs no
    lock: it runs on the one event loop.

    ``clock``: monotonic seconds (tests pass their own), so a wall clock jump cannot expire
    everything or keep everything.
    """

    __slots__ = ("max_bytes", "_clock", "_entries", "_bytes")

    def __init__(self, max_bytes: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        # key -> (value, expires at), least recently used first
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires = found
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        # The old value goes in any case: the new one replaces it, even when not stored.
        if key in self._entries:
            self._drop(key)
        size = len(value) + len(key)
        if not ttl > 0 or size > self.max_bytes:  # (not "<= 0": NaN is no ttl either)
            return
        while self._bytes + size > self.max_bytes:
            old_key, (old, _) = self._entries.popitem(last=False)
            self._bytes -= len(old) + len(old_key)
        self._entries[key] = (value, self._clock() + ttl)
        self._bytes += size

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value) + len(key)


class RedisCache:
    """Entries in Redis: GET, and SET with a PX expiry (Redis drops them itself).

    Given the app's one client (``storage/redis.py``: a timeout on every command, no
    retries), which it never closes. A Redis error or timeout is logged (one warning per
    failed command, naming the operation and the error, never the entry) and the cache
    answers a miss or drops the write.
    """

    __slots__ = ("_redis", "prefix")

    def __init__(self, redis: Redis | RedisCluster, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self.prefix = prefix

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self.prefix + key)
        except (RedisError, OSError) as exc:  # OSError covers the builtin TimeoutError
            logger.warning(
                "response cache: reading Redis failed, served as a miss: %s: %s",
                type(exc).__name__,
                exc,
            )
            return None
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not ttl > 0:
            return
        px = max(1, math.ceil(min(ttl, MAX_TTL) * 1000))
        try:
            await self._redis.set(self.prefix + key, value, px=px)
        except (RedisError, OSError) as exc:
            logger.warning(
                "response cache: writing Redis failed, answer not kept: %s: %s",
                type(exc).__name__,
                exc,
            )
