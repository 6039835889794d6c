"""Limits: what is capped, for whom, over which window -- and which limits a request meets.

One vocabulary serves the config file (``[[tiers]]``), the CLI flags and the admin API: a
limit *name* such as ``daily_usd`` or ``requests_per_minute`` is a (metric, window) pair.

- scopes: ``platform`` (the failsafe over everything), ``org``, ``project``, ``key``,
  ``user`` (end user), ``session`` (agent session) and ``tag`` (``name=value``);
- metrics: ``usd``, ``tokens``, ``requests``;
- windows: calendar ``day`` and ``month`` (in the configured timezone) and ``lifetime`` --
  these are *budgets* -- and rolling ``minute``, ``hour`` and ``24h`` -- these are *rate
  limits*.

Amounts are held in counter units: nano-dollars for USD, plain counts otherwise; ``-1``
means unlimited (an override that lifts a tier's default).

A plan *tier* gives default limits per scope type to every org on it; a limit set on one
scope instance overrides the tier's default for the same metric and window.
:class:`LimitBook` is the immutable, in-memory index the request path consults: a few dict
lookups per request, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from costwarden.budgets.alert_lines import DEFAULT_LINES, AlertLines, LineBook
from costwarden.core.errors import InvalidInput
from costwarden.core.money import NANOS_PER_USD, format_nanos

SCOPES = ("platform", "org", "project", "key", "user", "session", "tag")
METRICS = ("usd", "tokens", "requests")
CALENDAR_WINDOWS = ("day", "month", "lifetime")
ROLLING_WINDOWS: dict[str, int] = {"minute": 60, "hour": 3600, "24h": 86400}
WINDOWS = (*CALENDAR_WINDOWS, *ROLLING_WINDOWS)
MODES = ("hard", "soft")
UNLIMITED = -1
# Counters are compared exactly in Redis Lua, whose numbers are doubles: keep amounts below
# 2**53 counter units ($9 million in nano-dollars).
MAX_AMOUNT = 2**53 - 1
# Characters of a free-text scope subject: an end user, a session, a tag's name or value.
MAX_SUBJECT_LEN = 200
_MAX_EXPONENT = 30

BUDGET_NAMES: dict[str, tuple[str, str]] = {
    "daily_usd": ("usd", "day"),
    "monthly_usd": ("usd", "month"),
    "lifetime_usd": ("usd", "lifetime"),
    "daily_tokens": ("tokens", "day"),
    "monthly_tokens": ("tokens", "month"),
    "lifetime_tokens": ("tokens", "lifetime"),
    "daily_requests": ("requests", "day"),
    "monthly_requests": ("requests", "month"),
}
RATE_LIMIT_NAMES: dict[str, tuple[str, str]] = {
    "requests_per_minute": ("requests", "minute"),
    "requests_per_hour": ("requests", "hour"),
    "requests_per_day": ("requests", "24h"),
    "tokens_per_minute": ("tokens", "minute"),
    "tokens_per_hour": ("tokens", "hour"),
    "tokens_per_day": ("tokens", "24h"),
    "cost_per_hour_usd": ("usd", "hour"),
    "cost_per_day_usd": ("usd", "24h"),
}
LIMIT_NAMES: dict[str, tuple[str, str]] = {**BUDGET_NAMES, **RATE_LIMIT_NAMES}
_NAME_OF = {pair: name for name, pair in LIMIT_NAMES.items()}


def limit_name(metric: str, window: str) -> str:
    return _NAME_OF[(metric, window)]


def is_rolling(window: str) -> bool:
    return window in ROLLING_WINDOWS


def parse_amount(metric: str, value: Any, *, what: str = "amount") -> int:
    """An operator's amount (USD as decimal text or number, counts as integers) in counter units.

    ``-1`` means unlimited. Raises InvalidInput with a message naming ``what``.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidInput(f"{what}: expected a number, got {value!r}")
    if isinstance(value, float):
        value = repr(value)  # shortest exact text of what the caller typed
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{what}: not a number: {value!r}") from None
    if not amount.is_finite():
        raise InvalidInput(f"{what}: must be a finite number")
    # Checked before any exact arithmetic: "1e999999" would overflow or take minutes to expand.
    if amount.adjusted() > _MAX_EXPONENT:
        raise InvalidInput(f"{what}: too large (at most {format_amount(metric, MAX_AMOUNT)})")
    if amount == UNLIMITED:
        return UNLIMITED
    if amount < 0:
        raise InvalidInput(f"{what}: must be zero or positive (or -1 for unlimited), got {value}")
    if metric == "usd":
        nanos = amount * NANOS_PER_USD
        if nanos != nanos.to_integral_value():
            raise InvalidInput(f"{what}: USD amounts have at most 9 decimal places")
        units = int(nanos)
    else:
        if amount != amount.to_integral_value():
            raise InvalidInput(f"{what}: {metric} must be a whole number, got {value}")
        units = int(amount)
    if units > MAX_AMOUNT:
        limit = format_amount(metric, MAX_AMOUNT)
        raise InvalidInput(f"{what}: too large (at most {limit})")
    return units


