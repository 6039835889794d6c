"""Reading an OpenAI Chat Completions request, for every translation out of it (Anthropic
Messages, Gemini, Bedrock Converse).

What a message may hold and what is refused is the same whatever the target: text-only
content, an assistant turn's texts, refusal and tool calls, a tool call's JSON arguments, a
base64 data URL. This module reads those once and returns plain pieces; each translation
only shapes them into its own blocks. A request that cannot be read is a
:class:`TranslationError` (a 400 naming the field), never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from costwarden.core.errors import BadRequest

JSON = dict[str, Any]

DATA_URL = re.compile(r"data:(?P<media>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)", re.DOTALL)


class TranslationError(BadRequest):
    """The request cannot be expressed faithfully in the other provider's format."""

    code = "untranslatable_request"


def bad(param: str, why: str) -> TranslationError:
    return TranslationError(f"{param}: {why}", param=param)


class ToolCall(NamedTuple):
    id: str
    name: str
    arguments: JSON


def texts(content: Any, param: str) -> list[str]:
    """The texts of a message whose content may only be text, empty ones left out (every
    target refuses or ignores an empty text block)."""
    if content is None or isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        raise bad(f"{param}.content", "must be a string or an array")
    found: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text") if kind == "text" else None
        if not isinstance(text, str):
            raise bad(f"{param}.content[{j}]", f"only text parts are allowed here, not {kind!r}")
        if text:
            found.append(text)
    return found


def assistant(message: JSON, param: str, target: str) -> tuple[list[str], list[ToolCall]]:
    """An assistant turn's texts (its refusal when it has no other) and tool calls."""
    if message.get("audio") is not None:
        raise bad(f"{param}.audio", f"audio cannot be sent to {target}")
    if message.get("function_call") is not None:
        raise bad(f"{param}.function_call", "legacy function calls are not translated")
    content = message.get("content")
    found: list[str] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            text = part.get(kind) if kind == "refusal" else part.get("text") if kind else None
            if kind not in ("text", "refusal") or not isinstance(text, str):
                raise bad(f"{param}.content[{j}]", f"assistant part {kind!r} cannot be translated")
            if text:
                found.append(text)
    else:
        found.extend(texts(content, param))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal and not found:
        found.append(refusal)
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise bad(f"{param}.tool_calls", "must be an array")
    return found, [
        tool_call(call, f"{param}.tool_calls[{j}]", target) for j, call in enumerate(calls or [])
    ]


def tool_call(call: Any, param: str, target: str) -> ToolCall:
    """A function tool call with its arguments parsed (they must encode a JSON object)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or call.get("type", "function") != "function":
        raise bad(param, "must be a function tool call")
    call_id, name, arguments = call.get("id"), fn.get("name"), fn.get("arguments")
    if not (isinstance(call_id, str) and call_id and isinstance(name, str) and name):
        raise bad(param, "needs an id and a function name")
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        parsed: Any = {}  # models send empty arguments to functions without parameters
    elif isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise bad(f"{param}.function.arguments", "is not valid JSON") from None
    else:
        raise bad(f"{param}.function.arguments", "must be a JSON string")
    if not isinstance(parsed, dict):
        raise bad(f"{param}.function.arguments", f"must encode a JSON object for {target}")
    return ToolCall(call_id, name, parsed)


def user_parts(
    content: Any,
    param: str,
    target: str,
    text: Callable[[str], JSON],
    image: Callable[[Any, str], JSON],
) -> list[JSON]:
    """A user turn's parts in the target's shape: ``text`` makes a text block, ``image`` an
    image block from an ``image_url`` part (and refuses what the target cannot take). Audio
    is refused: every target prices it apart from text, so it could not be billed exactly."""
    if not isinstance(content, list):
        return [text(t) for t in texts(content, param)]
    parts: list[JSON] = []
    for j, part in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.extend(text(t) for t in texts([part], param))
        elif kind == "image_url":
            parts.append(image(part.get("image_url"), where))
        elif kind == "input_audio":
            raise bad(where, f"audio input cannot be translated to {target}")
        else:
            raise bad(where, f"content part type {kind!r} cannot be translated to {target}")
    return parts


def refuse_more_than_text(payload: JSON, target: str) -> None:
    """One text answer is all the targets give: ``n > 1`` and other output modalities are
    refused, not served as something the client did not ask for."""
    if payload.get("n") not in (None, 1):
        raise bad("n", f"more than one choice cannot be translated: {target} answers once")
    modalities = payload.get("modalities")
    if isinstance(modalities, list) and any(m != "text" for m in modalities):
        raise bad("modalities", f"only text output can be translated to {target}")


def number(payload: JSON, key: str) -> int | float | None:
    """``payload[key]`` when it is a number (a bool is not), None when absent."""
    value = payload.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise bad(key, "must be a number")
    return value


def positive_int(payload: JSON, key: str) -> int | None:
    """``payload[key]`` when it is a positive integer, None when absent."""
    value = payload.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise bad(key, "must be a positive integer")
    return value


def stop_list(value: Any, param: str) -> list[str]:
    """Stop sequences given as a string or an array of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise bad(param, "must be a string or an array of strings")
