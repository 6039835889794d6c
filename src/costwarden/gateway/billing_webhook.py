"""``POST /billing/stripe/webhook``: Stripe's events, verified and applied (docs/billing.md).

Not behind the admin API's authentication: Stripe authenticates each delivery by the
``Stripe-Signature`` header, checked with the ``stripe`` package (billing/signature.py)
before the body is even parsed. Then the event is read (billing/events.py) and applied in
one transaction (storage/billing.py), off the event loop; what changed is published after
the commit.

Answers (errors in the admin API's shape, ``{"error": {"type", "message"}}``):

- 200 ``{"received": true, "outcome", "detail"}``: applied, stale (older than what is
  stored), ignored (no org, an unmapped price, a type billing does not act on) or a
  duplicate (a replay: nothing changed). Stripe retries anything but a 2xx for days, so
  what cannot be applied is answered 200 and logged, not refused.
- 400 ``invalid_request_error``: a missing, malformed, wrong or stale signature, or a
  verified body that is not a Stripe event. Nothing is recorded.
- 404 ``not_found``: billing webhooks are off (no ``COSTWARDEN_STRIPE_WEBHOOK_SECRET``).
- 405 (with ``Allow: POST``), 413 (a body over :data:`MAX_BODY_BYTES`).
- 503 ``service_unavailable`` (with ``Retry-After``): the database could not be written;
  Stripe delivers the event again later.

Nothing secret is logged or answered: never the header, the body or a secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from costwarden.billing.events import (
    BadEvent,
    BillingEvent,
    OtherEvent,
    SubscriptionEvent,
    parse_event,
)
from costwarden.billing.policy import BillingPolicy
from costwarden.billing.signature import SignatureError, StripeVerifier
from costwarden.core.errors import ClientDisconnected, RequestTooLarge, StorageError
from costwarden.core.event_kinds import EventPayload
from costwarden.gateway.asgi import JSON, Receive, Scope, Send, read_body, send_bytes
from costwarden.storage.billing import (
    Applied,
    apply_payment,
    apply_subscription,
    record_other,
)

logger = logging.getLogger(__name__)

PATH = "/billing/stripe/webhook"
MAX_BODY_BYTES = 1024 * 1024  # Stripe's events are far smaller (their objects, a few KB)
RETRY_AFTER_SECONDS = 30


class StripeWebhook:
    """The endpoint of one gateway process (``verifier`` None: billing webhooks are off)."""

    def __init__(
        self,
        engine: Engine,
        *,
        verifier: StripeVerifier | None,
        policy: BillingPolicy,
        known_tiers: Collection[str],
        publish: Callable[[EventPayload], object],
        clock: Callable[[], float],
    ) -> None:
        self._engine = engine
        self.verifier = verifier
        self.policy = policy
        self._known_tiers = frozenset(known_tiers)
        self._publish = publish
        self._clock = clock

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            await _error(send, 405, "method_not_allowed", "use POST", [(b"allow", b"POST")])
            return
        if self.verifier is None:
            await _error(
                send, 404, "not_found",
                "billing webhooks are off: set COSTWARDEN_STRIPE_WEBHOOK_SECRET to the "
                "endpoint's signing secret",
            )  # fmt: skip
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        try:
            body = await read_body(receive, headers, MAX_BODY_BYTES)
        except RequestTooLarge as exc:
            await _error(send, 413, "request_too_large", str(exc))
            return
        except ClientDisconnected:
            return
        signature = headers.get(b"stripe-signature")
        try:
            header = None if signature is None else signature.decode("latin-1")
            event = parse_event(self.verifier.verify(body, header))
        except BadEvent as exc:
            what = "signature" if isinstance(exc, SignatureError) else "body"
            logger.warning("billing webhook refused (%s): %s", what, exc)
            await _error(send, 400, "invalid_request_error", str(exc))
            return
        try:
            applied = await asyncio.to_thread(self._apply, event)
        except (SQLAlchemyError, StorageError) as exc:
            logger.warning(
                "billing event %s not applied: %s", event.event_id, type(exc).__name__
            )
            await _error(
                send, 503, "service_unavailable", "the database is unreachable; retry later",
                [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
            )  # fmt: skip
            return
        for payload in applied.events:
            self._publish(payload)
        logger.info(
            "billing event %s: %s (%s)", event.event_id, applied.outcome, applied.detail
        )
        answer = {"received": True, "outcome": applied.outcome, "detail": applied.detail}
        await send_bytes(send, 200, orjson.dumps(answer), [(b"content-type", JSON)])

    def _apply(self, event: BillingEvent) -> Applied:
        now = datetime.fromtimestamp(self._clock(), UTC)
        if isinstance(event, OtherEvent):
            return record_other(self._engine, event, now=now)
        if isinstance(event, SubscriptionEvent):
            return apply_subscription(
                self._engine, event, self.policy, known_tiers=self._known_tiers, now=now
            )
        return apply_payment(self._engine, event, self.policy, now=now)


async def _error(
    send: Send,
    status: int,
    kind: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = orjson.dumps({"error": {"type": kind, "message": message}})
    await send_bytes(send, status, body, [(b"content-type", JSON), *(headers or [])])
