"""Cache stores: the in-process LRU (expiry, the byte bound, eviction order) and the Redis
store against a real Redis (GET, SET with PX, the prefix), which answers a miss and drops
the write -- logging a warning, raising nothing -- when Redis is down or stalls.

The Redis tests use db 15 of the Redis on 6379 (``COSTWARDEN_TEST_REDIS``) with a key prefix
of their own, and delete only their own keys; when Redis is unreachable they are skipped, or
fail when ``CI`` is set (``tests.helpers.require_redis``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from costwarden.caching.stores import DEFAULT_PREFIX, MemoryCache, RedisCache, ResponseCache
from tests.helpers import FlakyLink, free_port, process_redis, require_redis

REDIS_URL = os.environ.get("COSTWARDEN_TEST_REDIS", "redis://127.0.0.1:6379/15")
KEY = "a" * 64  # a cache key: 64 hex digits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def round_trip(cache: ResponseCache) -> bytes | None:
    """What both stores do, through the protocol the gateway holds them by."""
    await cache.set(KEY, b"answer", 60)
    return await cache.get(KEY)


# --------------------------------------------------------------------------- memory


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_memory_get_set_and_expiry(clock: Clock) -> None:
    cache = MemoryCache(10_000, clock=clock)
    assert await round_trip(cache) == b"answer"
    assert await cache.get("missing") is None
    clock.now += 59.999
    assert await cache.get(KEY) == b"answer"
    clock.now += 0.001  # expired at exactly its ttl
    assert await cache.get(KEY) is None
    assert len(cache) == 0 and cache.bytes_used == 0  # dropped when read


async def test_memory_counts_bytes_and_replaces(clock: Clock) -> None:
    cache = MemoryCache(10_000, clock=clock)
    await cache.set("k1", b"x" * 100, 10)
    await cache.set("k2", b"y" * 50, 10)
    assert len(cache) == 2 and cache.bytes_used == 102 + 52  # values and keys
    await cache.set("k1", b"z" * 10, 10)
    assert len(cache) == 2 and cache.bytes_used == 12 + 52
    assert await cache.get("k1") == b"z" * 10


async def test_memory_evicts_the_least_recently_used(clock: Clock) -> None:
    cache = MemoryCache(3 * 12, clock=clock)  # room for three 10-byte values with 2-byte keys
    for key in ("k1", "k2", "k3"):
        await cache.set(key, b"v" * 10, 10)
    assert await cache.get("k1") is not None  # k1 used: k2 is now the oldest
    await cache.set("k4", b"v" * 10, 10)
    assert [await cache.get(k) is not None for k in ("k1", "k2", "k3", "k4")] == [
        True, False, True, True
    ]  # fmt: skip
    # (the reads made the order k1, k3, k4) a larger value evicts as many as it needs,
    # oldest first
    await cache.set("k5", b"v" * 22, 10)
    assert [await cache.get(k) is not None for k in ("k1", "k3", "k4", "k5")] == [
        False, False, True, True
    ]  # fmt: skip
    assert cache.bytes_used == 12 + 24 == cache.max_bytes


async def test_memory_does_not_keep_what_cannot_fit_or_expires_at_once(clock: Clock) -> None:
    cache = MemoryCache(100, clock=clock)
    await cache.set("k1", b"small", 10)
    await cache.set("k2", b"v" * 99, 10)  # 99 + 2 > 100: never fits, evicts nothing
    assert await cache.get("k2") is None and await cache.get("k1") == b"small"
    await cache.set("k3", b"v" * 98, 10)  # exactly fits, after evicting k1
    assert await cache.get("k3") is not None and await cache.get("k1") is None
    for ttl in (0, -1, float("nan")):
        await cache.set("k3", b"new", ttl)  # replaces the old value with nothing
        assert await cache.get("k3") is None
    assert len(cache) == 0 and cache.bytes_used == 0


async def test_memory_stale_entries_age_out_like_others(clock: Clock) -> None:
    cache = MemoryCache(30, clock=clock)
    await cache.set("k1", b"v" * 10, 1)
    clock.now += 5  # k1 expired, never read again
    await cache.set("k2", b"v" * 10, 10)
    await cache.set("k3", b"v" * 10, 10)  # evicts k1, the least recently used
    assert len(cache) == 2 and cache.bytes_used == 24


# --------------------------------------------------------------------------- redis


@pytest.fixture(scope="session")
def redis_ready() -> None:
    require_redis(REDIS_URL)


@pytest.fixture
async def app_redis(redis_ready: None) -> AsyncIterator[redis.asyncio.Redis]:
    """A client as the app builds it; the test's keys are deleted afterwards."""
    async with process_redis(REDIS_URL) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"cwtest-cache-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def own_keys(app_redis: redis.asyncio.Redis, prefix: str) -> AsyncIterator[None]:
    yield
    keys = [k async for k in app_redis.scan_iter(match=prefix + "*")]
    if keys:
        await app_redis.delete(*keys)


