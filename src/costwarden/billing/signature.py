"""The ``Stripe-Signature`` check, with the ``stripe`` package (offline: no API call).

Stripe signs ``"<timestamp>.<body>"`` with HMAC-SHA256 under the endpoint's signing secret
and sends ``t=<timestamp>,v1=<hex>`` (several ``v1`` while Stripe rolls the secret). Several
secrets may be configured (ours rolled): the body is accepted if any of them verifies it. A
timestamp older than the tolerance is refused (a replayed capture). Errors never carry a
secret: Stripe's own messages name the header's parts, not the secret.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from costwarden.billing.events import BadEvent

logger = logging.getLogger(__name__)


class SignatureError(BadEvent):
    """A missing, malformed, wrong or stale ``Stripe-Signature``."""


class StripeVerifier:
    """Verifies a webhook body against one or more signing secrets; parses it once verified."""

    def __init__(self, secrets: Sequence[str], *, tolerance_seconds: int) -> None:
        # Imported here: the package takes ~170 ms to import, paid only where billing is on.
        import stripe

        if not secrets or any(not s.strip() for s in secrets):
            raise ValueError("a verifier needs at least one non-empty secret")
        self._signature = stripe.WebhookSignature
        self._error = stripe.SignatureVerificationError
        self._secrets = tuple(s.strip() for s in secrets)
        self.tolerance_seconds = tolerance_seconds

    def verify(self, body: bytes, header: str | None) -> Any:
        """The body's JSON, if ``header`` signs it; SignatureError or BadEvent if not."""
        if not header or not header.strip():
            raise SignatureError("missing Stripe-Signature header")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadEvent("the body is not UTF-8 text") from None
        reason = ""
        for secret in self._secrets:
            try:
                self._signature.verify_header(text, header, secret, self.tolerance_seconds)
            except self._error as exc:
                reason = str(exc.user_message or exc)
                continue
            break
        else:
            raise SignatureError(f"Stripe-Signature not verified: {reason}")
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise BadEvent("the body is not valid JSON") from None
