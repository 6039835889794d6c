"""Virtual-key authentication from an in-memory cache of every key.

The request path never queries the database: a key is hashed and looked up in a dict.
Unknown keys therefore cost a hash and a miss, not a query. A background task polls storage
for keys created or revoked since its last look (and the admin API applies its own changes
at once), so a change made by the CLI in another process is live within one poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from costwarden.core import polling
from costwarden.core.records import KeyRecord
from costwarden.gateway.asgi import Scope
from costwarden.gateway.honeypot import HoneypotTrap
from costwarden.storage import repo

logger = logging.getLogger(__name__)

# Rows committed by another process while we poll may carry an updated_at slightly older
# than our poll time; re-reading a margin keeps them from being skipped (applying is idempotent).
_POLL_MARGIN = timedelta(seconds=5)


def key_from_headers(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip().decode("latin-1")
    api_key = headers.get(b"x-api-key")
    if api_key:
        return api_key.strip().decode("latin-1")
    return None


class KeyCache:
    def __init__(self, engine: Engine, *, refresh_seconds: float = 0.5) -> None:
        self._engine = engine
        self._by_hash: dict[str, KeyRecord] = {}
        self._since: datetime | None = None
        self._poller = polling.Poller(
            "costwarden-key-cache", refresh_seconds, self._poll_once, self._poll_failed
        )
        # Where a honeypot key's use is handed (the app sets it); None: refused, not raised.
        self.trap: HoneypotTrap | None = None

    def lookup(self, key: str) -> KeyRecord | None:
        return self._by_hash.get(repo.hash_key(key))

    def from_headers(
        self, headers: dict[bytes, bytes], scope: Scope | None = None, endpoint: str = ""
    ) -> KeyRecord | None:
        """The live key a request's headers carry, if any: None for no key, an unknown or a
        revoked one, and a honeypot, whose use (given the request's ``scope``) is handed to
        the trap first: the caller answers it exactly as an unknown key."""
        token = key_from_headers(headers)
        key = None if token is None else self.lookup(token)
        if key is None or key.revoked:
            return None
        if key.honeypot:
            if scope is not None and self.trap is not None:
                self.trap.caught(key, scope, headers, endpoint)
            return None
        return key

    def apply(self, records: list[KeyRecord]) -> None:
        for record in records:
            self._by_hash[record.key_hash] = record

    def load(self) -> None:
        """Synchronous full or incremental load (startup, and the poller's body)."""
        since = self._since - _POLL_MARGIN if self._since else None
        started = datetime.now(UTC)
        records = repo.keys_changed_since(self._engine, since)
        self.apply(records)
        self._since = started

    async def start(self) -> None:
        await asyncio.to_thread(self.load)
        logger.info("key cache loaded: %d keys", len(self._by_hash))
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def _poll_once(self) -> None:
        await asyncio.to_thread(self.load)

    @staticmethod
    def _poll_failed(exc: Exception) -> None:  # the gateway keeps serving from its cache
        logger.warning("key cache refresh failed: %s", type(exc).__name__)

    def __len__(self) -> int:
        return len(self._by_hash)
