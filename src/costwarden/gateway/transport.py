"""An upstream exchange's transport failures, mapped in one place.

The upstream client raises built-in exceptions (``TimeoutError``; ``OSError`` for a
connection that cannot be made, breaks or carries what is not HTTP, ``ResponseTooLarge``
among them) and the SSE splitter raises ``EventTooLarge``. :func:`transport_failure` turns
one into the error the client gets (502, or 504 for a timeout) and the reason the circuit
breaker records -- every such failure counts against the deployment. A failed certificate
check, another TLS failure and a proxy's refusal say what they are (an operator's fix, not
a provider's outage); a proxy's error names the proxy by host and port only.
"""

from __future__ import annotations

import ssl
from typing import Literal

from costwarden.core.errors import UpstreamError, UpstreamTimeout
from costwarden.gateway.egress import ProxyError
from costwarden.gateway.sse import EventTooLarge
from costwarden.gateway.upstream import ResponseTooLarge

# connect: sending the request and waiting for the headers; read: a whole body; stream: a
# relayed event stream.
Phase = Literal["connect", "read", "stream"]
TransportFailure = TimeoutError | OSError | EventTooLarge
_WHAT = {"connect": "connection failed", "read": "dropped the connection", "stream": "stream broke"}


def transport_failure(
    exc: TransportFailure, provider: str, phase: Phase
) -> tuple[UpstreamError, str]:
    """(the client's error, the breaker's reason) for ``exc`` from ``provider``'s upstream."""
    too_large = isinstance(exc, ResponseTooLarge | EventTooLarge)
    if phase == "stream":
        reason = f"stream broke ({exc if too_large else type(exc).__name__})"
    elif too_large:
        reason = f"sent a response larger than the limit ({exc})"
    elif isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"upstream {provider} did not answer in time"), "timeout"
    else:
        reason = f"{_WHAT[phase]} ({_cause(exc)})"
    return UpstreamError(f"upstream {provider} {reason}"), reason


def _cause(exc: BaseException) -> str:
    # OpenSSL's errors carry these; one raised from Python code may not.
    why = getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {why}" if why else "certificate verify failed"
    if isinstance(exc, ssl.SSLError) and why:  # e.g. TLSV13_ALERT_CERTIFICATE_REQUIRED
        return f"TLS error: {str(why).lower().replace('_', ' ')}"
    if isinstance(exc, ProxyError):
        return str(exc)
    return type(exc).__name__
