"""The breaker board: one :class:`~costwarden.routing.breaker.Breaker` per deployment, shared
across gateway processes through Redis, every transition recorded and published.

The request path calls :meth:`BreakerBoard.admit` before an upstream call and
:meth:`~BreakerBoard.success` / :meth:`~BreakerBoard.failure` after it. With the breaker
closed (nearly always) ``admit`` returns without awaiting anything, and ``success`` /
``failure`` only count in memory; a transition hands its I/O to tasks the board owns:

- a writer task hands it to the recorder (:class:`BreakerRecorder`; the app passes one
  writing ``breaker_transitions``) in a worker thread (a failure is logged, never raised to
  the request);
- it is logged (WARNING when a breaker opens, INFO otherwise) and published on the event
  bus as ``breaker_changed`` {deployment, from, to, reason, at, remote};
- with Redis, a sync task writes the new state to Redis and publishes it to the other
  processes.

Shared state (when given a Redis client: the app's one client, ``storage/redis.py``, whose
pool the board shares with the budget counters and never closes), keys under
``{prefix}:breaker:``::

    state:{deployment}   hash: state, opened_at, reason, at, origin, version (grows per write)
    probe:{deployment}   who holds the half-open probe slot, and until when
    changes              pub/sub channel: every state write, as JSON (``changes:db<n>`` on
                         database n > 0: channels are server-wide, keys are not)

On a Redis Cluster the deployment is written in braces (``state:{openai:gpt-4o}``), a hash
tag: the push script writes both of a deployment's keys, which must then share a slot. The
channel is an ordinary (not sharded) one, which the cluster forwards to every node.

The subscription holds one connection of that pool while it listens (redis-py's ``PubSub``
takes one from the pool), and gives it back when it ends.

What is shared is the breaker's *state* (closed / open / half-open, when it opened, why).
Every board subscribes to the channel and also polls the state hashes every
``sync_seconds`` (a backstop for messages lost while the subscription reconnects), so a
breaker one process opens is open in every process within a second. The probe slot is
claimed with one atomic script (set unless held), so of several processes finding the
cooldown over exactly one probes. Counting is per process: with N processes, each needs
its own ``failure_threshold`` failures (or its own window of failures) to trip the breaker,
but once one trips it, all see it open; health figures (error rate, requests in window,
consecutive failures, last success / failure) are this process's view.

Times written to Redis come from the board's clock, never from Redis ``TIME``, so tests can
move time; Redis expiries (PX) are only a safety net that removes stale probe claims.

Redis unreachable: one warning per outage, then every board runs on its own state; when
Redis is back, the state changes made meanwhile are written to it (last writer wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from costwarden.core.actors import clean_actor
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.event_kinds import BreakerChanged
from costwarden.core.events import EventBus
from costwarden.core.tasks import cancel_and_wait
from costwarden.routing.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    STATES,
    Breaker,
    BreakerPolicy,
    BreakerState,
    Transition,
    iso,
)

logger = logging.getLogger(__name__)

EVENT_KIND = BreakerChanged.kind
# How long the subscription waits for a message before it looks at whether to stop; and,
# doubled, how long start() waits for the shared state and close() for the last write.
# Each Redis command has the client's own timeout (redis.timeout_seconds): an unreachable
# Redis costs admit() at most that, once per outage (after the first failure the board stops
# asking until the sync loop reaches Redis again).
REDIS_TIMEOUT = 1.0
# How long close() waits for the transition writer to drain.
DRAIN_SECONDS = 10.0

# KEYS: state hash, probe key. ARGV: state, opened_at, reason, at, origin, channel, deployment.
# Writes the state, bumps its version, frees the probe slot unless half-open, publishes.
_PUSH_LUA = """
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'opened_at', ARGV[2], 'reason', ARGV[3],
           'at', ARGV[4], 'origin', ARGV[5])
