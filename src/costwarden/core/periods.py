"""Parsing of operator-given time spans such as ``--since 7d``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from costwarden.core.errors import InvalidInput

_SPAN = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str | None, *, now: datetime | None = None) -> datetime | None:
    """``7d``/``24h``/``30m``/``2w`` back from now, or an ISO date/datetime (UTC if naive)."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    now = now or datetime.now(UTC)
    match = _SPAN.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        try:
            return now - timedelta(**{_UNITS[unit]: amount})
        except OverflowError:
            raise InvalidInput(f"since={value!r} reaches back before year 1") from None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"cannot read since={value!r}: use a span like 7d, 24h, 30m, 2w or an ISO date"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
