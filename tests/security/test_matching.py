"""The short-text paths (Python, no GIL hand-over) answer as the RE2 paths do: on every corpus
line, each path forced, and on generated text."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.security import injection, pii
from costwarden.security.findings import Detector, Finding
from costwarden.security.matching import SMALL_TEXT, KeywordSet, _trie
from costwarden.security.secrets import SecretsDetector, load_rules
from tests.security.conftest import corpus_lines

TEXTS = [text for _, _, text in corpus_lines()]
KEYWORDS = sorted({k.encode() for rule in load_rules().rules for k in rule.keywords})
PYTHON = KeywordSet(KEYWORDS, small=1 << 30)
RE2 = KeywordSet(KEYWORDS, small=0)

# Text made of keyword pieces, digits, separators and letters: keywords inside one another,
# cut short, in upper case, and the shapes the PII candidates need.
_PIECES = st.one_of(
    st.sampled_from([k.decode() for k in KEYWORDS]),
    st.sampled_from([k.decode()[:-1] for k in KEYWORDS if len(k) > 1]),
    st.sampled_from([k.decode().upper() for k in KEYWORDS]),
    st.text(alphabet="0123456789 .-/()+@:abcdefABCXYZ_\n", max_size=12),
)
GENERATED = st.lists(_PIECES, max_size=40).map("".join)


@pytest.mark.parametrize(
    ("words", "text", "found"),
    [
        ([b"sk-", b"sk-ant-", b"sk"], b"an sk-ant-key", {0, 1, 2}),
        ([b"sk-", b"sk-ant-", b"sk"], b"ask", {2}),
        ([b"ab", b"abc", b"bc"], b"xabcx", {0, 1, 2}),  # overlapping at two places
        ([b"ab", b"abc", b"bc"], b"ABC", {0, 1, 2}),  # case-blind
        ([b"a.b", b"a"], b"axb", {1}),  # "." is a literal
        ([b"key"], b"", set()),
    ],
)
def test_keyword_set_table(words: list[bytes], text: bytes, found: set[int]) -> None:
    assert KeywordSet(words, small=1 << 30)(text) == found
    assert KeywordSet(words, small=0)(text) == found


def test_keywords_must_be_lower_case() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        KeywordSet([b"Key"])


def test_trie_matches_exactly_the_words() -> None:
    words = [b"sk-", b"sk-ant-", b"ab", b"abc", b"x.y"]
    pattern = re.compile(_trie(words))
    assert all(pattern.fullmatch(w) for w in words)
    assert not any(pattern.fullmatch(w) for w in (b"sk", b"a", b"sk-ant", b"xzy", b"abcd"))


def test_keyword_paths_agree_on_the_corpus() -> None:
    for text in TEXTS:
        data = text.encode("latin-1", "replace")
        assert PYTHON(data) == RE2(data), text[:80]


def test_a_text_full_of_keywords_is_handed_to_re2() -> None:
    data = b"sk- " * 300  # more places than the Python walk takes
    assert PYTHON(data) == RE2(data) != frozenset()


@settings(max_examples=300, deadline=None)
@given(GENERATED)
def test_keyword_paths_agree_on_generated_text(text: str) -> None:
    data = text.encode("latin-1", "replace")
    assert PYTHON(data) == RE2(data)


def _findings_both_ways(
    monkeypatch: pytest.MonkeyPatch, module: ModuleType, detector: Detector, text: str
) -> tuple[list[Finding], list[Finding]]:
    """(the findings on the Python path, the findings on the RE2 path)."""
    monkeypatch.setattr(module, "SMALL_TEXT", 1 << 30)
    python = detector.scan(text)
    monkeypatch.setattr(module, "SMALL_TEXT", 0)
    return python, detector.scan(text)


def test_injection_paths_agree_on_the_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = injection.InjectionDetector()
    for text in TEXTS:
        python, with_re2 = _findings_both_ways(monkeypatch, injection, detector, text)
        assert python == with_re2, text[:80]


def test_pii_paths_agree_on_the_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    detector = pii.PiiDetector()
    for text in TEXTS:
        python, with_re2 = _findings_both_ways(monkeypatch, pii, detector, text)
        assert python == with_re2, text[:80]


@settings(max_examples=500, deadline=None)
@given(GENERATED)
def test_pii_prefilter_holds_every_candidate(text: str) -> None:
    """Where the RE2 pass finds a candidate, the Python check lets the text through."""
    data = text.encode("latin-1", "replace")
    if _CANDIDATES.search(data) is not None:
        assert pii._MAYBE.search(data) is not None, text


_CANDIDATES = pii._compile(pii._CANDIDATES)


def test_a_short_text_still_runs_the_rules_its_keywords_let_through() -> None:
    text = "my token: ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8"
    assert len(text) < SMALL_TEXT
    assert [f.family for f in SecretsDetector().scan(text)] == ["github_token"]
