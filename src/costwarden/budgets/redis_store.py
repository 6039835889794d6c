"""Counters in Redis, shared by several gateway processes.

Every reserve and every settle is one Lua script (one round trip, atomic on the server). The
reserve script is a line-by-line port of :func:`costwarden.budgets.policy.decide`, so both
stores make the same decisions; the scripts live in ``budgets/lua/`` and are loaded once in
:meth:`RedisStore.start`, then run with EVALSHA (redis-py reloads them after a Redis restart).

Key layout -- every key carries its *tenant* (an org id, or ``platform``) as a Redis Cluster
hash tag, so all of one org's counters, leases and markers live in one slot and a script may
touch any of them, including the counters named by an expired lease it undoes::

    {prefix}:{tenant}:{check.key}   a counter (a hash):
                                      calendar: ``u`` settled, ``r`` reserved (in flight)
                                      rolling:  bucket index (decimal) -> amount, reservations
                                                included (as policy.apply_grant does)
    {prefix}:{tenant}:ready         exists while the tenant's counters are loaded; holds
                                    when they were (re)built (epoch ms)
    {prefix}:{tenant}:leases        zset: lease id -> expiry (epoch ms)
    {prefix}:{tenant}:lease         hash: lease id -> JSON [[counter key, field, amount], ...]
    {prefix}:{tenant}:purged        zset: lease id -> when a reserve purged it after expiry
                                    (kept a day: its late settle still counts)
    {prefix}:{tenant}:done          zset: lease id -> tombstone time: settled or released
                                    without a lease to find (kept ``2 * lease_seconds``)
    {prefix}:{tenant}:rebuild       the lock of whoever rebuilds the tenant from the ledger
    {prefix}:{tenant}:slice_gens    hash: slice lease id -> the generation of its last call
                                    (budgets/leased.py; the slice leases themselves are
                                    ``S:{process id}`` entries of ``leases`` and ``lease``)
    {prefix}:{tenant}:stranded      hash: a dead process's calendar slice, purged -> what was
                                    counted for it, until the ledger says (unstrand.lua)
    {prefix}:{tenant}:counted:{slice lease}  hash: calendar counter key -> what that
                                    process's slices calls counted as spent in it
    {prefix}:{platform}:processes   zset: gateway process id -> heartbeat expiry (epoch ms);
                                    how many share the counters (budgets/outage.py)

Counters carry an EXPIRE (the check's ``ttl``), so windows that are over disappear by
themselves and :meth:`RedisStore.prune` has nothing to do.

Leases: a reservation belongs to a request in flight in one process. That process renews its
leases every ``lease_seconds / 3``; a lease not renewed by its expiry (the process died) is
undone by the next reserve touching its tenant. A process whose lease was purged while it was
stalled, or lost in a flush, re-creates it (and re-adds the reservation) when it next renews.

The store is given its client (the app's one Redis client, ``storage/redis.py``: one pool
per process, shared with the circuit breakers) and never closes it.

Unknown outcomes: every command has a timeout (``redis.timeout_seconds``) and is never
retried by redis-py (the client is built so, and the store refuses one that retries), so a
stalled Redis fails requests fast (503, fail closed) -- but a command that timed out may
still run when Redis resumes, after commands sent later. So each
lease is settled at most once, however often its settle is sent: ``settle.lua`` tells a
settled lease (nothing to do) from a purged one (count the actual amounts) by the ``purged``
markers, and one lost in a flush by the rebuild time in ``ready``; a settle or release that
finds no lease leaves a tombstone in ``done``, which keeps a late reserve or renewal of that
lease from creating it again. A reserve that timed out is given up with :meth:`abandon`. See
``docs/scale-out.md`` ("Redis stalls").

Counters are a cache of the ledger: when a tenant's ``ready`` key is missing (Redis restarted
or was flushed) reserve raises :class:`~costwarden.budgets.store.CountersLost` and admits
nothing until the enforcer has re-seeded the tenant with ``complete=True``.

Times come from the caller (``now`` arguments and the ``clock`` used for renewal), never from
Redis ``TIME``, so tests can move time and every process agrees with its own ledger.

One request's checks may span two tenants (its org and the platform): a script then spans two
hash slots, which a single Redis (or a replicated primary) runs as one atomic step. A Redis
Cluster (``[redis] cluster``, a ``RedisCluster`` client) runs a script on the one node owning
its keys' slot, and the platform's slot cannot be every org's: there, reserve and settle
refuse such checks with :class:`~costwarden.budgets.store.TenantsSpanSlots` before sending
anything (a reservation split into one script per tenant would no longer be one atomic
decision: each tenant could admit what the other then refuses). ``add`` and ``abandon``, whose
work per tenant stands alone (each idempotent by its tenant's markers), run one script per
tenant there. Everything else is per tenant already: the leased slices' calls, renewals,
seeds, the heartbeat (one key, in a MULTI), ``views`` (a plain pipeline, which the cluster
client splits per node).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from importlib import resources
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from costwarden.budgets.limits import ROLLING_WINDOWS
from costwarden.budgets.policy import (
    Actual,
    Ask,
    Check,
    Grant,
    Refusal,
    View,
    actual_amount,
    decide,
)
from costwarden.budgets.store import CountersLost, LeaseClosed, Seed, TenantsSpanSlots
from costwarden.budgets.windows import bucket_leaves_at
from costwarden.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

# Expired leases undone per tenant by one reserve; the rest by the following ones.
PURGE_BATCH = 100
# Tombstones outlive any late command of their lease: one that runs later than its own lease
# expiry (reserved or renewed until then) creates a lease already due for purging.
TOMBSTONE_MIN_SECONDS = 60.0

# Each process writes its heartbeat every HEARTBEAT_SECONDS; one missing for
# HEARTBEAT_TTL_SECONDS is no longer counted (a dead process is counted that long at most:
# counting too many only makes the shares of an outage smaller).
HEARTBEAT_SECONDS = 1.0
HEARTBEAT_TTL_SECONDS = 5.0

_SCRIPTS = ("reserve", "settle", "renew", "seed", "abandon", "add", "slices", "unstrand")
# Scripts that purge expired leases: purge.lua (the one purge) is prepended to them.
_PURGING = ("reserve", "slices")


def _script_source(name: str) -> str:
    lua = resources.files("costwarden.budgets") / "lua"
    source = (lua / f"{name}.lua").read_text("utf-8")
    if name in _PURGING:
        source = (lua / "purge.lua").read_text("utf-8") + "\n" + source
    return source


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    key: str  # the Redis key of the counter
    field: str  # "r" or a bucket index
    amount: int
    ttl: int


class RedisStore:
    name = "redis"

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        lease_seconds: float = 30.0,
        prefix: str = "cw",
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_no_retries(redis)
        self._redis = redis
        # A cluster runs a script on one slot's node: one tenant per script (_one_slot).
        self.cluster = isinstance(redis, RedisCluster)
        self.lease_seconds = lease_seconds
        self.prefix = prefix
        self._clock = clock
        self._keep_ms = _ms(max(2 * lease_seconds, TOMBSTONE_MIN_SECONDS))
        self._client: Redis | RedisCluster | None = None
        self._scripts: dict[str, AsyncScript] = {}
        # Leases this process holds: lease id -> (reserved at, epoch ms; tenant ->
        # reservations), kept for renewal.
        self._leases: dict[str, tuple[int, dict[str, list[_Entry]]]] = {}
        # Leases whose settle failed: lease id -> (reserved at, first attempt at), epoch ms;
        # the retry tells settle.lua (a flush in between may have lost the lease).
        self._unsure: dict[str, tuple[int, int]] = {}
        self._renew_lock = asyncio.Lock()
        self._renewing: set[str] = set()  # leases in the renewal pass under way
        self._renewed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._beat: asyncio.Task[None] | None = None
        self.process_id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # This process's slice lease (budgets/leased.py) in every tenant, and the holder its
        # locally admitted requests' ledger rows carry.
        self.slice_lease = f"S:{self.process_id}"
        # Gateway processes sharing the counters, at the last heartbeat.
        self.processes = 1
        self._first_beat = math.inf
        self._first_alone = False  # nobody else was counted at this process's first heartbeat

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        client = self._redis
        for name in _SCRIPTS:
            source = _script_source(name)
            script = client.register_script(source)
            # Loaded now, so that the first EVALSHA of each is already one round trip.
            script.sha = await client.script_load(source)
            self._scripts[name] = script
        self._client = client
        await self.heartbeat(self._clock())
        self._task = asyncio.create_task(self._renew_loop(), name="costwarden-lease-renewal")
        self._beat = asyncio.create_task(self._heartbeat_loop(), name="costwarden-heartbeat")
        logger.info("budget counters in redis (prefix %r)", self.prefix)

    async def close(self) -> None:
        """Stop renewing leases. The client is the app's: it stays open."""
        await cancel_and_wait((self._task, self._beat))
        self._task = self._beat = None
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.zrem(
                    self._tenant_key("platform", "processes"), self.process_id
                )
        self._client = None

    @property
    def client(self) -> Redis | RedisCluster:
        if self._client is None:
            raise RuntimeError("RedisStore is not started")
        return self._client

    # -- keys ------------------------------------------------------------------------------

    def _tenant_key(self, tenant: str, name: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:{name}"

    def counter_key(self, check: Check) -> str:
        return self._tenant_key(check.limit.tenant, check.key)

    def _tenant_keys(self, tenant: str) -> list[str]:
        return [
            self._tenant_key(tenant, "ready"),
            self._tenant_key(tenant, "leases"),
            self._tenant_key(tenant, "lease"),
        ]

    def _marker_keys(self, tenant: str) -> list[str]:
        return [self._tenant_key(tenant, "purged"), self._tenant_key(tenant, "done")]

    def _layout(self, checks: list[Check]) -> tuple[list[str], dict[str, int], list[str]]:
        """(tenants in order, tenant -> 1-based index, KEYS for reserve and settle)."""
        tenants = _tenants(checks)
        self._one_slot(tenants)
        index = {tenant: i for i, tenant in enumerate(tenants, 1)}
        keys = [k for tenant in tenants for k in self._tenant_keys(tenant)]
        keys.extend(self.counter_key(check) for check in checks)
        keys.extend(k for tenant in tenants for k in self._marker_keys(tenant))
        return tenants, index, keys

    def _one_slot(self, tenants: list[str]) -> None:
        """On a cluster, refuse a script over several tenants' slots, before sending it."""
        if self.cluster and len(tenants) > 1:
            raise TenantsSpanSlots(tenants)

    # -- the request path ------------------------------------------------------------------

    async def reserve(
        self, lease: str, ask: Ask, checks: list[Check], now: float
    ) -> Grant | Refusal:
        if not checks:
            return decide(ask, [], [], now)
        tenants, index, keys = self._layout(checks)
        ask_args = [
            ask.in_bound_tokens,
            ask.in_est_tokens,
            ask.in_bound_nanos,
            ask.in_est_nanos,
            ask.out_pico,
            -1 if ask.want_out is None else ask.want_out,
            ask.max_out,
            ask.min_out,
            ask.est_out,
            1 if ask.has_output else 0,
            ask.choices,
        ]
        check_args = [
            [
                index[c.limit.tenant],
                1 if c.rolling else 0,
                c.limit.amount,
                1 if c.limit.mode == "hard" else 0,
                c.limit.metric,
                c.bucket,
                c.first,
                c.ttl,
            ]
            for c in checks
        ]
        raw = await self._scripts["reserve"](
            keys=[*keys, *(self._tenant_key(t, "stranded") for t in tenants)],
            args=[
                lease,
                _ms(now),
                _ms(now + self.lease_seconds),
                PURGE_BATCH,
                orjson.dumps(tenants),
                orjson.dumps(ask_args),
                orjson.dumps(check_args),
            ],
        )
        data: dict[str, Any] = orjson.loads(raw)
        if "lost" in data:
            raise CountersLost(list(data["lost"]))
        if "closed" in data:
            raise LeaseClosed(lease)
        if "refusal" in data:
            kind, i = str(data["refusal"]), int(data["index"])
            retry = _retry_after(checks[i], data["bucket"], now) if kind == "rate" else None
            return Refusal(kind, i, int(data["used"]), int(data["reserved"]), retry)
        grant = Grant(data["out"], list(data["amounts"]), list(data["remaining"]))
        self._leases[lease] = (_ms(now), self._held(checks, grant.amounts))
        return grant

    def _held(self, checks: list[Check], amounts: list[int]) -> dict[str, list[_Entry]]:
        """A lease's reservations per tenant, as renewals re-create them."""
        held: dict[str, list[_Entry]] = {}
        for check, amount in zip(checks, amounts, strict=True):
            field = str(check.bucket) if check.rolling else "r"
            held.setdefault(check.limit.tenant, []).append(
                _Entry(self.counter_key(check), field, amount, check.ttl)
            )
        return held

    async def settle(
        self, lease: str, checks: list[Check], amounts: list[int], actual: Actual, now: float
    ) -> list[int]:
        held = self._leases.pop(lease, None)
        # A renewal pass that started before the pop may re-create this lease after the
        # settle deletes it: let it finish first.
        while lease in self._renewing:
            await self._renewed.wait()
        if not checks:
            return []
        unsure = self._unsure.get(lease) if held is None else None
        if held is not None:
            reserved_at, first_sent = held[0], -1
        elif unsure is not None:
            reserved_at, first_sent = unsure
        else:
            reserved_at, first_sent = -1, -1
        tenants, index, keys = self._layout(checks)
        check_args = [
            [
                index[c.limit.tenant],
                1 if c.rolling else 0,
                c.limit.amount,
                c.bucket,
                c.first,
                c.ttl,
                amount,
                actual_amount(c, actual),
            ]
            for c, amount in zip(checks, amounts, strict=True)
        ]
        try:
            raw = await self._scripts["settle"](
                keys=keys,
                args=[
                    lease,
                    len(tenants),
                    orjson.dumps(check_args),
                    _ms(now),
                    reserved_at,
                    first_sent,
                    self._keep_ms,
                ],
            )
        except BaseException:
            # It may still run (a timeout): the retry must know when it was first sent.
            self._unsure[lease] = (reserved_at, first_sent if first_sent >= 0 else _ms(now))
            raise
        if unsure is not None:
            del self._unsure[lease]
        return [int(room) for room in orjson.loads(raw)]

    async def abandon(self, lease: str, checks: list[Check], now: float) -> None:
        """Give up a lease whose reserve failed with its outcome unknown (it timed out, and
        may have run or still run): give back what it reserved, if it did, and keep it from
        reserving if it runs later. Idempotent."""
        self._leases.pop(lease, None)
        tenants = _tenants(checks)
        # On a cluster one script per tenant: each tenant's part stands alone (idempotent).
        groups = [[t] for t in tenants] if self.cluster else [tenants] if tenants else []
        for group in groups:
            keys = [
                k
                for tenant in group
                for k in (*self._tenant_keys(tenant)[1:], *self._marker_keys(tenant))
            ]
            await self._scripts["abandon"](keys=keys, args=[lease, _ms(now), self._keep_ms])

    async def views(self, checks: list[Check], now: float) -> list[View]:
        pipe = self.client.pipeline(transaction=False)
        for check in checks:
            if check.rolling:
                pipe.hgetall(self.counter_key(check))
            else:
                pipe.hmget(self.counter_key(check), ["u", "r"])
        replies = await pipe.execute() if checks else []
        out: list[View] = []
        for check, reply in zip(checks, replies, strict=True):
            if check.rolling:
                buckets = {int(b): int(v) for b, v in reply.items()}
                out.append(View(buckets={b: v for b, v in buckets.items() if b >= check.first}))
            else:
                used, reserved = reply
                out.append(View(int(used or 0), int(reserved or 0)))
        return out

    async def ping(self) -> None:
        await self.client.ping()

    async def slices(
        self,
        tenant: str,
        gen: int,
        checks: list[Check],
        rows: list[list[Any]],
        now: float,
        *,
        closing: bool = False,
    ) -> Any:
        """Run ``slices.lua`` for this process's slices of ``tenant`` (budgets/leased.py):
        ``rows`` are its ops, one per check (the counter each slice is of)."""
        keys = [
            *self._tenant_keys(tenant),
            self._tenant_key(tenant, "purged"),
            self._tenant_key(tenant, "slice_gens"),
            self._tenant_key(tenant, "stranded"),
            self._tenant_key(tenant, f"counted:{self.slice_lease}"),
            *(self.counter_key(check) for check in checks),
        ]
        raw = await self._scripts["slices"](
            keys=keys,
            args=[
                self.slice_lease,
                _ms(now),
                _ms(now + self.lease_seconds),
                PURGE_BATCH,
                gen,
                self.processes,
                orjson.dumps(rows),
                self._keep_ms,
                1 if closing else 0,
            ],
        )
        return orjson.loads(raw)

    async def stranded(self, tenant: str) -> dict[str, list[Any]]:
        """Dead processes' slices of ``tenant`` waiting for :meth:`unstrand` (purge.lua):
        field -> [counter key, exposed, window start ms, purged at ms]."""
        raw = await self.client.hgetall(self._tenant_key(tenant, "stranded"))
        return {_text(field): orjson.loads(value) for field, value in raw.items()}

    async def unstrand(self, tenant: str, field: str, ledger_total: int) -> bool:
        """Replace a stranded slice's exposed part by what the ledger holds of its dead
        process (``ledger_total``, in counter units, over the counter's window); once."""
        lease, counter = field.split("\n", 1)
        keys = [
            self._tenant_key(tenant, "stranded"),
            counter,
            self._tenant_key(tenant, f"counted:{lease}"),
        ]
        return bool(await self._scripts["unstrand"](keys=keys, args=[field, ledger_total]))

    async def add(
        self, lease: str, checks: list[Check], actual: Actual, settled_at: float
    ) -> None:
        if not checks:
            return
        if self.cluster and len(_tenants(checks)) > 1:
            # One script per tenant (a slot each): adding is idempotent per tenant.
            for tenant in _tenants(checks):
                own = [c for c in checks if c.limit.tenant == tenant]
                await self.add(lease, own, actual, settled_at)
            return
        tenants = _tenants(checks)
        index = {tenant: i for i, tenant in enumerate(tenants, 1)}
        keys = [
            k
            for tenant in tenants
            for k in (self._tenant_key(tenant, "ready"), self._tenant_key(tenant, "done"))
        ]
        keys.extend(self.counter_key(check) for check in checks)
        items = [
            [index[c.limit.tenant], int(c.rolling), c.bucket, c.ttl, actual_amount(c, actual)]
            for c in checks
        ]
        await self._scripts["add"](
            keys=keys,
            args=[
                lease,
                len(tenants),
                orjson.dumps(items),
                _ms(self._clock()),
                _ms(settled_at),
                self._keep_ms,
            ],
        )

    async def adopt(
        self, leases: list[tuple[str, list[Check], list[int], float]], now: float
    ) -> None:
        """Leases reserved on the process's own counters, recorded here as its own: renew.lua
        creates a lease it does not find (and adds its reservation) when told it was reserved
        before the tenant was loaded, which ``-1`` is; a tombstoned one stays gone. Run again
        (after a timeout) it only extends them."""
        per_tenant: dict[str, list[Any]] = {}
        found: list[tuple[str, int, dict[str, list[_Entry]]]] = []
        for lease, checks, amounts, reserved_at in leases:
            held = self._held(checks, amounts)
            found.append((lease, _ms(reserved_at), held))
            for tenant, entries in held.items():
                per_tenant.setdefault(tenant, []).append(
                    [lease, -1, [[e.key, e.field, e.amount, e.ttl] for e in entries]]
                )
        expiry = _ms(now + self.lease_seconds)
        for tenant, items in per_tenant.items():
            await self._scripts["renew"](
                keys=[*self._tenant_keys(tenant), *self._marker_keys(tenant)],
                args=[expiry, orjson.dumps(items)],
            )
        for lease, reserved_at_ms, held in found:
            self._leases[lease] = (reserved_at_ms, held)

    async def heartbeat(self, now: float) -> None:
        """Count this process in, and the live gateway processes (``processes``)."""
        key = self._tenant_key("platform", "processes")
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(key, {self.process_id: _ms(now + HEARTBEAT_TTL_SECONDS)})
        pipe.zremrangebyscore(key, "-inf", f"({_ms(now)}")
        pipe.zcard(key)
        pipe.pexpire(key, _ms(HEARTBEAT_TTL_SECONDS))
        replies = await pipe.execute()
        self.processes = max(1, int(replies[2]))
        if self._first_beat == math.inf:
            self._first_beat, self._first_alone = now, self.processes == 1

    def counted(self, now: float) -> bool:
        """Alone at its first heartbeat, nobody else has to count this process (one starting
        later waits for it); otherwise the others read the count every HEARTBEAT_SECONDS:
        two of them after its first heartbeat, each has counted it."""
        return self._first_alone or now >= self._first_beat + 2 * HEARTBEAT_SECONDS

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.heartbeat(self._clock())
            except (RedisError, OSError) as exc:
                logger.debug("heartbeat failed: %s", exc)  # the count stays as it was

    # -- leases ----------------------------------------------------------------------------

    async def renew(self, now: float) -> None:
        """One renewal pass over every lease this process holds (one script per tenant)."""
        async with self._renew_lock:
            if not self._leases:
                return
            per_tenant: dict[str, list[Any]] = {}
            for lease, (reserved_at, held) in self._leases.items():
                for tenant, entries in held.items():
                    per_tenant.setdefault(tenant, []).append(
                        [lease, reserved_at, [[e.key, e.field, e.amount, e.ttl] for e in entries]]
                    )
            self._renewing = set(self._leases)
            self._renewed.clear()
            try:
                expiry = _ms(now + self.lease_seconds)
                for tenant, items in per_tenant.items():
                    extended, recreated = await self._scripts["renew"](
                        keys=[*self._tenant_keys(tenant), *self._marker_keys(tenant)],
                        args=[expiry, orjson.dumps(items)],
                    )
                    if recreated:
                        logger.warning(
                            "re-created %d lost lease(s) of tenant %s", recreated, tenant
                        )
                    logger.debug("renewed %d lease(s) of tenant %s", extended, tenant)
            finally:
                self._renewing = set()
                self._renewed.set()

    async def _renew_loop(self) -> None:
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew(self._clock())
            except (RedisError, OSError) as exc:
                logger.warning("lease renewal failed: %s", exc)
            except Exception:  # keep renewing: stopping would give back live reservations
                logger.exception("lease renewal failed")

    # -- loading counters ------------------------------------------------------------------

    async def seed(
        self, tenant: str, seeds: dict[str, Seed], ttls: dict[str, int], *, complete: bool
    ) -> None:
        keys = [self._tenant_key(tenant, "ready")]
        items: list[list[Any]] = []
        for key, value in seeds.items():
            keys.append(self._tenant_key(tenant, key))
            ttl = ttls.get(key, 0)
            if isinstance(value, dict):
                items.append(["r", [[b, v] for b, v in value.items()], ttl])
            else:
                items.append(["c", value, ttl])
        await self._scripts["seed"](
            keys=keys, args=[1 if complete else 0, orjson.dumps(items), _ms(self._clock())]
        )
        logger.debug("seeded %d counters for %s (complete=%s)", len(seeds), tenant, complete)

    async def prune(self, now: float) -> None:
        """Nothing to do: every counter with a window carries an EXPIRE."""
        return None

    async def ready(self, tenant: str) -> bool:
        return bool(await self.client.exists(self._tenant_key(tenant, "ready")))

    async def acquire_rebuild(self, tenant: str, ttl_ms: int) -> bool:
        """Take the tenant's rebuild lock (for ``ttl_ms`` at most); False if someone has it."""
        key = self._tenant_key(tenant, "rebuild")
        return bool(await self.client.set(key, b"1", nx=True, px=ttl_ms))

    async def release_rebuild(self, tenant: str) -> None:
        await self.client.delete(self._tenant_key(tenant, "rebuild"))


def _ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tenants(checks: list[Check]) -> list[str]:
    """The tenants of ``checks``, each once, in order."""
    return list(dict.fromkeys(check.limit.tenant for check in checks))


def _retry_after(check: Check, bucket: int | None, now: float) -> float:
    """policy.rate_retry_after, from the bucket the script found."""
    if bucket is None:
        return float(ROLLING_WINDOWS[check.limit.window])
    return max(0.0, bucket_leaves_at(check.limit.window, bucket) - now)


def _check_no_retries(redis: Redis | RedisCluster) -> None:
    """Refuse a client that may resend a command that timed out (see the module docstring: a
    resent script is a duplicate whose outcome nobody knows). Its pool must say so itself:
    without a retry policy of its own, what a connection does depends on the redis-py
    version and on how the client was made (Redis(host=...) retries, from_url may not).

    A cluster client resends after a connection error or timeout ``retry.get_retries()``
    times (3 by default), so it must say 0; its nodes' connections never retry (redis-py 8.1
    makes them so), and the MOVED/ASK/TRYAGAIN redirections it follows were refused by the
    node before running (storage/redis.py)."""
    retry = redis.retry if isinstance(redis, RedisCluster) else redis.get_retry()
    if retry is None or retry.get_retries() > 0:
        raise ValueError(
            "the budget counter store needs a Redis client without retries "
            "(costwarden.storage.redis.redis_client builds one)"
        )
