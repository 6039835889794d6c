"""``costwarden switches list|off|on`` and ``costwarden audit``: the kill switch from the CLI.

Registered on the main group by :mod:`costwarden.cli`. Writes go straight to the database,
each with its audit row (actor ``cli:<OS user>``); running gateways apply them within
``switches.refresh_seconds`` (0.5 s by default). Switching everything off (``ai`` without
``--org``) needs ``--yes-disable-everything``.
"""

from __future__ import annotations

import getpass
import json
import time

import click
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlalchemy.engine import Engine

from costwarden.cli.common import config_option, err, friendly, load, open_engine, out
from costwarden.config.settings import Settings
from costwarden.core.errors import InvalidInput
from costwarden.storage.audit import DEFAULT_AUDIT_LIMIT, AuditRecord
from costwarden.storage.switches import FEATURES, SwitchRecord, needs_confirmation

_FEATURE_HELP = (
    f"The feature: {', '.join(FEATURES)}. ai is every model call; an endpoint name switches "
    "that endpoint; streaming refuses stream: true requests."
)


def actor() -> str:
    """``cli:<OS user>``, as recorded in the audit log."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the password database
        user = "unknown"
    return f"cli:{user}"


def _refresh_note(settings: Settings) -> str:
    return f"running gateways apply this within {settings.switches.refresh_seconds:g} s"


def _where(record: SwitchRecord) -> str:
    return "platform-wide" if record.org_id is None else f"for org {record.org_name}"


def _print_switches(records: list[SwitchRecord], version: int) -> None:
    table = Table(title=f"switches (version {version})", box=box.SIMPLE_HEAD)
    for column in ("scope", "org", "feature", "state", "message", "updated by", "updated at"):
        table.add_column(column, overflow="fold")
    for r in records:
        table.add_row(
            "platform" if r.org_id is None else "org",
            escape(r.org_name or ""),
            r.feature,
            "on" if r.enabled else "[bold red]OFF[/]",
            escape(r.message or ("" if r.enabled else "(default)")),
            escape(r.updated_by),
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
        )
    out.print(table)
    if not records:
        out.print("no switch has been set: everything is on", highlight=False)


def _announce(engine: Engine, record: SwitchRecord) -> None:
    """Raise ``switch_changed`` as the admin API does (the gateways' alerting turns a switch
    turned off into an alert): appended to the event log every gateway reads. The switch is
    set either way; an event log that cannot take it is a warning."""
    from costwarden.storage.event_log import append_events

    event = record.changed_event()
    try:
        append_events(engine, [event], time.time())
    except Exception as exc:  # noqa: BLE001 - the change itself is committed
        err.print(
            f"[yellow]warning:[/] switch set, but its event was not raised ({type(exc).__name__})",
            highlight=False,
        )


def _set(
    config: str,
    org: str | None,
    feature: str,
    enabled: bool,
    message: str | None,
    as_json: bool,
) -> None:
    from costwarden.storage.switches import set_switch

    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        record = set_switch(
            engine, org=org, feature=feature, enabled=enabled, message=message, actor=actor()
        )
        _announce(engine, record)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(record.to_json()))
        return
    state = "on" if record.enabled else "OFF"
    out.print(
        f"{escape(record.feature)} is {state} {escape(_where(record))} (version {record.version})",
        highlight=False,
    )
    out.print(_refresh_note(settings), highlight=False)


@click.group()
def switches() -> None:
    """Kill switch and feature toggles: list, off, on (every change is audited)."""


@switches.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help='Print {"version": n, "switches": [...]}.')
@friendly
def switches_list(config: str, as_json: bool) -> None:
    """Every switch set so far (on and off), platform-wide ones first."""
    from costwarden.storage.switches import load_switches

    engine = open_engine(load(config, need_secrets=False))
    try:
        version, records = load_switches(engine)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"version": version, "switches": [r.to_json() for r in records]}))
        return
    _print_switches(records, version)


@switches.command("off")
@config_option
@click.option("--org", default=None, help="Only this org (by name); without it: platform-wide.")
@click.option("--feature", default="ai", show_default=True, help=_FEATURE_HELP)
@click.option("--message", default=None, help="What refused clients are told.")
@click.option(
    "--yes-disable-everything",
    "confirmed",
    is_flag=True,
    help="Required to switch ai off platform-wide (stops every model call).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the switch as JSON.")
@friendly
def switches_off(
    config: str,
    org: str | None,
    feature: str,
    message: str | None,
    confirmed: bool,
    as_json: bool,
) -> None:
    """Switch a feature off: clients get 503 service_disabled with the message."""
    if needs_confirmation(org, feature.strip(), False) and not confirmed:
        raise InvalidInput(
            "this stops every model call for every org: "
            "add --yes-disable-everything to switch ai off platform-wide"
        )
    _set(config, org, feature, False, message, as_json)


@switches.command("on")
@config_option
@click.option("--org", default=None, help="Only this org (by name); without it: platform-wide.")
@click.option("--feature", default="ai", show_default=True, help=_FEATURE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the switch as JSON.")
@friendly
def switches_on(config: str, org: str | None, feature: str, as_json: bool) -> None:
    """Switch a feature back on."""
    _set(config, org, feature, True, None, as_json)


def _value(value: object) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True)


def _print_audit(entries: list[AuditRecord]) -> None:
    table = Table(title="audit log (newest first)", box=box.SIMPLE_HEAD)
    for column in ("time", "actor", "action", "target", "old", "new"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            f"{e.ts:%Y-%m-%d %H:%M:%S}",
            escape(e.actor),
            escape(e.action),
            escape(e.target),
            escape(_value(e.old_value)),
            escape(_value(e.new_value)),
        )
    out.print(table)


@click.command("audit")
@config_option
@click.option(
    "--limit", type=int, default=DEFAULT_AUDIT_LIMIT, show_default=True, help="At most N entries."
)
@click.option("--action", default=None, help="Only this action, e.g. switch.set.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@friendly
def audit(config: str, limit: int, action: str | None, as_json: bool) -> None:
    """Who changed what and when: kill switch and other operator actions."""
    from costwarden.storage.audit import audit_entries, parse_limit

    count = parse_limit(limit)
    engine = open_engine(load(config, need_secrets=False))
    try:
        entries = audit_entries(engine, limit=count, action=action)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([e.to_json() for e in entries]))
        return
    _print_audit(entries)


COMMANDS: list[click.Command] = [switches, audit]
