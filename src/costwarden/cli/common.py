"""What every ``costwarden`` command shares: loading settings, opening storage, printing,
and turning a CostwardenError into one line on stderr and exit status 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from costwarden.config.settings import Settings, load_settings
from costwarden.core.errors import CostwardenError

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)


def friendly(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CostwardenError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def load(config: str, *, need_secrets: bool = True) -> Settings:
    # Admin commands never call a provider, so an unset credential must not stop them.
    return load_settings(config, require_secrets=need_secrets)


def open_engine(settings: Settings) -> Any:
    from costwarden.storage.db import create_engine_for
    from costwarden.storage.migrate import migrate

    engine = create_engine_for(settings.storage.database_url)
    migrate(engine)
    return engine


def refresh_note(settings: Settings) -> str:
    """What a write through the CLI tells: when running gateways apply it."""
    return f"running gateways apply this within {settings.budgets.refresh_seconds:g} s"


config_option = click.option(
    "--config",
    "config",
    default="costwarden.toml",
    show_default=True,
    envvar="COSTWARDEN_CONFIG",
    help="Path to the TOML config file.",
)


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
