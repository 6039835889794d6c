"""When the response cache is read and written, for one request. Pure functions over data;
the gateway supplies the request's headers and payload, and the route's cache settings.

What the client can say:

- ``Cache-Control: no-store`` -- neither read nor write the cache for this request (its
  answer must not be kept anywhere);
- ``Cache-Control: no-cache`` -- do not serve a stored answer, ask the model, and store its
  answer for the next request (the answer is fine to keep, a stale one is not wanted);
- ``Cache-Control: max-age=N`` -- a stored answer older than N seconds will not do; and do
  not keep this one longer than N seconds either (``max-age=0``: nothing stored will do,
  which is ``no-cache``);
- ``x-costwarden-cache: bypass`` (as ``no-store``) or ``refresh`` (as ``no-cache``), for
  clients whose SDK makes ``Cache-Control`` awkward to set.

What the gateway knows: whether replaying the answer is safe (:func:`unsafe_to_replay`: an
answer sampled at a temperature, several choices, tools with side effects), and whether the
route (or the key) opts in to caching such requests anyway. The rules, in order, are those of
:func:`decide`; the status it gives is what the ``x-costwarden-cache`` response header says
when the answer is not a hit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal, get_args

CacheStatus = Literal["hit", "miss", "bypass", "refresh"]
CACHE_STATUSES: tuple[CacheStatus, ...] = get_args(CacheStatus)

Directive = Literal["refresh", "bypass"]
DIRECTIVES: tuple[Directive, ...] = get_args(Directive)

CACHE_HEADER = b"x-costwarden-cache"
_CACHE_CONTROL = b"cache-control"
# RFC 9111 5.2.1.1: a max-age past 2**31 seconds is read as 2**31 (and so is not an
# enormous integer to parse).
_MAX_AGE_CAP = 2**31
_MAX_AGE_DIGITS = len(str(_MAX_AGE_CAP))


@dataclasses.dataclass(frozen=True, slots=True)
class ClientCache:
    """What the request's headers ask of the cache."""

    no_store: bool = False
    no_cache: bool = False
    max_age: int | None = None  # seconds; None: any age will do
    directive: Directive | None = None  # x-costwarden-cache


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the cache for one request."""

    look_up: bool  # read the cache (a hit is served)
    store: bool  # write the answer when it is a success
    status: CacheStatus  # the x-costwarden-cache header when the answer is not a hit
    ttl: int  # seconds to keep a stored answer (0 when not stored)
    max_age: int | None  # a stored answer older than this many seconds is not served
    reason: str = ""  # why, for the ledger and the logs ("" for an ordinary look-up)


def client_cache(headers: Mapping[bytes, bytes]) -> ClientCache:
    """The request's cache directives, from ``Cache-Control`` and ``x-costwarden-cache``
    (header names in lowercase bytes, as ASGI gives them).

    ``Cache-Control`` is read leniently, as HTTP caches do: directives are case-insensitive
    and comma separated, unknown ones and a malformed ``max-age`` are ignored (several
    ``max-age``: the smallest). An unknown ``x-costwarden-cache`` value raises
    :class:`ValueError`: that header is ours, and a typo in it would otherwise silently serve
    cached answers to a client that asked for fresh ones.
    """
    no_store = no_cache = False
    max_age: int | None = None
    raw = headers.get(_CACHE_CONTROL)
    for item in raw.decode("latin-1").split(",") if raw else ():
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name == "no-store":
            no_store = True
        elif name == "no-cache":
            no_cache = True
        elif name == "max-age":
            seconds = _delta_seconds(value)
            if seconds is not None:
                max_age = seconds if max_age is None else min(max_age, seconds)
    return ClientCache(no_store, no_cache, max_age, _directive(headers.get(CACHE_HEADER)))


def _delta_seconds(value: str) -> int | None:
    """A ``max-age`` value (digits, optionally quoted), or None when malformed."""
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text or not text.isascii() or not text.isdigit():
        return None
    if len(text) > _MAX_AGE_DIGITS:
        return _MAX_AGE_CAP
    return min(int(text), _MAX_AGE_CAP)


def _directive(raw: bytes | None) -> Directive | None:
    if raw is None:
        return None
    value = raw.decode("latin-1").strip().lower()
    for directive in DIRECTIVES:
        if value == directive:
            return directive
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise ValueError(f"x-costwarden-cache must be 'refresh' or 'bypass', not {shown!r}")


def unsafe_to_replay(endpoint: str, payload: Mapping[str, Any]) -> str | None:
    """Why serving this request's answer again is not the same as asking the model again, or
    None when it is.

    Embeddings are deterministic: always safe. A chat completion or message is safe only
    when:

    - it calls no tools: a tool call the client runs again may act again (send the email
      twice), and the client expects the model to have seen its latest tool results;
    - it asks for one answer (``n`` absent or 1): several choices are asked for their
      variety, which a replay does not have;
    - its temperature is 0: otherwise the client asked for a sample, and a replay is the
      same sample again. An absent temperature is *not* 0: the providers default to 1.
    """
    if endpoint == "embeddings":
        return None
    if payload.get("tools") or payload.get("functions"):
        return "tools may have side effects"
    n = payload.get("n")
    if n is not None and n != 1:
        return "n > 1" if _is_number(n) and n > 1 else "n is not 1"
    temperature = payload.get("temperature")
    if not _is_number(temperature) or temperature != 0:
        return "temperature is not 0"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decide(client: ClientCache, route_ttl: int, unsafe: str | None, opt_in: bool) -> Decision:
    """What to do with the cache, by the first rule that applies:

    1. The route stores nothing (``route_ttl`` <= 0): bypass, neither read nor write.
    2. The client says ``x-costwarden-cache: bypass`` or ``Cache-Control: no-store``: bypass.
       no-store wins over everything else it sends: the answer must not be kept.
    3. Replaying is unsafe (``unsafe``, from :func:`unsafe_to_replay`) and neither the route
       nor the key opts in: bypass. This comes before refresh: a refresh stores, and a stored
       answer of such a request would be served to the next one.
    4. The client says ``x-costwarden-cache: refresh``, ``Cache-Control: no-cache`` or
       ``max-age=0``: refresh, no look-up, and the fresh answer is stored for the route's
       ttl (max-age=0 says nothing stored will do *now*, not that the answer expires at once).
    5. Otherwise: look up; on a miss store for the route's ttl, lowered to the client's
       ``max-age`` when it gives one (the status "miss" stands until the look-up hits).
    """
    if route_ttl <= 0:
        return _skip("the route stores no answers")
    if client.directive == "bypass":
        return _skip("x-costwarden-cache: bypass")
    if client.no_store:
        return _skip("cache-control: no-store")
    if unsafe is not None and not opt_in:
        return _skip(unsafe)
    if client.directive == "refresh" or client.no_cache or client.max_age == 0:
        why = (
            "x-costwarden-cache: refresh"
            if client.directive == "refresh"
            else "cache-control: no-cache"
            if client.no_cache
            else "cache-control: max-age=0"
        )
        return Decision(False, True, "refresh", route_ttl, None, why)
    ttl = route_ttl if client.max_age is None else min(route_ttl, client.max_age)
    return Decision(True, True, "miss", ttl, client.max_age, "")


def _skip(reason: str) -> Decision:
    return Decision(False, False, "bypass", 0, None, reason)


def age_ok(stored_at: float, now: float, max_age: int | None) -> bool:
    """Whether an answer stored at ``stored_at`` (epoch seconds) is young enough to serve at
    ``now``. One stored "in the future" (another process's clock ahead of ours) is of age 0."""
    return max_age is None or now - stored_at <= max_age
