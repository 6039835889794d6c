"""Cache entries: encode and decode round-trip every answer, and decode refuses anything else
with CacheEntryError -- never another exception (random bytes, mutated entries)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.caching.entry import VERSION, CachedAnswer, CacheEntryError, decode, encode

ANSWER = CachedAnswer(
    body=b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}',
    provider="openai",
    served_model="gpt-4o-mini-2024-07-18",
    input_tokens=1200,
    cached_input_tokens=1024,
    cache_write_tokens=0,
    output_tokens=57,
    reasoning_tokens=0,
    cost_usd=Decimal("0.000123450000"),
    stored_at=1_773_144_000.25,
)

answers = st.builds(
    CachedAnswer,
    body=st.binary(max_size=2000),
    provider=st.text(max_size=20),
    served_model=st.text(max_size=60),
    input_tokens=st.integers(0, 2**53),
    cached_input_tokens=st.integers(0, 2**53),
    cache_write_tokens=st.integers(0, 2**53),
    output_tokens=st.integers(0, 2**53),
    reasoning_tokens=st.integers(0, 2**53),
    cost_usd=st.decimals(min_value=0, max_value=10**9, places=12, allow_nan=False),
    stored_at=st.floats(0, 4e9, allow_nan=False),
)


def test_round_trip() -> None:
    raw = encode(ANSWER)
    assert decode(raw) == ANSWER
    # the body follows the one-line header as it is, not re-encoded
    header, body = raw.split(b"\n", 1)
    assert body == ANSWER.body
    assert orjson.loads(header)["v"] == VERSION == 1
    assert orjson.loads(header)["usd"] == "0.000123450000"  # exact, as a string


def test_a_body_with_newlines_and_any_bytes() -> None:
    answer = CachedAnswer(
        b'{\n"a":\n1}\n\n\x00\xff', "p\nq", "m\u2028", 0, 0, 0, 0, 0, Decimal(0), 0.0
    )
    assert decode(encode(answer)) == answer


@settings(max_examples=300)
@given(answers)
def test_every_answer_round_trips(answer: CachedAnswer) -> None:
    assert decode(encode(answer)) == answer


def header(**changes: object) -> bytes:
    fields = orjson.loads(encode(ANSWER).split(b"\n", 1)[0])
    fields.update(changes)
    fields = {k: v for k, v in fields.items() if v is not ...}
    return orjson.dumps(fields) + b"\n" + ANSWER.body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "no header"),
        (b'{"v":1}', "no header"),
        (b"not json\n{}", "not JSON"),
        (b"[1,2]\n", "not a JSON object"),
        (header(v=2), "entry version 2"),
        (header(v=True), "entry version True"),
        (header(v=...), "entry version None"),
        (encode(ANSWER)[:-1], "the body has"),  # truncated
        (encode(ANSWER) + b"x", "the body has"),
        (header(n="61"), "the body has"),
        (header(i=-1), "'i' must be a count of tokens"),
        (header(o=1.5), "'o' must be a count of tokens"),
        (header(ci=True), "'ci' must be a count of tokens"),
        (header(r=...), "'r' must be a count of tokens"),
        (header(p=3), "'p' must be a string"),
        (header(m=None), "'m' must be a string"),
        (header(usd=0.5), "the cost must be a decimal string"),
        (header(usd="1" * 100), "the cost must be a decimal string"),
        (header(usd="abc"), "is not a decimal"),
        (header(usd="1e999999999999999999999"), "is not a decimal"),
        (header(usd="NaN"), "is not an amount"),
        (header(usd="-Infinity"), "is not an amount"),
        (header(usd="-0.01"), "is not an amount"),
        (header(usd="1e999999999"), "is not an amount"),
        (header(t="now"), "the time stored must be a number"),
        (header(t=False), "the time stored must be a number"),
        (header(t=12345.5).replace(b"12345.5", b"1e999"), "not JSON"),  # infinite
    ],
)  # fmt: skip
def test_what_decode_refuses(raw: bytes, message: str) -> None:
    with pytest.raises(CacheEntryError, match=message):
        decode(raw)


def test_unknown_header_fields_are_ignored() -> None:
    """A later version 1 writer may add fields; a reader of version 1 reads what it knows."""
    assert decode(header(extra=[1, 2])) == ANSWER


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes_are_refused_or_read(raw: bytes) -> None:
    try:
        decode(raw)
    except CacheEntryError:
        pass


@settings(max_examples=1000)
@given(
    answers,
    st.lists(
        st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10**6),
                  st.integers(0, 255)),
        min_size=1, max_size=4,
    ),
)  # fmt: skip
def test_mutated_entries_are_refused_or_read(
    answer: CachedAnswer, mutations: list[tuple[str, int, int]]
) -> None:
    raw = bytearray(encode(answer))
    for kind, where, byte in mutations:
        at = where % (len(raw) + 1)
        if kind == "flip" and at < len(raw):
            raw[at] ^= byte or 1
        elif kind == "cut":
            del raw[at:]
        elif kind == "insert":
            raw.insert(at, byte)
        elif kind == "delete" and at < len(raw):
            del raw[at]
    try:
        decoded = decode(bytes(raw))
    except CacheEntryError:
        return
    assert isinstance(decoded, CachedAnswer)
    assert decoded.cost_usd.is_finite() and decoded.input_tokens >= 0
