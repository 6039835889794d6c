"""Limits and plan tiers in the database: the admin-side writes and the gateway's policy feed.

These functions serve the admin API and the CLI (writes) and the gateway's background policy
poller (:func:`policy_version`, :func:`load_policy`, handed to the enforcer bound to an engine
as :class:`PolicyTables`); none is meant for the request path.

Rules every write follows:

- Everything is validated before anything is written, and a write is one transaction: an
  invalid request raises :class:`~costwarden.core.errors.InvalidInput` or
  :class:`~costwarden.core.errors.NotFound` and changes nothing.
- Each write bumps ``policy_state.version`` by one in the same transaction, so a poller that
  sees the version unchanged knows nothing changed. The bump is an upsert, so it works even
  if the row is missing.
- Policy writes are serialized: on SQLite by ``BEGIN IMMEDIATE`` (see
  :func:`~costwarden.storage.db.begin_write`), on PostgreSQL by a transaction-scoped advisory
  lock taken first. The checks a write makes against the database (the org exists, no org is
  on a tier being deleted, ...) therefore cannot be invalidated by a concurrent policy write
  before it commits.
- Limits are upserted on their natural key (org, scope, subject, metric, window), so two
  admins setting the same limit at once both succeed and the last one wins.

Subjects are stored the way the request path sees them: the org id for ``org``, the project
id for ``project`` (operators may name the project), the key id for ``key``, the stripped end
user or session id for ``user``/``session``, and ``name=value`` (both stripped) for ``tag``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from costwarden.budgets.alert_lines import AlertLines
from costwarden.budgets.limits import (
    LIMIT_NAMES,
    MAX_SUBJECT_LEN,
    MODES,
    SCOPES,
    Limit,
    Tier,
    is_rolling,
    is_session_default,
    parse_amount,
    session_default,
    tier_from_mapping,
    tier_to_mapping,
)
from costwarden.budgets.ports import PolicySnapshot
from costwarden.core.errors import Conflict, InvalidInput, NotFound, StorageError
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import clean_name, new_id, org_id_by_name
from costwarden.storage.schema import (
    alert_rules,
    org_tiers,
    orgs,
    policy_state,
    projects,
    tiers,
    virtual_keys,
)
from costwarden.storage.schema import limits as limits_table
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

# Fixed key for pg_advisory_xact_lock serializing policy writes ("cwpl" in ASCII).
POLICY_LOCK_ID = 0x6377706C
_POLICY_ROW = 1


# --------------------------------------------------------------------------- helpers


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ``ON CONFLICT``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def lock_policy(conn: Connection) -> None:
    """Serialize policy writes (SQLite already holds the write lock: BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": POLICY_LOCK_ID})


def bump_version(conn: Connection) -> int:
    """Add one to ``policy_state.version`` (creating the row if missing); the new version."""
    stmt = insert_for(conn, policy_state).values(id=_POLICY_ROW, version=1, updated_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "version": policy_state.c.version + 1,
            "updated_at": stmt.excluded.updated_at,
        },
    ).returning(policy_state.c.version)
    version: int = conn.execute(stmt).scalar_one()
    return version


def _limit_from_row(row: Row[Any]) -> Limit:
    return Limit(
        scope=row.scope,
        subject=row.subject,
        org_id=row.org_id,
        metric=row.metric,
        window=row.period,
        amount=int(row.amount),
        mode=row.mode,
    )


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r} (known: {', '.join(SCOPES)})")


def _free_text_subject(scope: str, subject: str) -> str:
    """Validate the subject of a scope whose instances need no lookup (user, session, tag)."""
    if not isinstance(subject, str):
        raise InvalidInput(f"{scope} scope: subject must be a string")
    if "\x00" in subject:  # PostgreSQL text cannot hold it: refused on every database alike
        raise InvalidInput(f"{scope} scope: subject must not contain NUL characters")
    if scope == "tag":
        name, sep, value = subject.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise InvalidInput(f"tag scope: subject must be name=value, got {subject!r}")
        if len(name) > MAX_SUBJECT_LEN or len(value) > MAX_SUBJECT_LEN:
            raise InvalidInput(
                f"tag scope: tag name and value are at most {MAX_SUBJECT_LEN} characters each"
            )
        return f"{name}={value}"
    text = subject.strip()
    if not text:
        raise InvalidInput(f"{scope} scope: subject must not be empty")
    if len(text) > MAX_SUBJECT_LEN:
        raise InvalidInput(f"{scope} scope: subject is longer than {MAX_SUBJECT_LEN} characters")
    return text


