"""The dashboard's rendering helpers: money for people (exact, small amounts to three
significant digits), times, and URLs under the root_path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from starlette.requests import Request

from costwarden.console.render import money, url, when


@pytest.mark.parametrize(
    ("value", "places", "shown"),
    [
        (Decimal("1234.56789"), 4, "$1,234.5679"),
        (Decimal("0"), 4, "$0.0000"),
        (Decimal("0.05"), 4, "$0.0500"),
        (Decimal("0.0000123"), 4, "$0.0000123"),
        (Decimal("0.000012345"), 4, "$0.0000123"),
        (Decimal("0.000000001"), 4, "$0.000000001"),
        (Decimal("-0.0005"), 4, "-$0.000500"),
        (Decimal("0.0000123"), 9, "$0.000012300"),
        ("2.5", 2, "$2.50"),
        (None, 4, "—"),
    ],
)
def test_money(value: object, places: int, shown: str) -> None:
    assert money(value, places) == shown


def test_when() -> None:
    assert when("2026-12-02T19:48:23+00:00") == "2026-12-02 19:48:23 UTC"
    assert when(0) == "1970-01-01 00:00:00 UTC"
    assert when(None) == "—" and when("not a time") == "not a time"


def _request(root_path: str, app_root_path: str | None = None) -> Request:
    scope = {"type": "http", "path": "/", "root_path": root_path, "headers": []}
    if app_root_path is not None:
        scope["app_root_path"] = app_root_path
    return Request(scope)


def test_urls_carry_the_proxys_prefix_not_the_mounts() -> None:
    assert url(_request("")) == "/dashboard/"
    assert url(_request(""), "/costs") == "/dashboard/costs"
    # inside the /dashboard Mount, Starlette's root_path has the mount; the app's is kept
    assert url(_request("/costwarden/dashboard", "/costwarden"), "/costs") == (
        "/costwarden/dashboard/costs"
    )
