"""Settings of the upstream side: providers, deployments and routes (with their parsing).

Split from :mod:`costwarden.config.settings`, which assembles them into one ``Settings`` object.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from costwarden.config.fields import NAME_RE, reject_unknown, section, setting
from costwarden.config.lines import ConfigText as _Ctx
from costwarden.config.route_options import (
    ROUTE_OPTION_KEYS,
    cache_of,
    capabilities_of,
    downgrade_of,
    strategy_of,
)
from costwarden.core.errors import ConfigError, InvalidInput
from costwarden.pricing import PriceOverride, resolve_rates
from costwarden.providers.bedrock import DEFAULT_BASE_URL as BEDROCK_BASE_URL
from costwarden.providers.bedrock import botocore_missing
from costwarden.providers.gemini import DEFAULT_BASE_URL as GEMINI_BASE_URL
from costwarden.providers.presets import PRESETS
from costwarden.routing.chains import DegradedTemplate, RouteCache, expand_all, parse_template
from costwarden.routing.downgrade import DowngradeRule
from costwarden.routing.strategy import Capability, Strategy

# The wire formats, the providers with formats or conventions of their own, and the
# OpenAI-compatible servers known by name (costwarden.providers.presets).
PROVIDER_TYPES = ("openai", "anthropic", "azure", "gemini", "bedrock", *PRESETS)
AZURE_AUTHS = ("api-key", "entra")


@dataclasses.dataclass(slots=True)
class ProviderSettings:
    name: str = setting("", "Name routes use to refer to this provider.")
    type: str = setting(
        "openai",
        "openai (any OpenAI-compatible API), anthropic, azure (Azure OpenAI), gemini (Google "
        "Gemini: URL, GEMINI_API_KEY and google prices filled in), bedrock (AWS Bedrock's "
        "Converse API: a region, AWS credentials, aws prices), or a known "
        "OpenAI-compatible server: groq, together, fireworks, deepseek, mistral, openrouter, "
        "xai, vllm, ollama (base URL, key variable and price provider filled in).",
    )
    base_url: str = setting(
        "",
        "Upstream base URL, e.g. https://api.openai.com/v1 (a known server's is the default; "
        "Azure: https://<resource>.openai.azure.com).",
    )
    api_key_env: str | None = setting(
        None, "Environment variable holding the upstream credential (never put it in the file)."
    )
    price_provider: str | None = setting(
        None, "genai-prices provider id used for pricing; defaults to the provider type."
    )
    connect_timeout: float = setting(5.0, "Seconds allowed to connect to the upstream.")
    timeout: float = setting(600.0, "Seconds allowed for a whole upstream call.")
    ca_bundle: str | None = setting(
        None,
        "PEM file of the CA certificates that verify this provider's TLS certificate, "
        "replacing the system's trust store for it (e.g. a company's TLS-inspection CA).",
    )
    client_cert: str | None = setting(
        None,
        "PEM file of a client certificate, for a provider that demands mutual TLS (the key "
        "too, unless client_key names it).",
    )
    client_key: str | None = setting(None, "PEM file of client_cert's (unencrypted) key.")
    tls_verify: bool = setting(
        True,
        "Check the provider's TLS certificate and host name; false turns the check off (a "
        "warning at start): for a test upstream only.",
    )
    api_version: str | None = setting(
        None, "Azure OpenAI: the api-version every call carries, e.g. 2024-10-21 (required)."
    )
    auth: str | None = setting(
        None,
        "Azure OpenAI: how the credential is sent: api-key (the default, an API key in the "
        "api-key header) or entra (an Entra ID access token, as a bearer token).",
    )
    region: str | None = setting(
        None,
        "Bedrock: the AWS region its calls go to and are signed for, e.g. us-east-1 "
        "(required; the base URL defaults to https://bedrock-runtime.<region>.amazonaws.com).",
    )
    secret_key_env: str | None = setting(
        None,
        "Bedrock: environment variable holding the AWS secret access key (default "
        "AWS_SECRET_ACCESS_KEY; the access key id is api_key_env's, default AWS_ACCESS_KEY_ID).",
    )
    session_token_env: str | None = setting(
        None,
        "Bedrock: environment variable holding an AWS session token, sent when set (default "
        "AWS_SESSION_TOKEN; temporary credentials need it).",
    )
    api_key: str | None = dataclasses.field(default=None, repr=False, metadata={"help": ""})
    secret_key: str | None = dataclasses.field(default=None, repr=False, metadata={"help": ""})
    session_token: str | None = dataclasses.field(default=None, repr=False, metadata={"help": ""})


@dataclasses.dataclass(slots=True)
class DeploymentSettings:
    id: str = setting("", "provider:model, as routes name it.")
    provider: str = dataclasses.field(default="", metadata={"help": ""})  # from the id
    model: str = setting("", "Model name sent upstream (defaults to the part after the colon).")
    price_model: str | None = setting(
        None,
        "The genai-prices model id to price it by, when the model name sent upstream is not "
        "one (an Azure deployment name); default: the model.",
    )
    price: PriceOverride | None = setting(None, "Per-deployment price override (USD per MTok).")
    origin: str = dataclasses.field(default="", metadata={"help": ""})  # its key, for errors
    max_output_tokens: int | None = setting(
        None,
        "Largest output cap this model accepts; hard budgets send at most this as max_tokens "
        "when the client sent none (default budgets.default_max_output_tokens).",
    )
    context_window: int | None = setting(
        None,
        "Tokens of prompt plus output the model accepts (default: genai-prices' figure); a "
        "request that cannot fit skips this deployment for the next in the chain.",
    )
    capabilities: frozenset[Capability] | None = setting(
        None,
        "What the model can do, of tools, vision, structured_output, streaming: a request "
        "using one it lacks skips it (default: not said, assumed able).",
    )


@dataclasses.dataclass(slots=True)
class RouteSettings:
    model: str = setting("", "Public model name clients ask for.")
    deployments: list[str] = setting(None, "Deployments serving it, first one preferred.")
    fallbacks: list[str] = setting(
        None,
        "Routes (public model names) or 'provider:model' deployments tried, in order, when "
        "this route's own deployments fail or their breakers are open; a fallback route brings "
        "its own fallbacks. OpenAI and Anthropic formats are translated both ways.",
    )
    retries: int = setting(
        2,
        "Extra attempts on the same deployment after a connection error, 429 or 5xx, with "
        "exponential backoff and jitter (never once a stream has reached the client).",
    )
    connect_timeout: float | None = setting(
        None, "Seconds to connect to the upstream (default: the provider's connect_timeout)."
    )
    first_byte_timeout: float | None = setting(
        None, "Seconds until the upstream's response headers arrive (default: no separate limit)."
    )
    timeout: float | None = setting(
        None, "Seconds for a whole upstream call, stream included (default: the provider's)."
    )
    degraded: DegradedTemplate | None = setting(
        None,
        'Reply when every candidate is failing, e.g. { content = "We are busy; try again '
        "shortly.\" }: sent in the client's format, streamed if asked, at $0.",
    )
    strategy: Strategy = setting(
        "ordered",
        "In what order the route's own deployments are tried, per request: ordered (as "
        "listed), weighted (drawn by weights), cheapest (for this request, among those able "
        "to take it), lowest-latency (moving average), least-busy (fewest in flight). "
        "Fallbacks follow, in order.",
    )
    weights: tuple[float, ...] = setting(
        (), "weighted: one percentage per deployment, in their order, summing to 100."
    )
    downgrade: tuple[DowngradeRule, ...] = setting(
        (),
        'Rules such as { above_percent = 80, to = "openai:gpt-4o-mini", scope = "org", '
        'limit = "daily_usd" }: above that share of a USD budget used, serve the cheaper '
        "deployment (one of the route's own; scope and limit optional: any by default).",
    )
    downgrade_on_refusal: bool = setting(
        False,
        "When the budget refuses the reservation for the deployment chosen, serve a cheaper "
        "one of the chain whose reservation fits instead of a 402.",
    )
    cache: RouteCache | None = setting(
        None,
        "The response cache for this route, e.g. { ttl_seconds = 600, replay_unsafe = false, "
        'namespace = "shared-docs" }: replay_unsafe also caches requests with temperature > 0 '
        "or tools; namespace shares answers across orgs (default: each org its own).",
    )


@dataclasses.dataclass(slots=True)
class ResilienceSettings:
    failure_threshold: int = setting(
        5, "Consecutive failures (5xx, timeouts, connection errors) that open a breaker."
    )
    failure_rate: float = setting(
        0.5, "Failure rate over window_seconds that opens a breaker (with min_requests)."
    )
    window_seconds: float = setting(60.0, "Window of the failure rate.")
    min_requests: int = setting(20, "Requests in the window before the failure rate counts.")
    cooldown_seconds: float = setting(
        60.0, "How long a breaker stays open before one probe request may test the deployment."
    )
    probe_timeout_seconds: float = setting(
        30.0, "A half-open probe that reports nothing for this long frees its slot."
    )
    sync_seconds: float = setting(
        0.5, "How often breaker state is re-read from Redis (besides pub/sub), when configured."
    )
    retry_base_ms: int = setting(100, "First retry's backoff; doubles each retry, full jitter.")
    retry_max_ms: int = setting(2000, "Longest backoff between retries.")
    max_retry_after_seconds: float = setting(
        10.0,
        "A 429 whose Retry-After asks for longer goes to the next candidate instead of waiting.",
    )


def check_resilience(r: ResilienceSettings, ctx: _Ctx) -> None:
    """Each resilience setting within its meaningful range (ConfigError pointing at it)."""
    positive = ("window_seconds", "cooldown_seconds", "probe_timeout_seconds", "sync_seconds")
    for name in positive:
        if getattr(r, name) <= 0:
            raise ctx.fail(f"resilience.{name}", "must be positive", name)
    for name in ("failure_threshold", "min_requests", "retry_base_ms", "retry_max_ms"):
        if getattr(r, name) < 1:
            raise ctx.fail(f"resilience.{name}", "must be a positive integer", name)
    if not 0 < r.failure_rate <= 1:
        raise ctx.fail("resilience.failure_rate", "must be in (0, 1]", "failure_rate")
    if r.max_retry_after_seconds < 0:
        raise ctx.fail("resilience.max_retry_after_seconds", "must be >= 0", None)


RATE_HELP = {
    "input_mtok": 'USD per million prompt tokens (a string, e.g. "0.15").',
    "cached_input_mtok": "USD per million prompt tokens read from the provider's cache.",
    "cache_write_mtok": "USD per million prompt tokens written to the provider's cache.",
    "output_mtok": "USD per million completion tokens.",
    "reasoning_mtok": "USD per million reasoning tokens (defaults to the output rate).",
}


def parse_providers(
    items: Any, ctx: _Ctx, env: Mapping[str, str], require_secrets: bool
) -> list[ProviderSettings]:
    if not isinstance(items, list):
        raise ctx.fail("providers", "must be an array of tables ([[providers]])", "providers")
    out: list[ProviderSettings] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"providers[{i}]"
        p: ProviderSettings = section(ProviderSettings, item, key, ctx)
        if not p.name or not NAME_RE.match(p.name):
            raise ctx.fail(
                f"{key}.name", "required: letters, digits, '_', '-', '.'", p.name or None
            )
        if p.name in seen:
            raise ctx.fail(f"{key}.name", f"duplicate provider name {p.name!r}", p.name)
        seen.add(p.name)
        if p.type not in PROVIDER_TYPES:
            raise ctx.fail(
                f"{key}.type", f"must be one of {', '.join(PROVIDER_TYPES)}, got {p.type!r}", p.type
            )
        preset = PRESETS.get(p.type)
        if preset is not None:
            p.base_url = p.base_url or preset.base_url
            p.api_key_env = p.api_key_env or preset.api_key_env
            if p.price_provider is None and preset.price_provider is not None:
                p.price_provider = preset.price_provider
        if p.type == "gemini":
            _gemini(p)
        if p.type == "bedrock":
            _bedrock(p, key, ctx, env, require_secrets)
        else:
            for name in ("region", "secret_key_env", "session_token_env"):
                if getattr(p, name) is not None:
                    raise ctx.fail(f"{key}.{name}", "only a bedrock provider takes it", name)
        if p.type == "azure":
            _azure(p, key, ctx)
        elif p.api_version is not None or p.auth is not None:
            name = "api_version" if p.api_version is not None else "auth"
            raise ctx.fail(f"{key}.{name}", "only an azure provider takes it", name)
        if not p.base_url.startswith(("http://", "https://")):
            raise ctx.fail(
                f"{key}.base_url", "must be an http:// or https:// URL", p.base_url or None
            )
        p.base_url = p.base_url.rstrip("/")
        _tls(p, key, ctx)
        if p.api_key_env:
            secret = env.get(p.api_key_env)
            if not secret and require_secrets:
                raise ctx.fail(
                    f"{key}.api_key_env",
                    f"environment variable {p.api_key_env} is not set (provider {p.name!r})",
                    p.api_key_env,
                )
            p.api_key = secret
        if p.timeout <= 0 or p.connect_timeout <= 0:
            raise ctx.fail(f"{key}.timeout", "timeouts must be positive", "timeout")
        out.append(p)
    return out


def _gemini(p: ProviderSettings) -> None:
    """Google's Gemini API: its URL, key variable and genai-prices provider by default."""
    p.base_url = p.base_url or GEMINI_BASE_URL
    p.api_key_env = p.api_key_env or "GEMINI_API_KEY"
    if p.price_provider is None:
        p.price_provider = "google"


