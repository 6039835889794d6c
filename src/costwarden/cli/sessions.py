"""``costwarden escalations ...``: the escalations of paused agent sessions, from the CLI.

Registered on the main group by :mod:`costwarden.cli`. Reads and writes go straight to the
database, as the admin API's do (``storage.sessions.settle_escalation``: resolved once, then
the paused session moved on or ended by compare-and-set); the transition and the resolution
are appended to the event log, so every running gateway applies them and every live stream
shows them, and an extra budget is a limit on the session that the gateways load at their
next policy poll. The decider is ``cli:<OS user>`` (or ``--by``).
"""

from __future__ import annotations

import json
import time
from decimal import Decimal, InvalidOperation

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.cli.common import config_option, err, friendly, load, open_engine, out
from costwarden.cli.switches import actor
from costwarden.core.errors import InvalidInput

COMMANDS: list[click.Command] = []


@click.group()
def escalations() -> None:
    """Escalations of paused agent sessions: list them, approve or deny one."""


COMMANDS.append(escalations)


@escalations.command("list")
@config_option
@click.option("--status", type=click.Choice(["open", "approved", "denied"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@friendly
def escalations_list(config: str, status: str | None, as_json: bool) -> None:
    """Escalations, newest first."""
    from costwarden.storage.session_view import escalation_json
    from costwarden.storage.sessions import list_escalations

    engine = open_engine(load(config, need_secrets=False))
    try:
        found = list_escalations(engine, status=status)  # type: ignore[arg-type]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps([escalation_json(e) for e in found]))
        return
    table = Table(title="escalations (newest first)", box=box.SIMPLE_HEAD)
    for column in ("id", "opened", "session", "reason", "status", "by", "note"):
        table.add_column(column, overflow="fold")
    for e in found:
        table.add_row(
            e.id, f"{e.created_at:%Y-%m-%d %H:%M:%S}", escape(e.session_id), e.reason,
            e.status, escape(e.resolved_by or ""), escape(e.note or ""),
        )  # fmt: skip
    out.print(table)
    if not found:
        out.print("no escalation", highlight=False)


def _resolve(
    config: str, escalation_id: str, approved: bool, note: str | None, by: str | None,
    extra: str | None, as_json: bool,
) -> None:  # fmt: skip
    from costwarden.budgets.status import book_from
    from costwarden.config.budgets import budget_config
    from costwarden.core.event_kinds import EscalationResolved, EventPayload
    from costwarden.sessions.board import changed_event
    from costwarden.storage.event_log import append_events
    from costwarden.storage.policy import PolicyTables
    from costwarden.storage.session_view import escalation_json
    from costwarden.storage.sessions import raise_session_budgets, settle_escalation
    from costwarden.storage.sqltypes import money_str

    amount = _amount(extra)
    who = f"cli:{by.strip()}" if by and by.strip() else actor()
    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        now = time.time()
        resolved, row, moved = settle_escalation(
            engine, escalation_id, approved=approved, by=who, note=note,
            extra_budget_usd=amount, now=now,
        )  # fmt: skip
        if amount:
            book = book_from(PolicyTables(engine), budget_config(settings))
            raise_session_budgets(engine, book, resolved.org_id, resolved.session_id, amount)
        events: list[EventPayload] = []
        if moved is not None and row is not None:
            events.append(changed_event((row.org_id, row.session_id), None, moved, row.version))
        events.append(
            EscalationResolved(
                org_id=resolved.org_id, escalation_id=resolved.id,
                session_id=resolved.session_id, status=resolved.status, resolved_by=who,
                note=note, extra_budget_usd=None if amount is None else money_str(amount),
            )
        )  # fmt: skip
        try:
            append_events(engine, events, now)
        except Exception as exc:  # noqa: BLE001 - the resolution itself is committed
            err.print(
                f"[yellow]warning:[/] resolved, but its events were not raised "
                f"({type(exc).__name__}): gateways apply it when the session is read again",
                highlight=False,
            )
    finally:
        engine.dispose()
    if as_json:
        state = None if row is None else row.standing.state
        click.echo(json.dumps({**escalation_json(resolved), "session_state": state}))
        return
    where = "" if row is None else f"; session {escape(row.session_id)} is {row.standing.state}"
    out.print(f"{resolved.id}: {resolved.status}{where}", highlight=False)


def _amount(text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        raise InvalidInput(f"--extra-usd: not an amount: {text!r}") from None


_BY = click.option("--by", default=None, help="Who decides (default: your OS user name).")
_NOTE = click.option("--note", default=None, help="Why, for the record.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the escalation as JSON.")


@escalations.command("approve")
@config_option
@click.argument("escalation_id")
@click.option("--extra-usd", default=None, help="Raise the session's USD budgets by this.")
@_NOTE
@_BY
@_JSON
@friendly
def escalations_approve(
    config: str, escalation_id: str, extra_usd: str | None, note: str | None,
    by: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Approve: the paused session goes on."""
    _resolve(config, escalation_id, True, note, by, extra_usd, as_json)


@escalations.command("deny")
@config_option
@click.argument("escalation_id")
@_NOTE
@_BY
@_JSON
@friendly
def escalations_deny(
    config: str, escalation_id: str, note: str | None, by: str | None, as_json: bool
) -> None:
    """Deny: the paused session is terminated."""
    _resolve(config, escalation_id, False, note, by, None, as_json)
