"""``costwarden alerts ...``: alerts and their channels from the CLI.

Registered on the main group by :mod:`costwarden.cli`. Reads and writes go straight to the
database; acknowledging, snoozing and resolving are audited with the actor ``cli:<OS user>``
(or ``--by``). Channel secrets (webhook signing secrets, SMTP passwords) are read from
environment variables named on the command line, never from the command line itself (which
other users of the machine can see), and are never printed.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.cli.alert_rules import RULE_COMMANDS
from costwarden.cli.common import config_option, friendly, load, open_engine, out
from costwarden.cli.switches import actor
from costwarden.core.errors import InvalidInput

COMMANDS: list[click.Command] = []


@click.group()
def alerts() -> None:
    """Alerts (list, ack, snooze, resolve), threshold rules, channels and their delivery
    log."""


COMMANDS.append(alerts)
for _command in RULE_COMMANDS:
    alerts.add_command(_command)


def _who(by: str | None) -> str:
    return f"cli:{by.strip()}" if by and by.strip() else actor()


@alerts.command("list")
@config_option
@click.option("--state", type=click.Choice(["firing", "acknowledged", "resolved"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@friendly
def alerts_list(config: str, state: str | None, limit: int, as_json: bool) -> None:
    """The newest alerts first."""
    from costwarden.storage.alerts import list_alerts

    engine = open_engine(load(config, need_secrets=False))
    try:
        records = list_alerts(engine, state=state, limit=limit)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records]))
        return
    table = Table(title="alerts (newest first)", box=box.SIMPLE_HEAD)
    for column in ("id", "fired", "severity", "state", "title", "acknowledged by"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            r.id,
            f"{r.fired_at:%Y-%m-%d %H:%M:%S}",
            r.severity,
            r.state,
            escape(r.title),
            escape(r.acknowledged_by or ""),
        )
    out.print(table)
    if not records:
        out.print("no alert has fired", highlight=False)


def _act(
    config: str, alert_id: str, action: str, by: str | None, until: Any, as_json: bool
) -> None:
    from costwarden.storage.alerts import act_on_alert

    engine = open_engine(load(config, need_secrets=False))
    try:
        record = act_on_alert(engine, alert_id, action, actor=_who(by), until=until)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(record.to_json()))
        return
    out.print(f"{record.id}: {record.state} ({escape(record.title)})", highlight=False)


_BY = click.option("--by", default=None, help="Who does it (default: your OS user name).")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the alert as JSON.")


@alerts.command("ack")
@config_option
@click.argument("alert_id")
@_BY
@_JSON
@friendly
def alerts_ack(config: str, alert_id: str, by: str | None, as_json: bool) -> None:
    """Acknowledge an alert: it stays open, and the audit log says who took it."""
    _act(config, alert_id, "acknowledge", by, None, as_json)


@alerts.command("snooze")
@config_option
@click.argument("alert_id")
@click.option("--minutes", type=click.IntRange(1, 7 * 24 * 60), required=True)
@_BY
@_JSON
@friendly
def alerts_snooze(
    config: str, alert_id: str, minutes: int, by: str | None, as_json: bool
) -> None:
    """Hold an alert's deliveries for a while."""
    until = datetime.now(UTC) + timedelta(minutes=minutes)
    _act(config, alert_id, "snooze", by, until, as_json)


@alerts.command("resolve")
@config_option
@click.argument("alert_id")
@_BY
@_JSON
@friendly
def alerts_resolve(config: str, alert_id: str, by: str | None, as_json: bool) -> None:
    """Resolve an alert (deliveries not yet sent are dropped)."""
    _act(config, alert_id, "resolve", by, None, as_json)


def _secret_from(env_var: str | None, what: str) -> str | None:
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        raise InvalidInput(f"{what}: the environment variable {env_var} is not set")
    return value


