"""Normalising a text for matching, and finding what is encoded in it: pure functions.

A prompt-injection rule is written once, in plain lower-case English; an attacker writes the
same words in ways a plain regex does not see. The text is therefore brought into forms the
rules can match, each cheap enough for a 100 KB prompt:

- :func:`fold`: Unicode NFKC (full-width letters, mathematical alphanumerics, ligatures and
  circled letters become ASCII), the invisible characters removed (zero-width spaces and
  joiners, bidi embeddings/overrides/isolates, word joiners, the BOM, tag characters,
  variation selectors: ``ig\\u200bnore`` reads "ignore" to a model, and now to the rules),
  the common Cyrillic/Greek/Latin look-alikes folded to the ASCII letter they imitate
  (:data:`HOMOGLYPHS`, a compact table, not Unicode's whole confusables list) and the text
  lower-cased. An ASCII text (nearly every prompt) takes the fast path: ``lower()`` only.
- :func:`fold_leet`: leetspeak digits and signs folded (``1gn0r3`` -> ``ignore``; 0 o, 1 i,
  3 e, 4 a, 5 s, 7 t, 8 b, 9 g, @ a, $ s: one letter each, so a 1 standing for an l, as in
  ``a11``, stays an i). It is a one-to-one mapping, so offsets do not move, and it folds
  *every* such character: a rule that matched only thanks to a folded character then asks
  :func:`leet_inside_words` whether each folded character sat inside a word that also holds
  a letter, so "3 previous" or "$20" in prose are never read as letters. (Folding only
  inside words up front needs a regex pass over the text, ten times the cost of the one
  ``translate``.)
- :func:`squash`: only the letters left, which undoes splitting: ``i g n o r e``,
  ``i.g.n.o.r.e`` and ``ig-nore pre-vious`` all squash to ``ignoreprevious``. Word boundaries
  go with the spaces, so the rules' squashed patterns are tight phrases.
- :func:`rot13`: rot13 has no marker; the detector decodes a whole text when a rot13'd key
  word (``vtaber`` for "ignore") is among its words, a set lookup it makes anyway.

:func:`decode_segments` finds encoded runs and returns their decoded texts for scanning
again: base64 and base64url, hex (also ``0x``-prefixed), URL %-escapes, ``\\x``/``\\u``
escapes, HTML numeric entities, and text smuggled in Unicode tag characters or in runs of
variation selectors. Candidates are found with ``bytes.translate`` and ``find`` rather than a
regex over the whole text, a decoded text must be plausible text (valid UTF-8, no control
characters, letters in it), decoding recurses to ``max_depth`` (base64 of hex...) and the
total decoded size and number of segments are bounded, so a hostile 100 KB prompt costs a
bounded amount of work.

:func:`ascii_form` then replaces what non-ASCII is left (accents, other scripts, emoji)
one for one by ASCII of the same regex class, for fast matching. :func:`has_hidden_unicode`
tells the skill-bundle scanner whether a text holds characters a reader cannot see, and
:func:`normalize` is the single-string reference form (fold, then leetspeak folded inside
words) for callers that want one.
"""

from __future__ import annotations

import binascii
import dataclasses
import html
import re
import unicodedata
from collections.abc import Iterator, Set
from typing import Literal
from urllib.parse import unquote

SegmentKind = Literal["base64", "hex", "url", "escape", "entity", "tags", "variation"]

MAX_DEPTH = 2  # base64 of hex is decoded; base64 of base64 of hex is not
MAX_DECODED_CHARS = 32_768  # decoded text per scanned text, over all segments
MAX_SEGMENTS = 32

# ------------------------------------------------------------------ hidden characters

# Removed before matching: they render as nothing (or only reorder what is shown) but split
# the words a rule looks for.
_HIDDEN_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, ZWNJ, ZWJ, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x2064),  # word joiner, invisible operators
    (0x2066, 0x206F),  # bidi isolates, deprecated format characters
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # half-width Hangul filler
    (0xFFF9, 0xFFFB),  # interlinear annotation
    (0x1D173, 0x1D17A),  # musical formatting
    (0xE0000, 0xE007F),  # tag characters
    (0xE0100, 0xE01EF),  # variation selectors supplement
)
_HIDDEN: frozenset[str] = frozenset(
    chr(cp) for low, high in _HIDDEN_RANGES for cp in range(low, high + 1)
)
_HIDDEN_CLASS = "".join(
    re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
    for low, high in _HIDDEN_RANGES
)
_HIDDEN_RE = re.compile(f"[{_HIDDEN_CLASS}]+")

