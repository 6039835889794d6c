"""``costwarden budgets|limits``: budgets and rate limits from the CLI (tiers: cli/tiers.py).

Registered on the main group by :mod:`costwarden.cli`. Writes go straight to the database;
running gateways pick them up within ``budgets.refresh_seconds`` (0.5 s by default).

Every limit option is derived from the limit names of :mod:`costwarden.budgets.limits`
(``daily_usd`` <-> ``--daily-usd``), so the CLI, the config file and the admin API share one
vocabulary. Amounts are taken as text so USD stays exact; ``-1`` means unlimited (it lifts a
tier's default).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.budgets.limits import (
    BUDGET_NAMES,
    LIMIT_NAMES,
    MODES,
    RATE_LIMIT_NAMES,
    UNLIMITED,
    Limit,
    parse_amount,
)
from costwarden.cli.common import (
    config_option,
    friendly,
    load,
    open_engine,
    out,
    refresh_note,
)
from costwarden.config.budgets import budget_config
from costwarden.config.settings import Settings
from costwarden.core.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from costwarden.budgets.status import LimitStatus

F = TypeVar("F", bound=Callable[..., Any])

# Scope options: (option, parameter, scope, help). --org and --platform pick the owner.
_SUBSCOPES = (
    ("--project", "project", "project", "A project of the org (name or id)."),
    ("--key", "key", "key", "A virtual key id of the org."),
    ("--user", "user", "user", "An end user (the x-costwarden-user header)."),
    ("--session", "session", "session", "An agent session (the x-costwarden-session header)."),
    ("--tag", "tag", "tag", "A request tag, as name=value (the x-costwarden-tags header)."),
)
_SCOPE_HELP = (
    "Scope: --org ORG alone limits the whole org; add one of --project, --key, --user, "
    "--session or --tag to limit that part of it; --platform (without --org) caps all traffic."
)


def _flag(name: str) -> str:
    """``daily_usd`` -> ``--daily-usd``."""
    return "--" + name.replace("_", "-")


def _limit_options(names: Iterable[str]) -> Callable[[F], F]:
    """One text option per limit name, e.g. ``--daily-usd`` for ``daily_usd``."""

    def apply(func: F) -> F:
        for name in reversed(list(names)):
            metric, window = LIMIT_NAMES[name]
            unit = "USD amount (up to 9 decimals)" if metric == "usd" else f"number of {metric}"
            period = {
                "day": "per calendar day",
                "month": "per calendar month",
                "lifetime": "in total, never resetting",
                "minute": "in any rolling minute",
                "hour": "in any rolling hour",
                "24h": "in any rolling 24 hours",
            }[window]
            func = click.option(
                _flag(name),
                name,
                default=None,
                metavar="USD" if metric == "usd" else "N",
                help=f"{unit} {period}; -1 = unlimited.",
            )(func)
        return func

    return apply


def _scope_options(func: F) -> F:
    for option, param, _scope, help_text in reversed(_SUBSCOPES):
        func = click.option(option, param, default=None, metavar=param.upper(), help=help_text)(
            func
        )
    func = click.option(
        "--platform", is_flag=True, help="The platform-wide scope (every org); give no --org."
    )(func)
    func = click.option("--org", default=None, help="The org (by name).")(func)
    return func


def _target(options: dict[str, Any]) -> tuple[str | None, str, str]:
    """(org name or None, scope, subject), taken out of the scope options in ``options``."""
    org: str | None = options.pop("org")
    platform: bool = options.pop("platform")
    subscopes = {param: options.pop(param) for _, param, _, _ in _SUBSCOPES}
    given = [(param, value) for param, value in subscopes.items() if value is not None]
    if len(given) > 1:
        names = " and ".join(f"--{p}" for p, _ in given)
        raise InvalidInput(
            f"give at most one of --project, --key, --user, --session, --tag ({names})"
        )
    if platform:
        if org is not None:
            raise InvalidInput("--platform applies to every org: give no --org")
        if given:
            raise InvalidInput(f"--platform takes no --{given[0][0]}")
        return None, "platform", ""
    if org is None:
        raise InvalidInput("give --org ORG (optionally with a narrower scope) or --platform")
    if not given:
        return org, "org", ""
    param, value = given[0]
    scope = next(s for _, p, s, _ in _SUBSCOPES if p == param)
    return org, scope, str(value)


def _describe(org: str | None, scope: str, subject: str) -> str:
    if scope == "platform":
        return "the platform"
    if scope == "org":
        return f"org {org}"
    return f"{scope} {subject} of org {org}"


def _amounts(options: Mapping[str, Any], names: Iterable[str]) -> dict[str, str]:
    """The limit options given, checked (with the flag's name in any error)."""
    out: dict[str, str] = {}
    for name in names:
        value = options.get(name)
        if value is None:
            continue
        parse_amount(LIMIT_NAMES[name][0], value, what=_flag(name))
        out[name] = value
    if not out:
        example = _flag(next(iter(names)))
        raise InvalidInput(f"give at least one limit, e.g. {example} 5 (see --help)")
    return out


def _amount_text(metric: str, text: str, units: int) -> str:
    if units == UNLIMITED:
        return "unlimited"
    return f"{text} USD" if metric == "usd" else text


def _org_names(engine: Any) -> dict[str, str]:
    from costwarden.storage import repo

    return {o.id: o.name for o in repo.list_orgs(engine)}


def _print_limits(limits: list[Limit], names: Mapping[str, str], title: str) -> None:
    from costwarden.budgets.limits import format_amount

    table = Table(title=escape(title), box=box.SIMPLE_HEAD)
    for column in ("org", "scope", "scope id", "limit", "amount", "mode", "kind"):
        table.add_column(column, overflow="fold")
    for lim in limits:
        text = format_amount(lim.metric, lim.amount)
        table.add_row(
            escape(names.get(lim.org_id, "")) if lim.org_id else "(platform)",
            lim.scope,
            escape(lim.subject),
            lim.name,
            _amount_text(lim.metric, text, lim.amount),
            lim.mode,
            "rate limit" if lim.rolling else "budget",
        )
    out.print(table)


def _set(
    config: str,
    target: tuple[str | None, str, str],
    amounts: dict[str, str],
    mode: str | None,
    as_json: bool,
) -> None:
    from costwarden.admin.limits_api import limit_json
    from costwarden.storage import policy

    org, scope, subject = target
    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        limits = policy.set_limits(
            engine, org=org, scope=scope, subject=subject, amounts=amounts, mode=mode
        )
        names = _org_names(engine)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([limit_json(lim, names.get(lim.org_id)) for lim in limits]))
        return
    _print_limits(limits, names, f"set on {_describe(org, scope, subject)}")
    out.print(refresh_note(settings), highlight=False)


