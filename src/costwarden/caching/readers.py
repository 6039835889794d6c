"""The two stream formats read event by event, for :mod:`costwarden.caching.assemble`: what
an OpenAI ``chat.completion.chunk`` stream and an Anthropic Messages event stream add up to,
as the official SDKs accumulate them.

Each reader is given one event at a time (its ``event:`` name, if any, and its data) and
raises :class:`Broken` as soon as the stream cannot make an answer it can vouch for; after
the terminal event its ``answer`` is the unary object. Text is kept as parts and joined once,
when its choice or block ends, so reading stays linear in the stream's size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeGuard

import orjson

JSON = dict[str, Any]

# Anthropic blocks whose input arrives as input_json_delta fragments.
_TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
# The field an Anthropic delta type appends to, and the block field that holds it.
_DELTA_FIELDS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("partial_json", "input"),
}


class Broken(Exception):
    """The stream cannot be assembled into an answer."""


def _object(data: bytes) -> JSON:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise Broken("an event's data is not JSON") from None
    if not isinstance(value, dict):
        raise Broken("an event's data is not a JSON object")
    return value


def _kind(obj: JSON) -> str | None:
    """An object's ``type``, when it is a string (anything else is no type we know)."""
    kind = obj.get("type")
    return kind if isinstance(kind, str) else None


