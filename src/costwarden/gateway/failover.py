"""The upstream call with retries, circuit breakers and a fallback chain.

:class:`Failover` walks a route's candidates in order. A candidate is skipped when it cannot
take the request (a context window too small, embeddings on an Anthropic deployment) or its
breaker is open. Each candidate is tried up to ``1 + route.retries`` times: connection errors,
429 (honouring ``Retry-After`` up to a cap) and 5xx are retried after exponential backoff with
full jitter; a timeout goes straight to the next candidate (waiting as long again rarely
helps). A 4xx the client caused is the client's answer and ends the walk. Everything happens
before the first byte reaches the client, so nothing is ever retried mid-stream.

A request no candidate could ever take -- one whose prompt and ``max_tokens`` exceed every
candidate's context window, or that none can translate -- is the client's error (400), not an
outage: a 503 would be retried by the SDKs to no end.

The body sent upstream is always serialized from the parsed request: the upstream reads
exactly what the gateway routed, bounded and billed. Forwarding the client's bytes would
let a body with a key twice (``"model"`` for one model, then for another) be billed as the
last key while a provider that reads the first serves the other.

Every outcome is reported to the deployment's breaker (which decides what counts as a
failure). The budget reservation is made for the candidate actually called: when a fallback
has other prices, the reservation is given back and made again for it, so the bound stays
a true bound for the model that serves the request. It is made before a half-open breaker's
probe slot is taken, so a budget refusal never holds the probe that the deployment needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, Protocol

import orjson

from costwarden.budgets.enforcer import Reservation
from costwarden.config.upstreams import ResilienceSettings
from costwarden.core.errors import (
    BudgetExceeded,
    ContextTooLong,
    GatewayError,
    RateLimited,
    UpstreamError,
)
from costwarden.core.records import LedgerRecord
from costwarden.gateway.egress import ProxyError
from costwarden.gateway.route_choice import (
    RouteChooser,
    budget_uses,
    refusal_uses,
    served_reason,
)
from costwarden.gateway.sessions import add_note
from costwarden.gateway.state import RequestState
from costwarden.gateway.transport import transport_failure
from costwarden.gateway.upstream import Response, UpstreamClient
from costwarden.providers import translate
from costwarden.providers.base import Deployment, estimate_tokens
from costwarden.routing.breaker import CLOSED, counts_as_failure
from costwarden.routing.chains import Route
from costwarden.routing.downgrade import BudgetUse, triggered
from costwarden.routing.live import LiveFigures

logger = logging.getLogger(__name__)


class Breakers(Protocol):
    async def admit(self, deployment: str) -> bool: ...
    def probe_due(self, deployment: str) -> bool: ...
    def success(self, deployment: str) -> None: ...
    def failure(self, deployment: str, reason: str) -> None: ...
    def state(self, deployment: str) -> str: ...


@dataclasses.dataclass(slots=True)
class Attempt:
    """The upstream exchange that answered: its response is open, its headers are in."""

    deployment: Deployment
    response: Response
    reservation: Reservation | None
    translated: bool
    tries: int
    upstream_started: float  # perf_counter() when the successful try was sent


class Exhausted(Exception):
    """No candidate answered. ``attempted``: whether any upstream call was made at all."""

    def __init__(
        self, reasons: list[str], attempted: bool, last: GatewayError | None, refusal: Any
    ) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons
        self.attempted = attempted
        self.last = last
        self.refusal = refusal  # a budget refusal met on a fallback, if that was all there was


Reserve = Callable[[RequestState, Deployment], Awaitable[Reservation | None]]
Release = Callable[[Reservation], Awaitable[None]]
Failed = Callable[[Response, Deployment, LedgerRecord, bool], Awaitable[GatewayError]]


class Failover:
    def __init__(
        self,
        client: UpstreamClient,
        breakers: Breakers,
        resilience: ResilienceSettings,
        *,
        default_max_tokens: int,
        reserve: Reserve,
        release: Release,
        failed: Failed,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        live: LiveFigures | None = None,
    ) -> None:
        self.client = client
        # Kept only when some route ranks by them (lowest-latency, least-busy): three calls
        # a request otherwise spent for nothing.
        self.live = live
        self.chooser = RouteChooser(breakers, live, default_max_tokens)
        self.breakers = breakers
        self.resilience = resilience
        self.default_max_tokens = default_max_tokens
        self._reserve = reserve
        self._release = release
        self._failed = failed
        self._sleep = sleep

    async def open(self, call: RequestState, route: Route) -> Attempt:
        """The first candidate's answer, or Exhausted when none answered. A reservation made
        on the way is handed over in the Attempt, or given back when the walk fails. When the
        walk is cancelled (the client went away) it stays in ``call.reservation`` with
        ``call.deployment``: the caller settles it for what the call may have used."""
        try:
            return await self._walk(call, route)
        except Exception:
            if call.reservation is not None:
                reservation, call.reservation = call.reservation, None
                await self._release(reservation)
            raise

    async def _walk(self, call: RequestState, route: Route) -> Attempt:
        queue, reason = self.chooser.order(call, route)
        first = queue[0] if queue else None
        walked = len(queue)  # the candidates the walk may try (able ones, for a capable route)
        call.record.route_reason = reason
        reasons: list[str] = []
        last: GatewayError | None = None
        refusal: GatewayError | None = None
        untranslatable: GatewayError | None = None
        attempted = 0
        never = 0  # candidates that can never take this request
        windows: list[int] = []  # the context windows it does not fit
        reserved_for: Deployment | None = None
        first_reservation = True
        downgraded: str | None = None  # why, once the route's downgrade moved the request
        refused_first: GatewayError | None = None  # the first reservation's refusal, if any
        breakers = self.breakers
        i = 0
        while i < len(queue):
            dep = queue[i]
            i += 1
            if call.endpoint == "embeddings" and "embeddings" not in dep.adapter.endpoints:
                never += 1
                reasons.append(f"{dep.id}: has no embeddings endpoint")
                continue
            if not fits(dep, call):
                never += 1
                windows.append(dep.context_window or 0)
                reasons.append(f"{dep.id}: the request does not fit its context window")
                continue
            translated = dep.adapter.wire != call.wire
            try:  # before admit: a half-open breaker's probe must not go to waste
                converted = self._translate(call, dep) if translated else None
            except translate.TranslationError as exc:
                never += 1
                untranslatable = untranslatable or exc
                reasons.append(f"{dep.id}: cannot take this request ({exc.message})")
                continue
            closed = breakers.state(dep.id) == CLOSED
            if not closed and not breakers.probe_due(dep.id):
                reasons.append(f"{dep.id}: circuit breaker open")
                continue
            # Reserve before a probe is taken: a budget refusal must not hold the probe slot.
            if reserved_for is None or not _same_price(reserved_for, dep):
                if call.reservation is not None:
                    reservation, call.reservation = call.reservation, None
                    await self._release(reservation)
                try:
                    call.reservation = await self._reserve(call, dep)
                except (BudgetExceeded, RateLimited) as exc:
                    refusal = refusal or exc
                    reserved_for = None
                    if not first_reservation:
                        reasons.append(f"{dep.id}: {exc.message}")
                        continue
                    first_reservation = False
                    refused_first = exc
                    # A downgrade rule first: the budget used is the refusal's.
                    uses = refusal_uses(exc) if route.downgrade else []
                    moved = self._downgrade(route, dep, uses)
                    if moved is not None:
                        downgraded, target = moved
                        queue = [target, *(d for d in queue[i:] if d is not target)]
                        i = 0
                        continue
                    if not route.downgrade_on_refusal:
                        raise  # the client's own budget decides, as without fallbacks
                    # Opt-in: a cheaper deployment of the chain whose reservation fits.
                    queue = self.chooser.cheaper_than(call, route, dep, queue[i:])
                    i = 0
                    downgraded = f"downgraded from {dep.id}: {exc.message}"
                    continue
                if first_reservation and route.downgrade and call.reservation is not None:
                    first_reservation = False  # the budgets' use read only for a rule
                    moved = self._downgrade(route, dep, budget_uses(call.reservation))
                    if moved is not None:  # given back, and reserved again for the target
                        downgraded, target = moved
                        reservation, call.reservation = call.reservation, None
                        await self._release(reservation)
                        queue = [target, *(d for d in queue[i - 1 :] if d is not target)]
                        i = 0
                        continue
                first_reservation = False
                reserved_for = dep
            try:  # the output cap needs the reservation; a probe slot needs the body
                body = self._upstream_body(call, dep, call.reservation, converted)
            except translate.TranslationError as exc:  # a codec's own format cannot take it
                never += 1
                untranslatable = untranslatable or exc
                reasons.append(f"{dep.id}: cannot take this request ({exc.message})")
                continue
            if not closed and not await breakers.admit(dep.id):
                reasons.append(f"{dep.id}: circuit breaker open")  # another took the probe
                continue
            call.record.provider = dep.adapter.name
            call.record.served_model = dep.model
            call.deployment = dep
            outcome, tries = await self._try(
                call, route, dep, body, call.reservation, converted is not None
            )
            attempted += tries
            if isinstance(outcome, Attempt):
                outcome.tries = attempted
                if dep is first and downgraded is None and reason is route.first_reason:
                    call.route_headers.append(route.reason_header)  # built once
                else:
                    self._explain(call, reason, first, dep, reasons, downgraded)
                return outcome
            last = outcome
            reasons.append(f"{dep.id}: {outcome.message}")
            if outcome.status < 500 and outcome.status != 429:
                raise outcome  # the client's own error: every candidate would agree
        if never == walked:  # a 400: the request itself is what none can take
            if windows:
                raise _too_long(call, route, max(windows))
            if untranslatable is not None:
                raise untranslatable
        if refused_first is not None and not attempted:
            raise refused_first  # nothing cheaper fitted: the client's budget decides (402)
        raise Exhausted(reasons, bool(attempted), last, refusal)

    def _downgrade(
        self, route: Route, dep: Deployment, uses: list[BudgetUse]
    ) -> tuple[str, Deployment] | None:
        """(why, the deployment to serve instead) when a downgrade rule of the route fires."""
        if not route.downgrade or not uses:
            return None
        moved = triggered(route.downgrade, dep.id, uses)
        target = None if moved is None else _own(route, moved.rule.to)
        if moved is None or target is None:
            return None
        return moved.reason(dep.id), target

    def _explain(
        self,
        call: RequestState,
        reason: str,
        first: Deployment | None,
        served: Deployment,
        passed: list[str],
        downgraded: str | None,
    ) -> None:
        """The route's reason, for the response header and the ledger row."""
        if downgraded is not None:
            reason = f"{reason}; {downgraded}"
            call.route_headers.append((_DOWNGRADED_HEADER, b"true"))
        text = served_reason(reason, first or served, served, passed)
        call.record.route_reason = text
        call.route_headers.append((_REASON_HEADER, text.encode()))

    async def _try(
        self,
        call: RequestState,
        route: Route,
        dep: Deployment,
        body: bytes,
        reservation: Reservation | None,
        translated: bool,
    ) -> tuple[Attempt | GatewayError, int]:
        adapter = dep.adapter
        res = self.resilience
        error: GatewayError | None = None  # built only when a try fails: the common path has none
        url = adapter.url(_upstream_endpoint(call.endpoint, adapter.wire), dep.model, call.stream)
        live = self.live
        for tries in range(1, route.retries + 2):
            started = perf_counter()
            if live is not None:
                live.started(dep.id)
            try:
                resp = await self.client.post(
                    url,
                    adapter.headers(call.headers, url, body).items(),
                    body,
                    timeout=route.timeout or adapter.timeout,
                    connect_timeout=route.connect_timeout or adapter.connect_timeout,
                    first_byte_timeout=route.first_byte_timeout,
                )
            except BaseException as exc:
                if live is not None:
                    live.ended(dep.id)
                if not isinstance(exc, TimeoutError | OSError):
                    raise
                error, reason = transport_failure(exc, adapter.name, "connect")
                self.breakers.failure(dep.id, reason)
                if isinstance(exc, _NOT_RETRIED):
                    # waiting as long again rarely helps, and a retry cannot mend a
                    # certificate or a proxy's refusal: the next candidate
                    return error, tries
                if tries <= route.retries and self.breakers.state(dep.id) != "open":
                    await self._sleep(self.backoff(tries))
                    continue
                return error, tries
            status = resp.status
            if status < 400:
                self.breakers.success(dep.id)
                if live is not None:
                    live.measured(dep.id, (perf_counter() - started) * 1000)
                    call.busy = dep.id  # in flight until the proxy has relayed the answer
                return Attempt(dep, resp, reservation, translated, tries, started), tries
            if live is not None:
                live.ended(dep.id)
            retry_after = _seconds(resp.headers.get("retry-after"))
            # A codec upstream's error body is in its own format: never relayed as it came.
            error = await self._failed(resp, dep, call.record, translated or adapter.codec)
            if counts_as_failure("status", status):
                self.breakers.failure(dep.id, f"status {status}")
            elif status != 429:
                return error, tries  # the client's (or our credentials') problem: no retry
            if tries > route.retries or self.breakers.state(dep.id) == "open":
                return error, tries  # out of tries, or this failure opened the breaker
            delay = self.backoff(tries)
            if status == 429 and retry_after is not None:
                if retry_after > res.max_retry_after_seconds:
                    return error, tries  # too long to hold the client: try the next one
                delay = max(delay, retry_after)
            await self._sleep(delay)
        # Unreachable while every failed last try returns above; kept for the type checker.
        return error or UpstreamError(f"upstream {adapter.name} was not called"), route.retries + 1

    def backoff(self, tries: int) -> float:
        """Seconds before retry number ``tries``: full jitter over a doubling ceiling."""
        res = self.resilience
        ceiling = min(res.retry_max_ms, res.retry_base_ms * 2 ** (tries - 1))
        return random.uniform(0, ceiling) / 1000

    def _translate(self, call: RequestState, dep: Deployment) -> dict[str, Any]:
        """The client's request in ``dep``'s wire format (TranslationError if it cannot be)."""
        if dep.adapter.wire == "anthropic":
            return translate.openai_to_anthropic_request(
                call.payload, default_max_tokens=dep.max_output_tokens or self.default_max_tokens
            )
        return translate.anthropic_to_openai_request(call.payload)

    def _upstream_body(
        self,
        call: RequestState,
        dep: Deployment,
        reservation: Reservation | None,
        converted: dict[str, Any] | None,
    ) -> bytes:
        """The request as ``dep`` takes it: translated, usage asked for, capped, renamed --
        and always serialized from what was parsed (see the module docstring)."""
        payload = converted if converted is not None else dict(call.payload)
        endpoint = _upstream_endpoint(call.endpoint, dep.adapter.wire)
        dep.adapter.prepare(endpoint, payload, call.stream)
        if reservation is not None and reservation.out_tokens is not None:
            cap_output(endpoint, payload, reservation.out_tokens)
        if call.system_note is not None:  # within the reservation's bound (note_bytes)
            add_note(endpoint, payload, call.system_note)
        payload["model"] = dep.model
        return dep.adapter.encode(endpoint, payload) if dep.adapter.codec else orjson.dumps(payload)


