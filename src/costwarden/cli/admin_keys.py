"""``costwarden admin-keys ...``: the admin keys with a role (``storage.admin_keys``), from
the CLI: create one (shown once), list them (never the key), revoke one.

Registered on the main group by :mod:`costwarden.cli`. The actor in the audit log is
``cli:<OS user>``. Not yet accepted by the admin API, which takes the admin token only.
"""

from __future__ import annotations

import json

import click
from rich.markup import escape
from rich.table import Table

from costwarden.cli.common import config_option, friendly, load, open_engine, out
from costwarden.cli.switches import actor

COMMANDS: list[click.Command] = []


@click.group("admin-keys")
def admin_keys() -> None:
    """Admin keys with a role (platform_admin, org_admin, viewer): create, list, revoke."""


COMMANDS.append(admin_keys)


@admin_keys.command("create")
@config_option
@click.option(
    "--role", required=True, metavar="platform_admin|org_admin|viewer", help="The key's role."
)
@click.option(
    "--org",
    default=None,
    help="The org (name or id) of an org_admin, or of an org-scoped viewer; none for a "
    "platform_admin or a platform-wide viewer. The org must exist.",
)
@click.option("--name", default=None, help="A label for the key.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the key is in field 'key').")
@friendly
def admin_keys_create(
    config: str, role: str, org: str | None, name: str | None, as_json: bool
) -> None:
    """Create an admin key. It is shown once and stored only as a hash."""
    from costwarden.dashboard.roles import check_scope, parse_role
    from costwarden.storage.admin_keys import create_admin_key

    check_scope(parse_role(role), org)  # before the database is opened
    who = actor()
    engine = open_engine(load(config, need_secrets=False))
    try:
        plaintext, record = create_admin_key(engine, role=role, org=org, name=name, actor=who)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"key": plaintext, **record.to_json()}))
        return
    scope = "platform-wide" if record.org_name is None else f"of org {escape(record.org_name)}"
    out.print(f"created admin key [bold]{record.id}[/], {record.role} {scope}", highlight=False)
    out.print("key (shown once, store it now):")
    click.echo(plaintext)


@admin_keys.command("list")
@config_option
@click.option("--org", default=None, help="Only this org's keys (name or id).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def admin_keys_list(config: str, org: str | None, as_json: bool) -> None:
    """List admin keys (ids and prefixes, never the keys), oldest first."""
    from costwarden.storage.admin_keys import list_admin_keys

    engine = open_engine(load(config, need_secrets=False))
    try:
        records = list_admin_keys(engine, org)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"data": [r.to_json() for r in records]}))
        return
    table = Table(title="admin keys")
    for column in ("id", "prefix", "role", "org", "name", "created", "by", "status"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for r in records:
        status = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        table.add_row(
            r.id,
            escape(r.prefix) + "…",
            r.role,
            escape(r.org_name) if r.org_name is not None else "(platform)",
            escape(r.name or ""),
            f"{r.created_at:%Y-%m-%d %H:%M}",
            escape(r.created_by),
            status,
        )
    out.print(table)


@admin_keys.command("revoke")
@config_option
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def admin_keys_revoke(config: str, key_id: str, as_json: bool) -> None:
    """Revoke an admin key by id (revoking a revoked key changes nothing)."""
    from costwarden.storage.admin_keys import revoke_admin_key

    who = actor()
    engine = open_engine(load(config, need_secrets=False))
    try:
        record = revoke_admin_key(engine, key_id, who)
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(record.to_json()))
    else:
        out.print(f"revoked admin key [bold]{record.id}[/] ({record.role})", highlight=False)
