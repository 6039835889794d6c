"""Leader leases: one holder at a time, renewed by its holder, taken over once it lapses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from costwarden.storage.leases import try_lead

T0 = datetime(2030, 5, 6, 12, 0, tzinfo=UTC)
TTL = timedelta(seconds=30)


def test_one_holder_until_its_lease_lapses(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    a, b = make_engine(db_url), make_engine(db_url)
    assert try_lead(a, "job", "p1", ttl=TTL, now=T0)
    assert not try_lead(b, "job", "p2", ttl=TTL, now=T0 + timedelta(seconds=10))
    assert try_lead(a, "job", "p1", ttl=TTL, now=T0 + timedelta(seconds=20))  # renewed: to +50
    assert not try_lead(b, "job", "p2", ttl=TTL, now=T0 + timedelta(seconds=40))
    assert try_lead(b, "job", "p2", ttl=TTL, now=T0 + timedelta(seconds=50))  # lapsed: taken
    assert not try_lead(a, "job", "p1", ttl=TTL, now=T0 + timedelta(seconds=51))
    assert try_lead(a, "other", "p1", ttl=TTL, now=T0 + timedelta(seconds=51))  # per name
