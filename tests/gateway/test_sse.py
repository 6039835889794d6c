"""The SSE splitter: whole events, every line ending the specification allows, linear time."""

from __future__ import annotations

import random

import pytest

from costwarden.gateway.sse import EventSplitter, EventTooLarge

EVENTS = b"data: a\n\ndata: b\nid: 2\n\nevent: x\ndata: c\n\ndata: [DONE]\n\n"


def _split(chunks: list[bytes], limit: int = 1 << 30) -> tuple[list[bytes], bytes]:
    splitter = EventSplitter(limit)
    out = [splitter.feed(c) for c in chunks]
    return [o for o in out if o], splitter.flush()


def _cuts(data: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(data)), rng.randint(0, min(12, len(data) - 1))))
    return [data[i:j] for i, j in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending_and_any_chunking_gives_the_same_events(eol: bytes) -> None:
    framed = EVENTS.replace(b"\n", eol)
    rng = random.Random(7)
    for _ in range(500):
        events, tail = _split(_cuts(framed, rng))
        assert b"".join(events) == EVENTS and tail == b""
        assert all(e.endswith(b"\n\n") for e in events)


def test_events_are_released_as_soon_as_they_end() -> None:
    splitter = EventSplitter(1 << 20)
    assert splitter.feed(b"data: a\r\n") == b""
    assert splitter.feed(b"\r\n") == b"data: a\n\n"  # the blank line completes it at once
    assert splitter.feed(b"data: b\r") == b""
    assert splitter.feed(b"\r") == b"data: b\n\n"  # a lone "\r" ends a line: no waiting
    assert splitter.feed(b"\ndata: c\n\n") == b"data: c\n\n"  # that "\n" was the "\r\n"'s


def test_an_unterminated_last_event_is_flushed() -> None:
    events, tail = _split([b"data: a\n\ndata: b"])
    assert events == [b"data: a\n\n"] and tail == b"data: b"


def test_an_event_past_the_limit_is_refused() -> None:
    splitter = EventSplitter(1000)
    splitter.feed(b"data: " + b"x" * 900)
    with pytest.raises(EventTooLarge, match="1000 bytes"):
        splitter.feed(b"x" * 200)
    # Events that end keep within the limit however many arrive.
    assert _split([b"data: " + b"y" * 900 + b"\n\n"] * 50, limit=1000)[0]