def format_amount(metric: str, units: int) -> str:
    """Counter units back to the operator's unit: exact decimal USD, or an integer count."""
    if metric == "usd" and units != UNLIMITED:
        return format_nanos(units)
    return str(units)


@dataclasses.dataclass(frozen=True, slots=True)
class Limit:
    """One cap on one scope instance (or, from a tier, on every instance of a scope type)."""

    scope: str
    subject: str  # "" for platform; org/project/key id; end user, session id or "name=value"
    org_id: str  # "" for platform
    metric: str
    window: str
    amount: int  # counter units; UNLIMITED lifts a tier default
    mode: str = "hard"
    tier: str | None = None  # set when this limit is a tier default
    # Percent of amount whose crossing raises a threshold alert (budgets/alert_lines.py).
    alert_lines: tuple[int, ...] = DEFAULT_LINES

    @property
    def name(self) -> str:
        return limit_name(self.metric, self.window)

    @property
    def rolling(self) -> bool:
        return self.window in ROLLING_WINDOWS

    @property
    def tenant(self) -> str:
        """The counter partition: one org, or the platform (a Redis Cluster hash tag)."""
        return self.org_id or "platform"

    @property
    def counter(self) -> str:
        """Counter identity, independent of the amount: changing a limit keeps its spend."""
        return f"{self.org_id}/{self.scope}:{self.subject}|{self.metric}|{self.window}"


class CounterId(NamedTuple):
    """What a calendar counter's key (``c:{Limit.counter}|{window id}``) says."""

    org_id: str
    scope: str
    subject: str
    metric: str
    window: str


def parse_calendar_counter(key: str) -> CounterId:
    """The parts of a calendar counter's key (policy.checks_for makes them). A subject may
    hold any character (a tag's value), so it is what remains between the fixed parts."""
    if not key.startswith("c:"):
        raise ValueError(f"not a calendar counter: {key!r}")
    head, metric, window, _window_id = key[2:].rsplit("|", 3)
    org_id, rest = head.split("/", 1)
    scope, subject = rest.split(":", 1)
    if scope not in SCOPES or metric not in METRICS or window not in CALENDAR_WINDOWS:
        raise ValueError(f"not a calendar counter: {key!r}")
    return CounterId(org_id, scope, subject, metric, window)


# A session-scope limit whose subject is one of these is a default: every session of that
# key (or project) gets it as its own limit (unless the session has its own for that metric
# and window). "@key:key_1a2b..." / "@project:prj_..."
SESSION_DEFAULT_KINDS = ("key", "project")


def session_default(kind: str, ident: str) -> str:
    """The subject of a session default of a key or a project (``@key:ID``)."""
    return f"@{kind}:{ident}"


def is_session_default(scope: str, subject: str) -> bool:
    return scope == "session" and subject.startswith(("@key:", "@project:"))


