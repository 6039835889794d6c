"""What other processes wait for (core.event_wants): announcements, their sum, their expiry."""

from __future__ import annotations

import orjson
import pytest

from costwarden.core.event_wants import EXPIRES_SECONDS, KIND, Announcement, RemoteWants
from costwarden.core.events import _decode

KINDS_A = frozenset({"limit_threshold_crossed"})
KINDS_B = frozenset({"session_changed", "breaker_changed"})


def test_an_announcement_round_trips_and_an_older_version_skips_it() -> None:
    sent = Announcement("p1", every=True, kinds=KINDS_B)
    first, items = orjson.loads(sent.encode(1_700_000_000_000))
    assert first == 0
    assert Announcement.decode(items) == sent
    # An older process decodes it as a batch of ids it has delivered (0 <= any last id).
    assert _decode([(first, items)], after=0) == []


@pytest.mark.parametrize(
    "items",
    [
        [], None, "x", [[1, KIND, None]], [[1, "switch_changed", None, {"origin": "p",
        "every": True, "kinds": []}]], [[1, KIND, None, {"origin": 1, "every": True,
        "kinds": []}]], [[1, KIND, None, {"origin": "p", "every": "yes", "kinds": []}]],
        [[1, KIND, None, {"origin": "p", "every": True, "kinds": [1]}]],
        [[1, KIND, None, {"origin": "p", "every": True}]],
    ],
)
def test_a_malformed_announcement_is_none(items: object) -> None:
    assert Announcement.decode(items) is None


def test_what_others_wait_for_adds_up_lapses_and_ends() -> None:
    wants = RemoteWants("me")
    assert not wants.every and wants.kinds == frozenset()
    # Its own announcements come back over the relay: ignored.
    assert not wants.heard(Announcement("me", every=True, kinds=KINDS_A), 0.0)
    assert not wants.every
    # More is waited for: True (a gathering outbox must be written now).
    assert wants.heard(Announcement("a", every=False, kinds=KINDS_A), 0.0)
    assert wants.kinds == KINDS_A
    assert wants.heard(Announcement("b", every=True, kinds=KINDS_B), 1.0)
    assert wants.every and wants.kinds == KINDS_A | KINDS_B
    # The same again (a renewal): nothing new.
    assert not wants.heard(Announcement("b", every=True, kinds=KINDS_B), 2.0)
    # b's stream closes: it says it waits for nothing.
    assert not wants.heard(Announcement("b", every=False, kinds=frozenset()), 2.5)
    assert not wants.every and wants.kinds == KINDS_A
    # a stops renewing (its process died): gone EXPIRES_SECONDS after it was last heard.
    wants.expire(EXPIRES_SECONDS - 0.01)
    assert wants.kinds == KINDS_A
    wants.expire(EXPIRES_SECONDS)
    assert wants.kinds == frozenset()
