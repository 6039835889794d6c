"""Transport failures: one table from exception and phase to the client's error and the
breaker's reason."""

from __future__ import annotations

import pytest

from costwarden.core.errors import UpstreamTimeout
from costwarden.gateway.sse import EventTooLarge
from costwarden.gateway.transport import Phase, TransportFailure, transport_failure
from costwarden.gateway.upstream import ResponseTooLarge


@pytest.mark.parametrize(
    ("exc", "phase", "status", "message", "reason"),
    [
        (TimeoutError(), "connect", 504, "upstream p did not answer in time", "timeout"),
        (TimeoutError(), "read", 504, "upstream p did not answer in time", "timeout"),
        (
            TimeoutError(),
            "stream",
            502,
            "upstream p stream broke (TimeoutError)",
            "stream broke (TimeoutError)",
        ),
        (
            ConnectionRefusedError(),
            "connect",
            502,
            "upstream p connection failed (ConnectionRefusedError)",
            "connection failed (ConnectionRefusedError)",
        ),
        (
            ConnectionResetError(),
            "read",
            502,
            "upstream p dropped the connection (ConnectionResetError)",
            "dropped the connection (ConnectionResetError)",
        ),
        (
            ResponseTooLarge("10 bytes"),
            "read",
            502,
            "upstream p sent a response larger than the limit (10 bytes)",
            "sent a response larger than the limit (10 bytes)",
        ),
        (
            EventTooLarge("an event grew past 10 bytes"),
            "stream",
            502,
            "upstream p stream broke (an event grew past 10 bytes)",
            "stream broke (an event grew past 10 bytes)",
        ),
    ],
)
def test_each_failure_maps_to_one_error_and_one_reason(
    exc: TransportFailure, phase: Phase, status: int, message: str, reason: str
) -> None:
    error, why = transport_failure(exc, "p", phase)
    assert (error.status, error.message, why) == (status, message, reason)
    assert isinstance(error, UpstreamTimeout) == (status == 504)
