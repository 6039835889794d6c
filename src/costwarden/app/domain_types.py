"""Settings mapped into each domain's own small types, one function each: the domain never
sees config. The app factory assembles the gateway from these; ``providers check`` and the
tests build deployments with them too.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from decimal import Decimal
from typing import cast

from redis.asyncio import Redis, RedisCluster

from costwarden.budgets.leased import LeasedStore
from costwarden.budgets.ports import LedgerSums
from costwarden.budgets.redis_store import RedisStore
from costwarden.budgets.store import CounterStore
from costwarden.config.sessions import SessionSettings
from costwarden.config.settings import RedisSettings, Settings
from costwarden.config.upstreams import ProviderSettings, ResilienceSettings, RouteSettings
from costwarden.gateway.egress import Egress, ProviderTls
from costwarden.pricing import context_window, resolve_rates
from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import Deployment, ProviderAdapter, ProviderSpec
from costwarden.routing.breaker import BreakerPolicy
from costwarden.routing.table import RouteSpec
from costwarden.sessions.loops import Action, LoopPolicy
from costwarden.storage.redis import redis_client


def build_deployments(settings: Settings) -> dict[str, Deployment]:
    """Every deployment with its price (ConfigError if one has none) and context window."""
    adapters: dict[str, ProviderAdapter] = {
        p.name: make_adapter(provider_spec(p)) for p in settings.providers
    }
    deployments: dict[str, Deployment] = {}
    for ref, dep in settings.deployments.items():
        adapter = adapters[dep.provider]
        priced = dep.price_model or dep.model
        deployments[ref] = Deployment(
            id=ref,
            adapter=adapter,
            model=dep.model,
            rates=resolve_rates(adapter.price_provider, priced, dep.price, deployment=ref),
            max_output_tokens=dep.max_output_tokens,
            context_window=dep.context_window or context_window(adapter.price_provider, priced),
            capabilities=dep.capabilities,
        )
    return deployments


def provider_spec(p: ProviderSettings) -> ProviderSpec:
    """A provider's settings as the adapter takes them (also ``providers check``'s)."""
    return ProviderSpec(
        name=p.name,
        type=p.type,
        base_url=p.base_url,
        connect_timeout=p.connect_timeout,
        timeout=p.timeout,
        api_key=p.api_key,
        price_provider=p.price_provider,
        api_version=p.api_version,
        auth=p.auth,
        region=p.region,
        secret_key=p.secret_key,
        session_token=p.session_token,
    )


def provider_tls(p: ProviderSettings) -> ProviderTls:
    """A provider's TLS settings as the egress takes them (``.context()`` builds its
    context, for ``providers check`` too)."""
    return ProviderTls(p.name, p.base_url, p.tls_verify, p.ca_bundle, p.client_cert, p.client_key)


def egress_of(settings: Settings) -> Egress:
    """The proxy variables, read here once (the request path never reads the environment:
    docs/providers.md, "Egress"), and each provider's TLS contexts, built now."""
    tls = [provider_tls(p) for p in settings.providers]
    return Egress(urllib.request.getproxies_environment(), tls)


def route_spec(r: RouteSettings) -> RouteSpec:
    return RouteSpec(
        model=r.model,
        deployments=tuple(r.deployments or ()),
        retries=r.retries,
        fallbacks=tuple(r.fallbacks or ()),
        connect_timeout=r.connect_timeout,
        first_byte_timeout=r.first_byte_timeout,
        timeout=r.timeout,
        degraded=r.degraded,
        strategy=r.strategy,
        weights=r.weights,
        downgrade=r.downgrade,
        downgrade_on_refusal=r.downgrade_on_refusal,
        cache=r.cache,
    )


def app_redis(r: RedisSettings) -> Redis | RedisCluster | None:
    """The app's one Redis client (no connection opened yet; a Redis Cluster client with
    ``cluster``), or None without Redis."""
    if not r.url:
        return None
    return redis_client(
        r.url, timeout=r.timeout_seconds, max_connections=r.max_connections, cluster=r.cluster
    )


def counter_store(
    settings: Settings,
    redis: Redis | RedisCluster,
    clock: Callable[[], float],
    ledger: LedgerSums,
) -> CounterStore:
    """The budget counters on Redis: leased in slices (``budgets.leased_slices``) or each
    request reserving there."""
    b = settings.budgets
    store = RedisStore(redis, lease_seconds=b.lease_seconds, clock=clock)
    if not b.leased_slices:
        return store
    s = settings.storage
    # How long after a process died its ledger rows may still arrive: a durable ledger's
    # commits in flight; a batched one's within two flush intervals (as the rebuild waits).
    wait = 0.5 + (2 * s.flush_interval_ms / 1000 if s.ledger_mode == "batched" else 0.0)
    return LeasedStore(
        store, ledger=ledger, ledger_wait=wait, flush_seconds=b.slice_flush_ms / 1000, clock=clock
    )


def loop_policy(s: SessionSettings) -> LoopPolicy:
    return LoopPolicy(
        repeat_count=s.repeat_count,
        repeat_window_s=s.repeat_window_seconds,
        velocity_factor=Decimal(str(s.velocity_factor)),
        velocity_min_minutes=s.velocity_min_minutes,
        error_burst=s.error_burst,
        action=cast(Action, s.loop_action),  # checked by config.sessions
    )


def breaker_policy(r: ResilienceSettings) -> BreakerPolicy:
    return BreakerPolicy(
        failure_threshold=r.failure_threshold,
        failure_rate=r.failure_rate,
        window_seconds=r.window_seconds,
        min_requests=r.min_requests,
        cooldown_seconds=r.cooldown_seconds,
        probe_timeout_seconds=r.probe_timeout_seconds,
    )