def _bedrock(
    p: ProviderSettings, key: str, ctx: _Ctx, env: Mapping[str, str], require_secrets: bool
) -> None:
    """AWS Bedrock: botocore installed (it signs the calls), a region, the credentials from
    the environment (AWS's own variables by default), genai-prices' aws prices."""
    missing = botocore_missing()
    if missing is not None:
        raise ctx.fail(f"{key}.type", missing, p.type)
    if not p.region:
        raise ctx.fail(
            f"{key}.region",
            'required for a bedrock provider: the AWS region its calls go to, e.g. "us-east-1"',
            p.type,  # the line that makes it a bedrock provider
        )
    if not re.fullmatch(r"[a-z]{2}(-[a-z0-9]+)+", p.region):
        raise ctx.fail(f"{key}.region", f"not an AWS region: {p.region!r}", "region")
    p.base_url = p.base_url or BEDROCK_BASE_URL.format(region=p.region)
    if p.price_provider is None:
        p.price_provider = "aws"
    p.api_key_env = p.api_key_env or "AWS_ACCESS_KEY_ID"
    p.secret_key_env = p.secret_key_env or "AWS_SECRET_ACCESS_KEY"
    p.session_token_env = p.session_token_env or "AWS_SESSION_TOKEN"
    for name, variable in (("api_key_env", p.api_key_env), ("secret_key_env", p.secret_key_env)):
        if require_secrets and not env.get(variable):
            raise ctx.fail(
                f"{key}.{name}",
                f"environment variable {variable} is not set (provider {p.name!r} signs its "
                "calls with AWS credentials)",
                p.type,  # the setting's line when the file has it, else the type's
            )
    p.secret_key = env.get(p.secret_key_env) or None
    p.session_token = env.get(p.session_token_env) or None