# ---------------------------------------------------------------------- budgets


@click.group()
def budgets() -> None:
    """Budgets (spend caps per day, month or lifetime): set, show, clear.

    Amounts: USD as decimal text ("0.50"), tokens and requests as whole numbers; -1 means
    unlimited (lifts a plan tier's default for that scope).
    """


@budgets.command("set", epilog=_SCOPE_HELP)
@config_option
@_scope_options
@_limit_options(BUDGET_NAMES)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="hard: never overspend (clamps max_tokens); soft: may overshoot by one request. "
    "Default: keep the current mode, hard for new budgets.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the limits set as JSON.")
@friendly
def budgets_set(
    config: str,
    mode: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Set budgets on one scope, e.g. ``--org acme --daily-usd 5``."""
    target = _target(options)
    _set(config, target, _amounts(options, BUDGET_NAMES), mode, as_json)


@budgets.command("show")
@config_option
@click.option("--org", required=True, help="The org (by name).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per limit.")
@friendly
def budgets_show(config: str, org: str, as_json: bool) -> None:
    """Every limit that applies to an org: spent, reserved, remaining, percent used, reset.

    Read from the shared Redis counters when redis.url is set, else from the ledger
    (reservations of requests still in flight on a gateway are then shown as zero).
    """
    from costwarden.storage import repo

    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        record = repo.get_org_by_name(engine, org.strip())
        if record is None:
            raise NotFound(f"unknown org {org!r}")
        statuses = asyncio.run(_offline_status(settings, engine, record.id))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([s.to_json() for s in statuses]))
        return
    if not statuses:
        out.print(f"no budgets or rate limits apply to org {escape(record.name)}")
        return
    _print_statuses(statuses, record.name)


async def _offline_status(settings: Settings, engine: Any, org_id: str) -> list[LimitStatus]:
    """With Redis, on a client built as a gateway builds its own (closed here)."""
    from costwarden.budgets.status import offline_status
    from costwarden.storage.counters import LedgerAggregates
    from costwarden.storage.policy import PolicyTables
    from costwarden.storage.redis import redis_client

    r = settings.redis
    redis = (
        redis_client(
            r.url, timeout=r.timeout_seconds, max_connections=r.max_connections,
            cluster=r.cluster,
        )  # fmt: skip
        if r.url
        else None
    )
    policy, sums = PolicyTables(engine), LedgerAggregates(engine)
    try:
        return await offline_status(budget_config(settings), policy, sums, org_id, redis=redis)
    finally:
        if redis is not None:
            await redis.aclose()


_STATUS_COLUMNS = (
    # (header, right-aligned)
    ("scope", False),
    ("scope id", False),
    ("limit", False),
    ("mode", False),
    ("source", False),
    ("amount", True),
    ("spent", True),
    ("reserved", True),
    ("remaining", True),
    ("used %", True),
    ("resets at", False),
)
_WIDE_ENOUGH = 130  # below this, the ten-column table folds into unreadable slivers


def _print_statuses(statuses: list[LimitStatus], org_name: str) -> None:
    title = f"budgets and rate limits of org {escape(org_name)}"
    rows: list[tuple[str, ...]] = []
    for s in statuses:
        data = s.to_json()
        lim = s.limit
        unlimited = lim.amount == UNLIMITED
        rows.append(
            (
                lim.scope,
                escape(org_name if lim.scope == "org" else lim.subject),
                lim.name,
                lim.mode,
                escape(data["source"]),
                "unlimited" if unlimited else data["limit"],
                data["spent"],
                data["reserved"],
                "unlimited" if unlimited else data["remaining"],
                "-" if unlimited else data["percent_used"],
                f"rolling {lim.window}" if lim.rolling else data["resets_at"] or "never",
            )
        )
    if out.width >= _WIDE_ENOUGH:
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for header, right in _STATUS_COLUMNS:
            # fold, never truncate: a spend table with "0.000193…" in it is useless
            table.add_column(header, justify="right" if right else "left", overflow="fold")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    # Narrow terminal: two lines per limit, wrapping between fields rather than inside them.
    out.print(f"[bold]{title}[/]", highlight=False)
    for scope, scope_id, name, mode, source, amount, spent, held, left, used, resets in rows:
        out.print(f"{scope} {scope_id} · [bold]{name}[/] ({mode}, {source})", highlight=False)
        out.print(
            f"  limit {amount} · spent {spent} · reserved {held} · remaining {left} · used {used}%",
            highlight=False,
        )
        label = "window" if resets.startswith("rolling") else "resets at"
        out.print(f"  {label} {resets}", highlight=False)


@budgets.command("clear", epilog=_SCOPE_HELP)
@config_option
@_scope_options
@click.option(
    "--limit",
    "names",
    multiple=True,
    type=click.Choice(list(LIMIT_NAMES)),
    metavar="NAME",
    help="A limit to clear (repeatable), e.g. daily_usd or requests_per_minute. "
    "Default: every limit set on the scope.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"deleted": n}.')
@friendly
def budgets_clear(config: str, names: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Remove budgets or rate limits set on one scope (a tier's defaults apply again)."""
    from costwarden.storage import policy

    org_name, scope, subject = _target(options)
    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        deleted = policy.clear_limits(
            engine, org=org_name, scope=scope, subject=subject, names=list(names) or None
        )
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"deleted": deleted}))
        return
    out.print(
        f"cleared {deleted} limit(s) on {escape(_describe(org_name, scope, subject))}",
        highlight=False,
    )
    if deleted:
        out.print(refresh_note(settings), highlight=False)


# ---------------------------------------------------------------------- limits


@click.group()
def limits() -> None:
    """Rate limits (caps over a rolling minute, hour or 24 hours): set, show, clear.

    Rate limits are always soft: a request is refused (429 with Retry-After) once the window
    is full. Amounts as for budgets; -1 means unlimited.
    """


@limits.command("set", epilog=_SCOPE_HELP)
@config_option
@_scope_options
@_limit_options(RATE_LIMIT_NAMES)
@click.option("--json", "as_json", is_flag=True, help="Print the limits set as JSON.")
@friendly
def limits_set(
    config: str,
    as_json: bool,
    **options: Any,
) -> None:
    """Set rate limits on one scope, e.g. ``--org acme --requests-per-minute 60``."""
    target = _target(options)
    _set(config, target, _amounts(options, RATE_LIMIT_NAMES), None, as_json)


limits.add_command(budgets_show, "show")
limits.add_command(budgets_clear, "clear")


COMMANDS: list[click.Command] = [budgets, limits]
