"""The budget counters on a real 3-shard Redis Cluster (the session's ``cluster`` fixture).

test_stores.py runs every counter scenario on the cluster too; here what is the cluster's
own: where a tenant's keys live, what it refuses, and the leased slices on it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
import redis.asyncio

from costwarden.budgets import policy
from costwarden.budgets.leased import LeasedStore
from costwarden.budgets.limits import Limit
from costwarden.budgets.policy import Actual, Ask, Check, Grant
from costwarden.budgets.redis_store import RedisStore
from costwarden.budgets.store import TenantsSpanSlots
from costwarden.core.money import NANOS_PER_USD
from costwarden.storage.counters import LedgerAggregates
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.redis import MAX_CONNECTIONS, redis_client
from tests.helpers import RedisClusterNodes

DOLLAR = NANOS_PER_USD


def _ask() -> Ask:
    return Ask(
        in_bound_tokens=1000,
        in_est_tokens=250,
        in_bound_nanos=1_000_000,
        in_est_nanos=250_000,
        out_pico=15_000_000,
        want_out=100,
        max_out=4096,
        min_out=16,
        est_out=256,
    )


def _checks(*limits: Limit, now: float) -> list[Check]:
    return policy.checks_for(list(limits), now, ZoneInfo("UTC"))


def _org_limits(org: str) -> list[Limit]:
    """Limits of several scopes of one org: every one is a counter of the org's tenant."""
    return [
        Limit("org", org, org, "usd", "day", DOLLAR, "hard"),
        Limit("key", f"{org}-k1", org, "requests", "minute", 100, "hard"),
        Limit("project", f"{org}-p1", org, "tokens", "month", 10**6, "soft"),
    ]


@pytest.fixture
async def cluster_store(cluster: RedisClusterNodes) -> AsyncIterator[RedisStore]:
    client = redis_client(cluster.url, timeout=2.0, max_connections=MAX_CONNECTIONS, cluster=True)
    store = RedisStore(client, prefix=f"cwtest-{uuid.uuid4().hex[:10]}")
    await store.start()
    try:
        yield store
    finally:
        await store.close()
        await client.aclose()


def _node_keys(cluster: RedisClusterNodes, prefix: str) -> dict[int, list[bytes]]:
    """Each node's keys under ``prefix``, asked of each node itself (port -> keys)."""
    found: dict[int, list[bytes]] = {}
    for port in cluster.ports:
        client = redis.Redis(port=port)
        try:
            found[port] = sorted(client.keys(f"{prefix}:*"))
        finally:
            client.close()
    return found


async def test_a_tenants_keys_share_one_slot_and_tenants_spread_over_the_shards(
    cluster: RedisClusterNodes, cluster_store: RedisStore
) -> None:
    store = cluster_store
    now = time.time()
    orgs = ("o1", "o2", "o3")
    for org in orgs:
        await store.seed(org, {}, {}, complete=True)
        cs = _checks(*_org_limits(org), now=now)
        grant = await store.reserve(f"lease-{org}", _ask(), cs, now)
        assert isinstance(grant, Grant)
        await store.settle(f"lease-{org}", cs, grant.amounts, Actual(1000, 10), now)
    per_node = _node_keys(cluster, store.prefix)
    slots: dict[str, set[int]] = {}
    ports: dict[str, set[int]] = {}
    for port, keys in per_node.items():
        for key in keys:
            tenant = key.decode().split("{", 1)[1].split("}", 1)[0]
            slots.setdefault(tenant, set()).add(store.client.keyslot(key))
            ports.setdefault(tenant, set()).add(port)
    assert sorted(slots) == ["o1", "o2", "o3", "platform"]  # (platform: the heartbeat)
    for org in orgs:
        # Its ready marker, lease markers and three counters: one slot, one node.
        assert len(slots[org]) == 1 and len(ports[org]) == 1, (org, slots[org], ports[org])
        counters = [k for k in per_node[next(iter(ports[org]))] if b":c:" in k or b":r:" in k]
        assert len([k for k in counters if f"{{{org}}}".encode() in k]) >= 2
    # The three orgs' slots fall on three different shards: the test is not on one node.
    assert len({next(iter(ports[org])) for org in orgs}) == 3, ports


