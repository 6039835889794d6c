"""``costwarden report``: spend by any dimension, from the same queries as the analytics API.

A table per group with its cost per day drawn as a sparkline (people read the trend at a
glance), or ``--json`` (the API's rows) or ``--csv`` for scripts.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.cli.common import config_option, friendly, load, open_engine, out

COMMANDS: list[click.Command] = []
_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[Decimal]) -> str:
    """One block character per value, scaled to the largest (empty days are the lowest)."""
    top = max(values, default=Decimal(0))
    if top <= 0:
        return _BARS[0] * len(values)
    return "".join(_BARS[int(v / top * (len(_BARS) - 1))] for v in values)


@click.command("report")
@config_option
@click.option("--since", default="30d", show_default=True, help="24h, 30d, a date or a time.")
@click.option("--until", default=None, help="Default: now.")
@click.option("--by", "by_text", default="org", show_default=True,
              help="Dimensions, comma-separated: org, project, key, user, provider, model, "
              "status, tag.")  # fmt: skip
@click.option("--org", default=None, help="Only this org (by name).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@friendly
def report(
    config: str,
    since: str,
    until: str | None,
    by_text: str,
    org: str | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Spend by any dimension over a range, with each group's cost per day."""
    from costwarden.admin.analytics_api import COLUMN_NAMES, totals_json
    from costwarden.analytics.query import SpendQuery, dimensions, parse_when
    from costwarden.analytics.rollup import Totals
    from costwarden.storage import repo
    from costwarden.storage.analytics_read import spend

    now = datetime.now(UTC)
    by = dimensions(by_text)
    start = parse_when(since, now, what="--since")
    end = now if until is None else parse_when(until, now, what="--until")
    engine = open_engine(load(config, need_secrets=False))
    try:
        names = repo.org_names(engine)
        filters = {} if org is None else {"org_id": repo.named(names, org)}
        rows = spend(engine, SpendQuery(start, end, by=by, granularity="day", filters=filters))
    finally:
        engine.dispose()
    days = sorted({r.bucket or "" for r in rows})
    groups: dict[tuple[str, ...], tuple[Totals, dict[str, Decimal]]] = {}
    for row in rows:
        totals, per_day = groups.setdefault(row.keys, (Totals(), {}))
        totals.add(row.totals)
        per_day[row.bucket or ""] = row.totals.cost_usd
    ordered = sorted(groups.items(), key=lambda item: (-item[1][0].cost_usd, item[0]))
    shown: list[dict[str, Any]] = []
    for keys, (totals, per_day) in ordered:
        entry: dict[str, Any] = {}
        for column, value in zip(by, keys, strict=True):
            entry[COLUMN_NAMES[column]] = names.get(value, value) if column == "org_id" else value
        entry.update(totals_json(totals))
        entry["cost_per_day"] = {d: str(per_day.get(d, 0)) for d in days}
        shown.append(entry)
    if as_json:
        click.echo(json.dumps(shown))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        columns = [COLUMN_NAMES[c] for c in by] + ["requests", "input_tokens",
                                                   "output_tokens", "cost_usd"]  # fmt: skip
        writer.writerow(columns)
        for entry in shown:
            writer.writerow([entry.get(c) or "" for c in columns])
        return
    title = f"spend {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC, by {by_text}"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column in [*(COLUMN_NAMES[c] for c in by), "requests", "tokens", "cost (USD)",
                   "per day"]:  # fmt: skip
        table.add_column(column, overflow="fold")
    for keys, (totals, per_day) in ordered:
        labels = [names.get(v, v) if c == "org_id" else v for c, v in zip(by, keys, strict=True)]
        table.add_row(
            *(escape(label or "-") for label in labels),
            f"{totals.requests:,}",
            f"{totals.input_tokens + totals.output_tokens:,}",
            totals_json(totals)["cost_usd"],
            sparkline([per_day.get(d, Decimal(0)) for d in days]),
        )
    out.print(table)
    if not ordered:
        out.print("nothing was spent in this range", highlight=False)


COMMANDS.append(report)