if ARGV[1] ~= 'half_open' then
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[6], cjson.encode({
  deployment = ARGV[7], version = version, state = ARGV[1], opened_at = ARGV[2],
  reason = ARGV[3], at = ARGV[4], origin = ARGV[5]}))
return version
"""

# KEYS: probe key. ARGV: now, held until, origin, ttl ms (a safety net in Redis time).
# {1, until} if the slot was free (or its holder's time is up) and is now ours, else
# {0, the holder's until}. Times travel as strings: Lua numbers come back as integers.
_CLAIM_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ' ', 1, true)
  local held = sep and string.sub(current, 1, sep - 1) or current
  if tonumber(held) and tonumber(held) > tonumber(ARGV[1]) then
    return {0, held}
  end
end
redis.call('SET', KEYS[1], ARGV[2] .. ' ' .. ARGV[3], 'PX', ARGV[4])
return {1, ARGV[2]}
"""


class BreakerRecorder(Protocol):
    """Where the board keeps history: its transitions, and operator resets in the audit log.

    Blocking calls: the board runs them in a worker thread, never on the request path.
    """

    def record_transitions(self, transitions: Sequence[Transition]) -> None:
        """Append every transition, in one write."""

    def audit_reset(self, *, actor: str, deployment: str, old: Any, new: Any) -> None:
        """One audit row for a reset (``old``/``new``: JSON-serializable breaker state)."""


