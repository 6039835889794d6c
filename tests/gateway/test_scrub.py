"""Scrubbing credentials from what upstreams send back."""

from __future__ import annotations

import orjson

from costwarden.gateway.scrub import Scrubber, per_upstream
from costwarden.providers.adapters import make_adapter
from costwarden.providers.base import ProviderAdapter, ProviderSpec

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


def test_each_upstream_is_scrubbed_of_what_its_origin_was_sent() -> None:
    def adapter(name: str, base_url: str, key: str) -> ProviderAdapter:
        spec = ProviderSpec(
            name=name,
            type="openai",
            base_url=base_url,
            connect_timeout=5.0,
            timeout=60.0,
            api_key=key,
        )
        return make_adapter(spec)

    scrubbers = per_upstream(
        [
            adapter("a", "https://api.example.com/v1", "key-aaaaaaaaaaaa"),
            adapter("b", "https://API.example.com:443/other", "key-bbbbbbbbbbbb"),
            adapter("c", "http://127.0.0.1:9000/v1", "key-cccccccccccc"),
        ]
    )
    both = b"key-aaaaaaaaaaaa key-bbbbbbbbbbbb key-cccccccccccc"
    # a and b share an origin: that server saw both credentials.
    assert scrubbers["a"](both) == b"[redacted] [redacted] key-cccccccccccc"
    assert scrubbers["b"](both) == scrubbers["a"](both)
    assert scrubbers["c"](both) == b"key-aaaaaaaaaaaa key-bbbbbbbbbbbb [redacted]"