@pytest.mark.usefixtures("own_keys")
async def test_redis_get_set_with_px(app_redis: redis.asyncio.Redis, prefix: str) -> None:
    cache = RedisCache(app_redis, prefix=prefix)
    assert await round_trip(cache) == b"answer"
    assert await app_redis.get(prefix + KEY) == b"answer"  # the key: prefix + cache key
    assert 59_000 < await app_redis.pttl(prefix + KEY) <= 60_000
    assert await cache.get("b" * 64) is None
    body = bytes(range(256)) * 1000  # any bytes, as they are
    await cache.set(KEY, body, 0.5)
    assert await cache.get(KEY) == body
    assert 0 < await app_redis.pttl(prefix + KEY) <= 500
    await cache.set(KEY, b"x", 0.0001)  # rounded up to Redis's 1 ms
    assert await app_redis.pttl(prefix + KEY) in (-2, 0, 1)
    await cache.set("c" * 64, b"x", 0)  # no time to keep it: not sent
    assert await app_redis.exists(prefix + "c" * 64) == 0
    await cache.set("d" * 64, b"x", float("inf"))  # capped, not an error
    assert await app_redis.pttl(prefix + "d" * 64) > 10**12


def test_redis_default_prefix() -> None:
    assert RedisCache(redis.asyncio.Redis()).prefix == DEFAULT_PREFIX == "cw:cache:"


async def test_redis_down_is_a_miss_and_a_warning(
    redis_ready: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens on the port: connecting fails at once."""
    async with process_redis(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5) as down:
        cache = RedisCache(down)
        with caplog.at_level(logging.WARNING, logger="costwarden.caching.stores"):
            await cache.set(KEY, b"secret answer", 60)
            assert await cache.get(KEY) is None
    warnings = [r for r in caplog.records if r.name == "costwarden.caching.stores"]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.WARNING]
    assert "writing Redis failed" in warnings[0].getMessage()
    assert "reading Redis failed" in warnings[1].getMessage()
    assert all("secret" not in r.getMessage() and KEY not in r.getMessage() for r in warnings)


async def test_redis_stalled_is_a_miss_after_the_timeout(
    redis_ready: None, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis answers, but its answers are lost: each command times out."""
    async with FlakyLink(REDIS_URL) as link:
        async with process_redis(link.url, timeout=0.2) as client:
            cache = RedisCache(client, prefix=prefix)
            link.drop_answers = True
            with caplog.at_level(logging.WARNING, logger="costwarden.caching.stores"):
                await cache.set(KEY, b"x", 60)  # it may still run: Redis got it
                assert await cache.get(KEY) is None
            assert len([r for r in caplog.records if "Timeout" in r.getMessage()]) == 2
    async with process_redis(REDIS_URL) as direct:
        await direct.delete(prefix + KEY)
