"""One request's state as the pipeline's stages see it (gateway.stages, gateway.proxy).

A stage reads what the stages before it left and adds its own part; the closed sets a
request is described by are types (``Endpoint``, ``Wire``, the record's ``LedgerStatus``), so
mypy checks every value written. The ledger record is part of the state from the start: it
becomes a row once the request is attributed to a key (``known``), whatever happens next.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from costwarden.budgets.enforcer import Reservation
from costwarden.core.records import Endpoint, KeyRecord, LedgerRecord
from costwarden.gateway.asgi import Receive, Scope, Send
from costwarden.gateway.cache_write import CacheWrite
from costwarden.providers.base import Deployment
from costwarden.routing.chains import Route

Wire = Literal["openai", "anthropic"]


@dataclasses.dataclass(slots=True)
class RequestState:
    scope: Scope
    receive: Receive
    send: Send
    endpoint: Endpoint
    wire: Wire  # the wire format the client speaks
    headers: dict[bytes, bytes]
    record: LedgerRecord  # the ledger row to be, written by every stage that learns something
    t0: float  # perf_counter() when the request arrived
    known: bool = False  # attributed to a key: the request gets a ledger row
    body: bytes = b""  # the client's request bytes
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)  # parsed; never modified
    stream: bool = False
    route: Route | None = None
    # The budget reservation while the failover holds it; settled with the record.
    reservation: Reservation | None = None
    deployment: Deployment | None = None  # the candidate last called upstream
    busy: str | None = None  # the deployment answering, counted in flight until relayed
    # Headers a stage adds to the response (the agent session's state and budget share).
    extra_headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    # Why the route served it where it did (x-costwarden-route-reason, a downgrade).
    route_headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    key: KeyRecord | None = None  # the virtual key, once authenticated
    # A system note the upstream request carries (a winding-down session's budget left).
    system_note: str | None = None
    # What the prompt scan made of the request (x-costwarden-security-status), if it ran.
    security_status: str | None = None
    # A cacheable miss: its answer is collected while sent, then stored (gateway.cache).
    cache_write: CacheWrite | None = None
    # Bytes a stage added to the request (a redaction's placeholders): the reservation's
    # input bound is the body's size plus these.
    added_bytes: int = 0
