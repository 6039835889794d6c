"""The ring of recent events: kept by batch, bounded, replayed from any id it holds."""

from __future__ import annotations

from costwarden.core.event_kinds import SwitchChanged
from costwarden.core.event_ring import EventRing, Item


def _items(count: int) -> list[Item]:
    return [
        (float(i), SwitchChanged(feature=f"f{i}", enabled=True, message=None, actor="a"))
        for i in range(count)
    ]


def test_replays_across_batches_from_any_id_it_holds() -> None:
    ring = EventRing(capacity=100)
    assert ring.first_id is None and ring.after(0) == []
    ring.add(1, _items(3))  # ids 1-3
    ring.add(4, _items(1))  # 4
    ring.add(5, _items(2))  # 5-6
    assert [e.id for e in ring.after(0)] == [1, 2, 3, 4, 5, 6]
    assert [e.id for e in ring.after(2)] == [3, 4, 5, 6]
    assert [e.id for e in ring.after(4)] == [5, 6]
    assert ring.after(6) == []
    event = ring.after(5)[0]
    assert (event.id, event.ts, event.payload.feature) == (6, 1.0, "f1")  # type: ignore[attr-defined]


def test_keeps_at_least_its_capacity_and_drops_the_oldest_batch_whole() -> None:
    ring = EventRing(capacity=5)
    ring.add(1, _items(3))  # 1-3
    ring.add(4, _items(3))  # 4-6: the first batch is still needed for 5
    assert (ring.first_id, len(ring)) == (1, 6)
    ring.add(7, _items(2))  # 7-8: 4..8 are 5 without the first batch
    assert (ring.first_id, len(ring)) == (4, 5)
    for first in range(9, 1009):
        ring.add(first, _items(1))
    assert (ring.first_id, len(ring)) == (1004, 5)
    assert [e.id for e in ring.after(0)] == [1004, 1005, 1006, 1007, 1008]