def _tls(p: ProviderSettings, key: str, ctx: _Ctx) -> None:
    """The TLS files exist (the app loads them at start) and the TLS settings agree."""
    for file in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(p, file)
        if path is not None and not os.path.isfile(path):
            raise ctx.fail(f"{key}.{file}", f"no such file: {path!r}", file)
    used = [n for n in ("ca_bundle", "client_cert") if getattr(p, n)]
    used += [] if p.tls_verify else ["tls_verify"]
    if used and not p.base_url.startswith("https://"):
        raise ctx.fail(f"{key}.{used[0]}", "takes an https:// base_url", used[0])
    if p.client_key is not None and p.client_cert is None:
        raise ctx.fail(f"{key}.client_key", "needs client_cert", "client_key")
    if p.ca_bundle is not None and not p.tls_verify:
        raise ctx.fail(f"{key}.ca_bundle", "unused with tls_verify = false", "ca_bundle")


def _azure(p: ProviderSettings, key: str, ctx: _Ctx) -> None:
    if not p.api_version:
        raise ctx.fail(
            f"{key}.api_version",
            "required for an azure provider: the api-version every call carries, e.g. "
            '"2024-10-21"',
            p.type,  # the line that makes it an azure provider
        )
    if p.auth is not None and p.auth not in AZURE_AUTHS:
        raise ctx.fail(f"{key}.auth", f"must be one of {', '.join(AZURE_AUTHS)}", "auth")
    if p.price_provider is None:
        p.price_provider = "azure"


