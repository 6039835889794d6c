"""Alert rules in the database (SQLite and PostgreSQL): set on each kind of target, upserted,
listed, deleted, loaded with the policy; bad input and targets that do not exist store
nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.budgets.alert_lines import AlertLines
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.storage import policy
from costwarden.storage.alert_rules import RuleTarget, delete_rule, list_rules, set_rule
from costwarden.storage.schema import alert_rules
from tests.storage.conftest import Ctx


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(alert_rules)).scalar_one())


def test_rules_on_every_kind_of_target_reach_the_policy(ctx: Ctx) -> None:
    engine = ctx.engine
    policy.set_tier(engine, "pro", {"user": {"daily_tokens": 1000}})
    v = policy.policy_version(engine)
    org = set_rule(engine, RuleTarget("org", "acme"), [80, 50], actor="t")
    project = set_rule(
        engine, RuleTarget("project", "acme", "web", limit_name="daily_usd"), [90], actor="t"
    )
    users = set_rule(engine, RuleTarget("user", "acme"), [25], actor="t")
    alice = set_rule(engine, RuleTarget("user", "acme", " alice "), [10], actor="t")
    tier = set_rule(engine, RuleTarget("user", tier="pro"), [60, 120], actor="t")
    config_tier = set_rule(
        engine, RuleTarget("key", tier="free"), [70], actor="t", known_tiers=["free"]
    )
    platform = set_rule(engine, RuleTarget("platform"), [95], actor="t")
    assert policy.policy_version(engine) == v + 7  # each write bumps the version
    assert [r.rule for r in (org, project, users, alice, tier, config_tier, platform)] == [
        AlertLines((50, 80), "org", ctx.acme, ctx.acme),
        AlertLines((90,), "project", ctx.acme, ctx.web, limit_name="daily_usd"),
        AlertLines((25,), "user", ctx.acme),
        AlertLines((10,), "user", ctx.acme, "alice"),
        AlertLines((60, 120), "user", tier="pro"),
        AlertLines((70,), "key", tier="free"),
        AlertLines((95,), "platform"),
    ]
    snapshot = policy.load_policy(engine)
    assert set(snapshot.alert_rules) == {r.rule for r in list_rules(engine)}
    assert len(snapshot.alert_rules) == 7
    # Per org: its rules and the tiers'/platform's, never another org's.
    beta = set_rule(engine, RuleTarget("org", "beta"), [33], actor="t")
    listed = {r.id for r in list_rules(engine, org_id=ctx.acme)}
    assert beta.id not in listed and org.id in listed and tier.id in listed


def test_setting_a_target_again_replaces_its_lines(ctx: Ctx) -> None:
    first = set_rule(ctx.engine, RuleTarget("org", "acme"), [50], actor="a")
    again = set_rule(ctx.engine, RuleTarget("org", "acme"), [40, 85], actor="b")
    assert again.id == first.id and again.rule.lines == (40, 85)
    assert again.created_by == "a" and _count(ctx.engine) == 1


def test_delete(ctx: Ctx) -> None:
    rule = set_rule(ctx.engine, RuleTarget("org", "acme"), [50], actor="a")
    v = policy.policy_version(ctx.engine)
    delete_rule(ctx.engine, rule.id)
    assert list_rules(ctx.engine) == [] and policy.policy_version(ctx.engine) == v + 1
    with pytest.raises(NotFound):
        delete_rule(ctx.engine, rule.id)


@pytest.mark.parametrize(
    ("target", "thresholds", "message"),
    [
        (RuleTarget("org", "acme"), [0], "outside"),
        (RuleTarget("org", "acme"), [1001], "outside"),
        (RuleTarget("org", "acme"), [], "at least one"),
        (RuleTarget("org", "nope"), [50], "unknown org"),
        (RuleTarget("project", "acme", "nope"), [50], "has no project"),
        (RuleTarget("project", "beta", "missing"), [50], "has no project"),
        (RuleTarget("key", "acme", "key_000000000000"), [50], "has no key"),
        (RuleTarget("user", "nope"), [50], "unknown org"),
        (RuleTarget("user", None), [50], "an org is required"),
        (RuleTarget("user", tier="gold"), [50], "unknown tier"),
        (RuleTarget("user", "acme", tier="pro"), [50], "give no org"),
        (RuleTarget("user", None, "alice", tier="pro"), [50], "give no scope_id"),
        (RuleTarget("platform", tier="pro"), [50], "has no 'platform' scope"),
        (RuleTarget("platform", "acme"), [50], "give no org"),
        (RuleTarget("galaxy", "acme"), [50], "unknown scope"),
        (RuleTarget("org", "acme", limit_name="weekly_usd"), [50], "unknown limit"),
        (RuleTarget("user", "acme", "   "), [50], "must not be empty"),
    ],
)
def test_bad_rules_store_nothing(
    ctx: Ctx, target: RuleTarget, thresholds: list[int], message: str
) -> None:
    policy.set_tier(ctx.engine, "pro", {})
    v = policy.policy_version(ctx.engine)
    with pytest.raises(InvalidInput, match=message):
        set_rule(ctx.engine, target, thresholds, actor="t")
    assert _count(ctx.engine) == 0 and policy.policy_version(ctx.engine) == v
