"""Translation between the OpenAI Chat Completions and Anthropic Messages wire formats.

Used by cross-provider fallback: an OpenAI client served by an Anthropic deployment, or an
Anthropic client served by an OpenAI one. Pure functions over parsed JSON, no I/O.

Requests are translated here. One that cannot be carried over faithfully (``n > 1``, audio,
JSON mode, server tools, assistant prefill, document blocks ...) raises
:class:`TranslationError`, a 400 in the client's wire format, rather than being served as
something the client did not ask for. Fields whose absence does not change what the answer
means (``seed``, ``logprobs``, ``top_k``, ``thinking``, ``cache_control`` ...) are dropped.

Responses, bodies and streams alike, are translated in
:mod:`costwarden.providers.translate_stream` (they share the stop reason, usage and id
mappings) and re-exported here: this module is the one import point of the API.
"""

from __future__ import annotations

import logging
from typing import Any

from costwarden.providers import openai_reader as reader
from costwarden.providers.openai_reader import TranslationError, bad
from costwarden.providers.translate_stream import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai_response,
    openai_to_anthropic_response,
    openai_tool_call,
)

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "TranslationError",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
]

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# OpenAI documents "up to 4 sequences" for ``stop``; more would be refused upstream.
_OPENAI_MAX_STOP = 4
# Fields of an OpenAI request whose meaning Anthropic cannot honour.
_OPENAI_REFUSED: dict[str, str] = {
    "audio": "audio output is not supported by Anthropic",
    "functions": "legacy functions are not translated; use tools",
    "function_call": "legacy function_call is not translated; use tool_choice",
    "web_search_options": "OpenAI web search cannot be performed by Anthropic",
}
_EMPTY_SCHEMA: JSON = {"type": "object", "properties": {}}


def _is_text_block(block: Any) -> bool:
    return (
        isinstance(block, dict)
        and block.get("type") == "text"
        and isinstance(block.get("text"), str)
    )


def _messages(payload: JSON) -> list[Any]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "must be a non-empty array")
    return messages


# --------------------------------------------------------------------------- OpenAI -> Anthropic


def openai_to_anthropic_request(payload: dict[str, Any], *, default_max_tokens: int) -> JSON:
    """An Anthropic Messages request equivalent to an OpenAI chat completions request.

    Anthropic requires ``max_tokens``: without ``max_completion_tokens`` / ``max_tokens``
    the request gets ``default_max_tokens``.
    """
    _refuse_openai_features(payload)
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, message in enumerate(_messages(payload)):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), param))
        elif role == "user":
            turns.append({"role": "user", "content": _user_blocks(message.get("content"), param)})
        elif role == "assistant":
            turns.append({"role": "assistant", "content": _assistant_blocks(message, param)})
        elif role == "tool":
            turns.append({"role": "user", "content": [_tool_result(message, param)]})
        elif role == "function":
            raise bad(param, "legacy role 'function' is not translated; use tool messages")
        else:
            raise bad(param, f"role {role!r} cannot be translated to Anthropic")
    merged = _merge_turns(turns)
    if not merged:
        raise bad("messages", "every message is empty")
    max_tokens = reader.positive_int(payload, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = reader.positive_int(payload, "max_tokens")
    out: JSON = {
        "model": payload.get("model"),
        "messages": merged,
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
    }
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    temperature = reader.number(payload, "temperature")
    if temperature is not None:
        # OpenAI's range is 0..2, Anthropic's 0..1: clamping keeps the request servable.
        out["temperature"] = min(temperature, 1)
    top_p = reader.number(payload, "top_p")
    if top_p is not None:
        out["top_p"] = top_p
    stop = reader.stop_list(payload.get("stop"), "stop")
    if stop:
        out["stop_sequences"] = stop
    if payload.get("stream") is True:
        out["stream"] = True
    _openai_tools_to_anthropic(payload, out)
    user = payload.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _refuse_openai_features(payload: JSON) -> None:
    for name, why in _OPENAI_REFUSED.items():
        if payload.get(name) is not None:
            raise bad(name, why)
    reader.refuse_more_than_text(payload, "Anthropic")
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise bad("response_format", f"{fmt.get('type')!r} cannot be honoured by Anthropic")


def _text_blocks(content: Any, param: str) -> list[JSON]:
    """Text blocks of a message whose content may only be text."""
    return [{"type": "text", "text": text} for text in reader.texts(content, param)]


def _user_blocks(content: Any, param: str) -> list[JSON]:
    return reader.user_parts(
        content, param, "Anthropic", lambda t: {"type": "text", "text": t}, _anthropic_image
    )


def _anthropic_image(image: Any, param: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str):
        raise bad(f"{param}.image_url.url", "must be a string")
    source: JSON
    if url.startswith("data:"):
        match = reader.DATA_URL.fullmatch(url)
        if match is None:
            raise bad(param, "only base64 data URLs can be translated to Anthropic")
        media = match["media"].lower()
        if media not in _IMAGE_TYPES:
            raise bad(param, f"Anthropic takes jpeg, png, gif or webp images, not {media}")
        source = {"type": "base64", "media_type": media, "data": match["data"]}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise bad(param, "image URLs must be http(s) or base64 data URLs")
    return {"type": "image", "source": source}


def _assistant_blocks(message: JSON, param: str) -> list[JSON]:
    found, calls = reader.assistant(message, param, "Anthropic")
    blocks: list[JSON] = [{"type": "text", "text": text} for text in found]
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in calls
    )
    return blocks


