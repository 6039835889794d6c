"""Alert rules in the database: the threshold lines of a scope or a plan tier's scope type.

A rule is policy like a limit: a write is validated before anything is stored, runs under the
policy lock and bumps the policy version in the same transaction, so every gateway process
picks it up with its next limits refresh (``budgets.alert_lines`` says how rules apply).

A rule's target must exist: its org, its project or key, its tier. Unlike a limit's (an
address, answered 404), a rule's target is part of what the rule says, so a target that does
not exist is bad input (:class:`~costwarden.core.errors.InvalidInput`, a 400).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from costwarden.budgets.alert_lines import AlertLines, parse_lines
from costwarden.budgets.limits import LIMIT_NAMES, SCOPES, TIER_SCOPES
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.policy import (
    alert_lines_of,
    bump_version,
    check_target,
    insert_for,
    lock_policy,
    resolve_target,
)
from costwarden.storage.repo import new_id, org_id_by_name
from costwarden.storage.schema import alert_rules, tiers
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

THRESHOLD = "threshold"


@dataclasses.dataclass(frozen=True, slots=True)
class AlertRule:
    """A stored rule: its lines and target (``rule.lines``), who made it and when."""

    id: str
    rule: AlertLines
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class RuleTarget:
    """What an operator names: an org by name (None: platform or a tier's rule), a scope, a
    subject (None: every instance of the scope type in the org), a tier, a limit name (""
    for all)."""

    scope: str
    org: str | None = None
    subject: str | None = None
    tier: str = ""
    limit_name: str = ""


def _rule_of(row: Row[Any]) -> AlertRule:
    return AlertRule(row.id, alert_lines_of(row), row.created_by, row.created_at, row.updated_at)


def _check(target: RuleTarget) -> None:
    """The checks that need no database."""
    if target.scope not in SCOPES:
        raise InvalidInput(f"unknown scope {target.scope!r} (known: {', '.join(SCOPES)})")
    if target.limit_name and target.limit_name not in LIMIT_NAMES:
        raise InvalidInput(f"unknown limit {target.limit_name!r} (known: {', '.join(LIMIT_NAMES)})")
    if target.tier:
        if target.org is not None:
            raise InvalidInput("a tier's rule applies to every org on the tier: give no org")
        if target.subject is not None:
            raise InvalidInput("a tier's rule applies to a scope type: give no scope_id")
        if target.scope not in TIER_SCOPES:
            raise InvalidInput(
                f"a tier has no {target.scope!r} scope (tier scopes: {', '.join(TIER_SCOPES)})"
            )
        return
    if target.subject is not None or target.scope in ("platform", "org"):
        check_target(target.org, target.scope, target.subject or "")
    elif target.org is None or not target.org.strip():
        raise InvalidInput(f"{target.scope} scope: an org is required")


def _resolve(conn: Connection, target: RuleTarget, known_tiers: Collection[str]) -> AlertLines:
    """The stored form of ``target`` (ids, not names), with no lines yet; InvalidInput when
    its org, project, key or tier does not exist."""
    if target.tier:
        tier = target.tier.strip()
        known = set(known_tiers) | set(conn.execute(sa.select(tiers.c.name)).scalars())
        if tier not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise InvalidInput(f"unknown tier {tier!r} (known: {listed})")
        return AlertLines((), target.scope, tier=tier, limit_name=target.limit_name)
    try:
        if target.subject is not None or target.scope in ("platform", "org"):
            org_id, subject = resolve_target(conn, target.org, target.scope, target.subject or "")
        else:
            assert target.org is not None
            org_id = org_id_by_name(conn, target.org)
            subject = ""
    except NotFound as exc:
        raise InvalidInput(f"no such scope: {exc}") from None
    return AlertLines((), target.scope, org_id, subject, limit_name=target.limit_name)


def set_rule(
    bind: Bind,
    target: RuleTarget,
    thresholds: object,
    *,
    actor: str,
    known_tiers: Collection[str] = (),
) -> AlertRule:
    """Set the threshold lines of ``target`` (upserted on it: the last write wins).
    ``known_tiers`` are the config file's tier names. InvalidInput, having stored nothing, for
    bad lines or a target that does not exist."""
    lines = parse_lines(thresholds)
    _check(target)
    with begin_write(bind) as conn:
        lock_policy(conn)
        found = _resolve(conn, target, known_tiers)
        now = utcnow()
        stmt = insert_for(conn, alert_rules).values(
            id=new_id("rule"),
            kind=THRESHOLD,
            org_id=found.org_id,
            scope=found.scope,
            subject=found.subject,
            tier=found.tier,
            limit_name=found.limit_name,
            thresholds=orjson.dumps(list(lines)).decode(),
            created_by=actor,
            created_at=now,
            updated_at=now,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "org_id", "scope", "subject", "tier", "limit_name"],
            set_={"thresholds": stmt.excluded.thresholds, "updated_at": now},
        ).returning(*alert_rules.c)
        rule = _rule_of(conn.execute(stmt).one())
        version = bump_version(conn)
    logger.info("alert rule %s set: %s (policy version %d)", rule.id, list(lines), version)
    return rule


def delete_rule(bind: Bind, rule_id: str) -> None:
    """Delete one rule (its target goes back to the next rule that matches, or the
    defaults); NotFound if there is none."""
    with begin_write(bind) as conn:
        lock_policy(conn)
        deleted = conn.execute(alert_rules.delete().where(alert_rules.c.id == rule_id)).rowcount
        if not deleted:
            raise NotFound(f"no alert rule {rule_id!r}")
        version = bump_version(conn)
    logger.info("alert rule %s deleted (policy version %d)", rule_id, version)


def list_rules(bind: Bind, *, org_id: str | None = None) -> list[AlertRule]:
    """Every rule, oldest first; with ``org_id``, that org's rules and the tiers' rules (which
    apply to it when it is on their tier)."""
    stmt = sa.select(alert_rules).order_by(alert_rules.c.created_at, alert_rules.c.id)
    if org_id is not None:
        stmt = stmt.where(alert_rules.c.org_id.in_((org_id, "")))
    with connect_read(bind) as conn:
        return [_rule_of(r) for r in conn.execute(stmt)]
