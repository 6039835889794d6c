"""Request validation and principal fields: plain functions over the parsed body.

Validation is deliberately shallow: it checks what the gateway itself relies on (model,
messages, stream flags, token caps) and leaves every other field, known or not, untouched
for the upstream to judge.
"""

from __future__ import annotations

from typing import Any

import orjson

from costwarden.budgets.limits import MAX_SUBJECT_LEN
from costwarden.core.errors import BadRequest

MAX_TAGS = 20
MAX_LABEL = MAX_SUBJECT_LEN  # an end user, session, tag name or value: a budget's subject


def validate_payload(endpoint: str, body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("request body is empty; expected a JSON object")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc.msg} (at byte {exc.pos})") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        raise BadRequest("missing required field 'model'", param="model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    if endpoint == "embeddings":
        _check_input(payload)
        return payload
    messages = payload.get("messages")
    if messages is None:
        raise BadRequest("missing required field 'messages'", param="messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
        if not isinstance(message.get("role"), str):
            raise BadRequest(f"'messages[{i}].role' must be a string", param=f"messages[{i}].role")
    if "stream" in payload and not isinstance(payload["stream"], bool):
        raise BadRequest("'stream' must be true or false", param="stream")
    if "stream_options" in payload and not isinstance(payload["stream_options"], dict | None):
        raise BadRequest("'stream_options' must be an object", param="stream_options")
    caps = ("max_tokens", "max_completion_tokens") if endpoint != "messages" else ("max_tokens",)
    for cap in caps:
        if cap in payload and payload[cap] is not None:
            _check_positive_int(payload[cap], cap)
    # Every choice is generated and billed: the budget's bound multiplies by it.
    if endpoint == "chat.completions" and payload.get("n") is not None:
        _check_positive_int(payload["n"], "n")
    if endpoint == "messages" and "max_tokens" not in payload:
        raise BadRequest("missing required field 'max_tokens'", param="max_tokens")
    return payload


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"'{name}' must be a positive integer", param=name)


def _check_input(payload: dict[str, Any]) -> None:
    value = payload.get("input")
    if value is None:
        raise BadRequest("missing required field 'input'", param="input")
    if isinstance(value, str):
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            return
        if all(isinstance(v, list) for v in value):
            return
    raise BadRequest(
        "'input' must be a string, an array of strings or an array of token arrays",
        param="input",
    )


def principal_fields(
    endpoint: str, payload: dict[str, Any], headers: dict[bytes, bytes]
) -> tuple[str | None, str | None, dict[str, str]]:
    """(end user, agent session, tags) from the request: headers win over body fields.

    Each names a budget scope, so none is ever cut short: two users sharing a long prefix
    would share a budget, and a dropped tag would skip its budget. Too long is a 400.
    """
    user = _header(headers, b"x-costwarden-user")
    if user is None:
        if endpoint == "messages":
            metadata = payload.get("metadata")
            candidate = metadata.get("user_id") if isinstance(metadata, dict) else None
            where = "metadata.user_id"
        else:
            candidate = payload.get("user")
            where = "user"
        if isinstance(candidate, str) and candidate:
            user = _label(candidate, where)
    session = _header(headers, b"x-costwarden-session")
    if session is not None and session.startswith(("@key:", "@project:")):
        raise BadRequest(
            "x-costwarden-session: @key: and @project: name session defaults, not a session",
            param="x-costwarden-session",
        )
    raw_tags = headers.get(b"x-costwarden-tags")
    return user, session, parse_tags(raw_tags.decode("utf-8", "replace")) if raw_tags else {}


def parse_tags(raw: str) -> dict[str, str]:
    """``team=search,feature=summaries`` -> {"team": "search", "feature": "summaries"}.

    At most ``MAX_TAGS`` tags of at most ``MAX_LABEL`` characters per name and per value;
    beyond either the header is refused whole (400), never shortened.
    """
    tags: dict[str, str] = {}
    for item in raw.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if not name:
            continue
        if len(tags) >= MAX_TAGS:
            raise BadRequest(
                f"x-costwarden-tags: at most {MAX_TAGS} tags per request", param="x-costwarden-tags"
            )
        tags[_label(name, "x-costwarden-tags")] = _label(value.strip(), "x-costwarden-tags")
    return tags


def _label(text: str, where: str) -> str:
    if len(text) > MAX_LABEL:
        raise BadRequest(
            f"{where}: names and values are limited to {MAX_LABEL} characters "
            f"(got {len(text)})",
            param=where,
        )
    return text


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    text = value.decode("utf-8", "replace").strip()
    return _label(text, name.decode()) if text else None
