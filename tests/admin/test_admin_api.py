"""The admin API against a live gateway on loopback (SQLite and PostgreSQL).

Bearer-token auth; key changes are live on the gateway at once; plaintext keys are shown
exactly once; usage equals the ledger; bad input is a 400 that changes nothing.
"""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.usage import ledger_rows
from tests.admin.conftest import AUTH, TOKEN
from tests.helpers import LiveGateway, live_gateway

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello admin"}]}


async def _chat(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"}
    return await client.post("/v1/chat/completions", json={**CHAT, **body}, headers=headers)


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/admin/keys", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def _flushed_rows(gw: LiveGateway) -> list[LedgerRecord]:
    await gw.app.ledger.flush()
    return await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000)


def _assert_error(r: httpx.Response, status: int, kind: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if kind is not None:
        assert error["type"] == kind, error
    message: str = error["message"]
    return message


# ------------------------------------------------------------------------ auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": f"Bearer {TOKEN}x"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
        {"x-api-key": TOKEN},
    ],
    ids=["none", "wrong", "longer", "basic", "no-scheme", "x-api-key"],
)
async def test_admin_requires_the_token(
    client: httpx.AsyncClient, gw: LiveGateway, headers: dict[str, str]
) -> None:
    for method, path, body in [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"org": "evil"}),
        ("POST", f"/admin/keys/{gw.key_id}/revoke", None),
        ("GET", "/admin/usage", None),
        ("GET", "/admin/orgs", None),
    ]:
        r = await client.request(method, path, json=body, headers=headers)
        message = _assert_error(r, 401, "authentication_error")
        assert TOKEN not in r.text and TOKEN not in message
    # Nothing happened: no org created, the key still works.
    assert repo.get_org_by_name(gw.app.engine, "evil") is None
    assert (await _chat(client, gw.key)).status_code == 200


async def test_admin_token_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/keys", headers={"authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200, r.text


async def test_non_ascii_token_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/keys", headers={"authorization": b"Bearer adm-secr\xe9t"})
    _assert_error(r, 401)


async def test_admin_disabled_without_token(mock: MockServer, tmp_path: Path) -> None:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/cw.db", tmp_path) as gw:
        assert gw.app.settings.admin_token is None
        async with httpx.AsyncClient(base_url=gw.base_url) as client:
            for headers in ({}, AUTH, {"authorization": "Bearer"}):
                r = await client.get("/admin/keys", headers=headers)
                message = _assert_error(r, 403, "admin_disabled")
                assert "COSTWARDEN_ADMIN_TOKEN" in message
                r = await client.post("/admin/keys", json={"org": "x"}, headers=headers)
                _assert_error(r, 403)
            assert repo.get_org_by_name(gw.app.engine, "x") is None
            # The gateway itself is unaffected.
            assert (await client.get("/healthz")).status_code == 200
            assert (await _chat(client, gw.key)).status_code == 200


# ------------------------------------------------------------------------ keys