# What has_hidden_unicode reports: the invisible characters with no business in a skill file
# or a prompt. Not reported: a zero-width joiner inside an emoji sequence (family emoji), a
# ZWNJ after an Arabic/Persian or Indic letter (it shapes those scripts), a BOM as the very
# first character, and emoji presentation selectors (U+FE0E/FE0F).
_REPORTED_RE = re.compile(
    "[\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\u180e\u061c"
    "\U000e0000-\U000e007f\U000e0100-\U000e01ef\ufe00-\ufe0d]"
    "|(?<![\u00a9\u00ae\u203c-\u3299\U0001f000-\U0001faff\ufe0f])\u200d"
    "|(?<![\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\u0900-\u0dff\ufb50-\ufdff\ufe70-\ufefc])"
    "\u200c"
    "|(?<=[\\s\\S])\ufeff"
)


def has_hidden_unicode(text: str) -> bool:
    """Whether ``text`` holds an invisible character a reader would not see (zero-width,
    bidi control, tag character...; see the module docstring for what is not counted)."""
    if text.isascii():
        return False
    return _REPORTED_RE.search(text) is not None


def hidden_unicode_offsets(text: str) -> list[int]:
    """The offsets of the characters :func:`has_hidden_unicode` reports."""
    if text.isascii():
        return []
    return [m.start() for m in _REPORTED_RE.finditer(text)]


def strip_hidden(text: str) -> str:
    """``text`` without the invisible characters removed before matching."""
    if text.isascii():
        return text
    return _HIDDEN_RE.sub("", text)


# ------------------------------------------------------------------ homoglyphs

# Look-alikes NFKC leaves alone, folded to the ASCII letter they imitate. Upper-case forms
# map to upper-case letters (lower() follows); curly quotes map to straight ones so that
# "don’t" reads as "don't" to the rules' negations.
_GLYPHS_FROM = (
    # Cyrillic
    "АВЕКМНОРСТХУІЈЅԌԚԜӀҮ"
    "аеорсухіјѕԁһԛԝӏүгпѵ"
    # Greek
    "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"
    "αβεηικνορτυχγ"
    # Latin and IPA look-alikes
    "ıɩɑɡɢɪʟɴʀʏᴀᴄᴅᴇᴊᴋᴍᴏᴘᴛᴜᴠᴡᴢ"
    # Armenian
    "օսհոլ"
    # punctuation
    "‘’‚‛“”„‟"
)
_GLYPHS_TO = (
    "ABEKMHOPCTXYIJSGQWIY"
    "aeopcyxijsdhqwlyrnv"
    "ABEZHIKMNOPTYX"
    "abeniknoptuxy"
    "iiaggilnryacdejkmoptuvwz"
    "ouhnl"
    "''''\"\"\"\""
)
HOMOGLYPHS: dict[str, str] = dict(zip(_GLYPHS_FROM, _GLYPHS_TO, strict=True))

_ASCII_BYTES = bytes(range(128))


def _non_ascii_chars(text: str) -> frozenset[str]:
    """The distinct non-ASCII characters of ``text``, without a Python loop over it."""
    rest = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    return frozenset(rest.decode("utf-8", "surrogatepass"))


def _replace_chars(text: str, mapping: dict[str, str]) -> str:
    # str.translate with a dict costs ~60 ns a character on a non-ASCII text; a replace per
    # character present is a C scan each, far cheaper while the characters are few.
    if len(mapping) <= 24:
        for old, new in mapping.items():
            text = text.replace(old, new)
        return text
    return text.translate({ord(old): new for old, new in mapping.items()})


@dataclasses.dataclass(frozen=True, slots=True)
class Folded:
    """:func:`fold`'s result.

    ``exact``: offsets in ``text`` are offsets in the original (true for any ASCII text and
    for one whose folding only swapped characters one for one). ``changed``: hidden
    characters, look-alikes or compatibility forms were folded, so a match may be one the
    original hides. ``non_ascii``: the original's distinct non-ASCII characters.
    """

    text: str
    exact: bool
    changed: bool
    non_ascii: frozenset[str]


