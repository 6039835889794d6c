"""The ``costwarden`` command line: serve, demo, mock-upstream, keys, usage, migrate, settings;
budgets, limits, tiers and orgs (in :mod:`costwarden.cli.budgets`); switches and audit (in
:mod:`costwarden.cli.switches`); breakers of a running gateway (in :mod:`costwarden.cli.breakers`).

Tables are for people (rich); ``--json`` is for scripts. Configuration and input errors are
printed as one line and exit with status 2 -- never a traceback.
"""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from costwarden.cli import admin_keys as admin_key_commands
from costwarden.cli import alerts as alert_commands
from costwarden.cli import breakers as breaker_commands
from costwarden.cli import budgets as budget_commands
from costwarden.cli import providers as provider_commands
from costwarden.cli import report as report_commands
from costwarden.cli import scan as scan_commands
from costwarden.cli import sessions as session_commands
from costwarden.cli import switches as switch_commands
from costwarden.cli import tiers as tier_commands
from costwarden.cli.common import (
    config_option,
    err,
    friendly,
    load,
    open_engine,
    out,
    print_usage,
)
from costwarden.config.reference import settings_help


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="costwarden")
def main() -> None:
    """costwarden: an LLM cost-control gateway."""


@main.command()
@config_option
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", type=int, default=None, help="Override server.port.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Override server.workers: gateway processes on the one port (more than 1 needs "
    "[redis] url).",
)
@friendly
def serve(config: str, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway."""
    settings = load(config)
    if host:
        settings.server.host = host
    if port:
        settings.server.port = port
    if workers:
        settings.server.workers = workers
    if settings.server.workers == 1:  # the gateway in this process, no supervisor
        from costwarden.app.server import serve as run
    else:
        from costwarden.app.supervisor import serve_workers as run
    run(settings)


@main.command("mock-upstream")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=9000, show_default=True, help="Port to listen on.")
def mock_upstream(host: str, port: int) -> None:
    """Run the mock OpenAI + Anthropic upstream (for tests, the demo and benchmarks)."""
    from costwarden.mock import main_mock

    err.print(f"mock upstream on http://{host}:{port} (control API under /_mock)")
    main_mock(host, port)


@main.command()
@click.option(
    "--data-dir", default="costwarden-demo", show_default=True, help="Where the demo keeps SQLite."
)
@click.option("--port", type=int, default=4000, show_default=True, help="Gateway port (0: any).")
@click.option("--once", is_flag=True, help="Exit after the demo requests instead of serving on.")
@friendly
def demo(data_dir: str, port: int, once: bool) -> None:
    """Start a mock upstream and a gateway on SQLite, send a few requests, show the spend."""
    from costwarden.cli.demo import run_demo

    run_demo(data_dir=data_dir, port=port, once=once, console=out)


@main.command("migrate")
@config_option
@friendly
def migrate_cmd(config: str) -> None:
    """Create or upgrade the database schema."""
    from costwarden.storage.db import redact_url

    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    engine.dispose()
    out.print(f"schema up to date at {redact_url(settings.storage.database_url)}")


@main.command("settings")
@click.option(
    "--config",
    "config",
    default=None,
    envvar="COSTWARDEN_CONFIG",
    help="Also check this config file, and warn of its deprecated settings.",
)
@friendly
def settings_cmd(config: str | None) -> None:
    """List every setting with its default, environment variable and meaning."""
    deprecations = [] if config is None else load(config, need_secrets=False).deprecations
    table = Table(title="costwarden settings")
    for column in ("setting", "default", "env", "meaning"):
        table.add_column(column, overflow="fold")
    for row in settings_help():
        table.add_row(*(escape(cell) for cell in row))
    out.print(table)
    for message in deprecations:
        err.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


# ---------------------------------------------------------------------- keys


@main.group()
def keys() -> None:
    """Create, list and revoke virtual keys."""


@keys.command("create")
@config_option
@click.option("--org", required=True, help="Org the key bills to (created if new).")
@click.option("--project", default=None, help="Project within the org (created if new).")
@click.option("--name", default=None, help="A label for the key.")
@click.option(
    "--honeypot",
    is_flag=True,
    help="A honeypot key: made and listed like any other, answered by the gateway exactly as "
    "an unknown key; its use raises a critical alert. Plant it where a leak would be found.",
)
@click.option(
    "--honeypot-action",
    default=None,
    metavar="alert|switch_off_org",
    help="What a honeypot key's use does besides the alert: alert (the default), or "
    "switch_off_org (the org's kill switch turned on).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the key is in field 'key').")
@friendly
def keys_create(
    config: str,
    org: str,
    project: str | None,
    name: str | None,
    honeypot: bool,
    honeypot_action: str | None,
    as_json: bool,
) -> None:
    """Create a virtual key. It is shown once and stored only as a hash."""
    from costwarden.admin.keys_api import key_json
    from costwarden.storage import repo

    repo.check_honeypot(honeypot, honeypot_action)  # before the database is opened
    engine = open_engine(load(config, need_secrets=False))
    try:
        plaintext, record = repo.create_key(
            engine, org=org, project=project, name=name,
            honeypot=honeypot, honeypot_action=honeypot_action,
        )  # fmt: skip
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"key": plaintext, **key_json(record)}))
        return
    kind = "honeypot key" if record.honeypot else "key"
    out.print(
        f"created {kind} [bold]{record.id}[/] for org [bold]{escape(record.org_name)}[/]",
        highlight=False,
    )
    if record.honeypot:
        out.print(
            f"its use is answered as an unknown key and raises a critical alert "
            f"(action: {record.honeypot_action})",
            highlight=False,
        )
    out.print("key (shown once, store it now):")
    click.echo(plaintext)


@keys.command("list")
@config_option
@click.option("--org", default=None, help="Only this org's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def keys_list(config: str, org: str | None, as_json: bool) -> None:
    """List keys (ids and prefixes, never the keys)."""
    from costwarden.admin.keys_api import key_json
    from costwarden.storage import repo

    engine = open_engine(load(config, need_secrets=False))
    try:
        records = repo.list_keys(engine, org)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"data": [key_json(r) for r in records]}))
        return
    table = Table(title="virtual keys")
    for column in ("id", "prefix", "org", "project", "name", "created", "status", "honeypot"):
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
            r.honeypot_action if r.honeypot else "",
        )
    out.print(table)


@keys.command("revoke")
@config_option
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def keys_revoke(config: str, key_id: str, as_json: bool) -> None:
    """Revoke a key by id; running gateways stop accepting it within a second."""
    from costwarden.admin.keys_api import key_json
    from costwarden.storage import repo

    engine = open_engine(load(config, need_secrets=False))
    try:
        record = repo.revoke_key(engine, key_id)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(key_json(record)))
    else:
        out.print(f"revoked key [bold]{record.id}[/] of org {escape(record.org_name)}")


# ---------------------------------------------------------------------- usage


@main.command()
@config_option
@click.option("--org", default=None, help="Only this org.")
@click.option("--since", default="7d", show_default=True, help="7d, 24h, 30m, 2w or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (totals plus rows).")
@friendly
def usage(config: str, org: str | None, since: str, as_json: bool) -> None:
    """Spend by org, model and day, from the ledger."""
    from costwarden.core.periods import parse_since
    from costwarden.storage.usage import usage_report

    start = parse_since(since)
    engine = open_engine(load(config, need_secrets=False))
    try:
        report = usage_report(engine, org=org, since=start)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(report.to_json_dict()))
        return
    print_usage(report, out, title=f"spend since {since}")


# ---------------------------------------------------------------------- the other groups

for _group in (
    budget_commands, tier_commands, switch_commands, breaker_commands, alert_commands,
    report_commands, session_commands, scan_commands, provider_commands, admin_key_commands,
):  # fmt: skip
    for _command in _group.COMMANDS:
        main.add_command(_command)
