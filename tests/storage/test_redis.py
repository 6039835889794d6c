"""The one Redis client of a gateway process: built without connecting, every command bounded
by the timeout and never resent, the URL's secrets kept out of the log line, URLs checked
without being quoted."""

from __future__ import annotations

import asyncio

import pytest
import redis
from redis.asyncio import BlockingConnectionPool

from costwarden.storage.redis import (
    CLIENT_NAME,
    describe,
    redact_url,
    redis_client,
    url_problem,
)
from tests.helpers import FlakyLink


async def test_the_client_is_built_with_one_bounded_pool_and_no_retries() -> None:
    client = redis_client("redis://127.0.0.1:1/3", timeout=0.25, max_connections=7)
    try:
        pool = client.connection_pool
        assert type(pool) is BlockingConnectionPool
        assert (pool.max_connections, pool.timeout) == (7, 0.25)
        kwargs = pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
        assert (kwargs["db"], kwargs["client_name"]) == (3, CLIENT_NAME)
        assert kwargs.get("decode_responses", False) is False
        retry = client.get_retry()
        assert retry is not None and retry.get_retries() == 0
    finally:
        await client.aclose()


async def test_a_command_whose_answer_is_lost_fails_within_the_timeout_and_ran_once(
    private_redis: str,
) -> None:
    direct = redis.Redis.from_url(private_redis)
    async with FlakyLink(private_redis) as link:
        client = redis_client(link.url, timeout=0.2, max_connections=4)
        try:
            assert await client.incr("n") == 1
            link.drop_answers = True
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(redis.exceptions.TimeoutError):
                await client.incr("n")
            assert 0.15 < loop.time() - start < 0.5
            await asyncio.sleep(0.3)  # a resend would have run by now
            assert direct.get("n") == b"2"  # it ran, once
            link.drop_answers = False
            assert await client.incr("n") == 3  # and the client goes on
        finally:
            await client.aclose()
            direct.close()


def test_the_log_line_names_redis_without_its_password() -> None:
    line = describe(
        "redis://app:Pa55word@cache.internal:6380/2?password=Pa55word",
        timeout=0.5,
        max_connections=64,
    )
    assert line == (
        "redis at redis://***@cache.internal:6380/2?password=***: one pool of at most 64 "
        "connections, command timeout 0.5s, no client retries"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@h:6379/0", "redis://***@h:6379/0"),
        ("rediss://user:pw@h/1?ssl_cert_reqs=none", "rediss://***@h/1?ssl_cert_reqs=none"),
        ("redis://h/0?Password=pw&db=2", "redis://h/0?Password=***&db=2"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("unix://:pw@/run/redis.sock", "unix://***@/run/redis.sock"),
        ("redis://u:pw@[::1", "redis://***"),  # unparseable: nothing after the scheme
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("REDIS://h", True),
        ("rediss://:pw@h:6380/1", True),
        ("unix:///run/redis.sock?db=2", True),
        ("http://:pw@h:6379", False),
        ("h:6379", False),
        ("redis://:pw@h:port/0", False),
        ("redis://:pw@h:6379/zero", False),
        ("redis://h:6379/", True),
        ("redis://h:6379/0?db=3", True),
    ],
)
def test_url_problem_never_quotes_the_url(url: str, ok: bool) -> None:
    problem = url_problem(url)
    assert (problem is None) is ok, problem
    if problem is not None:
        assert problem.startswith("must be a redis://, rediss:// or unix:// URL")
        assert "pw" not in problem and "h:" not in problem
