"""Splitting an upstream's server-sent-event stream into whole events, in linear time.

The relay forwards whole events only (a meter or a translator must see an event whole), so
bytes wait here until the blank line that ends their event arrives. The splitter:

- accepts every line ending the SSE specification allows (``\\r\\n``, ``\\n`` and a lone
  ``\\r``, also across chunk boundaries) and hands on events with ``\\n`` line endings, which
  the meters and translators expect and which mean the same to any SSE client;
- looks for the end of an event only in the bytes that just arrived (plus one byte of the
  previous chunk), and joins a waiting event's pieces once: a stream that never ends an event
  costs linear time, not a rescan and a copy of the whole backlog per chunk;
- refuses an event longer than ``max_event_bytes`` (:class:`EventTooLarge`), so an upstream
  cannot make the gateway hold an unbounded event in memory.
"""

from __future__ import annotations


class EventTooLarge(Exception):
    """An event grew past the limit without ending."""


class EventSplitter:
    __slots__ = ("_parts", "_size", "_cr", "max_event_bytes")

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._parts: list[bytes] = []  # the unfinished event's pieces
        self._size = 0
        self._cr = False  # the previous chunk ended in "\r": a "\n" next belongs to it

    def feed(self, chunk: bytes) -> bytes:
        """Every event completed by ``chunk``, joined (b"" when none is complete yet)."""
        if self._cr or chunk.find(b"\r") >= 0:
            chunk = self._lf(chunk)
        parts = self._parts
        # ``cut``: the index of the last "\n" of the last event that ends in this chunk. An
        # event ends at "\n\n", whose two newlines may straddle the previous chunk and this.
        cut = chunk.rfind(b"\n\n") + 1
        if not cut and not (parts and chunk[:1] == b"\n" and parts[-1][-1:] == b"\n"):
            if chunk:
                parts.append(chunk)
                self._size += len(chunk)
                if self._size > self.max_event_bytes:
                    raise EventTooLarge(
                        f"an event grew past {self.max_event_bytes} bytes without ending"
                    )
            return b""
        rest = chunk[cut + 1 :]
        if parts:
            parts.append(chunk[: cut + 1])
            events = b"".join(parts)
            parts.clear()
        else:
            events = chunk[: cut + 1]
        self._size = len(rest)
        if rest:
            parts.append(rest)
        return events

    def flush(self) -> bytes:
        """What is left when the stream ends: an unterminated last event, or b""."""
        tail = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._cr = False
        return tail

    def _lf(self, chunk: bytes) -> bytes:
        """``chunk`` with every line ending as "\\n". A "\\r" that ends a chunk ends its line
        at once; a "\\n" that starts the next chunk is then the rest of that "\\r\\n"."""
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        self._cr = chunk[-1:] == b"\r"
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
