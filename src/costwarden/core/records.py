"""Plain records exchanged between the request path and storage.

They are frozen/slotted dataclasses with no I/O so policy code and tests can build them freely.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Literal, get_args

from costwarden.core.money import ledger_nanos

# The closed sets a ledger row is made of: mypy checks every status written.
Endpoint = Literal["chat.completions", "embeddings", "messages", "models"]
LedgerStatus = Literal[
    "success",  # upstream answered 2xx and the response reached the client
    "client_error",  # refused before the upstream: bad input from a known key
    "auth_error",  # a known key that is revoked
    "blocked",  # refused by policy (budgets, limits, kill switch)
    "upstream_error",  # upstream failed, timed out or dropped the connection
    "cancelled",  # the client went away mid-request; billed for what was generated
    "gateway_error",  # a fault in the gateway itself; still billed for what was generated
    "degraded",  # every candidate failing: the route's template answered, at $0
    "session_stopped",  # an agent session's budget reached, answered as a completion, at $0
    "cached",  # answered from the response cache: cost $0, saved_usd what the call would cost
]
LEDGER_STATUSES: tuple[LedgerStatus, ...] = get_args(LedgerStatus)
# What a honeypot key's use does besides the critical alert (docs/security.md).
HoneypotAction = Literal["alert", "switch_off_org"]
HONEYPOT_ACTIONS: tuple[HoneypotAction, ...] = get_args(HoneypotAction)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as the gateway caches it: identity only, never the key itself."""

    id: str
    key_hash: str
    prefix: str
    org_id: str
    org_name: str
    project_id: str | None
    project_name: str | None
    name: str | None
    created_at: datetime
    revoked_at: datetime | None
    # Agent sessions of this key (opt-in): a budget reached answers as a clean completion
    # rather than an error; winding down, the model is told its remaining budget.
    session_clean_stop: bool = False
    session_budget_note: bool = False
    # A honeypot: answered exactly as an unknown key, its use a critical alert (and with
    # "switch_off_org", the org's kill switch turned on); gateway/honeypot.py.
    honeypot: bool = False
    honeypot_action: HoneypotAction = "alert"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclasses.dataclass(slots=True)
class LedgerRecord:
    """One request, as the ledger stores it (one row per request, append-only)."""

    request_id: str
    ts: datetime  # UTC, when the request arrived
    endpoint: Endpoint
    status: LedgerStatus
    http_status: int
    org_id: str | None = None
    project_id: str | None = None
    key_id: str | None = None
    end_user: str | None = None
    session_id: str | None = None
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    provider: str | None = None
    requested_model: str | None = None
    served_model: str | None = None
    streamed: bool = False
    input_tokens: int = 0  # all prompt tokens, cached ones included
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0  # all completion tokens, reasoning included
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    cost_estimated: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    overhead_ms: float = 0.0
    error: str | None = None
    # What the prompt scan acted on: a compact JSON array of findings (detector, family,
    # severity, confidence, action, location, span_hash), never the text found.
    security: str | None = None
    # Why the route served it where it did (x-costwarden-route-reason): the strategy, the
    # deployment chosen, what was skipped, a downgrade.
    route_reason: str | None = None
    # A cache hit: what the call it avoided cost (its cost_usd is 0). 0 for any other row.
    saved_usd: Decimal = Decimal(0)
    # Admitted against a gateway process's leased budget slices: that slice lease's id
    # (budgets/leased.py). Should the process die, its spend is read back by it.
    slice_holder: str | None = None
    # (cost_usd, its nano-dollars) once computed: see cost_nanos. Not a ledger column.
    nanos_cache: tuple[Decimal, int] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )


def cost_nanos(record: LedgerRecord) -> int:
    """The record's cost in nano-dollars as the ledger stores it (``ledger_nanos``), computed
    once per cost: the budget settle and the metrics both need it, and each conversion of a
    Decimal costs about 6,000 instructions."""
    cost = record.cost_usd
    cached = record.nanos_cache
    if cached is not None and cached[0] is cost:
        return cached[1]
    nanos = ledger_nanos(cost) if cost else 0
    record.nanos_cache = (cost, nanos)
    return nanos