def _price(data: Any, key: str, ctx: _Ctx) -> PriceOverride:
    if not isinstance(data, dict):
        raise ctx.fail(key, "must be a table of USD-per-million-token rates", key)
    allowed = {f.name for f in dataclasses.fields(PriceOverride)}
    values: dict[str, Decimal] = {}
    for name, value in data.items():
        if name not in allowed:
            raise ctx.fail(
                f"{key}.{name}", f"unknown rate (known: {', '.join(sorted(allowed))})", name
            )
        if isinstance(value, float):
            raise ctx.fail(
                f"{key}.{name}", 'write prices as strings ("0.15") so they stay exact', name
            )
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            raise ctx.fail(f"{key}.{name}", f"not a number: {value!r}", name) from None
        if not amount.is_finite() or amount < 0:
            raise ctx.fail(f"{key}.{name}", "must be a non-negative number", name)
        values[name] = amount
    return PriceOverride(**values)


def _split_deployment(ref: Any, key: str, ctx: _Ctx) -> tuple[str, str]:
    if not isinstance(ref, str) or ":" not in ref:
        raise ctx.fail(key, f"expected 'provider:model', got {ref!r}", str(ref))
    provider, _, model = ref.partition(":")
    if not provider or not model:
        raise ctx.fail(key, f"expected 'provider:model', got {ref!r}", ref)
    return provider, model


