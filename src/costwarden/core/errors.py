"""The one exception hierarchy of costwarden.

Everything the package raises on purpose derives from :class:`CostwardenError`:

- :class:`ConfigError` -- the configuration file or environment is unusable. Raised at
  startup and by CLI commands; the message names the file and the offending key (and line,
  where the TOML parser knows it). The CLI prints it without a traceback.
- :class:`StorageError` -- the database cannot be reached or migrated.
- :class:`NotFound` -- an admin/CLI operation names an org, project or key that does not
  exist.
- :class:`InvalidInput` -- an admin/CLI operation got a value it cannot accept.
- :class:`Conflict` -- an admin/CLI operation conflicts with what exists: it would overwrite a
  config-file tier or alert channel, delete a tier an org is on, or close a cycle of fallback
  chains.
- :class:`GatewayError` -- a request through the gateway is refused or failed. It carries
  the HTTP status and the error ``type``/``code`` of the error contract (docs/errors.md), and the
  gateway renders it OpenAI-shaped or Anthropic-shaped depending on the route. Subclasses
  name each row of that contract (``BadRequest``, ``AuthenticationFailed``,
  ``ModelNotFound``, ``RequestTooLarge``, ``BudgetExceeded``, ``RateLimited``,
  ``ServiceDisabled`` (kill switch), ``NoHealthyDeployment`` (every candidate failing and no
  degraded template), ``UpstreamError``, ``UpstreamTimeout``). ``RequestHeaderFieldsTooLarge``
  and ``RequestTimeout`` are answered by the server's connection protocol (app/server.py), before
  or instead of the app, for a request head that is too large or a head or body that is late.
- :class:`ClientDisconnected` -- the client went away before its request body was read
  whole. There is no one left to answer: the request is dropped, nothing is forwarded or
  billed.

Nothing here may carry a secret (a provider key or a virtual key) in its message.
"""

from __future__ import annotations

from typing import Any


class CostwardenError(Exception):
    """Base of every error costwarden raises on purpose."""


class ConfigError(CostwardenError):
    """The configuration cannot be used; the message says where and why."""


class StorageError(CostwardenError):
    """The database cannot be reached, read or migrated."""


class NotFound(CostwardenError):
    """An org, project or key named by an operator does not exist."""


class InvalidInput(CostwardenError):
    """An operator supplied a value that cannot be accepted."""


class Conflict(CostwardenError):
    """The request conflicts with the current state (admin API: 409)."""


class NotSignedIn(CostwardenError):
    """No valid credential: a missing, wrong, revoked or expired admin token, admin key, JWT
    or session (admin API: 401; dashboard: sent to sign-in)."""


class Forbidden(CostwardenError):
    """A valid principal asked for what its role does not allow: another org's data, a write
    by a viewer, a platform-wide setting by an org_admin (403)."""


class AdminApiOff(Forbidden):
    """The admin API has no admin token set and the request carries no other credential
    (403 ``admin_disabled``)."""


class GatewayError(CostwardenError):
    """A gateway request is refused or failed; rendered per the error contract."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class ContextTooLong(BadRequest):
    """400: the prompt and output cap exceed every candidate's context window: retrying,
    which the SDKs do for 5xx, can never help."""

    code = "context_length_exceeded"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "model_not_found"
    code = "model_not_found"


class RequestTooLarge(GatewayError):
    status = 413
    type = "request_too_large"
    code = "request_too_large"


class RequestHeaderFieldsTooLarge(GatewayError):
    """431: the request line and headers together exceed ``server.max_header_bytes``."""

    status = 431
    type = "request_too_large"
    code = "request_header_fields_too_large"


class RequestTimeout(GatewayError):
    """408: the request head or body did not arrive in time (``server.*_timeout_seconds``)."""

    status = 408
    type = "request_timeout"
    code = "request_timeout"


class ClientDisconnected(CostwardenError):
    """The client closed the connection (or it was closed for being too slow) before the
    request body was read whole; nothing of the request may be forwarded or billed."""


class BudgetExceeded(GatewayError):
    """402: the money is spent. Deliberately not 429, which SDKs retry."""

    status = 402
    type = "budget_exceeded"
    code = "budget_exceeded"


class RateLimited(GatewayError):
    """429: a rate limit is full, or a budget's room is held by requests still in flight."""

    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class BudgetInFlight(RateLimited):
    """429: the budget's remaining room is held by other requests' reservations, not spent."""

    code = "budget_reservations_in_flight"


class SessionSleeping(RateLimited):
    """429: the agent session's budget of a window that resets is spent; it wakes then
    (``wake_at``, ``Retry-After``). A 429, unlike a spent budget's 402: waiting helps."""

    code = "session_sleeping"


class SessionExhausted(BudgetExceeded):
    """402: the agent session's lifetime budget is spent; it never wakes."""

    code = "session_budget_exhausted"


class SessionHeld(GatewayError):
    """409: the agent session is paused (until its escalation is resolved) or terminated."""

    status = 409
    type = "session_conflict"
    code = "session_paused"


class SessionTerminated(SessionHeld):
    code = "session_terminated"


class SessionLooping(SessionHeld):
    """409: loop detection found this request repeating (the policy blocks, not pauses)."""

    code = "session_loop_detected"


class CountersUnavailable(GatewayError):
    """503: budget counters cannot be read, and hard budgets fail closed."""

    status = 503
    type = "service_unavailable"
    code = "budget_counters_unavailable"


class ServiceDisabled(GatewayError):
    """503: an operator switched AI off (platform-wide, for the org, or this feature)."""

    status = 503
    type = "service_disabled"
    code = "service_disabled"


class NoHealthyDeployment(GatewayError):
    """503: every candidate of the route is failing or its breaker is open, and the route
    has no degraded template."""

    status = 503
    type = "service_unavailable"
    code = "no_healthy_deployment"


class UpstreamError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class SecurityPolicyViolation(GatewayError):
    """403: the prompt scan found something the org's security policy blocks (or, failing
    closed, could not finish the scan in its time budget)."""

    status = 403
    type = "security_policy_violation"
    code = "security_policy_violation"
