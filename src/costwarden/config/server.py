"""``[server]``: where the gateway listens, how many processes serve it, the path prefix it is
served under, and the limits on what one request may hold."""

from __future__ import annotations

import dataclasses
import math

from costwarden.config.fields import setting as _setting

MIN_HEADER_BYTES = 4096


@dataclasses.dataclass(slots=True)
class ServerSettings:
    host: str = _setting("127.0.0.1", "Address the gateway listens on.", "COSTWARDEN_HOST")
    port: int = _setting(4000, "TCP port the gateway listens on.", "COSTWARDEN_PORT")
    workers: int = _setting(
        1,
        "Gateway processes serving the one port (serve --workers overrides it). 1 runs the "
        "gateway in the serve process itself; more start that many worker processes under a "
        "supervisor that restarts any that dies, and need [redis] url (the budget and "
        "rate-limit counters must be shared). About one per CPU core.",
        "COSTWARDEN_WORKERS",
    )
    root_path: str = _setting(
        "",
        "The path prefix a reverse proxy serves the gateway under and strips (e.g. "
        "'/costwarden'): the dashboard's links and assets carry it.",
        "COSTWARDEN_ROOT_PATH",
    )
    max_body_bytes: int = _setting(
        8 * 1024 * 1024,
        "Largest request body accepted; larger ones get 413 before they are read whole.",
        "COSTWARDEN_MAX_BODY_BYTES",
    )
    max_response_bytes: int = _setting(
        64 * 1024 * 1024,
        "Largest upstream response body (or single stream event) accepted; a larger one is "
        "cut off and answered 502, so a hostile upstream cannot exhaust the gateway's memory.",
        "COSTWARDEN_MAX_RESPONSE_BYTES",
    )
    cancel_on_disconnect: bool = _setting(
        True,
        "When a client disconnects before its answer is complete, cancel the upstream call "
        "and record the request as cancelled (billed for what was estimated to be used); "
        "false lets the upstream call run to completion and bills it in full.",
        "COSTWARDEN_CANCEL_ON_DISCONNECT",
    )
    max_header_bytes: int = _setting(
        64 * 1024,
        "Largest request head (request line and headers together) accepted; a larger one gets "
        "431 and its connection is closed. At least 4096.",
        "COSTWARDEN_MAX_HEADER_BYTES",
    )
    header_timeout_seconds: float = _setting(
        10.0,
        "A request head must arrive whole within this long of its first byte (of the "
        "connection opening, for a new connection's first request); otherwise 408 and the "
        "connection is closed (a new connection that sent nothing is closed silently).",
        "COSTWARDEN_HEADER_TIMEOUT_SECONDS",
    )
    body_timeout_seconds: float = _setting(
        60.0,
        "A request body must arrive whole within this long of the end of its head: a "
        "deadline, not an idle gap, so trickling bytes cannot extend it; otherwise 408 and "
        "the connection is closed. The default takes max_body_bytes (8 MiB) at >= 140 KB/s.",
        "COSTWARDEN_BODY_TIMEOUT_SECONDS",
    )
    key_refresh_seconds: float = _setting(
        0.5,
        "How often the in-memory key cache polls storage for created or revoked keys.",
        "COSTWARDEN_KEY_REFRESH_SECONDS",
    )
    log_level: str = _setting(
        "info", "Log level: debug, info, warning, error.", "COSTWARDEN_LOG_LEVEL"
    )


def server_problem(s: ServerSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[server]`` value, or None."""
    if s.root_path and (not s.root_path.startswith("/") or s.root_path.endswith("/")):
        return "root_path", "must start with / and not end with /"
    if not (0 < s.port < 65536):
        return "port", "must be between 1 and 65535"
    if s.workers < 1:
        return "workers", "must be at least 1"
    for name in ("max_body_bytes", "max_response_bytes", "key_refresh_seconds"):
        if getattr(s, name) <= 0:
            return name, "must be positive"
    if s.max_header_bytes < MIN_HEADER_BYTES:
        return "max_header_bytes", f"must be at least {MIN_HEADER_BYTES}"
    for name in ("header_timeout_seconds", "body_timeout_seconds"):
        if not 0 < getattr(s, name) < math.inf:
            return name, "must be a positive number"
    return None
