"""The response cache on the request path: an admission stage that answers a hit before any
limit, reservation or upstream, and the writer that keeps a fresh answer (costwarden.caching
holds the policy and the stores).

The stage runs after the route is resolved (its ``cache`` table says whether and how long to
keep answers). A route with no cache costs one attribute read. For a cached route it reads the
client's directives, decides (``caching.policy.decide``), and looks the request's key up: the
key is the tenant's namespace (the org, or the route's shared namespace) plus the canonical
request, so one org's answer is never another's. A hit raises :class:`CacheHit`, which the
proxy answers from the entry -- streamed in the client's wire format when the request streams,
whether or not the stored answer was -- as a ledger row with status ``cached``, cost $0 and
``saved_usd`` the original call's cost; no budget is reserved or charged.

A miss that may be stored wraps the request's ``send``: the bytes that reach the client are
collected (a stream assembled into the unary answer it amounts to) and, once the relay ended
in success with exact usage, stored with the call's usage and cost. Writing happens after the
answer was sent, never before it. An entry that cannot be read is a miss and a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import orjson

from costwarden.caching.assemble import StreamAssembler, set_usage
from costwarden.caching.entry import CachedAnswer, CacheEntryError, decode, encode
from costwarden.caching.keys import cache_key, namespace
from costwarden.caching.policy import (
    CACHE_HEADER,
    age_ok,
    client_cache,
    decide,
    unsafe_to_replay,
)
from costwarden.caching.replay import ReplayError, replay_stream
from costwarden.caching.stores import ResponseCache
from costwarden.core.errors import BadRequest
from costwarden.gateway.asgi import JSON
from costwarden.gateway.cache_write import CacheWrite
from costwarden.gateway.responses import SSE_HEADERS, id_headers, wants_usage
from costwarden.gateway.state import RequestState

logger = logging.getLogger(__name__)



class CacheHit(Exception):
    """Admission found the answer in the cache (the proxy serves it)."""

    def __init__(self, answer: CachedAnswer, age: float, body: bytes) -> None:
        super().__init__("cache hit")
        self.answer = answer
        self.age = age
        self.body = body  # as the client gets it: the stored answer, or its stream


class ResponseCacheStage:
    """The admission stage (after Resolve) and the writer after the relay."""

    __slots__ = ("_store", "_clock", "_max_entry_bytes")

    def __init__(
        self, store: ResponseCache, clock: Callable[[], float], max_entry_bytes: int
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_entry_bytes = max_entry_bytes

    def __call__(self, state: RequestState) -> Any:
        route = state.route
        if route is None or route.cache is None:
            return None
        return self._look_up(state)

    async def _look_up(self, state: RequestState) -> None:
        route = state.route
        assert route is not None and route.cache is not None
        cache = route.cache
        try:
            client = client_cache(state.headers)
        except ValueError as exc:
            raise BadRequest(str(exc), param=CACHE_HEADER.decode()) from None
        unsafe = unsafe_to_replay(state.endpoint, state.payload)
        if state.system_note is not None:
            unsafe = "the request carries the session's budget note"  # never opted in
            decision = decide(client, cache.ttl_seconds, unsafe, False)
        else:
            decision = decide(client, cache.ttl_seconds, unsafe, cache.replay_unsafe)
        state.route_headers.append((CACHE_HEADER, decision.status.encode()))
        if not (decision.look_up or decision.store):
            return
        org = state.record.org_id
        assert org is not None, "authenticated before the route is resolved"
        key = cache_key(
            namespace(org, cache.namespace), state.endpoint, state.wire, state.payload
        )
        if decision.look_up:
            raw = await self._store.get(key)
            answer = None if raw is None else self._decode(raw, key)
            now = self._clock()
            if answer is not None and age_ok(answer.stored_at, now, decision.max_age):
                body = self._body(state, answer, key)
                if body is not None:
                    raise CacheHit(answer, max(0.0, now - answer.stored_at), body)
        if decision.store:
            wire: Literal["openai", "anthropic"] = state.wire
            assembler = StreamAssembler(wire, state.endpoint) if state.stream else None
            write = CacheWrite(key, decision.ttl, self._max_entry_bytes, assembler)
            state.cache_write = write
            state.send = write.tee(state.send)

    def _decode(self, raw: bytes, key: str) -> CachedAnswer | None:
        try:
            return decode(raw)
        except CacheEntryError as exc:
            logger.warning("cache entry %s... could not be read, a miss: %s", key[:12], exc)
            return None

    def _body(self, state: RequestState, answer: CachedAnswer, key: str) -> bytes | None:
        """The hit's body: the stored answer, or its stream for a streaming request."""
        if not state.stream:
            return answer.body
        try:
            obj = orjson.loads(answer.body)
            return replay_stream(state.wire, obj, include_usage=wants_usage(state.payload))
        except (orjson.JSONDecodeError, ReplayError, TypeError, AttributeError) as exc:
            logger.warning("cache entry %s... cannot be replayed, a miss: %s", key[:12], exc)
            return None

    async def store(self, state: RequestState) -> None:
        """Keep the answer just sent, when it is whole and its cost exact. The client has
        its answer already: whatever goes wrong here is a warning, not the request's."""
        try:
            await self._store_answer(state)
        except Exception as exc:  # never the client's problem
            logger.warning(
                "%s: the answer was not cached: %s: %s",
                state.record.request_id, type(exc).__name__, exc,
            )  # fmt: skip

    async def _store_answer(self, state: RequestState) -> None:
        write = state.cache_write
        record = state.record
        if (
            write is None
            or write.status != 200
            or write.size > write.limit
            or record.status != "success"
            or record.cost_estimated
        ):
            return
        if write.assembler is not None:
            obj = write.assembler.result()
            if obj is None:
                return
            body = orjson.dumps(
                set_usage(
                    state.wire,
                    obj,
                    input_tokens=record.input_tokens,
                    output_tokens=record.output_tokens,
                    cached_input_tokens=record.cached_input_tokens,
                    cache_write_tokens=record.cache_write_tokens,
                )
            )
        else:
            body = b"".join(write.parts)
        answer = CachedAnswer(
            body,
            record.provider or "",
            record.served_model or "",
            record.input_tokens,
            record.cached_input_tokens,
            record.cache_write_tokens,
            record.output_tokens,
            record.reasoning_tokens,
            record.cost_usd,
            self._clock(),
        )
        await self._store.set(write.key, encode(answer), write.ttl)


def hit_response(state: RequestState, hit: CacheHit) -> list[tuple[bytes, bytes]]:
    """The hit's headers; the record filled in as the ledger keeps a hit."""
    answer = hit.answer
    record = state.record
    record.status = "cached"
    record.http_status = 200
    record.provider = answer.provider or None
    record.served_model = answer.served_model or None
    record.saved_usd = answer.cost_usd
    age = int(hit.age)
    reason = f"cache hit: {answer.provider}:{answer.served_model}, stored {age} s ago"
    record.route_reason = reason
    headers = [
        (b"content-type", SSE_HEADERS[0][1] if state.stream else JSON),
        *id_headers(record),
        (b"x-costwarden-cost-usd", b"0"),
        (b"x-costwarden-saved-usd", format(answer.cost_usd, "f").encode()),
        (CACHE_HEADER, b"hit"),
        (b"x-costwarden-cache-age", str(age).encode()),
        (b"x-costwarden-route-reason", reason.encode("ascii", "replace")),
    ]
    if state.stream:
        headers.append(SSE_HEADERS[1])
    return headers
