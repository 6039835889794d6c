"""``[otel]``: OpenTelemetry spans for requests (the ``otel`` extra).

The tracing package does not import config: the app factory builds the exporter from these.
"""

from __future__ import annotations

import dataclasses

from costwarden.config.fields import setting as _setting

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"


@dataclasses.dataclass(slots=True)
class OtelSettings:
    enabled: bool = _setting(
        False,
        "Export one OpenTelemetry span per request (GenAI semantic-convention attributes) over "
        "OTLP/HTTP; needs pip install 'costwarden[otel]'. Spans are built off the request path.",
        "COSTWARDEN_OTEL_ENABLED",
    )
    endpoint: str = _setting(
        DEFAULT_ENDPOINT,
        "The OTLP/HTTP traces endpoint (protobuf), e.g. a collector's http://host:4318/v1/traces.",
        "COSTWARDEN_OTEL_ENDPOINT",
    )
    service_name: str = _setting(
        "costwarden", "service.name of the spans' resource.", "COSTWARDEN_OTEL_SERVICE_NAME"
    )


def otel_problem(o: OtelSettings) -> tuple[str, str] | None:
    """(field, what is wrong) for the first bad ``[otel]`` value, or None."""
    if not o.endpoint.startswith(("http://", "https://")):
        return "endpoint", "must be an http:// or https:// URL"
    if not o.service_name.strip():
        return "service_name", "must not be empty"
    return None
