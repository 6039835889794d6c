"""The ``costwarden`` command line: serve, demo, mock-upstream, keys, usage, migrate, settings;
budgets, limits, tiers and orgs (in :mod:`costwarden.cli_budgets`); switches and audit (in
:mod:`costwarden.cli_switches`); breakers of a running gateway (in :mod:`costwarden.cli_breakers`).

Tables are for people (rich); ``--json`` is for scripts. Configuration and input errors are
printed as one line and exit with status 2 -- never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from costwarden.errors import CostwardenError
from costwarden.settings import Settings, load_settings, settings_help

F = TypeVar("F", bound=Callable[..., Any])

_out = Console()
_err = Console(stderr=True)


def _friendly(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CostwardenError as exc:
            _err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def _settings(config: str, *, need_secrets: bool = True) -> Settings:
    # Admin commands never call a provider, so an unset credential must not stop them.
    return load_settings(config, require_secrets=need_secrets)


def _engine(settings: Settings) -> Any:
    from costwarden.storage.db import create_engine_for
    from costwarden.storage.migrate import migrate

    engine = create_engine_for(settings.storage.database_url)
    migrate(engine)
    return engine


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="costwarden")
def main() -> None:
    """costwarden: an LLM cost-control gateway."""


config_option = click.option(
    "--config",
    "config",
    default="costwarden.toml",
    show_default=True,
    envvar="COSTWARDEN_CONFIG",
    help="Path to the TOML config file.",
)


@main.command()
@config_option
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
@_friendly
def serve(config: str, host: str | None, port: int | None) -> None:
    """Run the gateway."""
    from costwarden.server import serve as run

    settings = _settings(config)
    if host:
        settings.server.host = host
    if port:
        settings.server.port = port
    run(settings)


@main.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9000, show_default=True, help="Port to listen on.")
def mock_upstream(host: str, port: int) -> None:
    """Run the mock OpenAI + Anthropic upstream (for tests, the demo and benchmarks)."""
    from costwarden.mock import main_mock

    _err.print(f"mock upstream on http://{host}:{port} (control API under /_mock)")
    main_mock(host, port)


@main.command()
@click.option(
    "--data-dir", default="costwarden-demo", show_default=True, help="Where the demo keeps SQLite."
)
@click.option("--port", type=int, default=4000, show_default=True, help="Gateway port (0: any).")
@click.option("--once", is_flag=True, help="Exit after the demo requests instead of serving on.")
@_friendly
def demo(data_dir: str, port: int, once: bool) -> None:
    """Start a mock upstream and a gateway on SQLite, send a few requests, show the spend."""
    from costwarden.demo import run_demo

    run_demo(data_dir=data_dir, port=port, once=once, console=_out)


@main.command("migrate")
@config_option
@_friendly
def migrate_cmd(config: str) -> None:
    """Create or upgrade the database schema."""
    from costwarden.storage.db import redact_url

    settings = _settings(config, need_secrets=False)
    engine = _engine(settings)
    engine.dispose()
    _out.print(f"schema up to date at {redact_url(settings.storage.database_url)}")


@main.command("settings")
def settings_cmd() -> None:
    """List every setting with its default, environment variable and meaning."""
    table = Table(title="costwarden settings")
    for column in ("setting", "default", "env", "meaning"):
        table.add_column(column, overflow="fold")
    for row in settings_help():
        table.add_row(*(escape(cell) for cell in row))
    _out.print(table)


# ---------------------------------------------------------------------- keys


@main.group()
def keys() -> None:
    """Create, list and revoke virtual keys."""


@keys.command("create")
@config_option
@click.option("--org", required=True, help="Org the key bills to (created if new).")
@click.option("--project", default=None, help="Project within the org (created if new).")
@click.option("--name", default=None, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the key is in field 'key').")
@_friendly
def keys_create(
    config: str, org: str, project: str | None, name: str | None, as_json: bool
) -> None:
    """Create a virtual key. It is shown once and stored only as a hash."""
    from costwarden.admin.api import key_json
    from costwarden.storage import repo

    engine = _engine(_settings(config, need_secrets=False))
    try:
        plaintext, record = repo.create_key(engine, org=org, project=project, name=name)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"key": plaintext, **key_json(record)}))
        return
    _out.print(f"created key [bold]{record.id}[/] for org [bold]{escape(record.org_name)}[/]")
    _out.print("key (shown once, store it now):")
    click.echo(plaintext)


@keys.command("list")
@config_option
@click.option("--org", default=None, help="Only this org's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def keys_list(config: str, org: str | None, as_json: bool) -> None:
    """List keys (ids and prefixes, never the keys)."""
    from costwarden.admin.api import key_json
    from costwarden.storage import repo

    engine = _engine(_settings(config, need_secrets=False))
    try:
        records = repo.list_keys(engine, org)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"data": [key_json(r) for r in records]}))
        return
    table = Table(title="virtual keys")
    for column in ("id", "prefix", "org", "project", "name", "created", "status"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for r in records:
        status = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        table.add_row(
            r.id,
            escape(r.prefix) + "…",
            escape(r.org_name),
            escape(r.project_name or ""),
            escape(r.name or ""),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            status,
        )
    _out.print(table)


@keys.command("revoke")
@config_option
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def keys_revoke(config: str, key_id: str, as_json: bool) -> None:
    """Revoke a key by id; running gateways stop accepting it within a second."""
    from costwarden.admin.api import key_json
    from costwarden.storage import repo

    engine = _engine(_settings(config, need_secrets=False))
    try:
        record = repo.revoke_key(engine, key_id)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(key_json(record)))
    else:
        _out.print(f"revoked key [bold]{record.id}[/] of org {escape(record.org_name)}")


# ---------------------------------------------------------------------- usage


@main.command()
@config_option
@click.option("--org", default=None, help="Only this org.")
@click.option("--since", default="7d", show_default=True, help="7d, 24h, 30m, 2w or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (totals plus rows).")
@_friendly
def usage(config: str, org: str | None, since: str, as_json: bool) -> None:
    """Spend by org, model and day, from the ledger."""
    from costwarden.periods import parse_since
    from costwarden.storage.usage import usage_report

    start = parse_since(since)
    engine = _engine(_settings(config, need_secrets=False))
    try:
        report = usage_report(engine, org=org, since=start)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json_dict()))
        return
    print_usage(report, _out, title=f"spend since {since}")


def _money(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if value else "0"


def print_usage(report: Any, console: Console, *, title: str) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column, justify in (
        ("day", "left"),
        ("org", "left"),
        ("model", "left"),
        ("reqs", "right"),
        ("in tok", "right"),
        ("out tok", "right"),
        ("cost USD", "right"),
    ):
        # fold, never truncate: a spend table with "0.000193…" in it is useless
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in report.rows:
        table.add_row(
            row.day,
            escape(row.org),
            escape(row.model),
            str(row.requests),
            str(row.input_tokens),
            str(row.output_tokens),
            _money(row.cost_usd),
        )
    table.add_section()
    table.add_row(
        "total",
        "",
        "",
        str(report.requests),
        str(report.input_tokens),
        str(report.output_tokens),
        _money(report.cost_usd),
    )
    console.print(table)


# ---------------------------------------------------------------------- budgets, limits, tiers


def _register_budget_commands() -> None:
    """``budgets``, ``limits``, ``tiers`` and ``orgs`` live in :mod:`costwarden.cli_budgets`."""
    from costwarden.cli_budgets import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


def _register_switch_commands() -> None:
    """``switches`` and ``audit`` live in :mod:`costwarden.cli_switches`."""
    from costwarden.cli_switches import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


def _register_breaker_commands() -> None:
    """``breakers`` lives in :mod:`costwarden.cli_breakers`."""
    from costwarden.cli_breakers import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


if __name__ == "__main__":  # pragma: no cover
    # Run as ``python -m costwarden.cli``: use the importable module, so that cli_budgets
    # (which imports this module's helpers) registers on the very group that runs.
    from costwarden.cli import main as entry

    entry()
else:
    _register_budget_commands()
    _register_switch_commands()
    _register_breaker_commands()
