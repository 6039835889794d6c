"""Scrubbing credentials from what upstreams send back."""

from __future__ import annotations

import orjson

from costwarden.gateway.scrub import Scrubber

KEY = "sk-proj-ABCdef0123456789"
ODD = 'k3y/with"quote'  # reads differently inside a JSON string


def test_credentials_are_replaced_as_sent_and_as_json_escaped() -> None:
    scrub = Scrubber([KEY, ODD])
    body = orjson.dumps({"error": {"message": f"Incorrect API key provided: {KEY}", "k": ODD}})
    out = scrub(body)
    assert KEY.encode() not in out and b"k3y" not in out
    assert orjson.loads(out) == {
        "error": {"message": "Incorrect API key provided: [redacted]", "k": "[redacted]"}
    }


def test_virtual_keys_are_replaced() -> None:
    key = "cw-" + "A" * 43
    assert Scrubber([])(f"leaked {key}!".encode()) == b"leaked cw-[redacted]!"
    assert Scrubber([])(b"a cw-short word") == b"a cw-short word"


def test_short_credentials_are_not_worth_corrupting_every_body_for() -> None:
    assert Scrubber(["x", "abc"])(b"axbxc abc") == b"axbxc abc"


def test_clean_bytes_come_back_unchanged() -> None:
    body = b'{"choices": [{"message": {"content": "hello"}}]}'
    assert Scrubber([KEY])(body) is body