async def test_create_key_works_at_once(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    r = await client.post(
        "/admin/keys", json={"org": "globex", "project": "api", "name": "prod"}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["key"].startswith("cw-") and data["prefix"] == data["key"][:10]
    assert re.fullmatch(r"key_[0-9a-f]{12}", data["id"])
    assert (data["org"], data["project"], data["name"]) == ("globex", "api", "prod")
    assert data["revoked_at"] is None
    # No poll interval to wait for: the very next request is served.
    served = await _chat(client, data["key"])
    assert served.status_code == 200, served.text
    org = repo.get_org_by_name(gw.app.engine, "globex")
    assert org is not None and org.id == data["org_id"]


async def test_list_keys_never_contains_plaintext(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    made = [await _create(client, org="acme", name=f"k{i}") for i in range(3)]
    other = await _create(client, org="initech")
    r = await client.get("/admin/keys", params={"org": "acme"}, headers=AUTH)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [k["id"] for k in data] == [gw.key_id] + [m["id"] for m in made]
    assert {k["org"] for k in data} == {"acme"}
    for k in data:
        assert "key" not in k and "key_hash" not in k
    for plaintext in [gw.key, other["key"], *(m["key"] for m in made)]:
        assert plaintext not in r.text
        assert plaintext[10:] not in r.text
    everything = await client.get("/admin/keys", headers=AUTH)
    assert len(everything.json()["data"]) == 5
    assert other["key"] not in everything.text and gw.key not in everything.text
    # The stored hash is not served either.
    assert repo.hash_key(gw.key) not in everything.text


async def test_list_keys_unknown_org(client: httpx.AsyncClient) -> None:
    message = _assert_error(
        await client.get("/admin/keys", params={"org": "nope"}, headers=AUTH), 404, "not_found"
    )
    assert "nope" in message


async def test_revoke_is_live_at_once_and_billed_as_auth_error(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    made = await _create(client, org="acme", project="web")
    assert (await _chat(client, made["key"])).status_code == 200
    r = await client.post(f"/admin/keys/{made['id']}/revoke", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == made["id"] and r.json()["revoked_at"] is not None
    refused = await _chat(client, made["key"])
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["type"] == "authentication_error"
    assert made["key"] not in refused.text
    request_id = refused.headers["x-request-id"]
    await gw.app.ledger.flush()
    (row,) = await asyncio.to_thread(ledger_rows, gw.app.engine, [request_id])
    assert row.status == "auth_error" and row.http_status == 401
    assert row.key_id == made["id"] and row.org_id == made["org_id"]
    assert row.project_id == made["project_id"]
    assert row.cost_usd == 0 and row.input_tokens == 0
    # Listing shows it revoked; the other key is untouched.
    listed = (await client.get("/admin/keys", params={"org": "acme"}, headers=AUTH)).json()
    state = {k["id"]: k["revoked_at"] for k in listed["data"]}
    assert state[made["id"]] is not None and state[gw.key_id] is None
    assert (await _chat(client, gw.key)).status_code == 200
    # Revoking twice is harmless and keeps the first revocation time.
    again = await client.post(f"/admin/keys/{made['id']}/revoke", headers=AUTH)
    assert again.status_code == 200 and again.json()["revoked_at"] == r.json()["revoked_at"]


async def test_unknown_key_attempt_writes_no_ledger_row(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    refused = await _chat(client, "cw-not-a-real-key")
    assert refused.status_code == 401
    rows = await _flushed_rows(gw)
    assert refused.headers["x-request-id"] not in {r.request_id for r in rows}


async def test_revoke_unknown_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/keys/key_000000000000/revoke", headers=AUTH)
    assert "key_000000000000" in _assert_error(r, 404, "not_found")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {}),
        (b"", {}),
        (b"\xff\xfe\x00", {}),
        (b"[1, 2]", {}),
        (b'"acme"', {}),
        (b"{}", {}),
        (b'{"org": null}', {}),
        (b'{"org": 5}', {}),
        (b'{"org": "   "}', {}),
        (b'{"org": "ok", "project": 3}', {}),
        (b'{"org": "ok", "name": ["x"]}', {}),
        (b'{"org": "ok", "projet": "web"}', {}),
        (b'{"org": "' + b"x" * 201 + b'"}', {}),
        (b'{"org": "a\\u0000b"}', {}),
        (b'{"project": "web"}', {"content-type": "application/json"}),
    ],
)
async def test_create_key_bad_input_is_400_and_creates_nothing(
    client: httpx.AsyncClient, gw: LiveGateway, content: bytes, headers: dict[str, str]
) -> None:
    before_keys = await asyncio.to_thread(repo.list_keys, gw.app.engine)
    before_orgs = await asyncio.to_thread(repo.list_orgs, gw.app.engine)
    r = await client.post("/admin/keys", content=content, headers={**AUTH, **headers})
    _assert_error(r, 400, "invalid_request_error")
    assert "cw-" not in r.text
    assert await asyncio.to_thread(repo.list_keys, gw.app.engine) == before_keys
    assert await asyncio.to_thread(repo.list_orgs, gw.app.engine) == before_orgs
    assert len(gw.app.keys) == len(before_keys)


async def test_list_orgs(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    await _create(client, org="beta")
    r = await client.get("/admin/orgs", headers=AUTH)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["data"]] == ["acme", "beta"]


# ------------------------------------------------------------------------ usage


def _totals(rows: list[LedgerRecord]) -> dict[str, Any]:
    return {
        "requests": len(rows),
        "cost_usd": sum((r.cost_usd for r in rows), Decimal(0)),
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
    }


def _as_totals(report: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(report["cost_usd"], str)
    return {
        "requests": report["requests"],
        "cost_usd": Decimal(report["cost_usd"]),
        "input_tokens": report["input_tokens"],
        "output_tokens": report["output_tokens"],
    }


async def test_usage_equals_the_ledger(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    other = await _create(client, org="umbrella")
    revoked = await _create(client, org="acme")
    await client.post(f"/admin/keys/{revoked['id']}/revoke", headers=AUTH)
    statuses = []
    for i in range(6):
        statuses.append((await _chat(client, gw.key, max_tokens=5 + i)).status_code)
    embed = await client.post(
        "/v1/embeddings",
        json={"model": "text-embedding-3-small", "input": ["a", "b c"]},
        headers={"authorization": f"Bearer {gw.key}"},
    )
    statuses.append(embed.status_code)
    messages = await client.post(
        "/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01"},
    )
    statuses.append(messages.status_code)
    statuses.append((await _chat(client, other["key"])).status_code)
    statuses.append((await _chat(client, revoked["key"])).status_code)
    assert statuses == [200] * 9 + [401]

    rows = await _flushed_rows(gw)
    acme_org = repo.get_org_by_name(gw.app.engine, "acme")
    assert acme_org is not None
    acme_rows = [r for r in rows if r.org_id == acme_org.id]
    assert len(acme_rows) == 9 and sum(r.status == "auth_error" for r in acme_rows) == 1
    assert _totals(acme_rows)["cost_usd"] > 0

    r = await client.get("/admin/usage", params={"org": "acme", "since": "7d"}, headers=AUTH)
    assert r.status_code == 200, r.text
    report = r.json()
    assert _as_totals(report) == _totals(acme_rows)
    assert {row["org"] for row in report["rows"]} == {"acme"}
    by_model = {row["model"]: row for row in report["rows"]}
    assert set(by_model) >= {"gpt-4o-mini", "text-embedding-3-small", "claude-haiku-4-5"}
    for model, row in by_model.items():
        mine = [x for x in acme_rows if (x.served_model or x.requested_model) == model]
        assert row["requests"] == len(mine)
        assert Decimal(row["cost_usd"]) == sum((x.cost_usd for x in mine), Decimal(0))

    everyone = (await client.get("/admin/usage", headers=AUTH)).json()
    assert _as_totals(everyone) == _totals(rows)
    future = await client.get(
        "/admin/usage", params={"org": "acme", "since": "2999-01-01"}, headers=AUTH
    )
    assert future.status_code == 200 and future.json()["requests"] == 0


async def test_usage_unknown_org_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/usage", params={"org": "nope", "since": "7d"}, headers=AUTH)
    assert "nope" in _assert_error(r, 404, "not_found")


async def test_usage_bad_since_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/usage", params={"since": "last tuesday"}, headers=AUTH)
    assert "last tuesday" in _assert_error(r, 400, "invalid_request_error")


async def test_usage_since_out_of_range_is_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/admin/usage", params={"since": "1000000d"}, headers=AUTH)
    _assert_error(r, 400)


# ------------------------------------------------------------------------ misc


async def test_healthz(client: httpx.AsyncClient, gw: LiveGateway) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "keys": len(gw.app.keys),
        "budget_counters": "shared",
        "ledger": {"database": "ok", "pending": gw.app.ledger.pending, "spooled": 0},
    }
    assert r.json()["keys"] >= 1


async def test_unknown_admin_path_and_method(client: httpx.AsyncClient) -> None:
    _assert_error(await client.get("/admin/nothing", headers=AUTH), 404)
    _assert_error(await client.delete("/admin/keys", headers=AUTH), 405)


def _check_openapi_structure(spec: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", spec["openapi"])
    assert spec["info"]["title"] and spec["info"]["version"]
    schemes = spec["components"]["securitySchemes"]
    for requirement in spec.get("security", []):
        assert set(requirement) <= set(schemes)
    for scheme in schemes.values():
        assert scheme["type"] in {"apiKey", "http", "mutualTLS", "oauth2", "openIdConnect"}
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    operation_ids: list[str] = []
    for path, item in spec["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"\{([^}]+)\}", path))
        for method, op in item.items():
            assert method in methods, (path, method)
            assert op["responses"], (path, method)
            for code, response in op["responses"].items():
                assert re.fullmatch(r"[1-5](\d\d|XX)|default", code), code
                if "$ref" in response:
                    prefix = "#/components/responses/"
                    assert response["$ref"].startswith(prefix), response
                    response = spec["components"]["responses"][response["$ref"][len(prefix) :]]
                assert isinstance(response["description"], str)
            declared = set()
            for param in op.get("parameters", []):
                assert param["in"] in {"query", "header", "path", "cookie"}
                assert "schema" in param or "content" in param
                if param["in"] == "path":
                    assert param["required"] is True
                    declared.add(param["name"])
            assert declared == templated, (path, method)
            if "operationId" in op:
                operation_ids.append(op["operationId"])
            body = op.get("requestBody")
            if body is not None:
                assert body["content"]
    assert len(operation_ids) == len(set(operation_ids))


async def test_openapi_is_valid_3_1_and_complete(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    r = await client.get("/admin/openapi.json")  # public: no token needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    spec = r.json()
    try:
        from openapi_spec_validator import validate  # type: ignore[import-not-found]
    except ImportError:
        _check_openapi_structure(spec)
    else:  # pragma: no cover - not installed in the dev venv
        validate(spec)
        _check_openapi_structure(spec)
    # Every admin route is documented, with its methods.
    served: dict[str, set[str]] = {}
    for route in gw.app.admin.routes:
        path = getattr(route, "path", "")
        if path.startswith("/admin/") and path != "/admin/openapi.json":
            served.setdefault(path, set()).update(
                m.lower() for m in (route.methods or ()) if m != "HEAD"
            )
    documented = {path: set(item) for path, item in spec["paths"].items()}
    assert documented == served
