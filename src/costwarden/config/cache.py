"""``[cache]``: the response cache (see ``costwarden.caching``).

A route is cached when its ``cache`` table (or this section's ``default_ttl_seconds``) gives
it a TTL; these settings say where answers are kept. The caching package does not import
config: the app maps these values into its stores.
"""

from __future__ import annotations

import dataclasses

from costwarden.config.fields import setting as _setting

BACKENDS = ("memory", "redis")


@dataclasses.dataclass(slots=True)
class CacheSettings:
    backend: str = _setting(
        "memory",
        "Where cached answers live: 'memory' (each process its own LRU, bounded by "
        "max_bytes) or 'redis' (shared by every process, on the [redis] server).",
        "COSTWARDEN_CACHE_BACKEND",
    )
    max_bytes: int = _setting(
        64 * 1024 * 1024,
        "The memory backend's size bound, in bytes of stored answers; the least recently "
        "used go first.",
        "COSTWARDEN_CACHE_MAX_BYTES",
    )
    default_ttl_seconds: int = _setting(
        0,
        "Seconds an answer is kept for routes without their own cache table; 0 (the "
        "default): only routes with one are cached.",
        "COSTWARDEN_CACHE_DEFAULT_TTL_SECONDS",
    )
    replay_unsafe: bool = _setting(
        False,
        "For routes without their own cache table: also cache requests that are not safe to "
        "replay (a temperature above 0 or none, tools, n > 1).",
        "COSTWARDEN_CACHE_REPLAY_UNSAFE",
    )
    max_entry_bytes: int = _setting(
        1024 * 1024,
        "The largest answer stored, in bytes; a larger one is served but not cached.",
        "COSTWARDEN_CACHE_MAX_ENTRY_BYTES",
    )


def cache_problem(s: CacheSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[cache]`` value, or None."""
    if s.backend not in BACKENDS:
        return "backend", f"must be one of {', '.join(BACKENDS)}"
    if s.max_bytes <= 0:
        return "max_bytes", "must be positive"
    if s.max_entry_bytes <= 0:
        return "max_entry_bytes", "must be positive"
    if s.default_ttl_seconds < 0:
        return "default_ttl_seconds", "must be 0 (off) or a positive number of seconds"
    return None
