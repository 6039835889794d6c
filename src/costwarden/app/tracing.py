"""The app's OpenTelemetry spans (``[otel]``), built only when enabled: the ``otel`` extra's
packages are imported here, lazily, so a gateway without them starts as before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from costwarden.config.otel import OtelSettings
from costwarden.core.errors import ConfigError

if TYPE_CHECKING:
    from costwarden.tracing.spans import RequestSpans


def request_spans(settings: OtelSettings) -> RequestSpans | None:
    """Spans exported over OTLP/HTTP to ``settings.endpoint``; None when tracing is off."""
    if not settings.enabled:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from costwarden.tracing.spans import RequestSpans
    except ImportError:
        raise ConfigError(
            "otel.enabled is true but OpenTelemetry is not installed: "
            "pip install 'costwarden[otel]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.endpoint)))
    return RequestSpans(provider)
