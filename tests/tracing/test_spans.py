"""Request spans: the attributes of a record (GenAI conventions, nothing secret), and a live
gateway exporting over OTLP/HTTP to a real receiver (protobuf decoded with the OTLP schema):
one span per request, matching the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from costwarden.tracing.spans import span_attributes
from tests.helpers import live_gateway

HI: Any = [{"role": "user", "content": "hi"}]


def test_attributes_of_a_record() -> None:
    record = LedgerRecord(
        request_id="req_1",
        ts=datetime(2027, 1, 1, tzinfo=UTC),
        endpoint="messages",
        status="upstream_error",
        http_status=502,
        org_id="org_1",
        key_id="key_1",
        provider="anthropic",
        requested_model="claude-haiku-4-5",
        input_tokens=12,
        cost_usd=Decimal("0.000012"),
    )
    attributes = span_attributes(record)
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.model"] == "claude-haiku-4-5"
    assert "gen_ai.response.model" not in attributes  # no answer, no response model
    assert attributes["gen_ai.usage.input_tokens"] == 12
    assert attributes["costwarden.cost_usd"] == "0.000012"
    assert attributes["error.type"] == "upstream_error"
    assert "costwarden.project_id" not in attributes  # None values are left out


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    """A real OTLP/HTTP traces endpoint on loopback that keeps what it is sent."""
    got: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        got.append(message)
        return web.Response(content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1/traces", got
    finally:
        await runner.cleanup()


async def test_a_gateway_exports_one_span_per_request(
    mock: MockServer,
    tmp_path: Path,
    receiver: tuple[str, list[ExportTraceServiceRequest]],
) -> None:
    endpoint, got = receiver
    extra = f'[otel]\nenabled = true\nendpoint = "{endpoint}"\nservice_name = "gw-test"\n'
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, extra_toml=extra) as gw:
        async with openai.AsyncOpenAI(
            base_url=gw.openai_url, api_key=gw.key, max_retries=0
        ) as client:
            for _ in range(3):
                await client.chat.completions.create(model="gpt-4o-mini", messages=HI)
            with pytest.raises(openai.NotFoundError):
                await client.chat.completions.create(model="no-such-model", messages=HI)
        engine = gw.app.engine
    # the gateway has shut down: what was queued is spanned and flushed
    spans = [
        (resource.resource, span)
        for message in got
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(spans) == 4
    resource, _ = spans[0]
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "gw-test"
    rows = {r.request_id: r for r in ledger_rows(engine)}
    for _, span in spans:
        attributes = {a.key: a.value for a in span.attributes}
        row = rows[attributes["costwarden.request_id"].string_value]
        assert attributes["gen_ai.usage.input_tokens"].int_value == row.input_tokens
        assert attributes["gen_ai.usage.output_tokens"].int_value == row.output_tokens
        assert Decimal(attributes["costwarden.cost_usd"].string_value) == row.cost_usd
        assert attributes["gen_ai.request.model"].string_value == row.requested_model
        assert span.end_time_unix_nano - span.start_time_unix_nano == pytest.approx(
            row.latency_ms * 1e6, abs=1e6
        )
        assert gw.key not in str(span)
    errors = [s for _, s in spans if s.status.code == 2]  # STATUS_CODE_ERROR
    assert len(errors) == 1