def check_target(org: str | None, scope: str, subject: str) -> None:
    """The checks on (org, scope, subject) that need no database."""
    _check_scope(scope)
    if not isinstance(subject, str):
        raise InvalidInput("subject must be a string")
    if scope == "platform":
        if org is not None:
            raise InvalidInput("platform scope: limits apply to every org; give no org")
        if subject.strip():
            raise InvalidInput("platform scope: give no subject")
        return
    if org is None or not org.strip():
        raise InvalidInput(f"{scope} scope: an org is required")
    if scope in ("user", "session", "tag"):
        _free_text_subject(scope, subject)
    elif scope in ("project", "key") and not subject.strip():
        raise InvalidInput(f"{scope} scope: subject must name a {scope}")


def resolve_target(conn: Connection, org: str | None, scope: str, subject: str) -> tuple[str, str]:
    """``(org_id, stored subject)`` for a target that passed :func:`check_target`."""
    if scope == "platform":
        return "", ""
    assert org is not None
    org_id = org_id_by_name(conn, org)
    text = subject.strip()
    if scope == "org":
        if text and text not in (org_id, org.strip()):
            raise InvalidInput(
                f"org scope: the subject is the org itself; give none (got {subject!r})"
            )
        return org_id, org_id
    if scope == "project":
        rows = conn.execute(
            sa.select(projects.c.id).where(
                projects.c.org_id == org_id,
                sa.or_(projects.c.id == text, projects.c.name == text),
            )
        ).all()
        ids = [r.id for r in rows]
        if not ids:
            raise NotFound(f"org {org.strip()!r} has no project {text!r}")
        return org_id, text if text in ids else ids[0]
    if scope == "key":
        found = conn.execute(
            sa.select(virtual_keys.c.id).where(
                virtual_keys.c.org_id == org_id, virtual_keys.c.id == text
            )
        ).first()
        if found is None:
            raise NotFound(f"org {org.strip()!r} has no key {text!r}")
        return org_id, text
    if is_session_default(scope, text):
        return org_id, _session_default_target(conn, org_id, org, text)
    return org_id, _free_text_subject(scope, subject)


def _session_default_target(conn: Connection, org_id: str, org: str, text: str) -> str:
    """``@key:ID`` / ``@project:NAME-or-ID`` of the org, as stored (a project by its id)."""
    kind, _, ident = text[1:].partition(":")
    if kind == "key":
        _, key_id = resolve_target(conn, org, "key", ident)
        return session_default("key", key_id)
    _, project_id = resolve_target(conn, org, "project", ident)
    return session_default("project", project_id)


def _describe(org_id: str, scope: str, subject: str) -> str:
    return "platform" if scope == "platform" else f"{scope} {subject} (org {org_id})"


# --------------------------------------------------------------------------- limits


