"""uvicorn's own response cycle over a socket stand-in that records each write call, for the
tests of what the server changes about a response (head_with_body, response_cycle)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle


class Writes:
    """A transport that records each write call as one item (what a socket write would
    receive, in order)."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.calls.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.calls.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def uvicorn_cycle(
    writes: Writes,
    *,
    method: str = "POST",
    keep_alive: bool = True,
    access_log: bool = False,
    expect_100_continue: bool = False,
    default_headers: list[tuple[bytes, bytes]] | None = None,
) -> RequestResponseCycle:
    """A cycle as uvicorn makes one for a request, writing to ``writes``."""
    return RequestResponseCycle(
        scope={"type": "http", "method": method, "path": "/", "query_string": b"",
               "http_version": "1.1", "client": ("127.0.0.1", 1)},
        transport=writes,  # type: ignore[arg-type]
        flow=FlowControl(writes),  # type: ignore[arg-type]
        logger=None,
        access_logger=None,
        access_log=access_log,
        default_headers=default_headers or [],
        message_event=asyncio.Event(),
        expect_100_continue=expect_100_continue,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )  # fmt: skip
