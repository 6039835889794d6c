"""The database schema, as SQLAlchemy Core tables.

This is the single description of the schema that code queries against; the Alembic
migrations in ``storage/migrations`` must produce exactly this (a test compares them). The
ledger has no foreign keys on purpose: it is an append-only record of what happened, and a
ledger write must never fail because an org or key was renamed, revoked or is unknown.

Constraint and index names follow a fixed naming convention so migrations can refer to them
and PostgreSQL and SQLite agree on them.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from costwarden.storage.sqltypes import Money, UTCDateTime

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("org_id", "name"),
)

virtual_keys = sa.Table(
    "virtual_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("project_id", sa.Text, sa.ForeignKey("projects.id"), nullable=True),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False, index=True),
    # Agent-session options of the key (core.records.KeyRecord), migration 0013.
    sa.Column("session_clean_stop", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("session_budget_note", sa.Boolean, nullable=False, server_default=sa.false()),
    # Honeypot keys (gateway/honeypot.py), migration 0014: answered as unknown keys, their
    # use alerted; honeypot_action is core.records.HONEYPOT_ACTIONS.
    sa.Column("honeypot", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("honeypot_action", sa.Text, nullable=False, server_default="alert"),
)

# The dashboard's and admin API's keys with a role (dashboard/roles.py, storage/admin_keys.py),
# migration 0017: stored only as a SHA-256 hash; org_id NULL for a platform-wide key.
admin_keys = sa.Table(
    "admin_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    sa.Column("created_by", sa.Text, nullable=False),
)

# On PostgreSQL the ledger is partitioned by month of request_id (migration 0009,
# storage/partitions.py): a DDL detail this description leaves out (the parent table has
# these very columns, key and indexes; the partitions are not tables of the schema).
ledger = sa.Table(
    "ledger",
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("ts", UTCDateTime(), nullable=False, index=True),
    sa.Column("day", sa.Text, nullable=False, index=True),  # 'YYYY-MM-DD' of ts, UTC
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("http_status", sa.Integer, nullable=False),
    sa.Column("org_id", sa.Text, nullable=True),
    sa.Column("project_id", sa.Text, nullable=True),
    sa.Column("key_id", sa.Text, nullable=True),
    sa.Column("end_user", sa.Text, nullable=True),
    sa.Column("session_id", sa.Text, nullable=True),
    sa.Column("tags", sa.Text, nullable=False),  # compact JSON object
    sa.Column("provider", sa.Text, nullable=True),
    sa.Column("requested_model", sa.Text, nullable=True),
    sa.Column("served_model", sa.Text, nullable=True),
    sa.Column("streamed", sa.Boolean, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", Money(), nullable=False),
    sa.Column("cost_estimated", sa.Boolean, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    sa.Column("overhead_ms", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # What the prompt scan acted on (costwarden.security): a JSON array of findings, never
    # the text found; NULL when it found nothing (or did not run).
    sa.Column("security", sa.Text, nullable=True),
    # Why the route served it where it did (the strategy, the deployment chosen, what was
    # skipped, a downgrade), at most 500 characters; NULL when the route said nothing.
    # Migration 0016, with saved_usd.
    sa.Column("route_reason", sa.Text, nullable=True),
    # A response-cache hit (status "cached", cost_usd 0): what the call it avoided would
    # have cost. 0 on every other row (and on every row from before 0016: the default).
    sa.Column("saved_usd", Money(), nullable=False, server_default="0"),
    # Admitted against a gateway process's leased budget slices: that slice lease's id
    # (budgets/leased.py); NULL otherwise. Should that process die, a survivor sums its rows
    # to free what the purge of its slices had to count as spent. Migration 0019.
    sa.Column("slice_holder", sa.Text, nullable=True),
    # When the row reached the ledger (epoch ms, the database's clock, set by the INSERT
    # itself): the analytics rollup's watermark runs over it, so a row written late lands in
    # its own hour. NULL for rows written before migration 0007 (the first rollup takes all).
    sa.Column("written_ms", sa.BigInteger, nullable=True, index=True),
    # The request log filters an org and a time range, newest first.
    sa.Index("ix_ledger_org_id_ts", "org_id", "ts"),
    # An agent session's usage is summed from its rows (storage.sessions).
    sa.Index("ix_ledger_org_id_session_id", "org_id", "session_id"),
)

# Limits and plan tiers. Every write also bumps policy_state.version in the same transaction,
# so gateway processes poll one row to learn that something changed.
limits = sa.Table(
    "limits",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),  # "" for the platform failsafe
    sa.Column("scope", sa.Text, nullable=False),  # budgets.limits.SCOPES
    sa.Column("subject", sa.Text, nullable=False),  # scope instance; "" for platform
    sa.Column("metric", sa.Text, nullable=False),  # usd | tokens | requests
    sa.Column("period", sa.Text, nullable=False),  # budgets.limits.WINDOWS
    sa.Column("amount", sa.BigInteger, nullable=False),  # counter units; -1 unlimited
    sa.Column("mode", sa.Text, nullable=False),  # hard | soft
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("org_id", "scope", "subject", "metric", "period"),
)

tiers = sa.Table(
    "tiers",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("limits", sa.Text, nullable=False),  # JSON {scope: {limit_name: amount text}}
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

org_tiers = sa.Table(
    "org_tiers",
    metadata,
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("tier", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

policy_state = sa.Table(
    "policy_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Kill switch and feature toggles. One row per (scope, feature) that was ever set; ``version``
# is global and grows with every write, so processes poll max(version) to learn of changes.
switches = sa.Table(
    "switches",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # "platform:<feature>" or "org:<org id>:<feature>"
    sa.Column("org_id", sa.Text, nullable=True),  # NULL for platform-wide
    sa.Column("feature", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text, nullable=True),  # shown to clients while disabled
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, index=True),
)

# Who changed what, when: kill switch, toggles, breaker resets, fallback chains.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("ts", UTCDateTime(), nullable=False, index=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("old_value", sa.Text, nullable=True),  # compact JSON
    sa.Column("new_value", sa.Text, nullable=True),  # compact JSON
)

# Every circuit-breaker state change, as the process that made it saw it.
breaker_transitions = sa.Table(
    "breaker_transitions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("ts", UTCDateTime(), nullable=False, index=True),
    sa.Column("deployment", sa.Text, nullable=False, index=True),
    sa.Column("from_state", sa.Text, nullable=False),
    sa.Column("to_state", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
)

# Fallback chains set through the admin API; they override the config file's, per route.
route_fallbacks = sa.Table(
    "route_fallbacks",
    metadata,
    sa.Column("route", sa.Text, primary_key=True),
    sa.Column("fallbacks", sa.Text, nullable=False),  # JSON list of route names
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False, index=True),
)

# Orgs' and keys' security policy layers (storage.security_policies): key_id '' is the
# org's own layer. ``version``: the table's max + 1 at each write, for the gateway's poller.
security_policies = sa.Table(
    "security_policies",
    metadata,
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("key_id", sa.Text, primary_key=True),
    sa.Column("policy", sa.Text, nullable=False),  # JSON object (security.policy.parse_layer)
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# Events, in the one global order of their ids (see core/events.py); kept for a retention.
event_log = sa.Table(
    "event_log",
    metadata,
    # One row per appended batch: events first_id .. last_id, one apart.
    sa.Column("first_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("last_id", sa.BigInteger, nullable=False),
    sa.Column("ts_ms", sa.BigInteger, nullable=False, index=True),  # its last event's, epoch ms
    sa.Column("events", sa.Text, nullable=False),  # JSON array of [ts_ms, kind, org_id, data]
)

# The event id counter: one row, updated first by every append, which serialises appends
# across processes so ids are committed in order.
event_sequence = sa.Table(
    "event_sequence",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("last_id", sa.BigInteger, nullable=False),
)

# Alerts (costwarden.alerts). One row per (rule, scope, window, threshold): the unique
# dedupe_key is what makes an alert fire once across any number of processes and restarts.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
    # threshold | forecast | spike | service | session | test
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("rule", sa.Text, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("org_id", sa.Text, nullable=True, index=True),  # NULL: platform-wide
    sa.Column("scope", sa.Text, nullable=True),
    sa.Column("scope_id", sa.Text, nullable=True),
    sa.Column("window_key", sa.Text, nullable=False),
    sa.Column("threshold_pct", sa.Integer, nullable=True),
    sa.Column("state", sa.Text, nullable=False, index=True),  # firing | acknowledged | resolved
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON: the message's fields
    sa.Column("fired_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("resolves_at", UTCDateTime(), nullable=True),  # when its window resets
    sa.Column("snoozed_until", UTCDateTime(), nullable=True),
    sa.Column("acknowledged_by", sa.Text, nullable=True),
    sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_by", sa.Text, nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Where alerts go. config holds the type's settings as JSON, secrets included (never shown).
alert_channels = sa.Table(
    "alert_channels",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("type", sa.Text, nullable=False),  # webhook | slack | email
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("filter", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # "api" (admin API, CLI) or "config" (the config file's [[alerts.channels]])
    sa.Column("source", sa.Text, nullable=False, server_default="api"),
)

# Alert rules: the threshold lines (percent of a limit) of one scope instance, of every
# instance of a scope type in one org, or of a scope type on a plan tier. "" stands for "not
# set" in the key columns so that the unique constraint holds (NULLs never collide).
alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),  # threshold
    sa.Column("org_id", sa.Text, nullable=False),  # "": a tier's rule (tiers are global)
    sa.Column("scope", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),  # "": every instance of the scope type
    sa.Column("tier", sa.Text, nullable=False),  # "": not a tier's rule
    sa.Column("limit_name", sa.Text, nullable=False),  # "": every limit of the scope
    sa.Column("thresholds", sa.Text, nullable=False),  # JSON list of percents, ascending
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("kind", "org_id", "scope", "subject", "tier", "limit_name"),
)

# One delivery per (alert, channel), retried until delivered or dead (the dead letter).
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("alert_id", sa.Text, sa.ForeignKey("alerts.id"), nullable=False),
    sa.Column("channel_id", sa.Text, sa.ForeignKey("alert_channels.id"), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("claimed_until", UTCDateTime(), nullable=True),
    sa.Column("first_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.UniqueConstraint("alert_id", "channel_id"),
)

# The delivery log: every attempt, its answer.
alert_attempts = sa.Table(
    "alert_attempts",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("delivery_id", sa.Text, sa.ForeignKey("alert_deliveries.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_alert_attempts_delivery_id_attempt", "delivery_id", "attempt"),
)

# Leader leases: a scheduled job runs in the one process that holds its lease (costwarden's
# own processes renew theirs; a dead holder's lease lapses after its ttl).
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

# Analytics rollups (costwarden.analytics): totals per hour and per UTC day by every
# dimension, and by tag. "" stands for a dimension the row did not have (NULLs never collide
# in a primary key). Latencies are summed in whole microseconds, so every sum is exact.
# Two savings, never to be confused: cache_savings_usd is the provider's prompt caching (its
# cached input tokens), saved_usd the response cache's (the calls a hit avoided, migration
# 0016; its server default 0 is for the rows from before it).
ROLLUP_DIMS = ("org_id", "project_id", "key_id", "end_user", "provider", "model", "status")
ROLLUP_MEASURES = (
    "requests", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "cache_savings_usd", "saved_usd", "latency_us", "ttft_us",
    "ttft_count",
)  # fmt: skip
ROLLUP_MONEY = ("cost_usd", "cache_savings_usd", "saved_usd")


def _measures() -> list[sa.Column[object]]:
    return [
        sa.Column(name, Money(), nullable=False, server_default="0")
        if name == "saved_usd"
        else sa.Column(name, Money() if name in ROLLUP_MONEY else sa.BigInteger, nullable=False)
        for name in ROLLUP_MEASURES
    ]


def _rollup(name: str, bucket: sa.Column[object], *dims: str) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        bucket,
        *(sa.Column(d, sa.Text, primary_key=True) for d in dims),
        *_measures(),
    )


rollup_hourly = _rollup(
    "rollup_hourly", sa.Column("hour", UTCDateTime(), primary_key=True), *ROLLUP_DIMS
)
rollup_daily = _rollup("rollup_daily", sa.Column("day", sa.Text, primary_key=True), *ROLLUP_DIMS)
rollup_tags_hourly = _rollup(
    "rollup_tags_hourly", sa.Column("hour", UTCDateTime(), primary_key=True), "org_id", "tag"
)
rollup_tags_daily = _rollup(
    "rollup_tags_daily", sa.Column("day", sa.Text, primary_key=True), "org_id", "tag"
)

# Narrow slices of the full cube, per hour and per day: what most analytics queries read (the
# full cube has about a row per raw row once end users are in it): slice "total" (org_id and
# value ""), "org" (value ""), a dimension's name (that org's totals per value of the
# dimension), or "all:" + a dimension's name (every org's together per value, org_id "").
rollup_slices_hourly = _rollup(
    "rollup_slices_hourly",
    sa.Column("hour", UTCDateTime(), primary_key=True),
    "slice",
    "org_id",
    "value",
)
rollup_slices_daily = _rollup(
    "rollup_slices_daily",
    sa.Column("day", sa.Text, primary_key=True),
    "slice",
    "org_id",
    "value",
)
# A day's slice read costliest first (the top-N lists of costwarden.analytics.ranking): the
# cost as a double, an order both dialects index (SQLite keeps money as text, which sorts
# as text). Only an order: every figure is read from cost_usd.
rollup_slices_daily.append_column(sa.Column("cost_rank", sa.Float, nullable=True))
sa.Index(
    "ix_rollup_slices_daily_day_slice_cost_rank",
    rollup_slices_daily.c.day,
    rollup_slices_daily.c.slice,
    rollup_slices_daily.c.cost_rank,
)

# Latency histograms (costwarden.analytics.latency): requests per UTC hour and per day, org
# ("" for none) and latency bucket (its number: a bound's index). Per org only, not per
# model or key: the overview needs the platform's and an org's, and each dimension more
# would multiply the rows towards one per raw row.
def _latency(name: str, bucket: sa.Column[object]) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        bucket,
        sa.Column("org_id", sa.Text, primary_key=True),
        sa.Column("bucket", sa.SmallInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
    )


rollup_latency_hourly = _latency(
    "rollup_latency_hourly", sa.Column("hour", UTCDateTime(), primary_key=True)
)
rollup_latency_daily = _latency("rollup_latency_daily", sa.Column("day", sa.Text, primary_key=True))

# Agent sessions (costwarden.sessions): a row per session that ever left ``active`` (an
# active session needs none: its usage is the ledger's rows), changed by compare-and-set on
# ``version``; every transition is kept in session_transitions.
agent_sessions = sa.Table(
    "agent_sessions",
    metadata,
    sa.Column("org_id", sa.Text, primary_key=True),
    sa.Column("session_id", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("wake_at", UTCDateTime(), nullable=True),
    sa.Column("escalation_id", sa.Text, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The wake job finds the sleeping sessions whose time has come.
    sa.Index("ix_agent_sessions_state_wake_at", "state", "wake_at"),
)
session_transitions = sa.Table(
    "session_transitions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("before", sa.Text, nullable=False),
    sa.Column("after", sa.Text, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("wake_at", UTCDateTime(), nullable=True),
    sa.Column("escalation_id", sa.Text, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Index("ix_session_transitions_org_id_session_id_at", "org_id", "session_id", "at"),
)
# A human's decision on a paused session: open until approved (maybe with extra budget) or
# denied, with who and why.
escalations = sa.Table(
    "escalations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, nullable=False),
    sa.Column("session_id", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_by", sa.Text, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("extra_budget_usd", Money(), nullable=True),
    sa.Index("ix_escalations_org_id_status", "org_id", "status"),
)

# Where the rollup job is: the ledger's written_ms it has rolled up to.
analytics_state = sa.Table(
    "analytics_state",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Billing webhooks (costwarden.billing, storage/billing.py), migration 0018. Every provider
# event received, once (its id: idempotency) and what became of it; the customer -> org map
# learnt from subscriptions; each subscription's state and the order key of the last event
# applied to it (out-of-order delivery, billing/policy.py); each org's payment state.
billing_events = sa.Table(
    "billing_events",
    metadata,
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("created", sa.BigInteger, nullable=False),  # the provider's, epoch seconds
    sa.Column("org_id", sa.Text, nullable=True),  # None: no org found
    sa.Column("outcome", sa.Text, nullable=False),  # applied | stale | ignored
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
)

billing_customers = sa.Table(
    "billing_customers",
    metadata,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

billing_subscriptions = sa.Table(
    "billing_subscriptions",
    metadata,
    sa.Column("subscription_id", sa.Text, primary_key=True),
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("customer_id", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("tier", sa.Text, nullable=True),  # the tier it grants; None: none
    sa.Column("last_order", sa.BigInteger, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

billing_orgs = sa.Table(
    "billing_orgs",
    metadata,
    sa.Column("org_id", sa.Text, sa.ForeignKey("orgs.id"), primary_key=True),
    sa.Column("status", sa.Text, nullable=False),  # ok | grace | suspended
    sa.Column("last_order", sa.BigInteger, nullable=False),
    sa.Column("grace_until", UTCDateTime(), nullable=True),
    sa.Column("invoice_id", sa.Text, nullable=True),  # the failed invoice, while not ok
    sa.Column("suspended_by_billing", sa.Boolean, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

TABLES = (
    orgs,
    projects,
    virtual_keys,
    admin_keys,
    ledger,
    limits,
    tiers,
    org_tiers,
    policy_state,
    switches,
    audit_log,
    breaker_transitions,
    event_log,
    event_sequence,
    route_fallbacks,
    alerts,
    alert_channels,
    alert_rules,
    alert_deliveries,
    alert_attempts,
    leases,
    rollup_hourly,
    rollup_daily,
    rollup_tags_hourly,
    rollup_tags_daily,
    rollup_slices_hourly,
    rollup_slices_daily,
    rollup_latency_hourly,
    rollup_latency_daily,
    analytics_state,
    agent_sessions,
    session_transitions,
    escalations,
    security_policies,
    billing_events,
    billing_customers,
    billing_subscriptions,
    billing_orgs,
)
