"""Limits and tiers in the database: upserts, validation, version bumps, on both backends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.budgets.limits import UNLIMITED, Limit, Tier, TierEntry
from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.storage import policy, repo
from costwarden.storage.migrate import migrate
from costwarden.storage.schema import limits as limits_table
from costwarden.storage.schema import org_tiers, policy_state, tiers
from tests.storage.conftest import Ctx

NANO = 1_000_000_000


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything a policy write may change, raw from the tables."""
    with engine.connect() as conn:
        return (
            policy.policy_version(conn),
            sorted(tuple(r) for r in conn.execute(sa.select(limits_table)).all()),
            sorted(tuple(r) for r in conn.execute(sa.select(tiers)).all()),
            sorted(tuple(r) for r in conn.execute(sa.select(org_tiers)).all()),
        )


# --------------------------------------------------------------------------- version


def test_migration_creates_policy_state_row(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    migrate(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(policy_state)).all()
    assert len(rows) == 1
    assert (rows[0].id, rows[0].version) == (1, 0)
    assert rows[0].updated_at.tzinfo is not None
    assert policy.policy_version(engine) == 0
    migrate(engine)  # idempotent: still one row
    policy.set_limits(engine, org=None, scope="platform", subject="", amounts={"daily_usd": 1})
    assert policy.policy_version(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(policy_state)).scalar() == 1


def test_version_starts_at_zero_without_row(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(policy_state.delete())
    assert policy.policy_version(engine) == 0
    assert policy.load_policy(engine) == (0, [], [], {}, [])
    policy.set_tier(engine, "pro", {})
    assert policy.policy_version(engine) == 1


# --------------------------------------------------------------------------- set_limits


def test_set_limits_upserts_and_bumps_version(ctx: Ctx) -> None:
    engine = ctx.engine
    v0 = policy.policy_version(engine)
    got = policy.set_limits(
        engine,
        org="acme",
        scope="org",
        subject="",
        amounts={"daily_usd": "5", "requests_per_minute": 60, "monthly_tokens": -1},
    )
    assert got == [
        Limit("org", ctx.acme, ctx.acme, "usd", "day", 5 * NANO, "hard"),
        Limit("org", ctx.acme, ctx.acme, "requests", "minute", 60, "soft"),
        Limit("org", ctx.acme, ctx.acme, "tokens", "month", UNLIMITED, "hard"),
    ]
    assert policy.policy_version(engine) == v0 + 1

    got = policy.set_limits(
        engine, org=" acme ", scope="org", subject="", amounts={"daily_usd": "7.000000001"}
    )
    assert got == [Limit("org", ctx.acme, ctx.acme, "usd", "day", 7 * NANO + 1, "hard")]
    assert policy.policy_version(engine) == v0 + 2
    assert len(policy.list_limits(engine)) == 3

    # mode: given -> set; None -> unchanged; rolling windows are always soft
    got = policy.set_limits(
        engine,
        org="acme",
        scope="org",
        subject=ctx.acme,
        amounts={"daily_usd": 7, "requests_per_minute": 61},
        mode="soft",
    )
    assert [(lim.amount, lim.mode) for lim in got] == [(7 * NANO, "soft"), (61, "soft")]
    got = policy.set_limits(engine, org="acme", scope="org", subject="", amounts={"daily_usd": 8})
    assert got[0].mode == "soft"
    got = policy.set_limits(
        engine,
        org="acme",
        scope="org",
        subject="acme",
        amounts={"requests_per_minute": 5},
        mode="hard",
    )
    assert got[0].mode == "soft"
    assert policy.policy_version(engine) == v0 + 5

    assert sorted(policy.list_limits(engine), key=lambda lim: lim.name) == [
        Limit("org", ctx.acme, ctx.acme, "usd", "day", 8 * NANO, "soft"),
        Limit("org", ctx.acme, ctx.acme, "tokens", "month", UNLIMITED, "hard"),
        Limit("org", ctx.acme, ctx.acme, "requests", "minute", 5, "soft"),
    ]


def test_set_limits_on_every_scope(ctx: Ctx) -> None:
    engine = ctx.engine

    def one(org: str | None, scope: str, subject: str) -> Limit:
        got = policy.set_limits(
            engine, org=org, scope=scope, subject=subject, amounts={"daily_requests": 10}
        )
        assert len(got) == 1
        return got[0]

    platform = one(None, "platform", "")
    assert (platform.org_id, platform.subject, platform.tenant) == ("", "", "platform")
    assert one(None, "platform", "  ").subject == ""
    assert one("acme", "project", "web").subject == ctx.web
    assert one("acme", "project", ctx.web).subject == ctx.web
    assert one("beta", "project", "web").subject == ctx.beta_web
    assert one("acme", "key", ctx.key).subject == ctx.key
    assert one("acme", "key", ctx.revoked).subject == ctx.revoked
    assert one("acme", "user", "  alice@example.com ").subject == "alice@example.com"
    assert one("acme", "session", "sess-1").subject == "sess-1"
    assert one("acme", "tag", " team = search ").subject == "team=search"
    assert one("acme", "tag", "flag=").subject == "flag="
    assert one("acme", "user", "u" * 200).subject == "u" * 200
    # the same project by name and by id is one limit
    stored = policy.list_limits(engine)
    assert len(stored) == 10
    assert {(lim.org_id, lim.scope, lim.subject) for lim in stored} == {
        ("", "platform", ""),
        (ctx.acme, "project", ctx.web),
        (ctx.beta, "project", ctx.beta_web),
        (ctx.acme, "key", ctx.key),
        (ctx.acme, "key", ctx.revoked),
        (ctx.acme, "user", "alice@example.com"),
        (ctx.acme, "session", "sess-1"),
        (ctx.acme, "tag", "team=search"),
        (ctx.acme, "tag", "flag="),
        (ctx.acme, "user", "u" * 200),
    }


Case = Callable[[Ctx], dict[str, Any]]

INVALID: list[tuple[str, type[Exception], Case]] = [
    ("unknown limit", InvalidInput, lambda c: {"amounts": {"daily_usd": 1, "weekly_usd": 2}}),
    ("empty amounts", InvalidInput, lambda c: {"amounts": {}}),
    ("not a number", InvalidInput, lambda c: {"amounts": {"daily_usd": "lots"}}),
    ("negative", InvalidInput, lambda c: {"amounts": {"daily_usd": -2}}),
    ("fractional count", InvalidInput, lambda c: {"amounts": {"daily_tokens": "1.5"}}),
    ("sub-nano usd", InvalidInput, lambda c: {"amounts": {"daily_usd": "0.0000000001"}}),
    ("too large", InvalidInput, lambda c: {"amounts": {"daily_requests": 2**60}}),
    ("bool amount", InvalidInput, lambda c: {"amounts": {"daily_requests": True}}),
    ("unknown mode", InvalidInput, lambda c: {"mode": "strict"}),
    ("unknown scope", InvalidInput, lambda c: {"scope": "team"}),
    ("platform with org", InvalidInput, lambda c: {"scope": "platform", "subject": ""}),
    (
        "platform with subject",
        InvalidInput,
        lambda c: {"org": None, "scope": "platform", "subject": "x"},
    ),
    ("org scope without org", InvalidInput, lambda c: {"org": None}),
    ("project without org", InvalidInput, lambda c: {"org": None, "scope": "project"}),
    ("empty org", InvalidInput, lambda c: {"org": "  "}),
    ("org scope, other subject", InvalidInput, lambda c: {"subject": c.beta}),
    ("unknown org", NotFound, lambda c: {"org": "ghost"}),
    ("unknown project", NotFound, lambda c: {"scope": "project", "subject": "nope"}),
    (
        "other org's project id",
        NotFound,
        lambda c: {"scope": "project", "subject": c.beta_web},
    ),
    ("empty project", InvalidInput, lambda c: {"scope": "project", "subject": " "}),
    ("unknown key", NotFound, lambda c: {"scope": "key", "subject": "key_000000000000"}),
    ("other org's key", NotFound, lambda c: {"scope": "key", "subject": c.beta_key}),
    ("empty key", InvalidInput, lambda c: {"scope": "key", "subject": ""}),
    ("empty user", InvalidInput, lambda c: {"scope": "user", "subject": ""}),
    ("blank user", InvalidInput, lambda c: {"scope": "user", "subject": "   "}),
    ("long user", InvalidInput, lambda c: {"scope": "user", "subject": "u" * 201}),
    ("empty session", InvalidInput, lambda c: {"scope": "session", "subject": ""}),
    ("long session", InvalidInput, lambda c: {"scope": "session", "subject": "s" * 201}),
    ("tag without =", InvalidInput, lambda c: {"scope": "tag", "subject": "team"}),
    ("tag without name", InvalidInput, lambda c: {"scope": "tag", "subject": " =x"}),
    ("long tag name", InvalidInput, lambda c: {"scope": "tag", "subject": "t" * 201 + "=x"}),
    ("empty tag", InvalidInput, lambda c: {"scope": "tag", "subject": ""}),
]


@pytest.mark.parametrize(
    ("error", "case"), [(e, c) for _, e, c in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_set_limits_changes_nothing(ctx: Ctx, error: type[Exception], case: Case) -> None:
    engine = ctx.engine
    policy.set_limits(engine, org="acme", scope="org", subject="", amounts={"daily_usd": 1})
    before = snapshot(engine)
    args: dict[str, Any] = {
        "org": "acme",
        "scope": "org",
        "subject": "",
        "amounts": {"daily_usd": 2, "requests_per_minute": 3},
    }
    args.update(case(ctx))
    with pytest.raises(error) as info:
        policy.set_limits(engine, **args)
    assert str(info.value)
    assert snapshot(engine) == before


def test_unknown_limit_message_names_it(ctx: Ctx) -> None:
    with pytest.raises(InvalidInput, match="weekly_usd"):
        policy.set_limits(
            ctx.engine, org="acme", scope="org", subject="", amounts={"weekly_usd": 1}
        )
    with pytest.raises(InvalidInput, match="daily_usd"):
        policy.set_limits(
            ctx.engine, org="acme", scope="org", subject="", amounts={"daily_usd": "x"}
        )


def test_concurrent_writes_each_bump_once(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engines = [make_engine(db_url) for _ in range(4)]
    repo.ensure_org(engines[0], "acme")
    start = policy.policy_version(engines[0])
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []
    per_thread = 5

    def run(i: int, engine: Engine) -> None:
        barrier.wait()
        try:
            for j in range(per_thread):
                policy.set_limits(
                    engine,
                    org="acme",
                    scope="user",
                    subject="shared",
                    amounts={"daily_requests": i * 100 + j},
                )
                policy.set_limits(
                    engine,
                    org="acme",
                    scope="user",
                    subject=f"u{i}",
                    amounts={"daily_requests": j},
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert policy.policy_version(engines[0]) == start + 2 * per_thread * len(engines)
    stored = policy.list_limits(engines[0])
    assert len(stored) == 1 + len(engines)
    assert {lim.subject: lim.amount for lim in stored if lim.subject != "shared"} == {
        f"u{i}": per_thread - 1 for i in range(len(engines))
    }


# --------------------------------------------------------------------------- clear_limits


def test_clear_limits(ctx: Ctx) -> None:
    engine = ctx.engine
    amounts = {"daily_usd": 1, "monthly_usd": 2, "requests_per_minute": 3}
    policy.set_limits(engine, org="acme", scope="key", subject=ctx.key, amounts=amounts)
    policy.set_limits(engine, org="acme", scope="project", subject="web", amounts=amounts)
    policy.set_limits(engine, org=None, scope="platform", subject="", amounts=amounts)
    v = policy.policy_version(engine)

    n = policy.clear_limits(
        engine, org="acme", scope="key", subject=ctx.key, names=["daily_usd", "monthly_usd"]
    )
    assert n == 2 and policy.policy_version(engine) == v + 1
    remaining = [lim for lim in policy.list_limits(engine) if lim.scope == "key"]
    assert [lim.name for lim in remaining] == ["requests_per_minute"]

    assert policy.clear_limits(engine, org="acme", scope="key", subject=ctx.key, names=None) == 1
    assert policy.policy_version(engine) == v + 2
    # nothing left to clear: no change, no bump
    assert policy.clear_limits(engine, org="acme", scope="key", subject=ctx.key, names=None) == 0
    assert policy.policy_version(engine) == v + 2

    # project by name resolves to the stored id
    assert (
        policy.clear_limits(engine, org="acme", scope="project", subject="web", names=["daily_usd"])
        == 1
    )
    assert policy.clear_limits(engine, org=None, scope="platform", subject="", names=None) == 3
    assert {(lim.scope, lim.name) for lim in policy.list_limits(engine)} == {
        ("project", "monthly_usd"),
        ("project", "requests_per_minute"),
    }


@pytest.mark.parametrize(
    ("error", "args"),
    [
        (InvalidInput, {"names": ["weekly_usd"]}),
        (InvalidInput, {"names": ["daily_usd", "nope"]}),
        (InvalidInput, {"names": []}),
        (InvalidInput, {"scope": "team"}),
        (InvalidInput, {"org": None}),
        (InvalidInput, {"scope": "platform"}),
        (InvalidInput, {"scope": "user", "subject": ""}),
        (InvalidInput, {"scope": "tag", "subject": "novalue"}),
        (NotFound, {"org": "ghost"}),
        (NotFound, {"scope": "project", "subject": "nope"}),
        (NotFound, {"scope": "key", "subject": "key_000000000000"}),
    ],
)
def test_invalid_clear_changes_nothing(
    ctx: Ctx, error: type[Exception], args: dict[str, Any]
) -> None:
    engine = ctx.engine
    policy.set_limits(engine, org="acme", scope="org", subject="", amounts={"daily_usd": 1})
    before = snapshot(engine)
    call: dict[str, Any] = {"org": "acme", "scope": "org", "subject": "", "names": None}
    call.update(args)
    with pytest.raises(error):
        policy.clear_limits(engine, **call)
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- tiers


def test_tiers_crud(ctx: Ctx) -> None:
    engine = ctx.engine
    v = policy.policy_version(engine)
    pro = policy.set_tier(
        engine, " pro ", {"org": {"daily_usd": "5.5"}, "key": {"requests_per_minute": 60}}
    )
    assert pro == Tier(
        "pro",
        (
            TierEntry("org", "usd", "day", 5_500_000_000),
            TierEntry("key", "requests", "minute", 60),
        ),
        source="api",
    )
    assert policy.policy_version(engine) == v + 1
    free = policy.set_tier(engine, "free", {"org": {"monthly_usd": 1, "daily_tokens": -1}})
    assert [t.name for t in policy.list_tiers(engine)] == ["free", "pro"]
    assert policy.list_tiers(engine)[0] == free

    # replacing a tier replaces all of its limits
    pro2 = policy.set_tier(engine, "pro", {"project": {"daily_requests": 9}})
    assert pro2.entries == (TierEntry("project", "requests", "day", 9),)
    assert policy.list_tiers(engine)[1] == pro2
    assert policy.policy_version(engine) == v + 3

    policy.delete_tier(engine, "pro")
    assert [t.name for t in policy.list_tiers(engine)] == ["free"]
    assert policy.policy_version(engine) == v + 4
    before = snapshot(engine)
    with pytest.raises(NotFound):
        policy.delete_tier(engine, "pro")
    assert snapshot(engine) == before


@pytest.mark.parametrize(
    ("name", "limits"),
    [
        ("", {}),
        ("   ", {}),
        ("x" * 201, {}),
        ("a\x00b", {}),
        ("pro", {"platform": {"daily_usd": 1}}),
        ("pro", {"team": {"daily_usd": 1}}),
        ("pro", {"org": {"weekly_usd": 1}}),
        ("pro", {"org": {"daily_usd": "abc"}}),
        ("pro", {"org": {"daily_tokens": "0.5"}}),
        ("pro", {"org": 5}),
    ],
)
def test_invalid_tier_changes_nothing(ctx: Ctx, name: str, limits: dict[str, Any]) -> None:
    engine = ctx.engine
    policy.set_tier(engine, "pro", {"org": {"daily_usd": 1}})
    before = snapshot(engine)
    with pytest.raises(InvalidInput):
        policy.set_tier(engine, name, limits)
    assert snapshot(engine) == before


def test_org_tiers(ctx: Ctx) -> None:
    engine = ctx.engine
    policy.set_tier(engine, "pro", {"org": {"daily_usd": 5}})
    config_tiers = {"free", "team"}
    v = policy.policy_version(engine)

    policy.set_org_tier(engine, "acme", "free", known_tiers=config_tiers)
    policy.set_org_tier(engine, "beta", "pro", known_tiers=config_tiers)
    assert policy.policy_version(engine) == v + 2
    version, _, api_tiers, assigned, _ = policy.load_policy(engine)
    assert version == v + 2
    assert [t.name for t in api_tiers] == ["pro"]
    assert assigned == {ctx.acme: "free", ctx.beta: "pro"}

    policy.set_org_tier(engine, " acme", "team", known_tiers=config_tiers)
    assert policy.load_policy(engine)[3] == {ctx.acme: "team", ctx.beta: "pro"}

    before = snapshot(engine)
    with pytest.raises(NotFound) as info:
        policy.set_org_tier(engine, "acme", "enterprise", known_tiers=config_tiers)
    assert "enterprise" in str(info.value)
    for known in ("free", "pro", "team"):
        assert known in str(info.value)
    with pytest.raises(NotFound):
        policy.set_org_tier(engine, "ghost", "free", known_tiers=config_tiers)
    # an org on a tier keeps the tier from being deleted
    with pytest.raises(Conflict, match="beta"):
        policy.delete_tier(engine, "pro")
    assert snapshot(engine) == before

    policy.set_org_tier(engine, "beta", None, known_tiers=config_tiers)
    assert policy.load_policy(engine)[3] == {ctx.acme: "team"}
    v = policy.policy_version(engine)
    policy.set_org_tier(engine, "beta", None, known_tiers=config_tiers)  # nothing to remove
    assert policy.policy_version(engine) == v
    policy.delete_tier(engine, "pro")
    assert policy.list_tiers(engine) == []


def test_load_policy(ctx: Ctx) -> None:
    engine = ctx.engine
    policy.set_limits(engine, org=None, scope="platform", subject="", amounts={"daily_usd": 100})
    policy.set_limits(
        engine, org="acme", scope="key", subject=ctx.key, amounts={"requests_per_minute": 5}
    )
    pro = policy.set_tier(engine, "pro", {"user": {"daily_requests": 50}})
    policy.set_org_tier(engine, "acme", "pro", known_tiers=())
    version, limits, api_tiers, assigned, rules = policy.load_policy(engine)
    assert version == policy.policy_version(engine)
    assert limits == policy.list_limits(engine)
    assert set(limits) == {
        Limit("platform", "", "", "usd", "day", 100 * NANO, "hard"),
        Limit("key", ctx.key, ctx.acme, "requests", "minute", 5, "soft"),
    }
    assert api_tiers == [pro]
    assert assigned == {ctx.acme: "pro"}
    # load_policy also accepts a connection (the caller's transaction)
    with engine.connect() as conn:
        assert policy.load_policy(conn) == (version, limits, api_tiers, assigned, rules)
