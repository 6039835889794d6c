"""``[billing]``: plan changes and payment states from the payment provider's webhooks
(Stripe; see ``costwarden.billing`` and docs/billing.md).

The billing package does not import config: the app maps these values into its
``BillingPolicy``. The webhook's signing secret is not in the file: it is read from
``COSTWARDEN_STRIPE_WEBHOOK_SECRET`` (``Settings.stripe_webhook_secret``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from costwarden.config.fields import NAME_RE
from costwarden.config.fields import section as _section
from costwarden.config.fields import setting as _setting
from costwarden.config.lines import ConfigText

WEBHOOK_SECRET_ENV = "COSTWARDEN_STRIPE_WEBHOOK_SECRET"
MAX_PRICE_TIERS = 1000


@dataclasses.dataclass(slots=True)
class BillingSettings:
    # Read by billing_section (a table of strings, which the generic fields do not take).
    price_tiers: dict[str, str] = dataclasses.field(
        default_factory=dict,
        metadata={
            "help": "Stripe price lookup key -> plan tier, e.g. { pro_monthly = \"pro\", "
            "pro_yearly = \"pro\" }: a live subscription puts its org on the tier of its "
            "first item whose price's lookup key is here. The tiers are the config file's "
            "[[tiers]] or the tiers API's.",
            "env": None,
        },
    )
    free_tier: str = _setting(
        "free",
        "The tier an org goes to when its subscription is deleted, canceled or unpaid (it "
        "must exist, in [[tiers]] or the tiers API, for that to happen).",
        "COSTWARDEN_BILLING_FREE_TIER",
    )
    grace_period_hours: float = _setting(
        72.0,
        "After an invoice's payment fails the org keeps working this long (from the failure); "
        "then its kill switch (ai) is turned off until an invoice is paid. 0: at once.",
        "COSTWARDEN_BILLING_GRACE_PERIOD_HOURS",
    )
    suspension_message: str = _setting(
        "billing: payment failed",
        "What clients of an org switched off for non-payment are told (the 503's message).",
    )
    tolerance_seconds: int = _setting(
        300,
        "A webhook whose signature timestamp is older than this many seconds is refused "
        "(a replayed capture): Stripe's own default.",
        "COSTWARDEN_BILLING_TOLERANCE_SECONDS",
    )
    check_interval_seconds: float = _setting(
        60.0,
        "How often the one gateway process holding the billing lease looks for orgs whose "
        "grace period has passed.",
        "COSTWARDEN_BILLING_CHECK_INTERVAL_SECONDS",
    )


def billing_section(raw: Any, ctx: ConfigText) -> BillingSettings:
    """``[billing]`` read: its price_tiers table checked here, the rest by the fields."""
    if not isinstance(raw, Mapping):
        raise ctx.fail("billing", "must be a table", "billing")
    rest = dict(raw)
    tiers = rest.pop("price_tiers", {})
    settings: BillingSettings = _section(BillingSettings, rest, "billing", ctx)
    if not isinstance(tiers, Mapping):
        raise ctx.fail("billing.price_tiers", "must be a table of lookup key = tier", None)
    if len(tiers) > MAX_PRICE_TIERS:
        raise ctx.fail("billing.price_tiers", f"at most {MAX_PRICE_TIERS} lookup keys", None)
    for key, tier in tiers.items():
        if not isinstance(tier, str) or not NAME_RE.match(tier):
            raise ctx.fail(
                "billing.price_tiers",
                f"{key!r}: the tier must be a tier name (letters, digits, '_', '-', '.')",
                None,
            )
    settings.price_tiers = {str(k).strip(): v for k, v in tiers.items()}
    return settings


def billing_problem(b: BillingSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[billing]`` value, or None."""
    if not NAME_RE.match(b.free_tier):
        return "free_tier", "must be a tier name (letters, digits, '_', '-', '.')"
    if not 0 <= b.grace_period_hours < math.inf:
        return "grace_period_hours", "must be 0 or more"
    if not 1 <= b.tolerance_seconds <= 86_400:
        return "tolerance_seconds", "must be from 1 to 86400"
    if not 0 < b.check_interval_seconds <= 86_400:
        return "check_interval_seconds", "must be a positive number of seconds (at most a day)"
    if not b.suspension_message.strip() or len(b.suspension_message) > 500:
        return "suspension_message", "must be one line of 1 to 500 characters"
    if any(ch in b.suspension_message for ch in "\r\n"):
        return "suspension_message", "must be one line of 1 to 500 characters"
    return None


def webhook_secrets(value: str | None) -> tuple[str, ...]:
    """The signing secrets of ``COSTWARDEN_STRIPE_WEBHOOK_SECRET``, comma-separated to rotate
    (every one is accepted); empty: billing webhooks are off."""
    if not value:
        return ()
    return tuple(s.strip() for s in value.split(",") if s.strip())
