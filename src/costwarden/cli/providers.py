"""``costwarden providers check``: reach every configured provider, list the models each one
serves and the price each deployment is billed at.

Registered on the main group by :mod:`costwarden.cli.main`. A table for people, ``--json`` for
scripts. Exit status 1 when a provider cannot be reached or refuses the credential, or a
routed model is not among those it lists; 2 for a config error (which names its line: a
deployment with no known price is one).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.cli.common import config_option, friendly, load, out

_SERVED_STYLE = {"listed": "green", "not listed": "bold red", "unknown": "yellow"}


@click.group("providers")
def providers() -> None:
    """The upstream providers of a config: check them."""


@providers.command("check")
@config_option
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds allowed for each provider's answer.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@friendly
def check(config: str, timeout: float, as_json: bool) -> None:
    """Connect to every provider with the gateway's credentials, list the models it serves,
    and show each deployment's price. Nothing is sent to a model."""
    from costwarden.app.provider_check import check_providers

    settings = load(config, need_secrets=False)  # an unset key is reported per provider
    with out.status("checking providers...", spinner="dots"):
        results = asyncio.run(check_providers(settings, timeout=timeout))
    failed = any(
        not r.ok or any(d.served == "not listed" for d in r.deployments) for r in results
    )
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        for result in results:
            _print(result)
    if failed:
        sys.exit(1)


def _print(result: object) -> None:
    from costwarden.app.provider_check import ProviderCheck

    assert isinstance(result, ProviderCheck)
    mark = "[green]ok[/]" if result.ok else "[bold red]failed[/]"
    out.print(
        f"[bold]{escape(result.name)}[/] ({escape(result.type)}, {escape(result.base_url)}): "
        f"{mark}, {escape(result.detail)}",
        highlight=False,
    )
    if not result.deployments:
        out.print("  no deployment routes to it", style="dim")
        return
    table = Table(box=box.SIMPLE, pad_edge=False)
    for name, justify in (("deployment", "left"), ("model", "left"), ("served", "left"),
                          ("price from", "left"), ("in $/MTok", "right"),
                          ("out $/MTok", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for d in result.deployments:
        table.add_row(
            escape(d.id),
            escape(d.model),
            f"[{_SERVED_STYLE[d.served]}]{d.served}[/]",
            escape(d.price_source),
            d.input_mtok,
            d.output_mtok,
        )
    out.print(table)


COMMANDS: list[click.Command] = [providers]
