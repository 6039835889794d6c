"""The kinds of event costwarden raises: one frozen dataclass per kind.

An event says what happened, once, to whoever listens: the live stream (``GET /admin/events``),
other gateway processes (through the event log and Redis) and in-process subscribers such as
alerts. Every kind carries the org (and project and key) it belongs to where it has one, so a
stream can be filtered by org and a tenant never receives another's events.

Payloads are plain data: ids, names, counts, money as a decimal *string* (exact in JSON), times
as ISO 8601 strings. They never carry a secret: no key, no prompt, no provider credential.
A kind is added here by a later capability (alerts, sessions, security, ...) together with the
code that raises it; :data:`KINDS` is what the stream's ``kind`` filter accepts.
"""

from __future__ import annotations

import abc
import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from costwarden.core.records import LedgerRecord

# Ledger statuses of a request refused before any upstream was asked (the rest are settled).
REFUSED_STATUSES = frozenset({"blocked", "client_error", "auth_error"})


class EventPayload(abc.ABC):
    """What every kind has: its name, and the tenant it belongs to (None: platform-wide)."""

    __slots__ = ()
    kind: ClassVar[str] = ""
    org_id: str | None

    @abc.abstractmethod
    def data(self) -> dict[str, Any]:
        """The payload as the JSON object clients receive."""

    @abc.abstractmethod
    def stored(self) -> Any:
        """What the event log and the relay keep of it (anything orjson writes, Decimals as
        strings)."""

    @classmethod
    @abc.abstractmethod
    def from_data(cls, data: Any) -> EventPayload:
        """The payload back from :meth:`stored` (read from the log or another process)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class FieldsPayload(EventPayload):
    """A kind whose dataclass fields are its data: every kind but the request events."""

    org_id: str | None = None

    def data(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def stored(self) -> Any:
        return self  # orjson writes a dataclass field by field

    @classmethod
    def from_data(cls, data: Any) -> EventPayload:
        return cls(**data)


# What a request event shows of its record (the ledger row): ids, outcome, usage, cost.
_REQUEST_FIELDS = (
    "request_id",
    "org_id",
    "project_id",
    "key_id",
    "session_id",
    "end_user",
    "endpoint",
    "status",
    "http_status",
    "provider",
    "requested_model",
    "served_model",
    "streamed",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_estimated",
)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(LedgerRecord) if f.name != "nanos_cache")


class _RequestEvent(EventPayload):
    """A request's final ledger record, as it was committed (never changed afterwards).

    The event carries the record itself rather than a copy of its fields, and is a plain
    slotted class rather than a frozen dataclass: one is made for every request, and
    building it is all the request path pays (about 2,000 instructions; a frozen dataclass's
    ``__init__`` took 5,800 and a copy of eighteen fields 2.5 µs)."""

    __slots__ = ("org_id", "record")

    def __init__(self, record: LedgerRecord) -> None:
        self.record = record
        self.org_id = record.org_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RequestEvent) and (
            type(other) is type(self) and other.record == self.record
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(record={self.record!r})"

    def data(self) -> dict[str, Any]:
        r = self.record
        out = {name: getattr(r, name) for name in _REQUEST_FIELDS}
        out["cost_usd"] = str(r.cost_usd)  # exact, as a string
        out["latency_ms"] = round(r.latency_ms, 3)
        out["reason"] = r.error
        out["route_reason"] = r.route_reason
        out["saved_usd"] = str(r.saved_usd) if r.saved_usd else "0"  # a cache hit's saving
        return out

    def stored(self) -> Any:
        # The record's fields in order (orjson writes a list faster than a dataclass), the
        # cost as its exact decimal string.
        r = self.record
        return [
            r.request_id, r.ts, r.endpoint, r.status, r.http_status, r.org_id, r.project_id,
            r.key_id, r.end_user, r.session_id, r.tags, r.provider, r.requested_model,
            r.served_model, r.streamed, r.input_tokens, r.cached_input_tokens,
            r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, str(r.cost_usd),
            r.cost_estimated, r.latency_ms, r.ttft_ms, r.overhead_ms, r.error, r.security,
            r.route_reason, str(r.saved_usd) if r.saved_usd else "0",
        ]  # fmt: skip

    @classmethod
    def from_data(cls, data: Any) -> EventPayload:
        missing = len(_RECORD_FIELDS) - len(data)
        if missing > 0:  # stored before a later field existed (security...): its default
            data = [*data, *[None] * missing]
        fields = dict(zip(_RECORD_FIELDS, data, strict=True))
        fields["ts"] = datetime.fromisoformat(fields["ts"])
        fields["cost_usd"] = Decimal(fields["cost_usd"])
        fields["saved_usd"] = Decimal(fields["saved_usd"] or 0)
        return cls(LedgerRecord(**fields))


class RequestSettled(_RequestEvent):
    """A request that reached an upstream (or the degraded template) and was billed."""

    __slots__ = ()
    kind: ClassVar[str] = "request_settled"


class RequestRefused(_RequestEvent):
    """A request of a known key refused before any upstream: budget, limit, switch, input."""

    __slots__ = ()
    kind: ClassVar[str] = "request_refused"


def request_event(record: LedgerRecord) -> RequestSettled | RequestRefused:
    """The event for a request's final ledger record."""
    if record.status in REFUSED_STATUSES:
        return RequestRefused(record)
    return RequestSettled(record)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LimitThresholdCrossed(FieldsPayload):
    """A limit's spend (settled plus in flight) went past a share of the limit."""

    kind: ClassVar[str] = "limit_threshold_crossed"
    scope: str  # org | project | key | user | session | tag
    scope_id: str
    window: str  # daily | monthly | ... (the limit's period)
    metric: str  # usd | requests | tokens
    threshold_pct: int
    used: str  # exact decimal, in the metric's unit: settled plus in flight
    limit: str
    # Which window instance: the reset of a calendar window (epoch seconds), "lifetime", or a
    # rolling window's bucket; with resets_at (ISO 8601 UTC, None for lifetime and rolling).
    window_key: str = ""
    resets_at: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BreakerChanged(FieldsPayload):
    """A deployment's circuit breaker moved (closed / open / half_open)."""

    kind: ClassVar[str] = "breaker_changed"
    deployment: str
    from_state: str
    to_state: str
    reason: str
    at: str | None

    def stored(self) -> Any:
        return self.data()

    def data(self) -> dict[str, Any]:
        # "from"/"to" on the wire since the stream's first release.
        return {
            "org_id": None,
            "deployment": self.deployment,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
            "at": self.at,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> EventPayload:
        return cls(
            deployment=data["deployment"],
            from_state=data["from"],
            to_state=data["to"],
            reason=data["reason"],
            at=data["at"],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SwitchChanged(FieldsPayload):
    """A kill switch was turned on or off (org_id None: platform-wide)."""

    kind: ClassVar[str] = "switch_changed"
    feature: str
    enabled: bool
    message: str | None
    actor: str


# The kinds the next capabilities raise; their fields grow with them.


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AlertChanged(FieldsPayload):
    kind: ClassVar[str] = "alert_changed"
    alert_id: str
    rule: str
    state: str  # firing | acknowledged | resolved
    detail: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionChanged(FieldsPayload):
    """An agent session moved (costwarden.sessions.lifecycle); ``version`` orders one
    session's changes across processes."""

    kind: ClassVar[str] = "session_changed"
    session_id: str
    key_id: str | None
    from_state: str
    to_state: str
    cause: str
    budget_pct: str | None  # a decimal, in percent
    wake_at: str | None  # ISO 8601, while sleeping
    escalation_id: str | None
    version: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionRunaway(FieldsPayload):
    """Loop or runaway detection found a signal in an agent session (sessions.loops); what
    follows is the policy's ``action``: flag, pause (an escalation) or block."""

    kind: ClassVar[str] = "session_runaway"
    session_id: str
    key_id: str | None
    signal: str  # repeat | velocity | errors
    action: str  # flag | pause | block
    evidence: dict[str, Any]
    escalation_id: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationCreated(FieldsPayload):
    kind: ClassVar[str] = "escalation_created"
    escalation_id: str
    session_id: str
    reason: str
    evidence: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EscalationResolved(FieldsPayload):
    kind: ClassVar[str] = "escalation_resolved"
    escalation_id: str
    session_id: str
    status: str  # approved | denied
    resolved_by: str
    note: str | None
    extra_budget_usd: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SecurityFinding(FieldsPayload):
    """The scan stage (costwarden.security) found something in a request: what, where in the
    request, how sure, and what the policy did. Never the text itself: ``span_hash`` is a
    keyed hash of it, equal for equal spans."""

    kind: ClassVar[str] = "security_finding"
    request_id: str | None
    key_id: str | None
    session_id: str | None = None
    detector: str  # injection | secrets | pii | tools | a user's detector
    family: str = ""
    severity: str
    confidence: float = 0.0
    action: str  # blocked | redacted | flagged
    location: str = ""  # where in the request: messages[2].content, system, tools, ...
    span_hash: str | None = None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class HoneypotTriggered(FieldsPayload):
    """A honeypot virtual key was used (gateway/honeypot.py): the request was answered as an
    unknown key's; who sent it, from where, asking for what. Never the key itself: its id
    and display prefix. ``user_agent``, ``forwarded_for`` and ``model`` are what the client
    sent (cut short, control characters and anything shaped like a virtual key removed);
    ``source`` is the connection's peer address (the gateway trusts no forwarding header)."""

    kind: ClassVar[str] = "honeypot_triggered"
    key_id: str
    key_prefix: str
    key_name: str | None = None
    org_name: str
    project_id: str | None = None
    request_id: str | None = None  # the x-request-id of the 401 answer (None: /v1/models)
    endpoint: str  # chat.completions | messages | embeddings | models | session
    source: str | None  # the peer's address (None: unknown, e.g. a Unix socket)
    source_port: int | None = None
    forwarded_for: str | None = None  # X-Forwarded-For as sent: a claim, not trusted
    user_agent: str | None = None
    model: str | None = None  # the body's "model", when the body had arrived whole
    action: str  # alert | switch_off_org
    at: str  # ISO 8601 UTC, when the request arrived


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BillingChanged(FieldsPayload):
    """A billing webhook event (billing/, Stripe) changed an org: its plan tier (``plan``),
    its payment state (``payment_failed``: the grace period began, until ``grace_until``;
    ``paid``: it ended), or the suspension job switched it off (``suspended``) or a payment
    switched it back on (``restored``). Ids are the payment provider's (never a secret)."""

    kind: ClassVar[str] = "billing_changed"
    change: str  # plan | payment_failed | paid | suspended | restored
    tier: str | None = None  # plan: the org's tier now
    previous_tier: str | None = None
    event_id: str | None = None  # the provider's event (None: the suspension job)
    subscription_id: str | None = None
    invoice_id: str | None = None
    grace_until: str | None = None  # ISO 8601 UTC


KINDS: dict[str, type[EventPayload]] = {
    cls.kind: cls
    for cls in (
        RequestSettled,
        RequestRefused,
        LimitThresholdCrossed,
        BreakerChanged,
        SwitchChanged,
        AlertChanged,
        SessionChanged,
        SessionRunaway,
        EscalationCreated,
        EscalationResolved,
        SecurityFinding,
        HoneypotTriggered,
        BillingChanged,
    )
}

class Event(NamedTuple):
    """A payload as delivered: with its id and when it was raised. (A named tuple: one is
    made per event, and it is a third of a frozen dataclass's cost to build.)"""

    id: int  # global and ordered (per process without a log)
    ts: float  # epoch seconds, when it was published
    payload: EventPayload

    @property
    def kind(self) -> str:
        return self.payload.kind

    @property
    def org_id(self) -> str | None:
        return self.payload.org_id

    @property
    def data(self) -> dict[str, Any]:
        return self.payload.data()



# Not an event of the log: the last frame a stream gets before it is cut off.
STREAM_CUT = "stream_cut"
