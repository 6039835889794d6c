"""``costwarden alerts rule-set|rules|rule-remove``: threshold alert rules from the CLI.

A rule sets the lines (percent of a limit; 50, 80 and 100 by default) whose crossing raises a
threshold alert, on a scope instance, on every instance of a scope type in an org, or on a
scope type of a plan tier (``budgets.alert_lines`` says which rule wins). Written straight to
the database: every gateway picks a change up with its next limits refresh.
"""

from __future__ import annotations

import json

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.budgets.limits import LIMIT_NAMES, SCOPES
from costwarden.cli.common import config_option, friendly, load, open_engine, out
from costwarden.cli.switches import actor
from costwarden.core.errors import InvalidInput


def _percents(text: str) -> list[int]:
    """``50,80,100`` -> [50, 80, 100]; the range checks are the storage's (one rule set)."""
    found: list[int] = []
    for part in text.split(","):
        item = part.strip().removesuffix("%").strip()
        if not item.lstrip("-").isdigit():
            raise InvalidInput(f"--thresholds: {part.strip()!r} is not a whole percent")
        found.append(int(item))
    return found


def _rule_row(rule: dict[str, object]) -> list[str]:
    target = str(rule["scope"])
    if rule["tier"]:
        target = f"{target} on tier {rule['tier']}"
    elif rule["scope"] != "platform":
        target = f"{target} {rule['scope_id'] or '(every)'} of {rule['org']}"
    return [
        str(rule["id"]),
        escape(target),
        str(rule["limit"] or "(every limit)"),
        ", ".join(f"{p}%" for p in rule["thresholds"]),  # type: ignore[attr-defined]
        escape(str(rule["created_by"])),
    ]


@click.command("rule-set")
@config_option
@click.option("--scope", type=click.Choice(SCOPES), required=True)
@click.option("--org", default=None, help="Org name (not for the platform or a tier).")
@click.option("--scope-id", default=None, help="One instance; omit for every one in the org.")
@click.option("--tier", default=None, help="A plan tier: the rule covers every org on it.")
@click.option("--limit", "limit_name", type=click.Choice(list(LIMIT_NAMES)), default=None)
@click.option("--thresholds", required=True, help="Percents of the limit, e.g. 50,80,100.")
@click.option("--json", "as_json", is_flag=True, help="Print the rule as JSON.")
@friendly
def rule_set(
    config: str,
    scope: str,
    org: str | None,
    scope_id: str | None,
    tier: str | None,
    limit_name: str | None,
    thresholds: str,
    as_json: bool,
) -> None:
    """Set the threshold lines of a scope (the last write on a target wins)."""
    from costwarden.admin.alert_rules_api import rule_json
    from costwarden.storage import repo
    from costwarden.storage.alert_rules import RuleTarget, set_rule

    lines = _percents(thresholds)
    settings = load(config, need_secrets=False)
    engine = open_engine(settings)
    try:
        target = RuleTarget(scope, org, scope_id, (tier or "").strip(), limit_name or "")
        rule = set_rule(
            engine, target, lines, actor=actor(), known_tiers=[t.name for t in settings.tiers]
        )
        shown = rule_json(rule, repo.org_names(engine))
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(shown))
        return
    out.print(f"rule {shown['id']}: {' | '.join(_rule_row(shown)[1:4])}", highlight=False)


@click.command("rules")
@config_option
@click.option("--org", default=None, help="Only this org's rules and the tiers'.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, oldest first.")
@friendly
def rules_list(config: str, org: str | None, as_json: bool) -> None:
    """Threshold alert rules (limits without one alert at 50, 80 and 100 %)."""
    from costwarden.admin.alert_rules_api import rule_json
    from costwarden.storage import repo
    from costwarden.storage.alert_rules import list_rules

    engine = open_engine(load(config, need_secrets=False))
    try:
        names = repo.org_names(engine)
        org_id = None if org is None else repo.named(names, org)
        shown = [rule_json(r, names) for r in list_rules(engine, org_id=org_id)]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps(shown))
        return
    table = Table(title="alert rules", box=box.SIMPLE_HEAD)
    for column in ("id", "target", "limit", "thresholds", "set by"):
        table.add_column(column, overflow="fold")
    for rule in shown:
        table.add_row(*_rule_row(rule))
    out.print(table)
    if not shown:
        out.print("no rule: every limit alerts at 50, 80 and 100 %", highlight=False)


@click.command("rule-remove")
@config_option
@click.argument("rule_id")
@friendly
def rule_remove(config: str, rule_id: str) -> None:
    """Delete a rule: its target falls back to the next rule, or 50, 80 and 100 %."""
    from costwarden.storage.alert_rules import delete_rule

    engine = open_engine(load(config, need_secrets=False))
    try:
        delete_rule(engine, rule_id)
    finally:
        engine.dispose()
    out.print(f"deleted rule {rule_id}", highlight=False)


RULE_COMMANDS: list[click.Command] = [rule_set, rules_list, rule_remove]