def _is_index(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --------------------------------------------------------------------------- OpenAI


@dataclasses.dataclass(slots=True)
class _ToolCall:
    id: Any = None
    type: Any = None
    name: list[str] = dataclasses.field(default_factory=list)
    arguments: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(slots=True)
class _Choice:
    role: str = "assistant"
    # Fields of the message whose deltas are strings, concatenated as the SDK does:
    # content, refusal, and others some servers add (reasoning_content).
    texts: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    tools: dict[int, _ToolCall] = dataclasses.field(default_factory=dict)
    logprobs: dict[str, list[Any] | None] | None = None
    finish: Any = None


class OpenAIReader:
    """Chunks by choice index: the message's text fields and tool calls, the finish reason;
    the usage chunk; the answer at ``data: [DONE]``."""

    __slots__ = ("answer", "_head", "_extra", "_usage", "_choices")

    def __init__(self) -> None:
        self.answer: JSON | None = None
        self._head: JSON | None = None
        self._extra: JSON = {}  # system_fingerprint, service_tier
        self._usage: JSON | None = None
        self._choices: dict[int, _Choice] = {}

    def event(self, name: str, data: bytes) -> bool:
        """Read one event; True when it ended the stream (``answer`` is then set)."""
        if name == "error":
            raise Broken("an error event")
        if data.strip() == b"[DONE]":
            self.answer = self._finish()
            return True
        chunk = _object(data)
        if chunk.get("error") is not None:
            raise Broken("an error event")
        if self._head is None:
            self._head = {k: chunk.get(k) for k in ("id", "created", "model")}
        for key in ("system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self._extra[key] = chunk[key]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise Broken("choices is not a list")
        for choice in choices:
            self._choice(choice)
        return False

    def _choice(self, choice: Any) -> None:
        if not isinstance(choice, dict) or not _is_index(choice.get("index", 0)):
            raise Broken("a choice without an index")
        state = self._choices.setdefault(choice.get("index", 0), _Choice())
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise Broken("a delta that is not an object")
        for key, value in delta.items():
            if value is None:
                continue
            if key == "role":
                state.role = str(value)
            elif key == "tool_calls":
                if not isinstance(value, list):
                    raise Broken("tool_calls is not a list")
                for call in value:
                    self._tool_call(state, call)
            elif isinstance(value, str):
                state.texts.setdefault(key, []).append(value)
            else:  # audio, a legacy function_call ...: an answer we could not replay
                raise Broken(f"a delta with {key!r}")
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            if state.logprobs is None:
                state.logprobs = {"content": None, "refusal": None}
            for key in ("content", "refusal"):
                items = logprobs.get(key)
                if isinstance(items, list):
                    kept = state.logprobs[key]
                    if kept is None:
                        state.logprobs[key] = list(items)
                    else:
                        kept.extend(items)
        if choice.get("finish_reason") is not None:
            state.finish = choice["finish_reason"]

    @staticmethod
    def _tool_call(state: _Choice, call: Any) -> None:
        if not isinstance(call, dict) or not _is_index(call.get("index")):
            raise Broken("a tool call without an index")
        tool = state.tools.setdefault(call["index"], _ToolCall())
        if tool.id is None and call.get("id") is not None:
            tool.id = call["id"]
        if tool.type is None and call.get("type") is not None:
            tool.type = call["type"]
        fn = call.get("function") or {}
        if not isinstance(fn, dict):
            raise Broken("a tool call's function is not an object")
        for key, parts in (("name", tool.name), ("arguments", tool.arguments)):
            value = fn.get(key)
            if isinstance(value, str):
                parts.append(value)
            elif value is not None:
                raise Broken(f"a tool call's {key} is not a string")

    def _finish(self) -> JSON:
        if self._head is None or not self._choices:
            raise Broken("a stream without choices")
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            if state.finish is None:
                raise Broken("a choice without a finish reason")
            texts = {k: "".join(v) for k, v in state.texts.items()}
            message: JSON = {
                "role": state.role,
                "content": texts.pop("content", None),
                "refusal": texts.pop("refusal", None),
                **texts,
            }
            if state.tools:
                message["tool_calls"] = [
                    {
                        "id": t.id,
                        "type": t.type or "function",
                        "function": {"name": "".join(t.name), "arguments": "".join(t.arguments)},
                    }
                    for _, t in sorted(state.tools.items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "logprobs": state.logprobs,
                    "finish_reason": state.finish,
                }
            )
        answer: JSON = {**self._head, "object": "chat.completion", **self._extra}
        answer["choices"] = choices
        if self._usage is not None:
            answer["usage"] = self._usage
        return answer


# --------------------------------------------------------------------------- Anthropic


@dataclasses.dataclass(slots=True)
class _Block:
    data: JSON  # the block as started; its streamed field is set when it stops
    field: str | None  # the field its deltas build: text, thinking or input
    parts: list[str] = dataclasses.field(default_factory=list)
    stopped: bool = False


class AnthropicReader:
    """The message of message_start, its content blocks in order, message_delta's stop
    reason and usage; the answer at message_stop."""

    __slots__ = ("answer", "_message", "_blocks")

    def __init__(self) -> None:
        self.answer: JSON | None = None
        self._message: JSON | None = None
        self._blocks: list[_Block] = []

    def event(self, name: str, data: bytes) -> bool:
        """Read one event; True when it ended the stream (``answer`` is then set)."""
        event = _object(data)
        kind = event.get("type", name)
        if kind == "error" or name == "error":
            raise Broken("an error event")
        if kind == "ping":
            return False
        if kind == "message_start":
            self._start(event.get("message"))
            return False
        if self._message is None:
            raise Broken(f"{kind} before message_start")
        if kind == "content_block_start":
            self._block_start(event)
        elif kind == "content_block_delta":
            self._delta(self._open_block(event), event.get("delta"))
        elif kind == "content_block_stop":
            _stop(self._open_block(event))
        elif kind == "message_delta":
            self._message_delta(self._message, event)
        elif kind == "message_stop":
            if not all(block.stopped for block in self._blocks):
                raise Broken("a content block was never stopped")
            self.answer = {**self._message, "content": [b.data for b in self._blocks]}
            return True
        # Event types added to the API later carry nothing an answer needs (the API's own
        # advice: ignore unknown events).
        return False

    def _start(self, message: Any) -> None:
        if self._message is not None or not isinstance(message, dict):
            raise Broken("a second or empty message_start")
        usage = message.get("usage")
        self._message = {**message, "usage": dict(usage) if isinstance(usage, dict) else {}}
        content = message.get("content") or []
        if not isinstance(content, list):
            raise Broken("message_start content is not a list")
        # Blocks already in message_start count in the indexes of those that follow (the
        # SDK appends to them too).
        if not all(isinstance(b, dict) for b in content):
            raise Broken("message_start content holds a block that is not an object")
        self._blocks = [_Block(dict(b), None, stopped=True) for b in content]

    def _block_start(self, event: JSON) -> None:
        block = event.get("content_block")
        index = event.get("index")
        if not _is_index(index) or index != len(self._blocks) or not isinstance(block, dict):
            raise Broken("a content block out of order")
        kind = _kind(block)
        data = dict(block)
        if kind in ("text", "thinking"):
            field: str | None = kind
            initial = block.get(kind) or ""
            if not isinstance(initial, str):
                raise Broken(f"a {kind} block whose {kind} is not a string")
            parts = [initial]
        elif kind in _TOOL_BLOCKS:
            field, parts = "input", []
        else:  # a block that arrives whole (redacted thinking, a server tool's result)
            field, parts = None, []
        self._blocks.append(_Block(data, field, parts))

    def _open_block(self, event: JSON) -> _Block:
        index = event.get("index")
        if not _is_index(index) or index >= len(self._blocks) or self._blocks[index].stopped:
            raise Broken("an event for a content block that is not open")
        return self._blocks[index]

    @staticmethod
    def _delta(block: _Block, delta: Any) -> None:
        if not isinstance(delta, dict):
            raise Broken("a content_block_delta without a delta")
        kind = _kind(delta)
        if kind in _DELTA_FIELDS:
            key, field = _DELTA_FIELDS[kind]
            value = delta.get(key)
            if block.field != field or not isinstance(value, str):
                raise Broken(f"a {kind} for a {block.data.get('type')} block")
            block.parts.append(value)
        elif kind == "signature_delta" and block.data.get("type") == "thinking":
            block.data["signature"] = delta.get("signature")
        elif kind == "citations_delta" and block.field == "text":
            citations = block.data.get("citations")
            if not isinstance(citations, list):
                citations = block.data["citations"] = []
            citations.append(delta.get("citation"))
        else:  # a delta we do not know: we cannot tell what the answer says
            raise Broken(f"a delta of type {kind!r}")

    @staticmethod
    def _message_delta(message: JSON, event: JSON) -> None:
        delta = event.get("delta") or {}
        usage = event.get("usage") or {}
        if not isinstance(delta, dict) or not isinstance(usage, dict):
            raise Broken("a message_delta that is not objects")
        for key, value in delta.items():
            # The stop reason and sequence are set, null or not (as the SDK does); other
            # fields only when given, and never the ones the other events build.
            if key in ("content", "usage"):
                continue
            if value is not None or key in ("stop_reason", "stop_sequence"):
                message[key] = value
        # Usage counts are cumulative: a given one replaces message_start's, a null one
        # leaves it.
        message["usage"].update((k, v) for k, v in usage.items() if v is not None)


def _stop(block: _Block) -> None:
    block.stopped = True
    if block.field is None:
        return
    text = "".join(block.parts)
    if block.field != "input":
        block.data[block.field] = text
    elif text:
        try:
            block.data["input"] = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise Broken("a tool call's input is not JSON") from None
    block.parts = []
