"""What a cacheable miss collects of its answer while it is sent (gateway.cache stores it)."""

from __future__ import annotations

import dataclasses

from costwarden.caching.assemble import StreamAssembler
from costwarden.gateway.asgi import Message, Send


@dataclasses.dataclass(slots=True)
class CacheWrite:
    """A miss to be stored once its answer has been sent: what the client received."""

    key: str
    ttl: int
    limit: int  # bytes; a larger answer is sent but not kept
    assembler: StreamAssembler | None  # a stream's events into the unary answer
    status: int = 0
    parts: list[bytes] = dataclasses.field(default_factory=list)
    size: int = 0

    def tee(self, send: Send) -> Send:
        async def teed(message: Message) -> None:
            if message["type"] == "http.response.body":
                self._take(message.get("body", b""))
            elif message["type"] == "http.response.start":
                self.status = message["status"]
            await send(message)

        return teed

    def _take(self, body: bytes) -> None:
        if not body or self.size > self.limit:
            return
        self.size += len(body)
        if self.size > self.limit:
            self.parts.clear()
            return
        if self.assembler is not None:
            self.assembler.feed(body)
        else:
            self.parts.append(body)