@dataclasses.dataclass(frozen=True, slots=True)
class TierEntry:
    scope: str
    metric: str
    window: str
    amount: int
    mode: str = "hard"


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    name: str
    entries: tuple[TierEntry, ...]
    source: str = "config"  # "config" or "api"


TIER_SCOPES = ("org", "project", "key", "user", "session")


def tier_from_mapping(name: str, data: Mapping[str, Any], *, where: str, source: str) -> Tier:
    """``{"org": {"daily_usd": "5"}, "key": {"requests_per_minute": 60}}`` -> Tier."""
    entries: list[TierEntry] = []
    for scope, limits in data.items():
        if scope not in TIER_SCOPES:
            raise InvalidInput(
                f"{where}: unknown scope {scope!r} (known: {', '.join(TIER_SCOPES)})"
            )
        if not isinstance(limits, Mapping):
            raise InvalidInput(f"{where}.{scope}: must be a table of limit = amount")
        for limit, value in limits.items():
            if limit not in LIMIT_NAMES:
                raise InvalidInput(
                    f"{where}.{scope}.{limit}: unknown limit "
                    f"(known: {', '.join(LIMIT_NAMES)})"
                )
            metric, window = LIMIT_NAMES[limit]
            amount = parse_amount(metric, value, what=f"{where}.{scope}.{limit}")
            entries.append(TierEntry(scope, metric, window, amount))
    return Tier(name=name, entries=tuple(entries), source=source)