def _text(value: bytes | str) -> str:
    """A reply as text (the shared client answers bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _float_or_none(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class BreakerBoard:
    def __init__(
        self,
        deployments: Iterable[str],
        policy: BreakerPolicy,
        *,
        recorder: BreakerRecorder,
        events: EventBus,
        clock: Callable[[], float] = time.time,
        redis: Redis | RedisCluster | None = None,
        sync_seconds: float = 0.5,
        prefix: str = "cw",
        channel_tag: str = "",
    ) -> None:
        if isinstance(sync_seconds, bool) or not (
            isinstance(sync_seconds, int | float) and 0 < sync_seconds <= 60
        ):
            raise InvalidInput(f"breaker sync_seconds must be in (0, 60], got {sync_seconds!r}")
        self.policy = policy
        self._breakers = {d: Breaker(d, policy) for d in deployments}
        self._recorder = recorder
        self._events = events
        self._clock = clock
        self._redis = redis
        self._sync_seconds = float(sync_seconds)
        self._prefix = f"{prefix}:breaker"
        # Channels are server-wide: the tag names the database (storage.redis.db_tag).
        self._channel = f"{self._prefix}:changes{channel_tag}"
        # This board's name in the shared state, to tell its own writes from others'.
        self._origin = secrets.token_hex(8)
        self._client: Redis | RedisCluster | None = None
        self._push_script: AsyncScript | None = None
        self._claim_script: AsyncScript | None = None
        self._seen: dict[str, int] = {}  # shared-state version last applied or written
        # Deployments whose local state Redis does not have yet -> generation of the change.
        self._dirty: dict[str, int] = {}
        self._generation = 0
        self._claiming: set[str] = set()
        self.redis_down = False
        self._wake = asyncio.Event()
        # Transitions waiting for the writer; _idle is set when none are pending or in flight.
        self._pending: list[Transition] = []
        self._writer_wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._writer: asyncio.Task[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._started = False

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopping = False
        self._writer = asyncio.create_task(self._writer_loop(), name="costwarden-breaker-writer")
        if self._pending:
            self._writer_wake.set()
        if self._redis is None:
            return
        client = self._redis
        self._client = client
        self._push_script = client.register_script(_PUSH_LUA)
        self._claim_script = client.register_script(_CLAIM_LUA)
        try:
            # Learn breakers other processes have open before serving a request.
            await asyncio.wait_for(self._sync_once(), 2 * REDIS_TIMEOUT)
            self._up()
        except (RedisError, OSError, TimeoutError) as exc:
            self._down(exc)
        self._loops = [
            asyncio.create_task(self._sync_loop(), name="costwarden-breaker-sync"),
            asyncio.create_task(self._listen_loop(), name="costwarden-breaker-listen"),
        ]
        logger.info("circuit breakers shared through redis (prefix %r)", self._prefix)

    async def close(self) -> None:
        if not self._started:
            if self._pending:  # transitions made without start(): write them now
                batch, self._pending = self._pending, []
                await self._write(batch)
            return
        self._started = False
        loops, self._loops = self._loops, []
        await cancel_and_wait(loops)
        if self._client is not None and self._dirty and not self.redis_down:
            # Share a breaker opened just before shutdown; best effort.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await asyncio.wait_for(self._push_dirty(), 2 * REDIS_TIMEOUT)
        self._stopping = True
        self._writer_wake.set()
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                await asyncio.wait_for(writer, DRAIN_SECONDS)
            except TimeoutError:
                logger.warning(
                    "breaker transitions not written within %gs of shutdown", DRAIN_SECONDS
                )
        self._client = None  # the app's: it stays open

    # ------------------------------------------------------------------ the request path

    async def admit(self, deployment: str) -> bool:
        """Whether a request may go to ``deployment`` now. No I/O while it is closed.

        Open with the cooldown running, or half-open with the probe out: False. Cooldown
        over: the breaker turns half-open and this caller is the probe (with Redis, only if
        it wins the probe slot across processes).
        """
        breaker = self._breakers[deployment]
        if breaker.state == CLOSED:
            return True
        now = self._clock()
        if not breaker.probe_due(now) or deployment in self._claiming:
            return False
        if self._claim_script is not None and not self.redis_down:
            self._claiming.add(deployment)
            try:
                holder_until = await self._claim(deployment, now)
            except (RedisError, OSError) as exc:
                self._down(exc)
                holder_until = None  # decide on local state alone
            finally:
                self._claiming.discard(deployment)
            if holder_until is not None:
                breaker.hold_probe(holder_until)
                return False
            if breaker.closed:  # closed elsewhere while we asked
                return True
            if not breaker.probe_due(now):
                return False
        if breaker.state == HALF_OPEN and breaker.probe_until is not None:
            logger.info(
                "circuit breaker %s: the probe never reported; its slot expired, "
                "another request probes",
                deployment,
            )
        transition = breaker.start_probe(now)
        if transition is not None:
            self._emit(transition, remote=False)
        return True

    def state(self, deployment: str) -> BreakerState:
        return self._breakers[deployment].state

    def probe_due(self, deployment: str) -> bool:
        """Whether :meth:`admit` would now let a probe through a breaker that is not closed
        (if this process wins the probe slot); no I/O, nothing taken."""
        if deployment in self._claiming:
            return False
        return self._breakers[deployment].probe_due(self._clock())

    def success(self, deployment: str) -> None:
        transition = self._breakers[deployment].record_success(self._clock())
        if transition is not None:
            self._emit(transition, remote=False)

    def failure(self, deployment: str, reason: str) -> None:
        transition = self._breakers[deployment].record_failure(self._clock(), reason)
        if transition is not None:
            self._emit(transition, remote=False)

    # ------------------------------------------------------------------ operators

    @property
    def deployments(self) -> list[str]:
        return sorted(self._breakers)

    def health(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [self._breakers[d].snapshot(now) for d in sorted(self._breakers)]

    def health_of(self, deployment: str) -> dict[str, Any]:
        return self._known(deployment).snapshot(self._clock())

    async def reset(self, deployment: str, *, actor: str) -> None:
        """Force the breaker closed (and its counts afresh), in every process; audited."""
        breaker = self._known(deployment)
        who = clean_actor(actor)
        if self._client is not None and not self.redis_down:
            try:  # audit the state every process sees, not a stale local one
                await self._pull([deployment])
            except (RedisError, OSError) as exc:
                self._down(exc)
        now = self._clock()
        old = {
            "state": breaker.state,
            "reason": breaker.reason or None,
            "opened_at": iso(breaker.opened_at),
            "consecutive_failures": breaker.consecutive_failures,
        }
        await asyncio.to_thread(
            self._recorder.audit_reset,
            actor=who,
            deployment=deployment,
            old=old,
            new={"state": CLOSED},
        )
        transition = breaker.reset(now, f"reset by {who}")
        if transition is not None:
            self._emit(transition, remote=False)
            if self._client is not None and not self.redis_down:
                try:
                    await self._push_dirty()
                except (RedisError, OSError) as exc:
                    self._down(exc)  # the sync loop writes it once Redis is back

    async def flush(self) -> None:
        """Wait until every transition made so far is handed to the recorder (written)."""
        if self._writer is None:
            batch, self._pending = self._pending, []
            await self._write(batch)
            return
        self._writer_wake.set()
        await self._idle.wait()

    def _known(self, deployment: str) -> Breaker:
        breaker = self._breakers.get(deployment)
        if breaker is None:
            known = ", ".join(sorted(self._breakers)) or "none"
            raise NotFound(f"unknown deployment {deployment!r} (known: {known})")
        return breaker

    # ------------------------------------------------------------------ transitions

    def _emit(self, transition: Transition, *, remote: bool) -> None:
        t = transition
        level = logging.WARNING if t.to_state == OPEN else logging.INFO
        logger.log(
            level,
            "circuit breaker %s: %s -> %s (%s)%s",
            t.deployment,
            t.from_state,
            t.to_state,
            t.reason,
            " [from another gateway process]" if remote else "",
        )
        if not remote:  # the process that made it raised it, for every process to see
            self._events.publish(
                BreakerChanged(
                    deployment=t.deployment,
                    from_state=t.from_state,
                    to_state=t.to_state,
                    reason=t.reason,
                    at=iso(t.at),
                )
            )
        if remote:
            return  # the process that made it records it
        self._pending.append(t)
        self._idle.clear()
        self._writer_wake.set()
        if self._redis is not None:
            self._generation += 1
            self._dirty[t.deployment] = self._generation
            self._wake.set()

    async def _writer_loop(self) -> None:
        while True:
            await self._writer_wake.wait()
            self._writer_wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
            self._idle.set()
            if self._stopping:
                return

    async def _write(self, batch: list[Transition]) -> None:
        if not batch:
            return
        try:
            await asyncio.to_thread(self._recorder.record_transitions, batch)
        except Exception as exc:  # history only: never let it break the gateway
            logger.warning(
                "could not record %d breaker transition(s): %s: %s",
                len(batch),
                type(exc).__name__,
                exc,
            )

    # ------------------------------------------------------------------ shared state

    def _state_key(self, deployment: str) -> str:
        return f"{self._prefix}:state:{self._tag(deployment)}"

    def _probe_key(self, deployment: str) -> str:
        return f"{self._prefix}:probe:{self._tag(deployment)}"

    def _tag(self, deployment: str) -> str:
        """On a Redis Cluster the deployment is the keys' hash tag: the push script writes
        both of them, which must share a slot. (Elsewhere the names stay as they were, so
        processes of the previous version share the same keys during an upgrade.)"""
        return f"{{{deployment}}}" if isinstance(self._redis, RedisCluster) else deployment

    def _down(self, exc: BaseException) -> None:
        if not self.redis_down:
            self.redis_down = True
            logger.warning(
                "redis unreachable (%s: %s): circuit breakers run on this process's own "
                "state until it is back",
                type(exc).__name__,
                exc,
            )

    def _up(self) -> None:
        if self.redis_down:
            self.redis_down = False
            logger.info("redis reachable again: circuit-breaker state is shared again")

    async def _claim(self, deployment: str, now: float) -> float | None:
        """Claim the probe slot in Redis: None if it is ours now, else until when another
        process holds it."""
        assert self._claim_script is not None
        timeout = self.policy.probe_timeout_seconds
        result = await self._claim_script(
            keys=[self._probe_key(deployment)],
            args=[repr(now), repr(now + timeout), self._origin, max(1, math.ceil(timeout * 1000))],
        )
        won, until = result
        if int(won) == 1:
            return None
        return float(_text(until))

    async def _push_dirty(self) -> None:
        assert self._push_script is not None
        for deployment, generation in list(self._dirty.items()):
            breaker = self._breakers[deployment]
            version = await self._push_script(
                keys=[self._state_key(deployment), self._probe_key(deployment)],
                args=[
                    breaker.state,
                    repr(breaker.opened_at) if breaker.opened_at is not None else "",
                    breaker.reason,
                    repr(self._clock()),
                    self._origin,
                    self._channel,
                    deployment,
                ],
            )
            self._seen[deployment] = int(version)
            if self._dirty.get(deployment) == generation:
                del self._dirty[deployment]

    async def _pull(self, deployments: list[str]) -> None:
        """Read the shared state of ``deployments`` and apply what changed (the poll)."""
        assert self._client is not None
        async with self._client.pipeline(transaction=False) as pipe:
            for deployment in deployments:
                pipe.hgetall(self._state_key(deployment))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        results = [{_text(k): _text(v) for k, v in reply.items()} for reply in replies]
        for deployment, fields in zip(deployments, results, strict=True):
            if not fields:
                # Never written, or Redis lost it (restart, flush): re-share a breaker that
                # is not closed here, so the other processes learn of it again.
                self._seen.pop(deployment, None)
                if self._breakers[deployment].state != CLOSED and deployment not in self._dirty:
                    self._generation += 1
                    self._dirty[deployment] = self._generation
                    self._wake.set()
                continue
            self._apply_shared(deployment, fields, polled=True)

    def _apply_shared(self, deployment: str, fields: dict[str, Any], *, polled: bool) -> None:
        breaker = self._breakers.get(deployment)
        if breaker is None or deployment in self._dirty:
            return  # not ours, or our own newer change is about to be written
        try:
            version = int(fields["version"])
            state = str(fields["state"])
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring malformed shared breaker state for %s", deployment)
            return
        if state not in STATES:
            logger.warning("ignoring unknown shared breaker state %r for %s", state, deployment)
            return
        seen = self._seen.get(deployment, 0)
        # A poll reads the current value, which wins even when lower (Redis was reset);
        # a message may arrive after a poll has already seen a newer version.
        if version == seen or (not polled and version < seen):
            return
        self._seen[deployment] = version
        if fields.get("origin") == self._origin:
            return
        at = _float_or_none(fields.get("at")) or self._clock()
        transition = breaker.apply(
            state, _float_or_none(fields.get("opened_at")), str(fields.get("reason") or ""), at
        )
        if transition is not None:
            self._emit(transition, remote=True)

    async def _sync_once(self) -> None:
        if self._dirty:
            await self._push_dirty()
        await self._pull(list(self._breakers))

    async def _sync_loop(self) -> None:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that
        # arrives as the wait ends, and close() would then wait for this loop forever.
        while self._started:
            self._wake.clear()
            try:
                await self._sync_once()
                self._up()
            except (RedisError, OSError) as exc:
                self._down(exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sync_seconds):
                    await self._wake.wait()

    async def _listen_loop(self) -> None:
        assert self._client is not None
        while self._started:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while self._started:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=REDIS_TIMEOUT
                    )
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except (RedisError, OSError) as exc:
                # The sync loop reports outages; polling covers what this misses meanwhile.
                logger.debug("breaker subscription lost (%s); resubscribing", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(self._sync_seconds)

    def _on_message(self, data: Any) -> None:
        try:
            message = json.loads(data)
            deployment = message["deployment"]
        except (TypeError, ValueError, KeyError):
            logger.warning("ignoring a malformed breaker message on %s", self._channel)
            return
        if isinstance(message, dict) and isinstance(deployment, str):
            self._apply_shared(deployment, message, polled=False)