def _tool_result(message: JSON, param: str) -> JSON:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{param}.tool_call_id", "must be a non-empty string")
    block: JSON = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    texts = _text_blocks(content, param)
    if texts:
        block["content"] = content if isinstance(content, str) else texts
    return block


def _merge_turns(turns: list[JSON]) -> list[JSON]:
    """Anthropic requires user and assistant turns to alternate: neighbours are merged."""
    merged: list[JSON] = []
    for turn in turns:
        if not turn["content"]:
            continue
        if merged and merged[-1]["role"] == turn["role"]:
            merged[-1]["content"] = merged[-1]["content"] + turn["content"]
        else:
            merged.append({"role": turn["role"], "content": list(turn["content"])})
    for turn in merged:
        if turn["role"] == "user":
            # Anthropic wants a user turn's tool_result blocks before any other content.
            blocks = turn["content"]
            results = [b for b in blocks if b["type"] == "tool_result"]
            turn["content"] = results + [b for b in blocks if b["type"] != "tool_result"]
    return merged


def _openai_tools_to_anthropic(payload: JSON, out: JSON) -> None:
    tools = payload.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad("tools", "must be an array")
    if tools:
        out["tools"] = [_anthropic_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = payload.get("tool_choice")
    mapped: JSON | None = None
    if choice in ("auto", "required", "none"):
        mapped = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad("tool_choice", "a function choice needs function.name")
        mapped = {"type": "tool", "name": fn["name"]}
    elif choice is not None:
        raise bad("tool_choice", "must be auto, required, none or a named function")
    if payload.get("parallel_tool_calls") is False and tools:
        mapped = mapped or {"type": "auto"}
        if mapped["type"] != "none":  # Anthropic's "none" choice takes no other field
            mapped["disable_parallel_tool_use"] = True
    if mapped is not None:
        out["tool_choice"] = mapped


def _anthropic_tool(tool: Any, param: str) -> JSON:
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(fn, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise bad(param, f"tool type {kind!r} cannot be translated; only function tools can")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{param}.function.name", "must be a non-empty string")
    schema = fn.get("parameters")
    out: JSON = {
        "name": name,
        "input_schema": schema if isinstance(schema, dict) else _EMPTY_SCHEMA,
    }
    if isinstance(fn.get("description"), str):
        out["description"] = fn["description"]
    return out


# --------------------------------------------------------------------------- Anthropic -> OpenAI


def anthropic_to_openai_request(payload: dict[str, Any]) -> JSON:
    """An OpenAI chat completions request equivalent to an Anthropic Messages request.

    A stream asks for ``stream_options.include_usage``: without it OpenAI reports no usage
    and the stream could not be billed.
    """
    messages = _messages(payload)
    out_messages: list[JSON] = []
    system = payload.get("system")
    if system:
        out_messages.append({"role": "system", "content": _openai_system(system)})
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role == "user":
            out_messages.extend(_openai_user_turn(message.get("content"), param))
        elif role == "assistant":
            out_messages.append(_openai_assistant_turn(message.get("content"), param))
        else:
            raise bad(param, f"role {role!r} is neither user nor assistant")
    if messages[-1].get("role") == "assistant":
        raise bad(
            f"messages[{len(messages) - 1}]",
            "a final assistant message (prefill) cannot be continued by an OpenAI model",
        )
    out: JSON = {"model": payload.get("model"), "messages": out_messages}
    max_tokens = reader.positive_int(payload, "max_tokens")
    if max_tokens is not None:
        out["max_completion_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        value = reader.number(payload, key)
        if value is not None:
            out[key] = value
    stop = reader.stop_list(payload.get("stop_sequences"), "stop_sequences")
    if len(stop) > _OPENAI_MAX_STOP:
        raise bad("stop_sequences", f"OpenAI takes at most {_OPENAI_MAX_STOP}, got {len(stop)}")
    if stop:
        out["stop"] = stop
    if payload.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    _anthropic_tools_to_openai(payload, out)
    metadata = payload.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    return out


def _openai_system(system: Any) -> str | list[JSON]:
    if isinstance(system, str):
        return system
    if not isinstance(system, list) or not all(_is_text_block(b) for b in system):
        raise bad("system", "must be a string or an array of text blocks")
    if len(system) == 1:
        text: str = system[0]["text"]
        return text
    return [{"type": "text", "text": b["text"]} for b in system]


def _openai_user_turn(content: Any, param: str) -> list[JSON]:
    """Tool messages for the turn's tool results first (OpenAI wants them right after the
    assistant's tool calls), then a user message with whatever else the turn says."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise bad(f"{param}.content", "must be a string or an array")
    tools: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(content):
        where = f"{param}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if _is_text_block(block):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
        elif kind == "tool_result":
            tools.append(_openai_tool_message(block, where))
        else:
            raise bad(where, f"content block type {kind!r} cannot be translated to OpenAI")
    if len(parts) == 1 and parts[0]["type"] == "text":
        return [*tools, {"role": "user", "content": parts[0]["text"]}]
    return [*tools, {"role": "user", "content": parts}] if parts else tools


def _image_url(block: JSON, param: str) -> str:
    source = block.get("source")
    source = source if isinstance(source, dict) else {}
    kind = source.get("type")
    if kind == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type')};base64,{source['data']}"
    if kind == "url" and isinstance(source.get("url"), str):
        url: str = source["url"]
        return url
    raise bad(param, f"image source {kind!r} cannot be translated to OpenAI")


def _openai_tool_message(block: JSON, param: str) -> JSON:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad(f"{param}.tool_use_id", "must be a non-empty string")
    content = block.get("content")
    if content is None or isinstance(content, str):
        text = content or ""
    elif isinstance(content, list) and all(_is_text_block(b) for b in content):
        text = "".join(b["text"] for b in content)
    else:
        raise bad(param, "OpenAI tool messages take text only, no images or documents")
    # is_error has no OpenAI field; the result's text is what tells the model what failed.
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _openai_assistant_turn(content: Any, param: str) -> JSON:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise bad(f"{param}.content", "must be a string or an array")
    texts: list[str] = []
    calls: list[JSON] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if _is_text_block(block):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(openai_tool_call(block))
        elif kind not in ("thinking", "redacted_thinking"):
            # (Earlier turns' thinking only serves Anthropic models and is left out.)
            raise bad(f"{param}.content[{j}]", f"block type {kind!r} cannot be translated")
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _anthropic_tools_to_openai(payload: JSON, out: JSON) -> None:
    tools = payload.get("tools")
    if not tools:
        return  # OpenAI refuses tool_choice and parallel_tool_calls without tools
    if not isinstance(tools, list):
        raise bad("tools", "must be an array")
    out["tools"] = [_openai_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]
    choice = payload.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise bad("tool_choice", "must be of type auto, any, none or tool (with a name)")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _openai_tool(tool: Any, param: str) -> JSON:
    kind = tool.get("type") if isinstance(tool, dict) else "?"
    if kind not in (None, "custom"):
        raise bad(param, f"Anthropic server tool {kind!r} cannot be run by an OpenAI model")
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad(f"{param}.name", "must be a non-empty string")
    schema = tool.get("input_schema")
    fn: JSON = {"name": name, "parameters": schema if isinstance(schema, dict) else _EMPTY_SCHEMA}
    if isinstance(tool.get("description"), str):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}
