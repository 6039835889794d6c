"""``costwarden providers check``: can this gateway reach each provider, does each serve the
models the config routes to it, and what is each deployment priced at.

One GET per provider to the list of models it serves (``ProviderAdapter.models_url``), with
the gateway's own credential: it costs nothing, proves the address, the TLS chain, the proxy
and the key at once, and names the models. Nothing is sent to a model. A provider whose
credential variable is unset is reported as such, not called. The environment's proxy
settings (``HTTPS_PROXY``, ``NO_PROXY``) apply, as they do to the gateway's calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from typing import Literal

import aiohttp
import orjson

from costwarden.app.domain_types import provider_spec, provider_tls
from costwarden.config.settings import ProviderSettings, Settings
from costwarden.pricing import Pricer, TieredRates, resolve_rates
from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import ProviderAdapter

Served = Literal["listed", "not listed", "unknown"]


@dataclasses.dataclass(frozen=True, slots=True)
class DeploymentCheck:
    id: str
    model: str
    served: Served
    price_source: str  # "genai-prices", "config override", "genai-prices (tiered)"
    input_mtok: str  # USD per million tokens (the dearest input kind); "tiered" in tiers
    output_mtok: str


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderCheck:
    name: str
    type: str
    base_url: str
    ok: bool
    detail: str  # "200 in 41 ms, 6 models listed", or why not
    deployments: tuple[DeploymentCheck, ...]


async def check_providers(settings: Settings, *, timeout: float = 10.0) -> list[ProviderCheck]:
    """Every configured provider, checked concurrently, with its TLS settings (CA bundle,
    client certificate) as the gateway uses them."""
    async with aiohttp.ClientSession(trust_env=True) as http:
        return list(
            await asyncio.gather(*(_check(http, settings, p, timeout) for p in settings.providers))
        )


async def _check(
    http: aiohttp.ClientSession,
    settings: Settings,
    provider: ProviderSettings,
    timeout: float,
) -> ProviderCheck:
    deployments = [d for d in settings.deployments.values() if d.provider == provider.name]
    try:
        adapter = make_adapter(provider_spec(provider))
    except (ValueError, ImportError) as exc:
        return ProviderCheck(provider.name, provider.type, provider.base_url, False, str(exc), ())
    ids: set[str] | None = None
    if provider.api_key_env and not provider.api_key:
        ok, detail = False, f"not called: the variable {provider.api_key_env} is not set"
    elif (url := adapter.models_url()) is None:
        ok, detail = True, "not called: this provider type lists no models we can read"
    else:
        ok, detail, ids = await _list(http, adapter, url, timeout, provider)
    checks = tuple(
        _deployment(
            d.id,
            d.model,
            d.price_model,
            _served(ids, d.model, d.price_model),
            resolve_rates(
                adapter.price_provider, d.price_model or d.model, d.price, deployment=d.id
            ),
        )
        for d in deployments
    )
    return ProviderCheck(provider.name, provider.type, provider.base_url, ok, detail, checks)


async def _list(
    http: aiohttp.ClientSession,
    adapter: ProviderAdapter,
    url: str,
    timeout: float,
    provider: ProviderSettings,
) -> tuple[bool, str, set[str] | None]:
    started = time.perf_counter()
    tls = provider_tls(provider).context()
    try:
        async with http.get(
            url,
            headers=adapter.headers({}, url, b""),
            timeout=aiohttp.ClientTimeout(total=timeout, connect=provider.connect_timeout),
            ssl=tls,
        ) as resp:
            body = await resp.read()
            ms = (time.perf_counter() - started) * 1000
            if resp.status in (401, 403):
                return False, f"{resp.status} in {ms:.0f} ms: the credential was refused", None
            if resp.status != 200:
                return False, f"{resp.status} in {ms:.0f} ms from the models list", None
    except TimeoutError:
        return False, f"no answer within {timeout:g} s", None
    except aiohttp.ClientError as exc:  # the message names the host and cause, no secret
        return False, f"cannot connect: {_scrub(str(exc), adapter)}", None
    try:
        ids = adapter.model_ids(orjson.loads(body))
    except (ValueError, KeyError, TypeError):
        return True, f"200 in {ms:.0f} ms, but the models list could not be read", None
    return True, f"200 in {ms:.0f} ms, {len(ids)} models listed", ids


def _served(ids: set[str] | None, model: str, price_model: str | None) -> Served:
    if ids is None:
        return "unknown"
    listed = model in ids or (price_model is not None and price_model in ids)
    return "listed" if listed else "not listed"


def _deployment(
    ref: str, model: str, price_model: str | None, served: Served, rates: Pricer
) -> DeploymentCheck:
    per_in, per_out = rates.bound_rates()  # USD a token, the dearest kind of each
    tiered = isinstance(rates, TieredRates)
    return DeploymentCheck(
        id=ref,
        model=model if price_model is None else f"{model} (priced as {price_model})",
        served=served,
        price_source=rates.source,
        input_mtok="tiered" if tiered else _per_million(per_in),
        output_mtok="tiered" if tiered else _per_million(per_out),
    )


def _per_million(per_token: Decimal) -> str:
    return format((per_token * 1_000_000).normalize(), "f")


def _scrub(text: str, adapter: ProviderAdapter) -> str:
    for secret in adapter.secrets():
        text = text.replace(secret, "***")
    return text