_EMPTY: frozenset[str] = frozenset()


def fold(text: str) -> Folded:
    """NFKC, hidden characters removed, look-alikes folded, lower-cased."""
    if text.isascii():
        return Folded(text.lower(), True, False, _EMPTY)
    chars = _non_ascii_chars(text)
    work, exact, changed = text, True, False
    if not unicodedata.is_normalized("NFKC", work):
        work = unicodedata.normalize("NFKC", work)
        exact, changed = False, True
        present = _non_ascii_chars(work)
    else:
        present = chars
    hidden = {c: "" for c in present if c in _HIDDEN}
    if hidden:
        work = _replace_chars(work, hidden)
        exact, changed = False, True
    glyphs = {c: HOMOGLYPHS[c] for c in present if c in HOMOGLYPHS}
    if glyphs:
        work = _replace_chars(work, glyphs)
        changed = True
    lowered = work.lower()
    if len(lowered) != len(work):
        exact = False
    return Folded(lowered, exact, changed, chars)


def ascii_form(text: str) -> str:
    """``text`` (folded) with each non-ASCII character replaced, one for one, by an ASCII
    character a regex classes the same way: a word character (``\\w``: a letter or digit of
    any script) by ``_``, whitespace by a space, anything else (an emoji, a dash, a symbol)
    by DEL. Rules written in ASCII match the same places in it, and matching an ASCII
    string is faster, and is what RE2's ASCII classes agree with Python's on."""
    if text.isascii():
        return text
    mapping = {
        c: "_" if c.isalnum() else " " if c.isspace() else "\x7f" for c in _non_ascii_chars(text)
    }
    if len(mapping) <= 24:
        return _replace_chars(text, mapping)
    return _NON_ASCII_RUN.sub(lambda m: m.group().translate(_class_table(m.group())), text)


_NON_ASCII_RUN = re.compile("[^\x00-\x7f]+")


def _class_table(run: str) -> dict[int, str]:
    return {ord(c): "_" if c.isalnum() else " " if c.isspace() else "\x7f" for c in set(run)}


# ------------------------------------------------------------------ leetspeak, squash, rot13

LEET_CHARS = "0134578@$9"
_LEET = str.maketrans(LEET_CHARS, "oieastbasg")
_WORDISH = frozenset("abcdefghijklmnopqrstuvwxyz" + LEET_CHARS)
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")


def fold_leet(text: str) -> str:
    """Every leetspeak character of a lower-cased text folded to its letter, one for one."""
    return text.translate(_LEET)


def _in_word(text: str, i: int) -> bool:
    lo, hi = i, i + 1
    while lo > 0 and i - lo < 64 and text[lo - 1] in _WORDISH:
        lo -= 1
    while hi < len(text) and hi - i < 64 and text[hi] in _WORDISH:
        hi += 1
    return any(c in _LETTERS for c in text[lo:hi])


def leet_inside_words(text: str, start: int, end: int) -> bool:
    """Whether every leetspeak character in ``text[start:end]`` (a lower-cased text, before
    :func:`fold_leet`) sits in a run of letters, digits, ``@`` and ``$`` that holds a letter:
    ``pr3v10us`` does, ``3`` and ``$20`` do not."""
    span = text[start:end]
    for offset, char in enumerate(span):
        if char in LEET_CHARS and not _in_word(text, start + offset):
            return False
    return True


_LEET_WORD_RE = re.compile(r"[a-z0-9@$]*[a-z][a-z0-9@$]*")


def normalize(text: str) -> str:
    """The reference single-string form: :func:`fold`, then leetspeak folded inside words
    only. (The detector keeps the forms apart, for speed and to know what matched where.)"""
    folded = fold(text).text
    return _LEET_WORD_RE.sub(lambda m: m.group().translate(_LEET), folded)


_NOT_LOWER = bytes(c for c in range(256) if not 0x61 <= c <= 0x7A)


def squash(text: str) -> str:
    """Only the ASCII letters ``a-z`` of a lower-cased text, in order."""
    return text.encode("ascii", "ignore").translate(None, _NOT_LOWER).decode("ascii")


_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)


def rot13(text: str) -> str:
    return text.translate(_ROT13)