_NOT_RETRIED = (TimeoutError, ssl.SSLCertVerificationError, ProxyError)
_REASON_HEADER = b"x-costwarden-route-reason"
_DOWNGRADED_HEADER = b"x-costwarden-downgraded"


def _own(route: Route, deployment: str) -> Deployment | None:
    for dep in route.candidates[: route.own]:
        if dep.id == deployment:
            return dep
    return None


def _output_cap(payload: dict[str, Any]) -> int:
    wanted = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    return wanted if isinstance(wanted, int) else 0


def _prompt_estimate(payload: dict[str, Any]) -> int:
    return estimate_tokens([payload.get("messages"), payload.get("system"), payload.get("tools")])


def _too_long(call: RequestState, route: Route, largest: int) -> ContextTooLong:
    out = _output_cap(call.payload)
    prompt = _prompt_estimate(call.payload)
    return ContextTooLong(
        f"the request needs about {prompt + out} tokens (a prompt of about {prompt} plus "
        f"max_tokens {out}), more than the context window of any deployment of "
        f"{route.model!r} (largest: {largest} tokens); lower max_tokens or shorten the prompt",
        param="max_tokens" if out else "messages",
    )


def fits(dep: Deployment, call: RequestState) -> bool:
    """Whether the request can fit ``dep``'s context window (prompt estimate + output cap).

    The body's byte count bounds its tokens from above, so the common case needs no walk
    over the messages; only a body near the window is estimated at ~4 bytes a token.
    """
    window = dep.context_window
    if window is None:
        return True
    payload = call.payload
    wanted = payload.get("max_completion_tokens") or payload.get("max_tokens") or 0
    out = wanted if isinstance(wanted, int) else 0
    if len(call.body) + out <= window:
        return True
    return _prompt_estimate(payload) + out <= window


def cap_output(endpoint: str, payload: dict[str, Any], tokens: int) -> None:
    """Send the budget's output cap in the field the client used (or the current one)."""
    if endpoint == "messages":
        payload["max_tokens"] = tokens
        return
    present = [k for k in ("max_tokens", "max_completion_tokens") if k in payload]
    for key in present or ["max_completion_tokens"]:
        payload[key] = tokens


def _upstream_endpoint(endpoint: str, wire: str) -> str:
    if endpoint == "embeddings":
        return endpoint
    return "messages" if wire == "anthropic" else "chat.completions"


def _same_price(a: Deployment, b: Deployment) -> bool:
    return a is b or (
        a.rates.bound_rates() == b.rates.bound_rates()
        and a.max_output_tokens == b.max_output_tokens
    )


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from LLM providers; use the backoff instead
    return seconds if seconds >= 0 else None