def tier_to_mapping(tier: Tier) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for e in tier.entries:
        out.setdefault(e.scope, {})[limit_name(e.metric, e.window)] = format_amount(
            e.metric, e.amount
        )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is billed to, as the limits see it."""

    org_id: str
    project_id: str | None
    key_id: str
    end_user: str | None = None
    session_id: str | None = None
    tags: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def scopes(self) -> list[tuple[str, str]]:
        found = [("platform", ""), ("org", self.org_id)]
        if self.project_id:
            found.append(("project", self.project_id))
        found.append(("key", self.key_id))
        if self.end_user:
            found.append(("user", self.end_user))
        if self.session_id:
            found.append(("session", self.session_id))
        found.extend(("tag", f"{k}={v}") for k, v in self.tags.items())
        return found


class LimitBook:
    """Every limit and tier in force, indexed for the request path (immutable once built)."""

    def __init__(
        self,
        limits: Iterable[Limit] = (),
        tiers: Iterable[Tier] = (),
        org_tiers: Mapping[str, str] | None = None,
        version: int = 0,
        alert_rules: Iterable[AlertLines] = (),
    ) -> None:
        self.version = version
        self.tiers = {t.name: t for t in tiers}
        self.org_tiers = dict(org_tiers or {})
        self.alert_rules = tuple(alert_rules)
        self._lines = LineBook(self.alert_rules)
        self.limits = tuple(self._with_lines(limit, None) for limit in limits)
        self._explicit: dict[tuple[str, str, str], list[Limit]] = {}
        for limit in self.limits:
            self._explicit.setdefault((limit.org_id, limit.scope, limit.subject), []).append(
                limit
            )
        self._tier_by_scope: dict[str, dict[str, list[TierEntry]]] = {}
        for tier in self.tiers.values():
            per_scope: dict[str, list[TierEntry]] = {}
            for entry in tier.entries:
                per_scope.setdefault(entry.scope, []).append(entry)
            self._tier_by_scope[tier.name] = per_scope
        self.empty = not self.limits and not any(
            t in self.tiers for t in self.org_tiers.values()
        )

    def applicable(self, principal: Principal) -> list[Limit]:
        """The limits a request by ``principal`` must satisfy (unlimited ones left out)."""
        if self.empty:
            return []
        org = principal.org_id
        tier = self.org_tiers.get(org)
        defaults = self._tier_by_scope.get(tier, {}) if tier else {}
        found: list[Limit] = []
        for scope, subject in principal.scopes():
            owner = "" if scope == "platform" else org
            explicit: Sequence[Limit] = self._explicit.get((owner, scope, subject), ())
            if scope == "session":
                explicit = self._with_session_defaults(principal, subject, explicit)
            found.extend(limit for limit in explicit if limit.amount != UNLIMITED)
            for entry in defaults.get(scope, ()):
                if entry.amount == UNLIMITED or any(
                    e.metric == entry.metric and e.window == entry.window for e in explicit
                ):
                    continue
                limit = Limit(
                    scope,
                    subject,
                    org,
                    entry.metric,
                    entry.window,
                    entry.amount,
                    entry.mode,
                    tier=tier,
                )
                found.append(self._with_lines(limit, tier) if self._lines else limit)
        return found

    def _with_session_defaults(
        self, principal: Principal, session: str, explicit: Sequence[Limit]
    ) -> Sequence[Limit]:
        """The session's own limits, then its key's and its project's session defaults
        (:func:`session_default`) for what those do not set: each as the session's own
        limit (its own counter), the more specific winning per metric and window."""
        org = principal.org_id
        sources = [("key", principal.key_id)]
        if principal.project_id:
            sources.append(("project", principal.project_id))
        out = list(explicit)
        taken = {(lim.metric, lim.window) for lim in explicit}
        for kind, ident in sources:
            for lim in self._explicit.get((org, "session", session_default(kind, ident)), ()):
                if (lim.metric, lim.window) in taken:
                    continue
                taken.add((lim.metric, lim.window))
                out.append(dataclasses.replace(lim, subject=session))
        return out

    def _with_lines(self, limit: Limit, tier: str | None) -> Limit:
        """``limit`` with the alert lines its rules give it (tier: the org's plan tier)."""
        if not self._lines:
            return limit
        if tier is None and limit.org_id:
            tier = self.org_tiers.get(limit.org_id)
        lines = self._lines.lines(limit.org_id, limit.scope, limit.subject, limit.name, tier)
        if lines == limit.alert_lines:
            return limit
        return dataclasses.replace(limit, alert_lines=lines)

    def counts_over(self, window: str) -> bool:
        """Whether a limit, or an entry of any tier (assigned or not), counts over
        ``window`` (e.g. "lifetime": raw-ledger retention waits while one does)."""
        return any(
            limit.window == window and limit.amount != UNLIMITED for limit in self.limits
        ) or any(
            e.window == window and e.amount != UNLIMITED
            for tier in self.tiers.values()
            for e in tier.entries
        )

    def families(self) -> set[tuple[str, str, str, str]]:
        """(tenant org id or "", scope, metric, window) of every limit that can apply.

        A family is the unit counters are built for from the ledger: all subjects of one
        scope type in one org (or the platform) over one metric and window.
        """
        out: set[tuple[str, str, str, str]] = set()
        for limit in self.limits:
            if limit.amount != UNLIMITED:
                out.add((limit.org_id, limit.scope, limit.metric, limit.window))
        for org, name in self.org_tiers.items():
            tier = self.tiers.get(name)
            if tier is None:
                continue
            for e in tier.entries:
                if e.amount != UNLIMITED:
                    out.add((org, e.scope, e.metric, e.window))
        return out

    def for_org(self, org_id: str) -> list[Limit]:
        """Explicit limits of one org and the platform, plus its tier's org-scope defaults
        (not the session defaults of keys and projects: each session has its own)."""
        found = [
            lim for lim in self.limits
            if lim.org_id in (org_id, "") and not is_session_default(lim.scope, lim.subject)
        ]  # fmt: skip
        tier = self.org_tiers.get(org_id)
        if tier and tier in self.tiers:
            explicit = {(lim.metric, lim.window) for lim in found if lim.scope == "org"}
            for e in self.tiers[tier].entries:
                if e.scope == "org" and (e.metric, e.window) not in explicit:
                    found.append(
                        Limit("org", org_id, org_id, e.metric, e.window, e.amount, e.mode, tier)
                    )
        return found
