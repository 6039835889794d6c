"""``costwarden scan PATH``: is this agent skill or tool bundle safe to install?

Registered on the main group by :mod:`costwarden.cli`. The bundle (a folder, a .zip, a
.tar.gz/.tgz/.tar, or one file) is read from disk only, within caps that hold against hostile
archives (:mod:`costwarden.security.bundle.reader`); nothing is run, extracted or fetched.

A table for people (with progress on stderr while a big bundle is read), ``--json`` or
``--format sarif`` for tools, ``--sarif FILE`` to also write SARIF for a code-scanning upload.
The exit status is for CI: 1 when the trust score is below ``--fail-under``, 2 for a usage or
input error (a missing path, an archive that cannot be opened), 0 otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from costwarden.cli.common import err, friendly, out
from costwarden.core.errors import InvalidInput
from costwarden.security.bundle import DEFAULT_FAIL_UNDER, Report, scan_bundle
from costwarden.security.bundle.reader import Progress as ProgressCallback

COMMANDS: list[click.Command] = []

_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}


@click.command("scan")
@click.argument("path")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "sarif"]), default="table",
    show_default=True, help="What to print on stdout.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--sarif", "sarif_file", default=None, metavar="FILE",
    help="Also write the report as SARIF 2.1.0 to FILE.",
)  # fmt: skip
@click.option(
    "--fail-under", type=click.IntRange(0, 100), default=DEFAULT_FAIL_UNDER, show_default=True,
    help="Exit with status 1 when the trust score is below this.",
)  # fmt: skip
@friendly
def scan(path: str, fmt: str, as_json: bool, sarif_file: str | None, fail_under: int) -> None:
    """Scan an agent skill or tool bundle (folder or archive) and score how far to trust it."""
    if as_json and fmt not in ("table", "json"):
        raise InvalidInput(f"--json and --format {fmt}: choose one")
    if as_json:
        fmt = "json"
    with _progress() as progress:
        report = scan_bundle(path, progress=progress)
    if sarif_file is not None:
        _write(sarif_file, report)
    passed = report.trust.passes(fail_under)
    if fmt == "json":
        click.echo(json.dumps({**report.to_json(), "fail_under": fail_under, "passed": passed}))
    elif fmt == "sarif":
        click.echo(json.dumps(report.to_sarif(), indent=2))
    else:
        _print(report, fail_under, passed)
    if not passed:
        sys.exit(1)


COMMANDS.append(scan)


@contextmanager
def _progress() -> Iterator[ProgressCallback | None]:
    """A progress bar on stderr when it is a terminal (transient: gone once done)."""
    if not err.is_terminal:
        yield None
        return
    columns = (SpinnerColumn(), TextColumn("scanning"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.description}"))  # fmt: skip
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, planned: int | None, current: str) -> None:
            name = current if len(current) <= 60 else "…" + current[-59:]
            bar.update(task, completed=done, total=planned, description=escape(name))

        yield advance


def _write(sarif_file: str, report: Report) -> None:
    try:
        Path(sarif_file).write_text(json.dumps(report.to_sarif(), indent=2), encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"--sarif: cannot write {sarif_file}: {exc.strerror}") from None


def _print(report: Report, fail_under: int, passed: bool) -> None:
    s = report.stats
    title = f"costwarden scan: {report.target} ({report.kind}, {s.files_read} files read)"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD)
    for column, justify in (("points", "right"), ("severity", "left"), ("rule", "left"),
                            ("where", "left"), ("finding", "left")):  # fmt: skip
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for d in report.trust.deductions:
        f = d.finding
        where = f.path + (f":{f.line}" if f.line is not None else "") if f.path else "(bundle)"
        table.add_row(
            f"-{d.points}", f"[{_STYLE[f.severity]}]{f.severity}[/]", f.rule, escape(where),
            escape(f"{f.title}: {f.evidence}" if f.evidence else f.title),
        )  # fmt: skip
    if report.trust.deductions:
        out.print(table)
    else:
        out.print(escape(title), highlight=False)
        out.print("no finding", highlight=False)
    for server in report.servers:
        out.print(
            f"MCP server {escape(server.name)} ({server.transport}): "
            f"{escape(server.target)}  [dim]{escape(server.path)}[/]",
            highlight=False,
        )
    for note in report.notes:
        where = f"{note.path}: " if note.path else ""
        out.print(f"[dim]note: {escape(where + note.detail)}[/]", highlight=False)
    if not report.complete:
        out.print("[yellow]warning:[/] part of the bundle was not scanned: the score covers "
                  "only what was read", highlight=False)  # fmt: skip
    verdict = "[bold green]pass[/]" if passed else f"[bold red]fail[/] (below {fail_under})"
    out.print(f"trust score [bold]{report.score}[/]/100: {verdict}", highlight=False)
