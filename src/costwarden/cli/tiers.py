"""``costwarden tiers|orgs``: plan tiers and which org is on which, from the CLI.

Writes go straight to the database; running gateways pick them up within
``budgets.refresh_seconds``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.budgets.limits import TIER_SCOPES, tier_to_mapping
from costwarden.cli.common import (
    config_option,
    friendly,
    load,
    open_engine,
    out,
    refresh_note,
)
from costwarden.config.budgets import budget_config
from costwarden.core.errors import InvalidInput

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def tiers() -> None:
    """Plan tiers: default limits for every org on the tier, per scope type.

    Tiers come from the config file ([[tiers]], read-only here) or are made with these
    commands. A limit set on a scope overrides its tier's default for that limit.
    """


def _parse_tier_limits(option: str, text: str) -> dict[str, str]:
    """``'daily_usd=5, requests_per_minute=60'`` -> {name: amount text}."""
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise InvalidInput(f"{option}: expected NAME=AMOUNT, got {item.strip()!r}")
        if name in out:
            raise InvalidInput(f"{option}: {name} given twice")
        out[name] = value
    if not out:
        raise InvalidInput(f"{option}: no limits given")
    return out


def _tier_options(func: F) -> F:
    for scope in reversed(TIER_SCOPES):
        func = click.option(
            f"--{scope}-limits",
            f"{scope}_limits",
            default=None,
            metavar="NAME=AMOUNT,...",
            help=f"Defaults for each {scope}, e.g. 'daily_usd=5,requests_per_minute=60'.",
        )(func)
    return func


@tiers.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of tiers.")
@friendly
def tiers_list(config: str, as_json: bool) -> None:
    """List tiers: the config file's and those made with `tiers set`."""
    from costwarden.admin.limits_api import tier_json
    from costwarden.storage import policy

    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        found = [*budget_config(settings).tiers, *policy.list_tiers(engine)]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([tier_json(t) for t in found]))
        return
    table = Table(title="plan tiers", box=box.SIMPLE_HEAD)
    for column in ("tier", "source", "scope", "limits"):
        table.add_column(column, overflow="fold")
    for tier in found:
        mapping = tier_to_mapping(tier)
        if not mapping:
            table.add_row(escape(tier.name), tier.source, "", "(no limits)")
        for scope, amounts in mapping.items():
            shown = ", ".join(f"{k}={v}" for k, v in amounts.items())
            table.add_row(escape(tier.name), tier.source, scope, shown)
    out.print(table)


@tiers.command("set")
@config_option
@click.argument("name")
@_tier_options
@click.option("--json", "as_json", is_flag=True, help="Print the tier as JSON.")
@friendly
def tiers_set(config: str, name: str, as_json: bool, **options: str | None) -> None:
    """Create or replace tier NAME (its limits are replaced as a whole).

    Example: costwarden tiers set pro --org-limits 'monthly_usd=500' --key-limits
    'requests_per_minute=120'
    """
    from costwarden.admin.limits_api import config_tier_conflict, tier_json
    from costwarden.storage import policy

    data: dict[str, dict[str, str]] = {}
    for scope in TIER_SCOPES:
        text = options.get(f"{scope}_limits")
        if text is not None:
            data[scope] = _parse_tier_limits(f"--{scope}-limits", text)
    if not data:
        flags = ", ".join(f"--{s}-limits" for s in TIER_SCOPES)
        raise InvalidInput(f"give the tier's limits with at least one of {flags}")
    settings = load(config, need_secrets=False)
    if name.strip() in {t.name for t in settings.tiers}:
        raise InvalidInput(config_tier_conflict(name.strip()))
    engine = open_engine(settings)
    try:
        tier = policy.set_tier(engine, name, data)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(tier_json(tier)))
        return
    out.print(f"tier [bold]{escape(tier.name)}[/] set", highlight=False)
    for scope, amounts in tier_to_mapping(tier).items():
        shown = ", ".join(f"{k}={v}" for k, v in amounts.items())
        out.print(f"  {scope}: {escape(shown)}", highlight=False)
    out.print(refresh_note(settings), highlight=False)


@tiers.command("delete")
@config_option
@click.argument("name")
@friendly
def tiers_delete(config: str, name: str) -> None:
    """Delete tier NAME (move its orgs to another tier first)."""
    from costwarden.admin.limits_api import config_tier_conflict
    from costwarden.storage import policy

    settings = load(config, need_secrets=False)
    if name.strip() in {t.name for t in settings.tiers}:
        raise InvalidInput(config_tier_conflict(name.strip()))
    engine = open_engine(settings)
    try:
        policy.delete_tier(engine, name)
    finally:
        engine.dispose()
    out.print(f"deleted tier {escape(name.strip())}", highlight=False)


# ---------------------------------------------------------------------- orgs


@click.group()
def orgs() -> None:
    """Orgs: put an org on a plan tier."""


@orgs.command("set-tier")
@config_option
@click.option("--org", required=True, help="The org (by name).")
@click.option("--tier", default=None, help="The tier to put the org on.")
@click.option("--none", "no_tier", is_flag=True, help="Take the org off its tier.")
@click.option("--json", "as_json", is_flag=True, help='Print {"org": ..., "tier": ...}.')
@friendly
def orgs_set_tier(config: str, org: str, tier: str | None, no_tier: bool, as_json: bool) -> None:
    """Put an org on a tier (--tier NAME) or take it off (--none)."""
    from costwarden.storage import policy

    if (tier is None) == (not no_tier):
        raise InvalidInput("give exactly one of --tier NAME and --none")
    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        policy.set_org_tier(engine, org, tier, known_tiers=[t.name for t in settings.tiers])
    finally:
        engine.dispose()
    chosen = tier.strip() if tier is not None else None
    if as_json:
        click.echo(json.dumps({"org": org.strip(), "tier": chosen}))
        return
    if chosen is None:
        out.print(f"org {escape(org.strip())} is on no tier", highlight=False)
    else:
        out.print(f"org {escape(org.strip())} is on tier {escape(chosen)}", highlight=False)
    out.print(refresh_note(settings), highlight=False)


COMMANDS: list[click.Command] = [tiers, orgs]