def set_limits(
    engine: Bind,
    *,
    org: str | None,
    scope: str,
    subject: str,
    amounts: Mapping[str, Any],
    mode: str | None = None,
) -> list[Limit]:
    """Set limits on one scope instance; returns the limits as stored, in ``amounts`` order.

    ``org`` is an org *name* (None only for the ``platform`` scope). ``subject`` depends on
    the scope: empty for ``platform`` and ``org`` (the org itself; its id or name are also
    accepted), a project name or id of that org for ``project``, a key id of that org for
    ``key`` (revoked keys too), free text of at most 200 characters for ``user`` and
    ``session``, ``name=value`` for ``tag``. ``amounts`` maps limit names (``daily_usd``,
    ``requests_per_minute``, ...) to operator amounts; ``-1`` means unlimited (lifts a tier
    default). ``mode`` (``hard``/``soft``) applies to budgets: None keeps an existing
    limit's mode and makes new ones ``hard``; rate limits are always stored ``soft``.

    Raises InvalidInput or NotFound, having changed nothing, if anything is invalid.
    """
    check_target(org, scope, subject)
    if not isinstance(amounts, Mapping) or not amounts:
        raise InvalidInput("no limits given")
    if mode is not None and mode not in MODES:
        raise InvalidInput(f"unknown mode {mode!r} (known: {', '.join(MODES)})")
    parsed: list[tuple[str, str, int]] = []
    for name, value in amounts.items():
        if name not in LIMIT_NAMES:
            raise InvalidInput(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
        metric, window = LIMIT_NAMES[name]
        parsed.append((metric, window, parse_amount(metric, value, what=name)))

    result: list[Limit] = []
    with begin_write(engine) as conn:
        lock_policy(conn)
        org_id, stored_subject = resolve_target(conn, org, scope, subject)
        now = utcnow()
        for metric, window, amount in parsed:
            row_mode = "soft" if is_rolling(window) else (mode or "hard")
            stmt = insert_for(conn, limits_table).values(
                id=new_id("lim"),
                org_id=org_id,
                scope=scope,
                subject=stored_subject,
                metric=metric,
                period=window,
                amount=amount,
                mode=row_mode,
                created_at=now,
                updated_at=now,
            )
            update: dict[str, Any] = {"amount": amount, "updated_at": now}
            if is_rolling(window) or mode is not None:
                update["mode"] = row_mode
            stmt = stmt.on_conflict_do_update(
                index_elements=["org_id", "scope", "subject", "metric", "period"],
                set_=update,
            ).returning(*limits_table.c)
            result.append(_limit_from_row(conn.execute(stmt).one()))
        version = bump_version(conn)
    logger.info(
        "set %s on %s (policy version %d)",
        ", ".join(lim.name for lim in result),
        _describe(org_id, scope, stored_subject),
        version,
    )
    return result


def clear_limits(
    engine: Bind,
    *,
    org: str | None,
    scope: str,
    subject: str,
    names: Collection[str] | None = None,
) -> int:
    """Delete the named limits of one scope instance (all of them when ``names`` is None).

    ``org``, ``scope`` and ``subject`` are as for :func:`set_limits`. Returns how many limits
    were deleted; the policy version is bumped only when that is not zero. Raises InvalidInput
    or NotFound, having changed nothing, if anything is invalid.
    """
    check_target(org, scope, subject)
    pairs: list[tuple[str, str]] | None = None
    if names is not None:
        if isinstance(names, str):
            raise InvalidInput("names must be a list of limit names")
        if not names:
            raise InvalidInput("no limits named")
        for name in names:
            if name not in LIMIT_NAMES:
                raise InvalidInput(f"unknown limit {name!r} (known: {', '.join(LIMIT_NAMES)})")
        pairs = [LIMIT_NAMES[name] for name in names]

    with begin_write(engine) as conn:
        lock_policy(conn)
        org_id, stored_subject = resolve_target(conn, org, scope, subject)
        stmt = limits_table.delete().where(
            limits_table.c.org_id == org_id,
            limits_table.c.scope == scope,
            limits_table.c.subject == stored_subject,
        )
        if pairs is not None:
            stmt = stmt.where(sa.tuple_(limits_table.c.metric, limits_table.c.period).in_(pairs))
        deleted = int(conn.execute(stmt).rowcount or 0)
        version = bump_version(conn) if deleted else None
    if deleted:
        logger.info(
            "cleared %d limit(s) on %s (policy version %s)",
            deleted,
            _describe(org_id, scope, stored_subject),
            version,
        )
    return deleted


def _select_limits() -> sa.Select[Any]:
    return sa.select(limits_table).order_by(
        limits_table.c.org_id,
        limits_table.c.scope,
        limits_table.c.subject,
        limits_table.c.metric,
        limits_table.c.period,
    )


def list_limits(engine_or_conn: Bind) -> list[Limit]:
    """Every limit set explicitly (tier defaults are not included), in a stable order."""
    with connect_read(engine_or_conn) as conn:
        rows = conn.execute(_select_limits()).all()
    return [_limit_from_row(r) for r in rows]


# --------------------------------------------------------------------------- policy feed


def policy_version(engine: Bind) -> int:
    """The current policy version (0 before the first write); one cheap query."""
    with connect_read(engine) as conn:
        version: int | None = conn.execute(
            sa.select(policy_state.c.version).where(policy_state.c.id == _POLICY_ROW)
        ).scalar_one_or_none()
    return 0 if version is None else int(version)


def load_policy(engine: Bind) -> PolicySnapshot:
    """``(version, limits, API tiers, {org_id: tier name}, alert rules)`` from one consistent
    snapshot.

    On PostgreSQL the reads run in one REPEATABLE READ (read-only) transaction, on SQLite in
    one read transaction, so the version matches the limits and tiers returned with it. (Given
    a Connection, the caller's transaction is used as it is.) Raises StorageError if a stored
    tier cannot be parsed.
    """
    if isinstance(engine, Connection):
        return _read_policy(engine)
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            return _read_policy(conn)


def _read_policy(conn: Connection) -> PolicySnapshot:
    version = conn.execute(
        sa.select(policy_state.c.version).where(policy_state.c.id == _POLICY_ROW)
    ).scalar_one_or_none()
    limit_rows = conn.execute(_select_limits()).all()
    tier_rows = conn.execute(sa.select(tiers.c.name, tiers.c.limits).order_by(tiers.c.name)).all()
    assignment_rows = conn.execute(sa.select(org_tiers.c.org_id, org_tiers.c.tier)).all()
    rule_rows = conn.execute(sa.select(alert_rules).where(alert_rules.c.kind == "threshold"))
    return PolicySnapshot(
        0 if version is None else int(version),
        [_limit_from_row(r) for r in limit_rows],
        [_tier_from_row(r.name, r.limits) for r in tier_rows],
        {r.org_id: r.tier for r in assignment_rows},
        [alert_lines_of(r) for r in rule_rows],
    )


def alert_lines_of(row: Row[Any]) -> AlertLines:
    """A stored threshold rule (an ``alert_rules`` row) as the budgets package takes it."""
    return AlertLines(
        lines=tuple(int(p) for p in orjson.loads(row.thresholds)),
        scope=row.scope,
        org_id=row.org_id,
        subject=row.subject,
        tier=row.tier,
        limit_name=row.limit_name,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class PolicyTables:
    """The policy feed on one engine, as the budgets package takes it
    (:class:`~costwarden.budgets.ports.PolicySource`): the domain does not import storage."""

    engine: Bind

    def version(self) -> int:
        return policy_version(self.engine)

    def load(self) -> PolicySnapshot:
        return load_policy(self.engine)


# --------------------------------------------------------------------------- tiers


def _tier_from_row(name: str, text: str) -> Tier:
    try:
        data = orjson.loads(text)
        if not isinstance(data, dict):
            raise InvalidInput("not a JSON object")
        return tier_from_mapping(name, data, where=f"tier {name}", source="api")
    except (orjson.JSONDecodeError, InvalidInput) as exc:
        raise StorageError(f"stored tier {name!r} is unreadable: {exc}") from None


def set_tier(engine: Bind, name: str, limits: Mapping[str, Any]) -> Tier:
    """Create or replace the API tier ``name``; returns it.

    ``limits`` is ``{scope: {limit name: amount}}`` as in the config file's
    ``[[tiers]]``. Raises InvalidInput, having changed nothing, if anything is invalid.
    """
    tier_name = clean_name(name, "tier")
    if not isinstance(limits, Mapping):
        raise InvalidInput(f"tier {tier_name}: limits must be a mapping of scope to limits")
    tier = tier_from_mapping(tier_name, limits, where=f"tier {tier_name}", source="api")
    text = orjson.dumps(tier_to_mapping(tier)).decode("utf-8")  # keeps the given order
    with begin_write(engine) as conn:
        lock_policy(conn)
        now = utcnow()
        stmt = insert_for(conn, tiers).values(
            name=tier_name, limits=text, created_at=now, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"limits": text, "updated_at": now}
        )
        conn.execute(stmt)
        version = bump_version(conn)
    logger.info("set tier %s (policy version %d)", tier_name, version)
    return tier


def delete_tier(engine: Bind, name: str) -> None:
    """Delete the API tier ``name``.

    Raises NotFound if there is no such tier, Conflict if an org is still on it.
    """
    tier_name = name.strip()
    with begin_write(engine) as conn:
        lock_policy(conn)
        users = conn.execute(
            sa.select(orgs.c.name)
            .select_from(org_tiers.join(orgs, orgs.c.id == org_tiers.c.org_id))
            .where(org_tiers.c.tier == tier_name)
            .order_by(orgs.c.name)
        ).all()
        if users:
            shown = ", ".join(r.name for r in users[:10])
            more = f" and {len(users) - 10} more" if len(users) > 10 else ""
            raise Conflict(
                f"tier {tier_name!r} is still used by org(s) {shown}{more}; "
                "move them to another tier first"
            )
        deleted = conn.execute(tiers.delete().where(tiers.c.name == tier_name)).rowcount
        if not deleted:
            raise NotFound(f"unknown tier {tier_name!r}")
        version = bump_version(conn)
    logger.info("deleted tier %s (policy version %d)", tier_name, version)


def list_tiers(engine: Bind) -> list[Tier]:
    """The API tiers (config-file tiers are not stored), by name."""
    with connect_read(engine) as conn:
        rows = conn.execute(sa.select(tiers.c.name, tiers.c.limits).order_by(tiers.c.name)).all()
    return [_tier_from_row(r.name, r.limits) for r in rows]


def set_org_tier(
    engine: Bind, org_name: str, tier: str | None, *, known_tiers: Collection[str]
) -> None:
    """Put org ``org_name`` on ``tier``, or take it off its tier when ``tier`` is None.

    ``known_tiers`` are the config file's tier names; the API tiers in the database are known
    too. Raises NotFound for an unknown org or tier.
    """
    tier_name = tier.strip() if tier is not None else None
    with begin_write(engine) as conn:
        lock_policy(conn)
        org_id = org_id_by_name(conn, org_name)
        version = write_org_tier(conn, org_id, tier_name, known_tiers=known_tiers)
    if version is not None:
        logger.info(
            "org %s %s (policy version %s)",
            org_name.strip(),
            f"now on tier {tier_name}" if tier_name else "taken off its tier",
            version,
        )


def org_tier_of(conn: Connection, org_id: str) -> str | None:
    """The tier org ``org_id`` is on (None: none)."""
    tier: str | None = conn.execute(
        sa.select(org_tiers.c.tier).where(org_tiers.c.org_id == org_id)
    ).scalar_one_or_none()
    return tier


def write_org_tier(
    conn: Connection, org_id: str, tier_name: str | None, *, known_tiers: Collection[str]
) -> int | None:
    """Org ``org_id`` put on ``tier_name`` (None: off its tier) in the caller's write
    transaction, which holds :func:`lock_policy`; the new policy version, or None when that
    changed nothing. NotFound for an unknown tier, having written nothing."""
    if tier_name is None:
        changed = conn.execute(org_tiers.delete().where(org_tiers.c.org_id == org_id)).rowcount
    else:
        api_tiers = set(conn.execute(sa.select(tiers.c.name)).scalars())
        known = set(known_tiers) | api_tiers
        if tier_name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise NotFound(f"unknown tier {tier_name!r} (known: {listed})")
        now = utcnow()
        stmt = insert_for(conn, org_tiers).values(org_id=org_id, tier=tier_name, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["org_id"], set_={"tier": tier_name, "updated_at": now}
        )
        changed = conn.execute(stmt).rowcount
    return bump_version(conn) if changed else None
