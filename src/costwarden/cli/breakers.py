"""``costwarden breakers list|reset``: circuit breakers of a running gateway.

Breaker state lives in the running gateway processes (and Redis), not in the database, so
these commands call a gateway's admin API (``--url``, default ``http://127.0.0.1:4000``)
with the admin token from ``COSTWARDEN_ADMIN_TOKEN``. With several processes sharing Redis,
a reset through any one of them closes the breaker in all; ``list`` shows the state every
process shares and that process's own counts.

Registered on the main group by :mod:`costwarden.cli`. Errors (gateway unreachable, token
missing or refused, unknown deployment) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import getpass
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from costwarden.cli.common import friendly, out
from costwarden.core.errors import CostwardenError, InvalidInput, NotFound

DEFAULT_URL = "http://127.0.0.1:4000"
TOKEN_ENV = "COSTWARDEN_ADMIN_TOKEN"
TIMEOUT_SECONDS = 10.0

_STATE_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


class AdminCallFailed(CostwardenError):
    """The gateway's admin API could not be reached or refused the call."""


def _actor() -> str:
    """``cli:<OS user>``, as the gateway records it in the audit log."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the password database
        user = "unknown"
    return f"cli:{user}"


def _base_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"--url must be the gateway's http(s) address, got {url!r}")
    return url.strip().rstrip("/")


def _call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The JSON answer of one admin API call; CostwardenError subclasses for every failure."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InvalidInput(f"set {TOKEN_ENV} to the gateway's admin token")
    base = _base_url(url)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={
            "authorization": f"Bearer {token}",
            "accept": "application/json",
            **({"content-type": "application/json"} if data is not None else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, base) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminCallFailed(f"cannot reach the gateway at {base}: {reason}") from None
    except ValueError:
        raise AdminCallFailed(
            f"{base} did not answer with JSON: is it a costwarden gateway?"
        ) from None


def _http_error(exc: urllib.error.HTTPError, base: str) -> CostwardenError:
    try:
        message = str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {exc.code} {exc.reason}"
    if exc.code == 404:
        return NotFound(message)
    if exc.code == 400:
        return InvalidInput(message)
    if exc.code == 401:
        return AdminCallFailed(f"the gateway at {base} refused the admin token ({TOKEN_ENV})")
    return AdminCallFailed(f"the gateway at {base} answered {exc.code}: {message}")


def _time(value: str | None) -> str:
    return value.replace("T", " ").split(".")[0].split("+")[0] if value else ""


def _print(entries: list[dict[str, Any]], title: str) -> None:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    for column, justify in (
        ("deployment", "left"),
        ("state", "left"),
        ("errors", "right"),
        ("reqs", "right"),
        ("consecutive", "right"),
        ("last failure", "left"),
        ("retry at", "left"),
        ("reason", "left"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for e in entries:
        state = str(e["state"])
        table.add_row(
            escape(str(e["deployment"])),
            f"[{_STATE_STYLE.get(state, 'white')}]{escape(state)}[/]",
            f"{float(e['error_rate']):.0%}",
            str(e["requests_in_window"]),
            str(e["consecutive_failures"]),
            _time(e.get("last_failure_at")),
            _time(e.get("retry_at")),
            escape(str(e.get("reason") or "")),
        )
    out.print(table)


url_option = click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    envvar="COSTWARDEN_URL",
    help="The running gateway's address (its admin API).",
)


@click.group()
def breakers() -> None:
    """Circuit breakers of a running gateway: list them, reset one."""


@breakers.command("list")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({data: [...]}).")
@friendly
def breakers_list(url: str, as_json: bool) -> None:
    """Every deployment's breaker: state, error rate, failures, when it will retry."""
    answer = _call(url, "GET", "/admin/health/deployments")
    if as_json:
        click.echo(json.dumps(answer))
        return
    _print(answer["data"], f"circuit breakers at {_base_url(url)}")


@breakers.command("reset")
@click.argument("deployment")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print the deployment's health as JSON.")
@friendly
def breakers_reset(deployment: str, url: str, as_json: bool) -> None:
    """Force DEPLOYMENT's breaker closed (e.g. openai:gpt-4o-mini), on every gateway
    process sharing Redis. Audited as breaker.reset."""
    if not deployment.strip():
        raise InvalidInput("DEPLOYMENT must be a deployment id such as openai:gpt-4o-mini")
    path = f"/admin/breakers/{urllib.parse.quote(deployment, safe=':')}/reset"
    answer = _call(url, "POST", path, {"actor": _actor()})
    if as_json:
        click.echo(json.dumps(answer))
        return
    out.print(
        f"breaker of [bold]{escape(deployment)}[/] is {escape(str(answer['state']))}",
        highlight=False,
    )


COMMANDS: list[click.Command] = [breakers]
