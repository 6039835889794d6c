"""Pieces every part of the admin API's OpenAPI document is built from: the error responses
and the helpers that write an operation, its parameters and its body."""

from __future__ import annotations

from typing import Any

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
# Every error an operation can answer, by status: (component name, description).
ERRORS: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "invalid_request_error: malformed JSON, a body nested over 32 "
            "levels, an unknown field, a value the schema refuses"),
    "401": ("Unauthorized", "authentication_error: no credential, or a wrong admin token, "
            "an unknown or revoked admin key, a refused JWT"),
    "403": ("Forbidden", "permission_error: the principal's role does not allow it (another "
            "org's data or changes, platform-wide data or settings for an org-scoped "
            "principal, any change by a viewer); admin_disabled: no COSTWARDEN_ADMIN_TOKEN "
            "is set and no other credential was sent"),
    "404": ("NotFound", "not_found: an org, project, key, tier, route or deployment named "
            "in the path, query or body does not exist"),
    "409": ("Conflict", "conflict: a config-file tier or alert channel, a tier still in "
            "use, a fallback cycle, or a concurrent write"),
    "413": ("TooLarge", "request_too_large: the body is over 1 MiB"),
    "503": ("Unavailable", "service_unavailable: the database cannot be reached; nothing "
            "was changed; retry after Retry-After seconds"),
}
RESPONSES: dict[str, Any] = {
    name: {"description": text, "content": {"application/json": {"schema": ERROR_BODY}}}
    for name, text in ERRORS.values()
}
RESPONSES["Unavailable"]["headers"] = {
    "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
}
# What a request can run into besides its own errors.
AUTH = ("401", "403")
READ = (*AUTH, "503")  # reads the database
WRITE = (*AUTH, "400", "413", "503")  # takes a JSON body, writes the database


def op(summary: str, ok: dict[str, Any], *codes: str, **extra: Any) -> dict[str, Any]:
    """An operation answering ``ok`` (status -> response) or one of the errors ``codes``."""
    responses = dict(ok)
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{ERRORS[code][0]}"}
    return {"summary": summary, **extra, "responses": responses}


def ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return {"200": response}


def json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def query(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **extra}


def path_param(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, **extra}
