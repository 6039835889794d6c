"""The pieces of a request a scan reads, and the request with some of them replaced.

Every piece of text the client or its tools supplied is scanned, in both wire formats:

- OpenAI chat: each message's ``content`` (a string, or its ``text`` parts), for every role
  (a client can forge an assistant turn as easily as a user turn), ``tool`` results, the
  arguments of the tool calls it sends back, and the tool definitions' descriptions (an
  injection hides in a description as well as in a prompt);
- Anthropic messages: ``system`` (a string or text blocks), each message's ``content`` (a
  string, ``text`` blocks, ``tool_result`` blocks and their text), ``tool_use`` inputs and
  the tools' descriptions;
- embeddings: ``input`` (a string or a list of strings; token arrays carry no text).

A piece is addressed by its path in the payload, so a redaction replaces exactly that string
(:func:`replace_pieces`) and a finding can say where it was (:func:`location`) without
quoting it. Images, audio and files are not text and are not scanned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import orjson

Path = tuple[str | int, ...]


class Piece(NamedTuple):
    path: Path
    text: str


def pieces(endpoint: str, payload: Mapping[str, Any]) -> list[Piece]:
    """The text pieces of ``payload`` (a validated request of ``endpoint``), in order."""
    found: list[Piece] = []
    if endpoint == "embeddings":
        value = payload.get("input")
        if isinstance(value, str):
            found.append(Piece(("input",), value))
        elif isinstance(value, list):
            found.extend(
                Piece(("input", i), item) for i, item in enumerate(value) if isinstance(item, str)
            )
        return found
    system = payload.get("system")
    if system is not None:
        found.extend(_content(("system",), system))
    messages = payload.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                continue
            if "content" in message:
                found.extend(_content(("messages", i, "content"), message["content"]))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                for j, call in enumerate(calls):
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                        path = ("messages", i, "tool_calls", j, "function", "arguments")
                        found.append(Piece(path, function["arguments"]))
    tools = payload.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                continue
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("description"), str):
                found.append(
                    Piece(("tools", i, "function", "description"), function["description"])
                )
            elif isinstance(tool.get("description"), str):
                found.append(Piece(("tools", i, "description"), tool["description"]))
    return found


def _content(path: Path, content: Any) -> Iterator[Piece]:
    if isinstance(content, str):
        yield Piece(path, content)
        return
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        if isinstance(part, str):
            yield Piece((*path, j), part)
            continue
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if isinstance(part.get("text"), str):
            yield Piece((*path, j, "text"), part["text"])
        elif kind == "tool_result" and "content" in part:
            yield from _content((*path, j, "content"), part["content"])
        elif kind == "tool_use" and isinstance(part.get("input"), dict):
            # The model's own call, sent back by the client: its input as one JSON text.
            yield Piece((*path, j, "input"), orjson.dumps(part["input"]).decode())


def location(path: Path) -> str:
    """``('messages', 2, 'content', 0, 'text')`` -> ``messages[2].content[0].text``."""
    out: list[str] = []
    for step in path:
        if isinstance(step, int):
            out.append(f"[{step}]")
        else:
            out.append(f".{step}" if out else step)
    return "".join(out)


def replace_pieces(payload: Mapping[str, Any], replacements: Mapping[Path, str]) -> dict[str, Any]:
    """A copy of ``payload`` with the string at each path replaced; only the containers on
    a replaced path are copied (the rest is shared with ``payload``, which is left as it
    was). A ``tool_use`` input (scanned as JSON text) is replaced by the JSON its
    replacement parses to, or by ``{"redacted": text}`` when it no longer parses."""
    out: dict[str, Any] = dict(payload)
    copied: set[Path] = {()}
    for path, text in replacements.items():
        node: Any = out
        for depth, step in enumerate(path[:-1]):
            prefix = path[: depth + 1]
            child = node[step]
            if prefix not in copied:
                child = list(child) if isinstance(child, list) else dict(child)
                node[step] = child
                copied.add(prefix)
            node = child
        last = path[-1]
        if last == "input" and isinstance(node.get("input"), dict):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                parsed = None
            node[last] = parsed if isinstance(parsed, dict) else {"redacted": text}
        else:
            node[last] = text
    return out
