"""billing.signature: the Stripe-Signature checked by the stripe package against headers
signed the way Stripe signs them (tests/helpers.stripe_signature)."""

from __future__ import annotations

import time

import orjson
import pytest

from costwarden.billing.events import BadEvent
from costwarden.billing.signature import SignatureError, StripeVerifier
from tests.helpers import stripe_signature

SECRET = "whsec_test_0123456789abcdef"
OLD = "whsec_old_fedcba9876543210"
BODY = orjson.dumps({"id": "evt_1", "type": "ping", "created": 1})


def test_a_signed_body_is_verified_and_parsed() -> None:
    verifier = StripeVerifier([SECRET], tolerance_seconds=300)
    assert verifier.verify(BODY, stripe_signature(BODY, SECRET))["id"] == "evt_1"


def test_any_configured_secret_verifies_while_rotating() -> None:
    verifier = StripeVerifier([SECRET, OLD], tolerance_seconds=300)
    assert verifier.verify(BODY, stripe_signature(BODY, OLD))["id"] == "evt_1"
    # Stripe rolling its secret sends two v1 signatures: either matching is enough
    ts = int(time.time())
    unknown = stripe_signature(BODY, "whsec_unknown", ts=ts)
    mine = stripe_signature(BODY, SECRET, ts=ts).split(",")[1]
    assert verifier.verify(BODY, f"{unknown},{mine}")["id"] == "evt_1"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing Stripe-Signature"),
        ("", "missing Stripe-Signature"),
        ("garbage", "not verified"),
        ("t=abc,v1=00", "not verified"),
        ("t=1", "not verified"),
        (stripe_signature(BODY, "whsec_wrong"), "not verified"),
        (stripe_signature(BODY + b" ", SECRET), "not verified"),  # another body
        (stripe_signature(BODY, SECRET, ts=int(time.time()) - 301), "tolerance"),
    ],
    # Ids that do not hold the clock: every xdist worker must collect the same names.
    ids=["none", "empty", "garbage", "bad-time", "no-v1", "wrong-secret", "other-body", "stale"],
)
def test_a_bad_signature_is_refused(header: str | None, message: str) -> None:
    verifier = StripeVerifier([SECRET], tolerance_seconds=300)
    with pytest.raises(SignatureError, match=message) as caught:
        verifier.verify(BODY, header)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"), [(b"{not json", "not valid JSON"), (b"\xff\xfe", "not UTF-8")]
)
def test_a_signed_body_that_is_not_json_is_refused(body: bytes, message: str) -> None:
    verifier = StripeVerifier([SECRET], tolerance_seconds=300)
    with pytest.raises(BadEvent, match=message):
        verifier.verify(body, stripe_signature(body, SECRET))


def test_no_secret_makes_no_verifier() -> None:
    with pytest.raises(ValueError, match="secret"):
        StripeVerifier([], tolerance_seconds=300)
    with pytest.raises(ValueError, match="secret"):
        StripeVerifier([" "], tolerance_seconds=300)