# ------------------------------------------------------------------ encoded segments


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """A decoded piece of a text. ``start``/``end`` is where its outermost encoding sits in
    the text given to :func:`decode_segments` (so a finding in a base64-of-hex segment
    points at the base64)."""

    kind: SegmentKind
    text: str
    depth: int
    start: int
    end: int


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_B64_MASK = bytes(0x41 if c in _B64_ALPHABET else 0x20 for c in range(256))
_MIN_RUN = 20  # base64 of 15 characters, hex of 10: shorter is not worth decoding
_RUN = b"A" * _MIN_RUN
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_ENCODED_RE = re.compile(r"[0-9A-Za-z+/_-]+=*")
_URLSAFE = str.maketrans("-_", "+/")
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_PCT_RE = re.compile(r"%[0-9A-Fa-f]{2}")
_ESC_RE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8})")
_ENT_RE = re.compile(r"&#(?:[xX][0-9A-Fa-f]{1,6}|[0-9]{1,7});")
_TAGS_RE = re.compile("[\U000e0000-\U000e007f]+")
_VS_RE = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")


def _plausible(text: str) -> bool:
    """Decoded bytes that read as text: no control characters, and letters in it."""
    head = text[:512]
    if len(head) < 4 or _CONTROL_RE.search(head):
        return False
    letters = sum(1 for c in head if c.isalpha())
    return letters >= 3 and letters * 4 >= len(head)


