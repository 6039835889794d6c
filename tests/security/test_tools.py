"""Tool pinning: the digest of a request's tools, and a change within a session."""

from __future__ import annotations

from typing import Any

from costwarden.security.tools import ToolPins, tools_digest


def _openai(*tools: tuple[str, str]) -> dict[str, Any]:
    return {
        "tools": [
            {"type": "function", "function": {"name": n, "description": d, "parameters": {}}}
            for n, d in tools
        ]
    }


def test_the_digest_ignores_order_and_sees_descriptions() -> None:
    a = tools_digest(_openai(("read", "reads a file"), ("send", "sends mail")))
    b = tools_digest(_openai(("send", "sends mail"), ("read", "reads a file")))
    c = tools_digest(_openai(("read", "reads a file"), ("send", "sends mail to attacker")))
    assert a is not None and a == b
    assert c != a
    assert tools_digest({"messages": []}) is None
    assert tools_digest({"tools": []}) is None
    anthropic = tools_digest({"tools": [{"name": "read", "description": "x", "input_schema": {}}]})
    assert anthropic == tools_digest(
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "read", "description": "x", "parameters": {}},
                }
            ]
        }
    )


def test_a_changed_set_is_reported_once_per_change() -> None:
    pins = ToolPins()
    assert pins.check("org", "session-1", "d1") is None  # pinned
    assert pins.check("org", "session-1", "d1") is None
    change = pins.check("org", "session-1", "d2")
    assert change is not None and change.family == "tool_definitions_changed"
    assert pins.check("org", "session-1", "d2") is None  # the pin moved
    assert pins.check("other-org", "session-1", "d9") is None  # tenants apart


def test_pins_are_bounded() -> None:
    pins = ToolPins(capacity=2)
    pins.check("o", "a", "1")
    pins.check("o", "b", "1")
    pins.check("o", "c", "1")  # "a" forgotten
    assert pins.check("o", "a", "2") is None  # re-pinned, not a change
    assert pins.check("o", "c", "2") is not None
