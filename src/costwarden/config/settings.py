"""Settings: one typed object built from ``costwarden.toml`` plus environment overrides.

The app factory takes a :class:`Settings`; nothing reads the environment or the file at import
time. Every setting carries a help text (``costwarden settings`` prints them all), and every
validation failure is a :class:`~costwarden.core.errors.ConfigError` that names the file, the key
path and, where it can be found, the line -- never a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from costwarden.budgets.limits import tier_from_mapping
from costwarden.budgets.outage import ON_UNAVAILABLE, OnUnavailable
from costwarden.budgets.windows import zone
from costwarden.config.alert_channels import parse_channels, split_channels
from costwarden.config.alerts import AlertSettings, alerts_problem
from costwarden.config.analytics import AnalyticsSettings, analytics_problem
from costwarden.config.billing import (
    WEBHOOK_SECRET_ENV,
    BillingSettings,
    billing_problem,
    billing_section,
)
from costwarden.config.cache import CacheSettings, cache_problem
from costwarden.config.dashboard import JWT_SECRET_ENV, DashboardSettings, dashboard_problem
from costwarden.config.events import EventSettings, events_problem
from costwarden.config.fields import NAME_RE as _NAME_RE
from costwarden.config.fields import section as _section
from costwarden.config.fields import setting as _setting
from costwarden.config.lines import ConfigText as _Ctx
from costwarden.config.metrics import MetricsSettings, metrics_problem
from costwarden.config.otel import OtelSettings, otel_problem
from costwarden.config.security import SecuritySettings, security_problem
from costwarden.config.server import ServerSettings as ServerSettings
from costwarden.config.server import server_problem
from costwarden.config.sessions import SessionSettings, sessions_problem
from costwarden.config.upstreams import PROVIDER_TYPES as PROVIDER_TYPES
from costwarden.config.upstreams import (
    DeploymentSettings,
    ResilienceSettings,
    RouteSettings,
    check_prices,
    check_resilience,
    parse_deployments,
    parse_providers,
    parse_routes,
)
from costwarden.config.upstreams import ProviderSettings as ProviderSettings
from costwarden.core.errors import ConfigError, InvalidInput
from costwarden.pricing import PriceOverride as PriceOverride
from costwarden.routing.chains import RouteCache
from costwarden.storage.redis import MAX_CONNECTIONS as MAX_REDIS_CONNECTIONS
from costwarden.storage.redis import MIN_CONNECTIONS as MIN_REDIS_CONNECTIONS
from costwarden.storage.redis import cluster_url_problem as redis_cluster_url_problem
from costwarden.storage.redis import url_problem as redis_url_problem

LEDGER_MODES = ("batched", "durable")
# SDKs send about 1 KiB of headers; a smaller cap would refuse ordinary clients.


@dataclasses.dataclass(slots=True)
class StorageSettings:
    database_url: str = _setting(
        "sqlite:///costwarden-data/costwarden.db",
        "SQLite path (sqlite:///relative.db) or PostgreSQL URL (postgresql://user@host/db).",
        "COSTWARDEN_DATABASE_URL",
    )
    ledger_mode: str = _setting(
        "batched",
        "batched: rows are written off the request path every flush interval; durable: the "
        "row is committed before the response completes.",
        "COSTWARDEN_LEDGER_MODE",
    )
    flush_interval_ms: int = _setting(
        200,
        "Longest a ledger row waits in memory before its batch is written (batched mode).",
        "COSTWARDEN_FLUSH_INTERVAL_MS",
    )
    spool_dir: str = _setting(
        "costwarden-data/ledger-spool",
        "Directory of the ledger's spool: while the database is out of reach, ledger rows are "
        "appended (fsync'd) to a file here and replayed, exactly once, when it answers again; "
        "the gateway keeps serving meanwhile. Gateway processes on one machine may share it "
        "(a dead process's file is replayed by the others or the next start). Empty: no "
        "spool, rows wait in memory.",
        "COSTWARDEN_SPOOL_DIR",
    )


@dataclasses.dataclass(slots=True)
class BudgetSettings:
    # Deprecated aliases of [redis] url and timeout_seconds: still read (with a warning, see
    # _redis), and after loading always equal to them. Code reads settings.redis.
    redis_url: str = _setting(
        "",
        "Deprecated: use redis.url (the same setting; COSTWARDEN_REDIS_URL sets that). Still "
        "read, with a warning at startup; an error if redis.url is set to another value.",
    )
    timezone: str = _setting(
        "UTC",
        "Timezone of calendar windows: when daily and monthly budgets reset.",
        "COSTWARDEN_BUDGET_TIMEZONE",
    )
    min_output_tokens: int = _setting(
        16,
        "Hard budgets clamp max_tokens to what fits; below this many tokens the request is "
        "refused instead.",
    )
    default_max_output_tokens: int = _setting(
        4096,
        "Output cap sent upstream under a hard budget when the client sent none (a deployment's "
        "max_output_tokens overrides it).",
    )
    expected_output_tokens: int = _setting(
        256, "Output tokens soft budgets and rate limits expect when reserving."
    )
    prompt_overhead_tokens: int = _setting(
        0,
        "Prompt tokens a provider may add beyond the request's bytes (e.g. a tool-use system "
        "prompt); added to every hard bound.",
    )
    lease_seconds: float = _setting(
        30.0,
        "Reservations are leases: one whose gateway process died is released after this long "
        "(live ones are renewed). Redis only.",
    )
    leased_slices: bool = _setting(
        False,
        "With Redis: each gateway process leases slices of every counter it meets (at most "
        "1/(2 x processes) of the room left each) and admits and settles requests against them "
        "in-process, with no Redis round trip on the request path; near a limit the slices "
        "are given back and requests reserve exactly, so hard budgets hold as exactly. A "
        "process that dies leaves its slices counted as spent. See docs/budgets.md.",
        "COSTWARDEN_BUDGET_LEASED_SLICES",
    )
    slice_flush_ms: int = _setting(
        20,
        "With leased_slices: how often what the slices consumed is counted in Redis and "
        "they are topped up (one script per org that has slices, only when something changed).",
    )
    redis_timeout_seconds: float = _setting(
        1.0,
        "Deprecated: use redis.timeout_seconds (the same setting). Still read, with a warning "
        "at startup; an error if redis.timeout_seconds is set to another value.",
    )
    refresh_seconds: float = _setting(
        0.5,
        "How often each gateway process polls storage for changed limits and tiers.",
        "COSTWARDEN_BUDGET_REFRESH_SECONDS",
    )
    inflight_retry_seconds: int = _setting(
        1, "Retry-After sent when a request waits only for other requests' reservations."
    )


@dataclasses.dataclass(slots=True)
class RedisSettings:
    url: str = _setting(
        "",
        "Redis (or Valkey) shared by several gateway processes: redis://[[user]:password@]"
        "host:6379/0, rediss:// for TLS, or unix:///path/to.sock. It holds the budget "
        "counters and reservations and the circuit breakers' shared state. Empty keeps both "
        "in-process, for a single gateway process.",
        "COSTWARDEN_REDIS_URL",
    )
    timeout_seconds: float = _setting(
        1.0,
        "Longest one Redis command may take: connecting, waiting for a free connection of the "
        "pool, and the answer. Past it (Redis stalled or unreachable) a request under a limit "
        "gets 503 budget_counters_unavailable rather than hanging (its reservation or "
        "settlement is undone or resent once Redis answers), and circuit breakers run on "
        "this process's own state. Commands are never retried by the client: a resent "
        "counter script could count twice.",
        "COSTWARDEN_REDIS_TIMEOUT_SECONDS",
    )
    max_connections: int = _setting(
        MAX_REDIS_CONNECTIONS,
        "Connections each gateway process opens to Redis at most: one pool, shared by the "
        "budget counters and the circuit breakers. When all are busy a command waits for "
        "one (up to timeout_seconds). Each pub/sub subscription (the circuit breakers' "
        f"channel) holds one for as long as it listens. At least {MIN_REDIS_CONNECTIONS}.",
        "COSTWARDEN_REDIS_MAX_CONNECTIONS",
    )
    on_unavailable: OnUnavailable = _setting(
        "fail_closed",
        "What a gateway process does while Redis cannot be reached. fail_closed: a request "
        "under a limit gets 503 budget_counters_unavailable (no round trip is tried until a "
        "background probe sees Redis answer). fail_open: it is admitted on the process's own "
        "counters, each limit allowing this process its share of the room left at its last "
        "answer from Redis (the room divided by the gateway processes counted then); a limit "
        "it never had an answer about still gets the 503. When Redis answers again, what was "
        "admitted meanwhile is counted into it before it decides again.",
        "COSTWARDEN_REDIS_ON_UNAVAILABLE",
    )
    # (Last: positional RedisSettings(...) of the earlier fields stay valid.)
    cluster: bool = _setting(
        False,
        "url names a node of a Redis Cluster (redis:// or rediss://, database 0): the client "
        "learns the other nodes from it and sends each command to the node owning its keys. "
        "One org's budget counters share a slot (one atomic script per request); a request "
        "that meets both an org limit and a platform-scope limit cannot be reserved "
        "atomically across two slots and is refused with 503 (docs/scale-out.md, \"Redis "
        "Cluster\"). max_connections is then per node, and a command that finds them all busy "
        "fails at once instead of waiting.",
        "COSTWARDEN_REDIS_CLUSTER",
    )


@dataclasses.dataclass(slots=True)
class SwitchSettings:
    refresh_seconds: float = _setting(
        0.5,
        "How often each gateway process polls storage for kill-switch and toggle changes.",
        "COSTWARDEN_SWITCH_REFRESH_SECONDS",
    )
    message: str = _setting(
        "AI features are temporarily disabled by the operator.",
        "Told to clients refused by a switch that has no message of its own.",
    )


@dataclasses.dataclass(slots=True)
class TierSettings:
    name: str = _setting("", "Plan tier name, assigned to orgs with the CLI or admin API.")
    # {scope type: {limit name: amount}}, from the tier's org/project/key/user/session tables
    limits: dict[str, dict[str, Any]] = dataclasses.field(
        default_factory=dict, metadata={"help": ""}
    )


@dataclasses.dataclass(slots=True)
class Settings:
    server: ServerSettings = dataclasses.field(default_factory=ServerSettings)
    storage: StorageSettings = dataclasses.field(default_factory=StorageSettings)
    providers: list[ProviderSettings] = dataclasses.field(default_factory=list)
    deployments: dict[str, DeploymentSettings] = dataclasses.field(default_factory=dict)
    routes: list[RouteSettings] = dataclasses.field(default_factory=list)
    budgets: BudgetSettings = dataclasses.field(default_factory=BudgetSettings)
    redis: RedisSettings = dataclasses.field(default_factory=RedisSettings)
    resilience: ResilienceSettings = dataclasses.field(default_factory=ResilienceSettings)
    tiers: list[TierSettings] = dataclasses.field(default_factory=list)
    switches: SwitchSettings = dataclasses.field(default_factory=SwitchSettings)
    metrics: MetricsSettings = dataclasses.field(default_factory=MetricsSettings)
    otel: OtelSettings = dataclasses.field(default_factory=OtelSettings)
    events: EventSettings = dataclasses.field(default_factory=EventSettings)
    alerts: AlertSettings = dataclasses.field(default_factory=AlertSettings)
    analytics: AnalyticsSettings = dataclasses.field(default_factory=AnalyticsSettings)
    sessions: SessionSettings = dataclasses.field(default_factory=SessionSettings)
    security: SecuritySettings = dataclasses.field(default_factory=SecuritySettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)
    dashboard: DashboardSettings = dataclasses.field(default_factory=DashboardSettings)
    billing: BillingSettings = dataclasses.field(default_factory=BillingSettings)
    admin_token: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={"help": "Bearer token for the admin API.", "env": "COSTWARDEN_ADMIN_TOKEN"},
    )
    dashboard_secret: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "help": "The secret(s) the dashboard's session cookies and CSRF tokens are signed "
            "with, comma-separated to rotate (the first signs). The same on every gateway; "
            "unset: derived from the admin token, else random per process.",
            "env": "COSTWARDEN_DASHBOARD_SECRET",
        },
    )
    dashboard_jwt_secret: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "help": "The HMAC secret of the identity provider's JWTs (HS algorithms), "
            "instead of [dashboard] jwt_jwks_file.",
            "env": JWT_SECRET_ENV,
        },
    )
    security_hash_key: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "help": "The key of the hash a security finding's span is recorded as (never the "
            "span itself). The same value on every gateway recognises the same secret across "
            "processes and restarts; unset: a random key per process.",
            "env": "COSTWARDEN_SECURITY_HASH_KEY",
        },
    )
    stripe_webhook_secret: str | None = dataclasses.field(
        default=None,
        repr=False,
        metadata={
            "help": "The signing secret(s) of the Stripe webhook endpoint (whsec_...), "
            "comma-separated while rotating (each is accepted). Unset: POST "
            "/billing/stripe/webhook answers 404 (billing webhooks off).",
            "env": WEBHOOK_SECRET_ENV,
        },
    )
    source: str = "<defaults>"
    # What the file says that still works but should change (deprecated keys): logged once
    # by the app at startup, printed by ``costwarden settings --config``.
    deprecations: list[str] = dataclasses.field(default_factory=list)

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------- loading


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    text: str | None = None,
    require_secrets: bool = True,
) -> Settings:
    """Read a TOML config (or ``text``), apply environment overrides, validate everything.

    ``require_secrets=False`` is for admin commands that never call a provider nor send an
    alert: an unset ``api_key_env`` variable, or a secret variable of an alert channel, is then
    not an error.
    """
    env = os.environ if env is None else env
    source = "<string>"
    if text is None:
        if path is None:
            raise ConfigError("no config file given (use --config costwarden.toml)")
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    ctx = _Ctx(source, text)
    settings = _build(raw, ctx, env, require_secrets)
    settings.source = source
    return settings


def _build(
    raw: dict[str, Any], ctx: _Ctx, env: Mapping[str, str], require_secrets: bool
) -> Settings:
    known = {
        "server",
        "storage",
        "budgets",
        "redis",
        "tiers",
        "switches",
        "metrics",
        "otel",
        "events",
        "alerts",
        "analytics",
        "sessions",
        "security",
        "cache",
        "dashboard",
        "billing",
        "resilience",
        "providers",
        "deployments",
        "routes",
    }
    for key in raw:
        if key not in known:
            raise ctx.fail(
                key, f"unknown section (expected one of {', '.join(sorted(known))})", key
            )
    server = _checked(ServerSettings, server_problem, raw, "server", ctx, env)
    storage = _section(StorageSettings, raw.get("storage", {}), "storage", ctx)
    _apply_env(storage, env, ctx)
    budgets = _section(BudgetSettings, raw.get("budgets", {}), "budgets", ctx)
    _apply_env(budgets, env, ctx)
    _check_budgets(budgets, ctx, env)
    redis, deprecations = _redis(raw, budgets, ctx, env)
    tiers = _tiers(raw.get("tiers", []), ctx)
    switches = _section(SwitchSettings, raw.get("switches", {}), "switches", ctx)
    _apply_env(switches, env, ctx)
    if switches.refresh_seconds <= 0:
        raise _invalid(ctx, env, switches, "switches", "refresh_seconds", "must be positive")
    if not switches.message.strip():
        raise _invalid(ctx, env, switches, "switches", "message", "must not be empty")
    metrics = _section(MetricsSettings, raw.get("metrics", {}), "metrics", ctx)
    _apply_env(metrics, env, ctx)
    if problem := metrics_problem(metrics):
        raise _invalid(ctx, env, metrics, "metrics", *problem)
    otel = _checked(OtelSettings, otel_problem, raw, "otel", ctx, env)
    events = _checked(EventSettings, events_problem, raw, "events", ctx, env)
    raw_alerts, raw_channels = split_channels(raw.get("alerts", {}))
    alerts = _checked(AlertSettings, alerts_problem, {"alerts": raw_alerts}, "alerts", ctx, env)
    alerts.channels, alerts.channels_unresolved = parse_channels(
        raw_channels, ctx, env, require_secrets
    )
    analytics = _checked(AnalyticsSettings, analytics_problem, raw, "analytics", ctx, env)
    sessions = _checked(SessionSettings, sessions_problem, raw, "sessions", ctx, env)
    security = _checked(SecuritySettings, security_problem, raw, "security", ctx, env)
    cache = _checked(CacheSettings, cache_problem, raw, "cache", ctx, env)
    dashboard = _checked(DashboardSettings, dashboard_problem, raw, "dashboard", ctx, env)
    billing = billing_section(raw.get("billing", {}), ctx)
    _apply_env(billing, env, ctx)
    if problem := billing_problem(billing):
        raise _invalid(ctx, env, billing, "billing", *problem)
    if cache.backend == "redis" and not redis.url:
        raise _invalid(ctx, env, cache, "cache", "backend", "'redis' needs [redis] url")
    if storage.ledger_mode not in LEDGER_MODES:
        raise _invalid(
            ctx, env, storage, "storage", "ledger_mode", f"must be one of {LEDGER_MODES}"
        )
    if storage.flush_interval_ms <= 0:
        raise _invalid(ctx, env, storage, "storage", "flush_interval_ms", "must be positive")

    resilience = _section(ResilienceSettings, raw.get("resilience", {}), "resilience", ctx)
    check_resilience(resilience, ctx)
    providers = parse_providers(raw.get("providers", []), ctx, env, require_secrets)
    deployments = parse_deployments(raw.get("deployments", []), providers, ctx)
    default_cache = (
        RouteCache(cache.default_ttl_seconds, cache.replay_unsafe)
        if cache.default_ttl_seconds > 0
        else None
    )
    routes = parse_routes(raw.get("routes", []), providers, deployments, ctx, default_cache)
    check_prices(providers, deployments, ctx)
    return Settings(
        server=server,
        storage=storage,
        providers=providers,
        deployments=deployments,
        routes=routes,
        budgets=budgets,
        redis=redis,
        tiers=tiers,
        switches=switches,
        metrics=metrics,
        otel=otel,
        events=events,
        alerts=alerts,
        analytics=analytics,
        sessions=sessions,
        security=security,
        cache=cache,
        dashboard=dashboard,
        billing=billing,
        resilience=resilience,
        admin_token=env.get("COSTWARDEN_ADMIN_TOKEN") or None,
        security_hash_key=env.get("COSTWARDEN_SECURITY_HASH_KEY") or None,
        dashboard_secret=env.get("COSTWARDEN_DASHBOARD_SECRET") or None,
        dashboard_jwt_secret=env.get(JWT_SECRET_ENV) or None,
        stripe_webhook_secret=env.get(WEBHOOK_SECRET_ENV) or None,
        deprecations=deprecations,
    )


_S = TypeVar("_S")


def _checked(
    cls: type[_S],
    problem_of: Callable[[_S], tuple[str, str] | None],
    raw: Mapping[str, Any],
    name: str,
    ctx: _Ctx,
    env: Mapping[str, str],
) -> _S:
    """Section ``name`` read, overridden from the environment, and range-checked."""
    section: _S = _section(cls, raw.get(name, {}), name, ctx)
    _apply_env(section, env, ctx)
    if problem := problem_of(section):
        raise _invalid(ctx, env, section, name, *problem)
    return section


def _invalid(
    ctx: _Ctx, env: Mapping[str, str], obj: Any, section: str, name: str, message: str
) -> ConfigError:
    """An invalid value, blamed on the environment variable when that is where it came from."""
    var = next(f.metadata.get("env") for f in dataclasses.fields(obj) if f.name == name)
    if var and var in env:
        return ConfigError(f"environment {var}={env[var]!r}: {section}.{name}: {message}")
    return ctx.fail(f"{section}.{name}", message, str(getattr(obj, name)))


def _apply_env(obj: Any, env: Mapping[str, str], ctx: _Ctx) -> None:
    for f in dataclasses.fields(obj):
        var = f.metadata.get("env")
        if not var or var not in env:
            continue
        setattr(obj, f.name, _env_value(var, env[var], type(f.default)))


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS.update({"false": False, "0": False, "no": False, "off": False})


def _env_value(var: str, raw: str, want: type[Any]) -> Any:
    if want is bool:
        flag = _BOOLEANS.get(raw.strip().lower())
        if flag is None:
            raise ConfigError(f"environment {var}: expected true or false, got {raw!r}")
        return flag
    try:
        return want(raw) if want in (int, float) else raw
    except ValueError:
        raise ConfigError(f"environment {var}: expected {want.__name__}, got {raw!r}") from None


def _check_budgets(b: BudgetSettings, ctx: _Ctx, env: Mapping[str, str]) -> None:
    problem = redis_url_problem(b.redis_url) if b.redis_url else None
    if problem:  # the value is not shown: a Redis URL may carry a password
        raise ctx.fail("budgets.redis_url", problem, b.redis_url)
    try:
        zone(b.timezone)
    except ConfigError:
        raise _invalid(
            ctx, env, b, "budgets", "timezone", f"unknown timezone {b.timezone!r}"
        ) from None
    for name in ("min_output_tokens", "default_max_output_tokens", "expected_output_tokens"):
        if getattr(b, name) < 1:
            raise _invalid(ctx, env, b, "budgets", name, "must be a positive integer")
    if b.prompt_overhead_tokens < 0:
        raise _invalid(ctx, env, b, "budgets", "prompt_overhead_tokens", "must be >= 0")
    if b.slice_flush_ms < 1:
        raise _invalid(ctx, env, b, "budgets", "slice_flush_ms", "must be a positive integer")
    for name in (
        "lease_seconds",
        "redis_timeout_seconds",
        "refresh_seconds",
        "inflight_retry_seconds",
    ):
        if getattr(b, name) <= 0:
            raise _invalid(ctx, env, b, "budgets", name, "must be positive")


# [budgets] keys that moved to [redis]: old name -> new name.
_MOVED_TO_REDIS = {"redis_url": "url", "redis_timeout_seconds": "timeout_seconds"}


def _redis(
    raw: dict[str, Any], budgets: BudgetSettings, ctx: _Ctx, env: Mapping[str, str]
) -> tuple[RedisSettings, list[str]]:
    """``[redis]``, with the deprecated ``[budgets]`` keys mapped onto it (the file's values;
    the environment then overrides either), and the deprecation messages."""
    redis = _section(RedisSettings, raw.get("redis", {}), "redis", ctx)
    raw_redis = raw.get("redis", {})
    raw_budgets = raw.get("budgets", {})
    deprecations: list[str] = []
    for old, new in _MOVED_TO_REDIS.items():
        if old not in raw_budgets:
            continue
        value = getattr(budgets, old)
        if new in raw_redis and getattr(redis, new) != value:
            raise ctx.fail(
                f"budgets.{old}",
                f"deprecated name of redis.{new}, which is set to another value: keep only "
                f"redis.{new}",
                str(value),
            )
        setattr(redis, new, value)
        # Worded as a config error is (file, line, key), without the value (a password).
        where = ctx.fail(f"budgets.{old}", f"deprecated: it is now redis.{new}", str(value))
        deprecations.append(f"{where} (the same setting, in a [redis] section): move it there")
    _apply_env(redis, env, ctx)
    problem = redis_url_problem(redis.url) if redis.url else None
    if problem:
        var = "COSTWARDEN_REDIS_URL"
        if var in env:  # the value is not shown: a Redis URL may carry a password
            raise ConfigError(f"environment {var}: redis.url: {problem}")
        raise ctx.fail("redis.url", problem, redis.url)
    if redis.cluster and not redis.url:
        raise _invalid(ctx, env, redis, "redis", "cluster", "needs [redis] url (a cluster node)")
    problem = redis_cluster_url_problem(redis.url) if redis.cluster else None
    if problem:
        raise _invalid(ctx, env, redis, "redis", "cluster", problem)
    if not 0 < redis.timeout_seconds < math.inf:
        raise _invalid(ctx, env, redis, "redis", "timeout_seconds", "must be a positive number")
    if redis.on_unavailable not in ON_UNAVAILABLE:
        raise _invalid(
            ctx, env, redis, "redis", "on_unavailable", f"must be one of {list(ON_UNAVAILABLE)}"
        )
    if redis.max_connections < MIN_REDIS_CONNECTIONS:
        raise _invalid(
            ctx,
            env,
            redis,
            "redis",
            "max_connections",
            f"must be at least {MIN_REDIS_CONNECTIONS} (each pub/sub subscription holds one)",
        )
    # Code not yet moved to settings.redis reads the same values.
    budgets.redis_url, budgets.redis_timeout_seconds = redis.url, redis.timeout_seconds
    return redis, deprecations


def _tiers(items: Any, ctx: _Ctx) -> list[TierSettings]:
    if not isinstance(items, list):
        raise ctx.fail("tiers", "must be an array of tables ([[tiers]])", "tiers")
    out: list[TierSettings] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"tiers[{i}]"
        if not isinstance(item, dict):
            raise ctx.fail(key, "must be a table", "tiers")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ctx.fail(f"{key}.name", "required: letters, digits, '_', '-', '.'", None)
        if name in seen:
            raise ctx.fail(f"{key}.name", f"duplicate tier {name!r}", name)
        seen.add(name)
        limits = {k: v for k, v in item.items() if k != "name"}
        for k, v in limits.items():
            if isinstance(v, dict):
                for amount_name, amount in v.items():
                    if isinstance(amount, float):
                        raise ctx.fail(
                            f"{key}.{k}",
                            f'{amount_name}: write amounts as strings ("0.5") or integers',
                            amount_name,
                        )
        try:
            tier_from_mapping(name, limits, where=key, source="config")
        except InvalidInput as exc:
            raise ctx.fail(key, str(exc).removeprefix(key + ": "), name) from None
        out.append(TierSettings(name=name, limits=limits))
    return out
