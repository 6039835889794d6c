"""The security engine's place in the app: the detectors, the policy book and its poller,
and the scan stage the proxy runs (``[security]``).

The settings are mapped here into the security package's own policy type (the package does
not import config). The orgs' and keys' policy layers (admin API
``/admin/security/policies``) are read into memory by a poller, off the request path: a
request never waits on the database for its policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import cast

from sqlalchemy.engine import Engine

from costwarden.config.security import SecuritySettings
from costwarden.core.events import EventBus
from costwarden.core.polling import Poller
from costwarden.gateway.security import PolicyBook, SecurityGate
from costwarden.security.findings import Detector
from costwarden.security.injection import InjectionDetector
from costwarden.security.pii import PiiDetector
from costwarden.security.policy import Action, OnTimeout, SecurityPolicy
from costwarden.security.scan import ScanMemo, Scanner
from costwarden.security.secrets import SecretsDetector
from costwarden.security.tools import ToolPins
from costwarden.storage.security_policies import load_layers, policies_version

logger = logging.getLogger(__name__)


def base_policy(s: SecuritySettings) -> SecurityPolicy:
    """The gateway's own policy from ``[security]`` (values checked by config.security)."""
    return SecurityPolicy(
        actions={
            "injection": cast(Action, s.injection_action),
            "secrets": cast(Action, s.secrets_action),
            "pii": cast(Action, s.pii_action),
            "tools": cast(Action, s.tools_action),
        },
        min_confidence=s.min_confidence,
        flag_confidence=s.flag_confidence,
        on_timeout=cast(OnTimeout, s.on_timeout),
        time_budget_ms=s.time_budget_ms,
    )


def detectors() -> list[Detector]:
    """The built-in detectors, cheapest first (a scan out of time leaves the last unrun)."""
    return [SecretsDetector(), PiiDetector(), InjectionDetector()]


def _memo(entries: int) -> ScanMemo | None:
    return ScanMemo(entries) if entries > 0 else None


class Security:
    """The scan stage and what keeps its policies current."""

    def __init__(
        self,
        settings: SecuritySettings,
        engine: Engine,
        events: EventBus,
        *,
        hash_key: str | None,
        refresh_seconds: float,
    ) -> None:
        self._engine = engine
        self.book = PolicyBook(base_policy(settings))
        key = None if hash_key is None else hashlib.blake2b(hash_key.encode()).digest()
        self.memo = _memo(settings.scan_memo_entries)  # the findings of pieces seen before
        self.gate = SecurityGate(
            Scanner(detectors(), memo=self.memo),
            self.book,
            events,
            hash_key=key,
            pins=ToolPins(),
        )
        self._version: tuple[int, int] | None = None
        self._poller = Poller("security-policies", refresh_seconds, self.refresh, self._failed)

    async def start(self) -> None:
        await self.refresh()
        self._poller.start()

    async def close(self) -> None:
        await self._poller.close()

    async def refresh(self) -> None:
        """Reload the layers if any changed (one small query when none did)."""
        version = await asyncio.to_thread(policies_version, self._engine)
        if version == self._version:
            return
        layers = await asyncio.to_thread(load_layers, self._engine)
        self.book.replace(layers)
        self._version = version

    @staticmethod
    def _failed(exc: Exception) -> None:
        logger.warning("security policies not refreshed: %s", type(exc).__name__)