def parse_deployments(
    items: Any, providers: list[ProviderSettings], ctx: _Ctx
) -> dict[str, DeploymentSettings]:
    if not isinstance(items, list):
        raise ctx.fail("deployments", "must be an array of tables ([[deployments]])", "deployments")
    names = {p.name for p in providers}
    out: dict[str, DeploymentSettings] = {}
    for i, item in enumerate(items):
        key = f"deployments[{i}]"
        if not isinstance(item, dict):
            raise ctx.fail(key, "must be a table", "deployments")
        allowed = {
            "id", "model", "price_model", "price", "max_output_tokens", "context_window",
            "capabilities",
        }  # fmt: skip
        reject_unknown(item, allowed, key, ctx)
        max_out = item.get("max_output_tokens")
        window = item.get("context_window")
        for name, value in (("max_output_tokens", max_out), ("context_window", window)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ctx.fail(f"{key}.{name}", "must be a positive integer", None)
        ref = item.get("id")
        provider, model = _split_deployment(ref, f"{key}.id", ctx)
        if provider not in names:
            raise ctx.fail(f"{key}.id", f"unknown provider {provider!r}", str(ref))
        upstream_model = item.get("model", model)
        if not isinstance(upstream_model, str) or not upstream_model:
            raise ctx.fail(f"{key}.model", "must be a non-empty string", "model")
        price_model = item.get("price_model")
        if price_model is not None and (not isinstance(price_model, str) or not price_model):
            raise ctx.fail(f"{key}.price_model", "must be a non-empty string", "price_model")
        price = _price(item["price"], f"{key}.price", ctx) if "price" in item else None
        out[str(ref)] = DeploymentSettings(
            id=str(ref),
            provider=provider,
            model=upstream_model,
            price_model=price_model,
            price=price,
            max_output_tokens=max_out,
            context_window=window,
            capabilities=capabilities_of(item, key, ctx),
            origin=f"{key}.id",
        )
    return out


def parse_routes(
    items: Any,
    providers: list[ProviderSettings],
    deployments: dict[str, DeploymentSettings],
    ctx: _Ctx,
    default_cache: RouteCache | None = None,
) -> list[RouteSettings]:
    if not isinstance(items, list):
        raise ctx.fail("routes", "must be an array of tables ([[routes]])", "routes")
    names = {p.name for p in providers}
    out: list[RouteSettings] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        key = f"routes[{i}]"
        if not isinstance(item, dict):
            raise ctx.fail(key, "must be a table", "routes")
        reject_unknown(item, _ROUTE_KEYS, key, ctx)
        model = item.get("model")
        if not isinstance(model, str) or not model:
            raise ctx.fail(f"{key}.model", "required: the public model name", None)
        if model in seen:
            raise ctx.fail(f"{key}.model", f"duplicate route {model!r}", model)
        seen.add(model)
        refs = item.get("deployments")
        if not isinstance(refs, list) or not refs:
            raise ctx.fail(
                f"{key}.deployments", "required: a non-empty list of 'provider:model'", model
            )
        for j, ref in enumerate(refs):
            provider, dep_model = _split_deployment(ref, f"{key}.deployments[{j}]", ctx)
            if provider not in names:
                known = ", ".join(sorted(names)) or "none configured"
                raise ctx.fail(
                    f"{key}.deployments[{j}]",
                    f"unknown provider {provider!r} (known: {known})",
                    str(ref),
                )
            if ref not in deployments:
                deployments[ref] = DeploymentSettings(
                    id=ref, provider=provider, model=dep_model, origin=f"{key}.deployments[{j}]"
                )
        route = _route_options(RouteSettings(model=model, deployments=list(refs)), item, key, ctx)
        route.strategy, route.weights = strategy_of(item, key, ctx)
        route.downgrade, route.downgrade_on_refusal = downgrade_of(item, key, ctx)
        route.cache = cache_of(item, key, ctx, default_cache)
        out.append(route)
    own = {r.model: r.deployments for r in out}
    try:  # the chains themselves are resolved by routing.table.RouteTable at startup
        expand_all(own, {r.model: r.fallbacks for r in out}, set(deployments))
    except InvalidInput as exc:
        bad = next((i for i, r in enumerate(out) if f"route {r.model!r}" in str(exc)), 0)
        raise ctx.fail(f"routes[{bad}].fallbacks", str(exc), "fallbacks") from None
    return out


_ROUTE_KEYS = {
    "model",
    "deployments",
    "fallbacks",
    "retries",
    "connect_timeout",
    "first_byte_timeout",
    "timeout",
    "degraded",
    *ROUTE_OPTION_KEYS,
}


def _route_options(
    route: RouteSettings, item: dict[str, Any], key: str, ctx: _Ctx
) -> RouteSettings:
    fallbacks = item.get("fallbacks", [])
    if not isinstance(fallbacks, list) or not all(isinstance(f, str) and f for f in fallbacks):
        raise ctx.fail(
            f"{key}.fallbacks", "must be a list of route names or 'provider:model' ids", None
        )
    route.fallbacks = list(fallbacks)
    retries = item.get("retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ctx.fail(f"{key}.retries", "must be an integer from 0 to 10", "retries")
    route.retries = retries
    for name in ("connect_timeout", "first_byte_timeout", "timeout"):
        value = item.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ctx.fail(f"{key}.{name}", "must be a positive number of seconds", name)
        setattr(route, name, float(value))
    if "degraded" in item:
        try:
            route.degraded = parse_template(item["degraded"], f"{key}.degraded")
        except InvalidInput as exc:
            raise ctx.fail(
                f"{key}.degraded", str(exc).removeprefix(f"{key}.degraded: "), "degraded"
            ) from None
    return route


def check_prices(
    providers: list[ProviderSettings], deployments: dict[str, DeploymentSettings], ctx: _Ctx
) -> None:
    """Every deployment has a price (genai-prices' or its override), or the config fails at
    the line that names it: billing a model at a guess would get the money wrong."""
    by_name = {p.name: p for p in providers}
    for ref, dep in deployments.items():
        provider = by_name[dep.provider]
        try:
            resolve_rates(
                provider.price_provider or provider.type,
                dep.price_model or dep.model,
                dep.price,
                deployment=ref,
            )
        except ConfigError as exc:
            raise ctx.fail(dep.origin or ref, str(exc), ref) from None
