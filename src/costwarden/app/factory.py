"""The app factory: ``create_app(settings)`` builds one gateway from one settings object.

No engine, client or cache exists before this is called, so tests build as many independent
apps as they like. The returned object is an ASGI app; its lifespan (or ``startup()`` /
``shutdown()`` called directly) opens and closes every connection it owns, and shutdown
drains the ledger so no usage record is lost on SIGTERM.

Redis: one client (one pool, ``storage/redis.py``) per app, built from ``[redis]`` and given
to each of its users -- the budget counters (a RedisStore) and the breaker board. They use
it between their start() and close(); the app closes it after them.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from costwarden.admin.api import create_admin_app
from costwarden.admin.context import AdminContext
from costwarden.app.alerting import Alerting, process_holder
from costwarden.app.analytics import Rollups
from costwarden.app.billing import billing_parts
from costwarden.app.config_channels import channel_secrets, sync_channels
from costwarden.app.dashboard_auth import jwt_config, session_secret_warning, session_secrets
from costwarden.app.domain_types import (
    app_redis,
    breaker_policy,
    build_deployments,
    counter_store,
    egress_of,
    loop_policy,
    route_spec,
)
from costwarden.app.observability import metrics_exporter
from costwarden.app.securing import Security
from costwarden.app.tracing import request_spans
from costwarden.app.worker_metrics import WorkerMetrics
from costwarden.budgets.enforcer import Enforcer
from costwarden.caching.stores import MemoryCache, RedisCache, ResponseCache
from costwarden.config.billing import webhook_secrets
from costwarden.config.budgets import budget_config
from costwarden.config.settings import Settings
from costwarden.console.app import create_console
from costwarden.console.context import ConsoleContext
from costwarden.console.render import MOUNT as DASHBOARD
from costwarden.core.errors import AuthenticationFailed
from costwarden.core.events import EventBus
from costwarden.core.records import LedgerRecord
from costwarden.gateway import billing_webhook, session_api, status_api
from costwarden.gateway.asgi import JSON, Receive, Scope, Send, send_bytes
from costwarden.gateway.auth import KeyCache
from costwarden.gateway.cache import ResponseCacheStage
from costwarden.gateway.errors import error_body
from costwarden.gateway.honeypot import HoneypotTrap
from costwarden.gateway.proxy import ENDPOINTS, Proxy
from costwarden.gateway.scrub import per_upstream
from costwarden.gateway.switches import SwitchBoard
from costwarden.routing.breakers import BreakerBoard
from costwarden.routing.table import RouteTable
from costwarden.sessions.board import SessionBoard
from costwarden.storage.breakers import SqlBreakerRecorder
from costwarden.storage.counters import LedgerAggregates
from costwarden.storage.db import create_engine_for
from costwarden.storage.event_log import SqlEventLog
from costwarden.storage.event_relay import RedisEventRelay
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.migrate import migrate
from costwarden.storage.policy import PolicyTables
from costwarden.storage.redis import db_tag, describe
from costwarden.storage.retention import ensure_partitions
from costwarden.storage.route_fallbacks import SqlFallbackStore
from costwarden.storage.sessions import SqlSessionStore
from costwarden.storage.spool import LedgerSpool

logger = logging.getLogger(__name__)
# A part of the app still closing after this long is named in a warning (see _closing).
_SLOW_CLOSE_SECONDS = 10.0


class CostwardenApp:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
        run_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = engine or create_engine_for(settings.storage.database_url)
        self.deployments = build_deployments(settings)
        self.egress = egress_of(settings)  # the proxy's upstream client reaches origins by it
        self.route_table = RouteTable(
            [route_spec(r) for r in settings.routes],
            self.deployments,
            SqlFallbackStore(self.engine),
            refresh_seconds=settings.switches.refresh_seconds,
        )
        self.routes = self.route_table.routes
        self.keys = KeyCache(self.engine, refresh_seconds=settings.server.key_refresh_seconds)
        self.ledger = LedgerWriter(
            self.engine,
            flush_interval=settings.storage.flush_interval_ms / 1000,
            durable=settings.storage.ledger_mode == "durable",
            spool=LedgerSpool(settings.storage.spool_dir) if settings.storage.spool_dir else None,
        )
        self.redis = app_redis(settings.redis)
        budgets = budget_config(settings)
        sums = LedgerAggregates(self.engine)
        self.enforcer = Enforcer(
            budgets,
            PolicyTables(self.engine),
            sums,
            clock=clock,
            flush_ledger=self.ledger.flush,
            store=None if self.redis is None else counter_store(settings, self.redis, clock, sums),
        )
        self.switches = SwitchBoard(
            self.engine,
            refresh_seconds=settings.switches.refresh_seconds,
            default_message=settings.switches.message,
        )
        ev = settings.events
        self.events = EventBus(
            log=SqlEventLog(self.engine),
            relay=None if self.redis is None else RedisEventRelay(self.redis),
            capacity=ev.buffer,
            queue_size=ev.client_queue,
            flush_interval=ev.flush_ms / 1000,
            poll_interval=ev.poll_seconds,
            retention_seconds=ev.retention_days * 86_400,
            clock=clock,
        )
        self.enforcer.publish = self.events.publish
        # Honeypot keys' use, handed off by the key cache's users (gateway/honeypot.py).
        self.honeypot = HoneypotTrap(
            self.events.publish, engine=self.engine, switches=self.switches,
            max_body_bytes=settings.server.max_body_bytes, clock=clock,
        )  # fmt: skip
        self.keys.trap = self.honeypot
        self.breakers = BreakerBoard(
            sorted(self.settings.deployments),  # an admin-API chain may name any of them
            breaker_policy(settings.resilience),
            recorder=SqlBreakerRecorder(self.engine),
            events=self.events,
            clock=clock,
            redis=self.redis,
            sync_seconds=settings.resilience.sync_seconds,
            channel_tag="" if self.redis is None else db_tag(self.redis),
        )
        sessions = settings.sessions
        self.sessions = (
            SessionBoard(
                SqlSessionStore(self.engine),
                self.events,
                clock=clock,
                wind_down_pct=Decimal(str(sessions.wind_down_pct)),
                wake_interval=sessions.wake_interval_seconds,
                loops=loop_policy(sessions),
            )
            if sessions.enabled
            else None
        )
        self.security = (
            Security(
                settings.security, self.engine, self.events,
                hash_key=settings.security_hash_key,
                refresh_seconds=settings.server.key_refresh_seconds,
            )  # fmt: skip
            if settings.security.enabled
            else None
        )
        self.proxy = Proxy(
            routes=self.routes,
            keys=self.keys,
            ledger=self.ledger,
            enforcer=self.enforcer,
            switches=self.switches,
            breakers=self.breakers,
            events=self.events,
            resilience=settings.resilience,
            max_body_bytes=settings.server.max_body_bytes,
            durable=settings.storage.ledger_mode == "durable",
            scrubbers=per_upstream(d.adapter for d in self.deployments.values()),
            max_response_bytes=settings.server.max_response_bytes,
            cancel_on_disconnect=settings.server.cancel_on_disconnect,
            clock=clock,
            sessions=self.sessions,
            security=None if self.security is None else self.security.gate,
            egress=self.egress,
            cache=self._response_cache(settings),
        )
        self.metrics = metrics_exporter(
            settings.metrics,
            routes=self.routes,
            breakers=self.breakers,
            enforcer=self.enforcer,
            ledger=self.ledger,
            events=self.events,
        )
        # A worker of serve --workers N: /metrics sums every worker's (app/worker_metrics.py).
        self.worker_metrics = (
            None
            if run_dir is None or self.metrics is None
            else WorkerMetrics(run_dir, self.metrics)
        )
        self.spans = request_spans(settings.otel)
        observers = [
            o.observe for o in (self.metrics and self.metrics.requests, self.spans) if o
        ]
        if len(observers) == 1:
            self.proxy.observe = observers[0]  # once per request
        elif observers:
            self.proxy.observe = functools.partial(_observe_all, tuple(observers))
        self.alerting = (
            Alerting(
                settings.alerts, self.engine, self.events, clock=clock, enforcer=self.enforcer
            )
            if settings.alerts.enabled
            else None
        )
        self.rollups = (
            Rollups(
                settings.analytics, self.engine, clock=clock, holder=process_holder(),
                raise_alert=self.alerting.raise_draft if self.alerting else None,
                lifetime_limits=lambda: self.enforcer.book.counts_over("lifetime"),
            )  # fmt: skip
            if settings.analytics.enabled
            else None
        )
        # Billing webhooks (off without a signing secret: 404) and their suspension job.
        self.billing, self.billing_job = billing_parts(
            settings, self.engine, self.events, clock=clock
        )
        admin_context = self._admin_context()
        self.admin = create_admin_app(admin_context)
        self.console = (
            create_console(
                ConsoleContext(
                    admin=admin_context,
                    secrets=tuple(session_secrets(settings)),
                    session_max_age_seconds=settings.dashboard.session_max_age_seconds,
                    cookie_secure=settings.dashboard.cookie_secure,
                )
            )
            if settings.dashboard.enabled
            else None
        )
        self._root_path = settings.server.root_path
        self._started = False

    def _response_cache(self, settings: Settings) -> ResponseCacheStage | None:
        """The response cache stage, when some route keeps answers: in this process's
        memory, or in Redis (shared by every process) when ``[cache] backend`` says so."""
        if not any(r.cache is not None for r in settings.routes):
            return None
        c = settings.cache
        store: ResponseCache
        if c.backend == "redis":
            assert self.redis is not None, "config: a redis backend needs [redis] url"
            store = RedisCache(self.redis)
        else:
            store = MemoryCache(c.max_bytes)
        return ResponseCacheStage(store, self.clock, c.max_entry_bytes)

    def _admin_context(self) -> AdminContext:
        """What the admin API's handlers may use of this gateway."""
        settings = self.settings
        return AdminContext(
            engine=self.engine,
            admin_token=settings.admin_token,
            keys=self.keys,
            ledger=self.ledger,
            enforcer=self.enforcer,
            switches=self.switches,
            breakers=self.breakers,
            route_table=self.route_table,
            route_deployments={r.model: tuple(r.deployments) for r in settings.routes},
            deployments=tuple(sorted(settings.deployments)),
            events=self.events,
            clock=self.clock,
            budgets_timezone=settings.budgets.timezone,
            metrics=self.metrics,
            metrics_public=settings.metrics.public,
            sessions=self.sessions,
            jwt=jwt_config(settings),
        )

    def secrets(self) -> list[str]:
        """Every provider credential (of every deployment a route or an admin-API chain may
        call) and every config alert channel's secret, for log redaction."""
        found: list[str] = []
        for d in self.deployments.values():
            found.extend(d.adapter.secrets())
        found.extend(channel_secrets(self.settings.alerts.channels))
        found.extend(self.egress.secrets())
        if self.settings.stripe_webhook_secret:
            found.extend(webhook_secrets(self.settings.stripe_webhook_secret))
        return sorted(set(found))

    # ------------------------------------------------------------------ lifetime

    async def startup(self) -> None:
        if self._started:
            return
        for message in self.settings.deprecations:
            logger.warning("%s", message)
        if self.console is not None and (note := session_secret_warning(self.settings)):
            logger.warning("%s", note)
        for name in self.egress.unverified:
            logger.warning("provider %r: tls_verify = false: its certificate is not checked", name)
        for line in self.egress.describe():
            logger.info("%s", line)
        if self.redis is not None:
            r = self.settings.redis
            line = describe(
                r.url, timeout=r.timeout_seconds, max_connections=r.max_connections,
                cluster=r.cluster,
            )  # fmt: skip
            logger.info("%s", line)
        await asyncio.to_thread(migrate, self.engine)
        await self._ensure_partitions()
        await sync_channels(self.engine, self.settings.alerts)
        await self.keys.start()
        await self.ledger.start()
        await self.enforcer.start()
        await self.switches.start()
        await self.events.start()
        await self.honeypot.start()
        if self.alerting is not None:
            await self.alerting.start()
        if self.rollups is not None:
            await self.rollups.start()
        if self.billing_job is not None:
            await self.billing_job.start()
        await self.route_table.start()
        await self.breakers.start()
        if self.sessions is not None:
            await self.sessions.start()
        if self.security is not None:
            await self.security.start()
        await self.proxy.start()
        if self.spans is not None:
            await self.spans.start()
        if self.worker_metrics is not None:
            await self.worker_metrics.start()
        self._started = True
        # What exists now (settings, engines, SQLAlchemy's and the app's caches) lives as long
        # as the process: keep the collector from walking it on every full collection.
        gc.freeze()
        logger.info(
            "costwarden ready: %d routes, %d keys, ledger %s",
            len(self.routes),
            len(self.keys),
            self.settings.storage.ledger_mode,
        )

    async def _ensure_partitions(self) -> None:
        """The ledger's partitions of this month and the next two (PostgreSQL), also where
        no rollup job keeps them ahead ([analytics] enabled = false). A lock not granted in
        time leaves them to the job or the next start: rows go to the DEFAULT partition
        meanwhile, and are moved when their month's partition is made."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        try:
            await asyncio.to_thread(ensure_partitions, self.engine, now)
        except SQLAlchemyError as exc:
            logger.warning("ledger partitions not made at start-up: %s", type(exc).__name__)

    async def shutdown(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.worker_metrics is not None:
            await _closing("worker metrics", self.worker_metrics.close())
        await _closing("proxy", self.proxy.close())
        if self.spans is not None:
            await _closing("spans", self.spans.close())  # spans what is left, flushes
        await _closing("route table", self.route_table.close())
        await _closing("breakers", self.breakers.close())
        if self.sessions is not None:  # its last transitions stored and published
            await _closing("sessions", self.sessions.close())
        if self.security is not None:
            await _closing("security", self.security.close())
        if self.rollups is not None:
            await _closing("rollups", self.rollups.close())
        if self.billing_job is not None:
            await _closing("billing", self.billing_job.close())
        if self.alerting is not None:
            await _closing("alerting", self.alerting.close())
        await _closing("honeypot", self.honeypot.close())  # its last hits published
        await _closing("events", self.events.close())  # writes what is left, ends streams
        await _closing("keys", self.keys.close())
        await _closing("ledger", self.ledger.close())  # drains every buffered ledger row
        logger.info("ledger drained: %d rows written", self.ledger.written)
        await _closing("budget counters", self.enforcer.close())
        if self.redis is not None:  # after its users: the enforcer's store, the breakers
            await _closing("redis client", self.redis.aclose())
        await _closing("switches", self.switches.close())
        self.engine.dispose()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            whole = scope
            if self._root_path and path.startswith(self._root_path):
                # Behind a proxy's prefix (uvicorn puts the root_path back in front of the
                # path): the gateway's own handlers match the path without it; the
                # Starlette apps (admin, dashboard) take the whole scope and strip it.
                path = path[len(self._root_path) :] or "/"
                scope = {**scope, "path": path}
            if path in ENDPOINTS:
                if scope["method"] == "POST":
                    await self.proxy.handle(scope, receive, send)
                else:
                    await _plain(
                        send,
                        405,
                        {"error": {"message": "use POST", "type": "invalid_request_error"}},
                    )
                return
            if path == billing_webhook.PATH:
                await self.billing.serve(scope, receive, send)
                return
            if path == "/v1/models":
                await self._models(scope, send)
                return
            if path in status_api.ROUTES:
                await status_api.serve(scope, receive, send, self)
                return
            if path.startswith(session_api.PREFIX) and not path.endswith("/events"):
                # (.../events, the session's own stream, is the admin app's: beside its
                # event stream)
                await session_api.serve(
                    scope, send, keys=self.keys, engine=self.engine, enforcer=self.enforcer,
                    timezone=self.settings.budgets.timezone, clock=self.clock,
                )  # fmt: skip
                return
            if self.console is not None and (
                path == DASHBOARD or path.startswith(DASHBOARD + "/")
            ):
                await self.console(whole, receive, send)
                return
            await self.admin(whole, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.admin(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _models(self, scope: Scope, send: Send) -> None:
        headers: dict[bytes, bytes] = dict(scope["headers"])
        anthropic = b"anthropic-version" in headers
        wire = "anthropic" if anthropic else "openai"
        key = self.keys.from_headers(headers, scope, "models")
        if key is None:
            exc = AuthenticationFailed("invalid or missing API key")
            await send_bytes(send, 401, error_body(wire, exc), [(b"content-type", JSON)])
            return
        names = sorted(self.routes)
        body: dict[str, Any]
        if anthropic:
            data = [
                {"type": "model", "id": n, "display_name": n, "created_at": "2024-01-01T00:00:00Z"}
                for n in names
            ]
            body = {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            body = {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "costwarden"}
                    for n in names
                ],
            }
        await _plain(send, 200, body)


async def _plain(send: Send, status: int, body: dict[str, Any]) -> None:
    await send_bytes(send, status, orjson.dumps(body), [(b"content-type", JSON)])


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
    run_dir: Path | None = None,
) -> CostwardenApp:
    """Build a gateway; ``clock`` (epoch seconds) is injectable so tests can move time.
    ``run_dir``: this app is one worker of ``serve --workers N``, whose supervisor made that
    directory (the workers' metrics meet there)."""
    return CostwardenApp(settings, engine=engine, clock=clock, run_dir=run_dir)


def _observe_all(
    observers: tuple[Callable[[LedgerRecord], None], ...], record: LedgerRecord
) -> None:
    for observe in observers:
        observe(record)


async def _closing(part: str, closed: Awaitable[None]) -> None:
    """Await one part's close; if it is still running ``_SLOW_CLOSE_SECONDS`` on, say which
    part it is (once): a shutdown that hangs then names where, instead of ending the log
    silently before uvicorn's "Application shutdown complete"."""
    after = _SLOW_CLOSE_SECONDS
    slow = asyncio.get_running_loop().call_later(
        after, logger.warning, "shutting down: %s has not closed after %g s", part, after
    )
    try:
        await closed
    finally:
        slow.cancel()
