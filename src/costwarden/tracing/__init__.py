"""OpenTelemetry spans for requests (optional: ``pip install costwarden[otel]``)."""
