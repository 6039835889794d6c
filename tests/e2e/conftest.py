"""Fixtures of the multi-process tests: PostgreSQL + Redis shared by real gateway processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.e2e.event_streams import REDIS_URL
from tests.helpers import require_redis, scratch_pg_database


@pytest.fixture
def shared_stack(pg_ready: None) -> Iterator[str]:
    """A scratch PostgreSQL database's URL, and Redis database 13 flushed before and after."""
    require_redis(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    with scratch_pg_database() as url:
        yield url
    client.flushdb()
    client.close()
