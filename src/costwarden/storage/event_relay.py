"""Redis pub/sub as the event bus's relay: committed batches of events, to every process.

Each message is one batch (a JSON list of ``[id, ts_ms, kind, org_id, data]``), published on
one channel (one per Redis database: ``storage.redis.db_tag``) after the batch is in the log;
the log, not the relay, is the record, so a message lost while a connection is down is read
from the log later (see ``core.events``).
The subscription holds one connection of the process's client pool while it listens.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from costwarden.storage.redis import db_tag

logger = logging.getLogger(__name__)

CHANNEL = "costwarden:events"
_IDLE_READ_SECONDS = 1.0


class RedisEventRelay:
    def __init__(self, client: Redis | RedisCluster, channel: str = CHANNEL) -> None:
        self._client = client
        self._channel = channel + db_tag(client)  # channels are server-wide

    async def publish(self, message: bytes) -> None:
        await self._client.publish(self._channel, message)

    async def listen(self, on_ready: Callable[[], None]) -> AsyncIterator[bytes]:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            on_ready()
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_IDLE_READ_SECONDS
                )
                if message is not None and message.get("type") == "message":
                    yield message["data"]
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
