"""Alert lines: the shares of a limit (percent) whose crossing raises a threshold alert.

Every limit has lines 50, 80 and 100 % unless an alert rule sets others. A rule targets one
of: a scope instance (an org, a project, a key, an end user, a session, a tag, the platform),
every instance of a scope type in one org ("every end user of acme"), or a scope type on a
plan tier ("every key of an org on the pro tier"). It may name one limit (``daily_tokens``)
or apply to all of the scope's limits, and it holds one or more lines, each in (0, 1000] %:
lines above 100 % matter for soft budgets, which admit requests past their amount.

The most specific rule wins, in this order: the instance and the limit, the instance, the
org's scope type and the limit, the org's scope type, the tier's scope type and the limit,
the tier's scope type, then the defaults. A tier's rule follows the org's tier, so it also
covers limits set explicitly on an org that is on that tier.

Pure: the storage layer loads the rules, :class:`LineBook` answers which lines a limit has
(the limit book asks once per limit it builds, never per request).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from decimal import Decimal

from costwarden.core.errors import InvalidInput

DEFAULT_LINES: tuple[int, ...] = (50, 80, 100)
MAX_LINE_PCT = 1000
MAX_LINES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class AlertLines:
    """One threshold rule. ``""`` means "not set" in each targeting field (see the module
    docstring): ``org_id`` is "" for the platform and for a tier's rule; ``subject`` "" for
    every instance of the scope type; ``tier`` "" when not a tier's rule; ``limit_name`` ""
    for every limit."""

    lines: tuple[int, ...]
    scope: str
    org_id: str = ""
    subject: str = ""
    tier: str = ""
    limit_name: str = ""

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.org_id, self.scope, self.subject, self.tier, self.limit_name)


def parse_lines(value: object, *, what: str = "thresholds") -> tuple[int, ...]:
    """An operator's list of percents -> sorted, distinct lines; InvalidInput names what is
    wrong (a line outside (0, 1000] %, not a whole number, none, too many)."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInput(f"{what}: expected a list of percents, e.g. [50, 80, 100]")
    if not value:
        raise InvalidInput(f"{what}: give at least one percent")
    if len(value) > MAX_LINES:
        raise InvalidInput(f"{what}: at most {MAX_LINES} percents")
    found: set[int] = set()
    for item in value:
        # JSON numbers only (the admin API reads them as int or Decimal): 80, or 80.0 (a JSON
        # Schema integer), never text or true.
        if isinstance(item, bool) or not isinstance(item, int | float | Decimal):
            raise InvalidInput(f"{what}: {item!r} is not a percent (a whole number)")
        number = Decimal(item) if isinstance(item, float) else item
        if not (isinstance(number, int) or number.is_finite()) or not 0 < number <= MAX_LINE_PCT:
            raise InvalidInput(
                f"{what}: {item} is outside (0, {MAX_LINE_PCT}] %: a line is a share of the "
                "limit above 0 and at most ten times it"
            )
        if number != int(number):
            raise InvalidInput(f"{what}: {item} is not a whole percent")
        found.add(int(number))
    return tuple(sorted(found))


class LineBook:
    """The rules in force, indexed by target (see the module docstring for the order)."""

    def __init__(self, rules: Iterable[AlertLines] = ()) -> None:
        self._by_key = {rule.key: rule.lines for rule in rules}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def lines(
        self, org_id: str, scope: str, subject: str, limit_name: str, tier: str | None
    ) -> tuple[int, ...]:
        """The lines of the limit ``limit_name`` on (org, scope, subject); ``tier`` is the
        org's plan tier, if any."""
        find = self._by_key.get
        found = (
            find((org_id, scope, subject, "", limit_name))
            or find((org_id, scope, subject, "", ""))
            or find((org_id, scope, "", "", limit_name))
            or find((org_id, scope, "", "", ""))
        )
        if found is None and tier:
            found = find(("", scope, "", tier, limit_name)) or find(("", scope, "", tier, ""))
        return found or DEFAULT_LINES
