"""Tool pinning: a session's (or, without a session, a key's) tool definitions are pinned by
their digest at first sight; a different set later in the same session is a "rug pull" -- a
tool server that changed what its tools say or do after the agent started trusting them.

The digest is over a canonical form of what a model reads of each tool (name, description,
parameters/input schema; sorted keys, tools sorted by name), so a client that merely
reorders its tools or re-serialises them does not trip it. Pins live in a bounded
least-recently-used map per process: a pin forgotten under pressure is re-pinned, which can
miss a change but never invents one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from costwarden.security.findings import Finding

TOOLS_DETECTOR = "tools"
_OPTIONS = orjson.OPT_SORT_KEYS


def tools_digest(payload: Mapping[str, Any]) -> str | None:
    """The digest of the request's tool definitions (either wire format); None: no tools."""
    tools = payload.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    canon: list[tuple[str, bytes]] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        function = tool.get("function")
        spec: dict[str, Any] = function if isinstance(function, dict) else tool
        name = str(spec.get("name", ""))
        schema = spec.get("parameters", spec.get("input_schema"))
        body = orjson.dumps(
            {"name": name, "description": spec.get("description"), "schema": schema},
            option=_OPTIONS,
        )
        canon.append((name, body))
    canon.sort()
    digest = hashlib.blake2b(digest_size=16)
    for _, body in canon:
        digest.update(body)
        digest.update(b"\x00")
    return digest.hexdigest()


class ToolPins:
    """Pinned digests by (org, session or key), at most ``capacity`` of them."""

    __slots__ = ("_capacity", "_pins")

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._pins: OrderedDict[tuple[str, str], str] = OrderedDict()

    def check(self, org_id: str, subject: str, digest: str) -> Finding | None:
        """Pin ``digest`` for the subject if it has none; a finding if it differs from the
        pin (the pin then moves to the new set, so one change is reported once)."""
        key = (org_id, subject)
        pins = self._pins
        pinned = pins.get(key)
        if pinned == digest:
            pins.move_to_end(key)
            return None
        pins[key] = digest
        pins.move_to_end(key)
        if len(pins) > self._capacity:
            pins.popitem(last=False)
        if pinned is None:
            return None
        return Finding(TOOLS_DETECTOR, "tool_definitions_changed", "high", 1.0, 0, 0)