@alerts.command("channel-add")
@config_option
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["webhook", "slack", "email"]), required=True)
@click.option("--url", default=None, help="webhook and slack: where to POST.")
@click.option(
    "--secret-env",
    default=None,
    help="webhook: the environment variable holding the signing secret (whsec_...).",
)
@click.option("--to", "recipients", multiple=True, help="email: a recipient (repeatable).")
@click.option("--sender", default=None, help="email: the From address.")
@click.option("--smtp-host", default=None)
@click.option("--smtp-port", type=int, default=587, show_default=True)
@click.option("--smtp-user", default=None)
@click.option("--smtp-password-env", default=None, help="email: the env var holding it.")
@click.option(
    "--smtp-security",
    type=click.Choice(["starttls", "tls", "none"]),
    default="starttls",
    show_default=True,
)
@click.option(
    "--min-severity",
    type=click.Choice(["info", "warning", "critical"]),
    default="info",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the channel (redacted) as JSON.")
@friendly
def channel_add(
    config: str,
    name: str,
    kind: str,
    url: str | None,
    secret_env: str | None,
    recipients: tuple[str, ...],
    sender: str | None,
    smtp_host: str | None,
    smtp_port: int,
    smtp_user: str | None,
    smtp_password_env: str | None,
    smtp_security: str,
    min_severity: str,
    as_json: bool,
) -> None:
    """Add a channel, or replace the one of the same name (not one of the config file's)."""
    from costwarden.alerts.delivery import redacted, validate_channel
    from costwarden.alerts.model import Channel, ChannelFilter, EmailSettings
    from costwarden.storage.alerts import save_channel

    email = None
    if kind == "email":
        email = EmailSettings(
            to=recipients,
            sender=sender or "",
            host=smtp_host or "",
            port=smtp_port,
            username=smtp_user,
            password=_secret_from(smtp_password_env, "--smtp-password-env"),
            security=smtp_security,  # type: ignore[arg-type]
        )
    channel = Channel(
        id="",
        name=name.strip(),
        type=kind,  # type: ignore[arg-type]
        url=url,
        secret=_secret_from(secret_env, "--secret-env"),
        email=email,
        filter=ChannelFilter(min_severity=min_severity),  # type: ignore[arg-type]
    )
    if not channel.name:
        raise InvalidInput("a channel needs a name")
    validate_channel(channel)
    engine = open_engine(load(config, need_secrets=False))
    try:
        saved = save_channel(engine, channel, actor=actor())
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(redacted(saved)))
        return
    out.print(f"channel {escape(saved.name)} ({saved.type}) saved as {saved.id}", highlight=False)


@alerts.command("channels")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (secrets redacted).")
@friendly
def channels(config: str, as_json: bool) -> None:
    """Every channel, secrets and URL paths hidden."""
    from costwarden.alerts.delivery import redacted
    from costwarden.storage.alerts import list_channels

    engine = open_engine(load(config, need_secrets=False))
    try:
        found = [redacted(c) for c in list_channels(engine)]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(found, default=str))
        return
    table = Table(title="alert channels", box=box.SIMPLE_HEAD)
    for column in ("name", "type", "enabled", "source", "where"):
        table.add_column(column, overflow="fold")
    for c in found:
        email: Any = c.get("email") or {}
        where = c.get("url") or ", ".join(email.get("to", ()))
        table.add_row(
            escape(str(c["name"])), str(c["type"]), str(c["enabled"]), str(c["source"]),
            escape(str(where)),
        )  # fmt: skip
    out.print(table)


@alerts.command("channel-remove")
@config_option
@click.argument("name")
@friendly
def channel_remove(config: str, name: str) -> None:
    """Disable a channel; its deliveries not yet sent are dropped (the log stays). A channel
    of the config file is removed there."""
    from costwarden.storage.alerts import delete_channel

    engine = open_engine(load(config, need_secrets=False))
    try:
        delete_channel(engine, name, actor=actor())
    finally:
        engine.dispose()
    out.print(f"channel {escape(name)} removed", highlight=False)


@alerts.command("test")
@config_option
@click.argument("name")
@friendly
def alerts_test(config: str, name: str) -> None:
    """Send a test message to a channel now (signed, for webhooks); exit 1 if it failed."""
    from costwarden.alerts.channels import send_check
    from costwarden.storage.alert_records import new_alert_id
    from costwarden.storage.alerts import get_channel

    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        channel = get_channel(engine, name)
    finally:
        engine.dispose()
    attempt = asyncio.run(
        send_check(
            channel,
            message_id=new_alert_id("tst"),
            created_at=datetime.now(UTC).isoformat(),
            timeout=settings.alerts.send_timeout_seconds,
        )
    )
    if attempt.delivered:
        out.print(f"delivered to {escape(channel.name)} (status {attempt.status})", highlight=False)
        return
    out.print(f"[red]not delivered[/]: {escape(attempt.error or 'failed')}", highlight=False)
    raise SystemExit(1)


@alerts.command("deliveries")
@config_option
@click.option("--alert", "alert_id", default=None, help="Only this alert's.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@friendly
def deliveries(config: str, alert_id: str | None, as_json: bool) -> None:
    """The delivery log: each delivery's state and every attempt."""
    from costwarden.storage.alert_deliveries import delivery_log

    engine = open_engine(load(config, need_secrets=False))
    try:
        log = delivery_log(engine, alert_id=alert_id)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(log))
        return
    table = Table(title="alert deliveries (newest first)", box=box.SIMPLE_HEAD)
    for column in ("alert", "channel", "state", "attempts", "last"):
        table.add_column(column, overflow="fold")
    for d in log:
        last = d["attempts"][-1] if d["attempts"] else None
        table.add_row(
            d["alert_id"],
            escape(d["channel"]),
            d["state"],
            str(len(d["attempts"])),
            "" if last is None else escape(f"{last['status']} {last['error'] or ''}"),
        )
    out.print(table)
