"""Column types that keep money exact and timestamps in UTC on SQLite and PostgreSQL alike.

Why these exist:

- Money must never pass through a float. PostgreSQL has an exact ``NUMERIC(24, 12)``; SQLite
  has no decimal type at all and its NUMERIC *affinity* silently turns ``'0.0000000375'`` into
  a double. So on SQLite :class:`Money` stores the exact decimal string in a TEXT column, and
  on both dialects it binds and returns :class:`~decimal.Decimal`. Values are quantized to 12
  decimal places on the way in (what ``NUMERIC(24, 12)`` does on PostgreSQL) so that both
  backends hold the very same number.
- Timestamps must compare correctly and come back tz-aware. PostgreSQL's ``timestamptz``
  does that natively; SQLite stores naive text, so :class:`UTCDateTime` stores naive UTC and
  re-attaches UTC on read. Naive datetimes are refused: their meaning is a guess.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from costwarden.core.errors import InvalidInput
from costwarden.core.money import MONEY_CONTEXT, MONEY_SCALE

logger = logging.getLogger(__name__)

MONEY_PRECISION = 24
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)  # Decimal('1E-12')
MONEY_LIMIT = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE)



def to_money(value: object) -> Decimal:
    """Return ``value`` as a finite Decimal quantized to 12 places; refuse floats and junk.

    Accepts ``Decimal``, ``int`` and decimal strings. Floats are refused because they are
    already inexact by the time they get here.
    """
    if isinstance(value, bool | float):
        raise InvalidInput(f"money must be a Decimal, not {type(value).__name__}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise InvalidInput(f"not a decimal amount: {value!r:.40}") from None
    else:
        raise InvalidInput(f"money must be a Decimal, not {type(value).__name__}")
    if not d.is_finite():
        raise InvalidInput(f"money must be finite, got {d}")
    # Range first: quantizing an amount of 10**68 or more to 12 places overflows the money
    # context's precision (InvalidOperation, not the caller's clear error).
    if abs(d) >= MONEY_LIMIT:
        raise InvalidInput(f"money amount out of range: {d:.40}")
    q = d.quantize(MONEY_QUANTUM, context=MONEY_CONTEXT)
    if abs(q) >= MONEY_LIMIT:  # rounded up to the limit
        raise InvalidInput(f"money amount out of range: {d}")
    return q


def money_str(value: Decimal) -> str:
    """Render money as a plain decimal string: no exponent, no trailing zeros (``'0.0000375'``)."""
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def ensure_utc(value: datetime, what: str = "timestamp") -> datetime:
    """Return ``value`` converted to UTC; naive datetimes are refused with InvalidInput."""
    if not isinstance(value, datetime):
        raise InvalidInput(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be timezone-aware (UTC), got a naive datetime")
    return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Money(TypeDecorator[Decimal]):
    """Exact money: ``NUMERIC(24, 12)`` on PostgreSQL, the decimal string as TEXT on SQLite."""

    impl = sa.Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        return dialect.type_descriptor(sa.Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            d = to_money(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
        if dialect.name == "sqlite":
            return format(d, "f")
        return d

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        if isinstance(value, float):  # never produced by our schema; be loud, not lossy
            raise ValueError("money column returned a float; the column type is wrong")
        return Decimal(str(value))


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as a tz-aware UTC datetime on every dialect."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            utc = ensure_utc(value)
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None
        if dialect.name == "sqlite":
            # SQLite has no time zones: store naive UTC, in one fixed format so that
            # text comparison is chronological.
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise ValueError(f"timestamp column returned {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
