"""``[metrics]``: the Prometheus endpoint (``GET /metrics``) and the bounds on its labels.

The metrics package does not import config: the app factory reads these fields and passes
plain values (``costwarden.app.observability``).
"""

from __future__ import annotations

import dataclasses

from costwarden.config.fields import setting as _setting


@dataclasses.dataclass(slots=True)
class MetricsSettings:
    enabled: bool = _setting(
        True,
        "Serve GET /metrics (Prometheus text format) and count every request for it; false "
        "answers 404 there and counts nothing.",
        "COSTWARDEN_METRICS_ENABLED",
    )
    public: bool = _setting(
        False,
        "Serve /metrics without a token. By default it asks for the admin token as a bearer "
        "token (Authorization: Bearer $COSTWARDEN_ADMIN_TOKEN, as the admin API does; 403 "
        "when no admin token is set): its labels name orgs, models and spend.",
        "COSTWARDEN_METRICS_PUBLIC",
    )
    max_orgs: int = _setting(
        1000,
        "Distinct org labels the request metrics keep; rows of further orgs are counted under "
        'org="_other" (costwarden_metrics_label_overflow_total says how many). At least 1.',
        "COSTWARDEN_METRICS_MAX_ORGS",
    )
    max_models: int = _setting(
        100,
        "Distinct model labels kept for requested model names that are not a route (a route's "
        'name always has its own); further ones are counted under model="_other", so clients '
        "sending random model names cannot grow the metrics. At least 0.",
        "COSTWARDEN_METRICS_MAX_MODELS",
    )
    max_limits: int = _setting(
        1000,
        "Limits exported as costwarden_limit_* gauges at most (platform, org and project "
        "limits first); the rest are counted in costwarden_limits_not_exported. At least 0.",
        "COSTWARDEN_METRICS_MAX_LIMITS",
    )


def metrics_problem(m: MetricsSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first out-of-range ``[metrics]`` value, or None."""
    if m.max_orgs < 1:
        return "max_orgs", "must be at least 1"
    for name in ("max_models", "max_limits"):
        if getattr(m, name) < 0:
            return name, "must be zero or more"
    return None