def _utf8(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if _plausible(text) else None


class _Budget:
    __slots__ = ("chars", "segments")

    def __init__(self, chars: int, segments: int) -> None:
        self.chars = chars
        self.segments = segments

    def take(self, text: str) -> str | None:
        if self.segments <= 0 or self.chars <= 0:
            return None
        self.segments -= 1
        text = text[: self.chars]
        self.chars -= len(text)
        return text


def _decodable(text: str) -> bool:
    """Text that is itself an encoding (hex, base64) worth a level more of decoding."""
    body = text.strip()
    return len(body) >= _MIN_RUN and _ENCODED_RE.fullmatch(body) is not None


def _as_text(data: bytes) -> str | None:
    text = _utf8(data)
    if text is None:
        try:
            decoded = data.decode("ascii")
        except UnicodeDecodeError:
            return None
        return decoded if _decodable(decoded) else None
    return text


def _decode_run(run: str, budget: _Budget) -> tuple[SegmentKind, str] | None:
    body = run.rstrip("=")
    if body[:2] in ("0x", "0X"):
        body = body[2:]
    if _HEX_RE.fullmatch(body) is not None and not body.isdigit():
        if len(body) % 2:
            body = body[:-1]
        if len(body) < _MIN_RUN:
            return None
        text = _as_text(bytes.fromhex(body[: 2 * budget.chars]))
        return ("hex", text) if text is not None else None
    if body.islower() or body.isupper() or len(body) < _MIN_RUN:
        return None  # identifiers and constants: base64 of text mixes cases
    if "-" in body or "_" in body:
        body = body.translate(_URLSAFE)
    limit = (budget.chars * 4 // 3 + 4) // 4 * 4
    body = body[:limit]
    if len(body) % 4 == 1:
        body = body[:-1]
    try:
        if len(body) > 256:  # a long blob (an image): look at its start first
            head = binascii.a2b_base64(body[:64])
            if _as_text(head[: len(head) - 4]) is None:
                return None
        raw = binascii.a2b_base64(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return None
    text = _as_text(raw)
    return ("base64", text) if text is not None else None


def _no_space(gap: str) -> bool:
    return not any(c.isspace() for c in gap)


def _runs(
    pattern: re.Pattern[str], text: str, max_gap: int, min_count: int, spaces: bool
) -> Iterator[tuple[int, int]]:
    """Runs of ``pattern``'s matches at most ``max_gap`` characters apart (no newline in a
    gap, and no whitespace unless ``spaces``), of at least ``min_count`` matches."""
    start = end = -1
    count = 0
    for m in pattern.finditer(text):
        gap = text[end : m.start()] if count else ""
        if count and len(gap) <= max_gap and "\n" not in gap and (spaces or _no_space(gap)):
            end, count = m.end(), count + 1
            continue
        if count >= min_count:
            yield start, end
        start, end, count = m.start(), m.end(), 1
    if count >= min_count:
        yield start, end


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """``start``/``end`` widened to the surrounding non-space characters (64 at most)."""
    lo, hi = start, end
    while lo > 0 and start - lo < 64 and not text[lo - 1].isspace():
        lo -= 1
    while hi < len(text) and hi - end < 64 and not text[hi].isspace():
        hi += 1
    return lo, hi


def _one_level(
    text: str, budget: _Budget, non_ascii: Set[str] | None
) -> Iterator[tuple[SegmentKind, int, int, str]]:
    if not text.isascii():
        chars = _non_ascii_chars(text) if non_ascii is None else non_ascii
        if any("\U000e0000" <= c <= "\U000e007f" for c in chars):
            for m in _TAGS_RE.finditer(text):
                smuggled = "".join(chr(ord(c) - 0xE0000) for c in m.group())
                if _plausible(smuggled) and (taken := budget.take(smuggled)):
                    yield "tags", m.start(), m.end(), taken
        if any("\U000e0100" <= c <= "\U000e01ef" for c in chars):
            for m in _VS_RE.finditer(text):
                raw = bytes(
                    ord(c) - 0xFE00 if c <= "\ufe0f" else ord(c) - 0xE0100 + 16 for c in m.group()
                )
                decoded = _utf8(raw)
                if decoded is not None and (taken := budget.take(decoded)):
                    yield "variation", m.start(), m.end(), taken
    # base64 / hex: runs of 16+ alphabet characters, found with translate + find ("=" ends
    # a run, so "key=value" splits, and padding is taken back after it).
    raw = text.encode("ascii", "replace")
    mask = raw.translate(_B64_MASK)
    i = mask.find(_RUN)
    while i != -1 and budget.chars > 0:
        j = mask.find(b" ", i + _MIN_RUN)
        j = len(mask) if j == -1 else j
        run = raw[i:j]
        # Identifiers, paths and constants are all one case; base64 of text mixes cases.
        if not (run.islower() or run.isupper()) or not run.translate(None, _HEX_DIGITS):
            end = j
            while end < len(raw) and end - j < 2 and raw[end] == 0x3D:
                end += 1
            found = _decode_run(text[i:end], budget)
            if found is not None and (taken := budget.take(found[1])):
                yield found[0], i, end, taken
        i = mask.find(_RUN, j)
    if "%" in text:
        for s, e in _runs(_PCT_RE, text, 48, 3, spaces=False):
            s, e = _word_bounds(text, s, e)
            decoded = unquote(text[s:e], errors="replace")
            if _plausible(decoded) and (taken := budget.take(decoded)):
                yield "url", s, e, taken
    if "\\" in text:
        for s, e in _runs(_ESC_RE, text, 3, 4, spaces=True):
            decoded = _ESC_RE.sub(lambda m: chr(int(m.group()[2:], 16)), text[s:e])
            if _plausible(decoded) and (taken := budget.take(decoded)):
                yield "escape", s, e, taken
    if "&" in text and "&#" in text:
        for s, e in _runs(_ENT_RE, text, 3, 4, spaces=True):
            decoded = html.unescape(text[s:e])
            if _plausible(decoded) and (taken := budget.take(decoded)):
                yield "entity", s, e, taken


def decode_segments(
    text: str,
    *,
    max_depth: int = MAX_DEPTH,
    max_chars: int = MAX_DECODED_CHARS,
    max_segments: int = MAX_SEGMENTS,
    non_ascii: Set[str] | None = None,
) -> list[Segment]:
    """Every encoded segment of ``text`` that decodes to plausible text, decoded again to
    ``max_depth`` levels, at most ``max_chars`` decoded characters and ``max_segments``
    segments in all. ``non_ascii`` may pass :attr:`Folded.non_ascii` to save a pass."""
    budget = _Budget(max_chars, max_segments)
    found: list[Segment] = []
    level: list[tuple[str, tuple[int, int] | None]] = [(text, None)]
    for depth in range(1, max_depth + 1):
        below: list[tuple[str, tuple[int, int] | None]] = []
        for source, span in level:
            chars = non_ascii if span is None else None
            for kind, start, end, decoded in _one_level(source, budget, chars):
                outer = span if span is not None else (start, end)
                found.append(Segment(kind, decoded, depth, outer[0], outer[1]))
                below.append((decoded, outer))
        level = below
        if not level:
            break
    return found
