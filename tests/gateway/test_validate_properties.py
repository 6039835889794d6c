"""Request validation over bodies hypothesis makes: every body is either accepted, with what
the gateway relies on holding, or refused with a 400 of the documented shape (docs/errors.md)
-- never an exception that would be a 500. Checked on the pure function, then end to end
through a live gateway, whose answer must agree with the function's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden.core.errors import BadRequest
from costwarden.gateway.validate import principal_fields, validate_payload
from costwarden.mock import MockServer
from tests.helpers import anthropic_error, live_gateway, openai_error

JSON = dict[str, Any]
ENDPOINTS = {
    "chat.completions": "/v1/chat/completions",
    "messages": "/v1/messages",
    "embeddings": "/v1/embeddings",
}
MODELS = {"chat.completions": "gpt-4o-mini", "messages": "claude-haiku-4-5",
          "embeddings": "text-embedding-3-small"}  # fmt: skip

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def _near(keys: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[JSON]:
    return st.fixed_dictionaries({}, optional={k: v | json_values for k, v in keys.items()})


def _valid(endpoint: str) -> st.SearchStrategy[JSON]:
    text = st.text(min_size=1, max_size=20)
    if endpoint == "embeddings":
        return st.fixed_dictionaries({"model": st.just(MODELS[endpoint]), "input": text})
    messages = st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": text}),
                        min_size=1, max_size=3)  # fmt: skip
    caps = {"max_tokens": st.integers(1, 64)}
    return st.fixed_dictionaries(
        {"model": st.just(MODELS[endpoint]), "messages": messages,
         **(caps if endpoint == "messages" else {})},
        optional={"stream": st.booleans(), **({} if endpoint == "messages" else caps)},
    )  # fmt: skip


FIELDS = ["model", "messages", "input", "stream", "stream_options", "max_tokens",
          "max_completion_tokens", "n", "user"]  # fmt: skip
_field_values = (
    json_values
    | st.integers(-2, 64)
    | st.lists(_near({"role": st.sampled_from(["user", "assistant"]), "content": st.text()}),
               max_size=2)
)  # fmt: skip


def payloads(endpoint: str) -> st.SearchStrategy[JSON]:
    """A valid body with up to two fields removed or changed to anything: bodies that reach
    every check, valid and invalid ones both common."""

    def edit(base: JSON, removed: set[str], changed: JSON) -> JSON:
        return {**{k: v for k, v in base.items() if k not in removed}, **changed}

    return st.builds(
        edit,
        _valid(endpoint),
        st.sets(st.sampled_from(FIELDS), max_size=1),
        st.dictionaries(st.sampled_from(FIELDS), _field_values, max_size=2),
    )


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    return (
        payloads(endpoint).map(orjson.dumps)
        | json_values.map(orjson.dumps)
        | st.binary(max_size=40)
    )


def _verdict(endpoint: str, body: bytes) -> JSON | BadRequest:
    try:
        return validate_payload(endpoint, body)
    except BadRequest as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(data=st.data(), endpoint=st.sampled_from(sorted(ENDPOINTS)))
def test_every_body_is_accepted_whole_or_refused_with_a_400(
    data: st.DataObject, endpoint: str
) -> None:
    body = data.draw(bodies(endpoint))
    verdict = _verdict(endpoint, body)
    if isinstance(verdict, BadRequest):
        assert verdict.status == 400 and verdict.type == "invalid_request_error"
        assert verdict.message
        return
    payload = verdict
    assert payload == orjson.loads(body), "validation changes nothing"
    assert isinstance(payload["model"], str) and payload["model"]
    if endpoint == "embeddings":
        assert isinstance(payload["input"], str | list)
        return
    messages = payload["messages"]
    assert isinstance(messages, list) and messages
    assert all(isinstance(m, dict) and isinstance(m["role"], str) for m in messages)
    assert isinstance(payload.get("stream", False), bool)
    for cap in ("max_tokens", "max_completion_tokens", "n"):
        value = payload.get(cap)
        if value is not None and (cap != "max_completion_tokens" or endpoint != "messages"):
            if cap == "n" and endpoint != "chat.completions":
                continue
            assert type(value) is int and value >= 1, (cap, value)
    if endpoint == "messages":
        assert "max_tokens" in payload


_header_text = st.text(max_size=260)


@settings(max_examples=200, deadline=None)
@given(
    endpoint=st.sampled_from(sorted(ENDPOINTS)),
    payload=_near({"user": _header_text, "metadata": _near({"user_id": _header_text})}),
    headers=st.dictionaries(
        st.sampled_from([b"x-costwarden-user", b"x-costwarden-session", b"x-costwarden-tags"]),
        _header_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    ),
)
def test_principal_fields_are_read_whole_or_refused(
    endpoint: str, payload: JSON, headers: dict[bytes, bytes]
) -> None:
    try:
        user, session, tags = principal_fields(endpoint, payload, headers)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message and exc.param
        return
    for label in (user, session, *tags, *tags.values()):
        assert label is None or len(label) <= 200
    assert len(tags) <= 20


async def test_the_gateway_answers_any_body_as_validation_says(
    mock: MockServer, tmp_path: Path
) -> None:
    """Through a live gateway: a body validation refuses is a 400 carrying its message, in
    the endpoint's error shape; any other gets no 5xx."""
    async with live_gateway(mock, f"sqlite:///{tmp_path}/cw.db", tmp_path) as gw:
        headers = {"authorization": f"Bearer {gw.key}", "x-api-key": gw.key,
                   "content-type": "application/json"}  # fmt: skip

        @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(data=st.data(), endpoint=st.sampled_from(sorted(ENDPOINTS)))
        def through_the_gateway(client: httpx.Client, data: st.DataObject, endpoint: str) -> None:
            body = data.draw(bodies(endpoint))
            r = client.post(ENDPOINTS[endpoint], content=body, headers=headers)
            seen.add(r.status_code)
            assert r.status_code < 500, (r.status_code, body, r.text)
            verdict = _verdict(endpoint, body)
            if isinstance(verdict, BadRequest):
                assert r.status_code == 400, (body, r.text)
            if r.status_code >= 400:
                shape = anthropic_error if endpoint == "messages" else openai_error
                error = shape(r.json())
                if isinstance(verdict, BadRequest):
                    assert error["message"] == verdict.message
                    assert error["type"] == "invalid_request_error"

        def run() -> None:
            with httpx.Client(base_url=gw.base_url, timeout=10) as client:
                through_the_gateway(client)

        seen: set[int] = set()
        await asyncio.to_thread(run)
    # Both ways were taken: bodies served by the mock, and bodies refused.
    assert 200 in seen and 400 in seen, seen