async def test_two_tenants_in_one_request_are_refused_before_anything_is_sent(
    cluster: RedisClusterNodes, cluster_store: RedisStore
) -> None:
    store = cluster_store
    now = time.time()
    for tenant in ("o1", "platform"):
        await store.seed(tenant, {}, {}, complete=True)
    before = _node_keys(cluster, store.prefix)
    cs = _checks(
        Limit("org", "o1", "o1", "usd", "day", DOLLAR, "hard"),
        Limit("platform", "", "", "usd", "month", 100 * DOLLAR, "hard"),
        now=now,
    )
    with pytest.raises(TenantsSpanSlots, match="o1 and platform"):
        await store.reserve("both", _ask(), cs, now)
    with pytest.raises(TenantsSpanSlots):
        await store.settle("both", cs, [1, 1], Actual(1, 1), now)
    assert _node_keys(cluster, store.prefix) == before
    # What stands alone per tenant runs per tenant: giving a lease up, adding spend.
    await store.abandon("both", cs, now)
    # (settled after both tenants were loaded: an add older than a load is the ledger's)
    await store.add("counted", cs, Actual(7, 7), time.time())
    assert [v.used for v in await store.views(cs, now)] == [7, 7]


async def test_leased_slices_admit_settle_and_give_back_on_the_cluster(
    cluster: RedisClusterNodes, tmp_path: Path
) -> None:
    client = redis_client(cluster.url, timeout=2.0, max_connections=MAX_CONNECTIONS, cluster=True)
    inner = RedisStore(client, prefix=f"cwtest-{uuid.uuid4().hex[:10]}")
    engine = create_engine_for(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    leased = LeasedStore(inner, ledger=LedgerAggregates(engine), flush_seconds=0.02)
    await leased.start()
    try:
        await _lease_and_give_back(cluster, leased, inner)
    finally:
        await leased.close()  # (again: a no-op after the test's own close)
        await client.aclose()
        engine.dispose()


async def _lease_and_give_back(
    cluster: RedisClusterNodes, leased: LeasedStore, inner: RedisStore
) -> None:
    now = time.time()
    await leased.seed("o1", {}, {}, complete=True)
    cs = _checks(Limit("org", "o1", "o1", "usd", "day", DOLLAR, "hard"), now=now)
    spent = 0
    for i in range(20):
        grant = await leased.reserve(f"l{i}", _ask(), cs, time.time())
        assert isinstance(grant, Grant)
        await leased.settle(f"l{i}", cs, grant.amounts, Actual(2_000_000, 50), time.time())
        spent += 2_000_000
    assert leased.admitted_locally > 0 and leased.calls > 0
    counter = inner.counter_key(cs[0])
    tenant = "o1"
    await leased.close()  # gives every slice back

    direct = redis.asyncio.RedisCluster.from_url(cluster.url)
    try:
        assert await direct.zcard(inner._tenant_key(tenant, "leases")) == 0
        assert await direct.hlen(inner._tenant_key(tenant, "lease")) == 0
        used, reserved = await direct.hmget(counter, ["u", "r"])
        assert int(reserved or 0) == 0
        assert int(used or 0) == spent
        # The counter lives on the node owning the org's slot, with its markers.
        node = direct.get_node_from_key(counter)
        assert node is direct.get_node_from_key(inner._tenant_key(tenant, "ready"))
    finally:
        await direct.aclose()
    print(
        f"\nleased on the cluster: {leased.admitted_locally} admitted locally, "
        f"{leased.reserved_exactly} reserved exactly, {leased.calls} slices calls; "
        f"settled {spent} nanos, reserved 0"
    )
