"""Prompt-injection and jailbreak detection: a rule set over normalised text, no I/O.

The rules (``rules/injection.toml``, shipped as package data) describe six families, each
with its reasoning in the file: ``instruction_override`` (drop your instructions, follow
mine), ``system_prompt_exfiltration`` (reveal your prompt), ``role_hijack`` (DAN, developer
mode, an AI without restrictions), ``delimiter_injection`` (fake chat-template tokens, role
tags and turns), ``tool_abuse`` (send the conversation or secrets somewhere, markdown-image
exfiltration, credential files, destructive commands) and ``encoding_evasion`` (the attack
was hidden: encoded or obfuscated).

How a text is scanned, each step shaped by the time budget (0.3 ms for a 2 KB prompt and
4 ms for 100 KB): in Python, a pass of ``str.find`` over 100 KB costs ~60 us, a regex that
starts with a literal ~90 us and one that starts with an alternation ten times that, so
the work is a few passes over the text whatever the number of rules.

1. :func:`normalize.fold` (NFKC, invisible characters, look-alikes, lower case; an ASCII
   text takes a ``lower()`` fast path), :func:`normalize.ascii_form` (what non-ASCII is
   left becomes ASCII of the same regex class: one emoji would otherwise make every pass
   over a 100 KB text 4 times slower) and :func:`normalize.fold_leet`; each one for one,
   so offsets hold.
2. The prefilter, per 16 KB chunk: which of the rules' vocabulary words the chunk holds
   (whole runs of a-z), and a rule is a candidate there only when each of its ``requires``
   groups has a word there. With google-re2, one ``Set`` pass also tells which anchors'
   joined regexes (below), their lookarounds dropped, could match in the chunk at all (the
   text is ASCII by then, where RE2's classes and Python's agree): the others are not
   searched. A short text (:data:`matching.SMALL_TEXT`), or any text without re2, is
   split into words instead and every candidate's anchor is searched: the same findings,
   with no GIL hand-over for a short text, and ~2 ms slower on 100 KB.
3. A rule is an anchor (a word or a literal) and a continuation. Every continuation of an
   anchor is joined into one regex that starts with the anchor's literal text, which ``re``
   searches in C, testing each occurrence there; only where some continuation matches does
   Python check which candidate rule matched, with its ``preceded_by`` context. A match
   that needed a folded leetspeak character counts only if that character sat inside a
   word (:func:`normalize.leet_inside_words`).
4. Rules with ``squashed`` patterns are also searched in the letters-only text around their
   squashed anchors, which undoes "i g n o r e" and "ig-nore"; such a match counts only if
   the letters were spelled in pieces, and as obfuscation.
5. :func:`normalize.decode_segments` decodes base64/hex/URL/escape/entity/tag-character
   segments (bounded depth and size) and each decoded text goes through steps 1-4; when a
   rot13'd key word is among a text's words, its rot13 goes through them too.

Scoring: a rule counts once, with the least hidden form it matched in (plain, obfuscated,
decoded). A family's score is the sum of its matched rules' weights, and its confidence
the saturating ``1 - exp(-score)``: weights are evidence in nats, independent evidence adds
up, and no amount of it reaches 1. A weight of 0.7 gives 0.5, where the default policy
acts. One finding per family that fired, with the highest severity among its rules. The
``encoding_evasion`` meta rules fire when a family matched only in decoded segments
(``when = "decoded"``) or only once the text was folded (``"obfuscated"``); their score is
their weight plus the highest score among those families, and their severity one step
above those families' (hiding an attack is evidence of intent). A finding's span is the
union of its matches when every one maps back to the original text (an ASCII text, or a
decoded segment's encoded run), else the whole piece.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from costwarden.security import normalize as nz
from costwarden.security.findings import SEVERITIES, SEVERITY_RANK, Finding, Severity
from costwarden.security.matching import SMALL_TEXT

try:  # google-re2: the word prefilter's one pass (see _Words)
    import re2  # type: ignore[import-untyped]

    _RE2: Any = re2
except ImportError:  # pragma: no cover - a dependency of the package
    _RE2 = None

Origin = Literal["plain", "obfuscated", "decoded"]
When = Literal["decoded", "obfuscated"]
WHENS: tuple[When, ...] = ("decoded", "obfuscated")
_RANK: dict[Origin, int] = {"plain": 0, "obfuscated": 1, "decoded": 2}

DEFAULT_BEFORE = 48  # how far before its anchor a `preceded_by` may start, by default
DEFAULT_AFTER = 240  # how far past its anchor a continuation may reach, by default
CHUNK = 16384  # a long text is prefiltered in chunks this long...
MARGIN = 512  # ...each seeing this much of its neighbours (more than any rule reaches)
SQUASH_BEFORE = 64  # the letters-only windows around a squashed anchor
SQUASH_AFTER = 96
MATCH_CAP = 4096  # places one anchor's regex sends back to Python, per text
LEET_REACH = 64  # a leetspeak character this close to a match earns a folded try

_WORD = re.compile(r"[a-z]+")
_MACRO = re.compile(r"\(\?&(\w+)\)")
_WORD_MASK = bytes(c if 0x61 <= c <= 0x7A else 0x20 for c in range(256))
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")
# a: a letter, 1: a leetspeak character, space: anything else. A stretch needs the
# leetspeak-folded form only if it holds "a1" or "1a": a digit or sign touching a letter.
_LEET_MARKS = bytes(
    0x61 if 0x61 <= c <= 0x7A else 0x31 if chr(c) in nz.LEET_CHARS else 0x20 for c in range(256)
)


class RuleError(ValueError):
    """The rule set is malformed (the message names the rule and the field)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    id: str
    family: str
    severity: Severity
    weight: float
    requires: tuple[frozenset[str], ...] = ()
    anchors: tuple[str, ...] = ()
    continuation: re.Pattern[str] | None = None  # the patterns, joined
    preceded_by: re.Pattern[str] | None = None  # must end at the anchor, within `before`
    unless_preceded_by: re.Pattern[str] | None = None
    before: int = DEFAULT_BEFORE
    after: int = DEFAULT_AFTER
    leet: bool = True  # also try the leetspeak-folded form (not for structural rules)
    squashed: re.Pattern[str] | None = None
    squashed_anchors: tuple[str, ...] = ()
    when: When | None = None
    source: str = ""  # the continuation's pattern text, for the joined regexes


_RE2_SPACE = r"\t-\r\x1c-\x20"  # what Python's \s is in ASCII text (RE2's lacks \v, \x1c-\x1f)


def _without_lookarounds(pattern: str) -> str | None:
    """``pattern`` with its lookaround groups dropped (which only widens what it matches)
    and ``\\s``/``\\S`` spelled as Python reads them in ASCII text: a pattern RE2 can run,
    matching wherever the original can. None if it has a construct this does not handle."""
    pattern = pattern.replace("[\\s\\S]", "(?s:.)")  # any character, in both engines
    out: list[str] = []
    i, n, in_class = 0, len(pattern), False
    while i < n:
        if not in_class and pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            depth, j, inner = 0, i, False
            while j < n:
                char = pattern[j]
                if char == "\\":
                    j += 2
                    continue
                if inner:
                    inner = char != "]"
                elif char == "[":
                    inner = True
                elif char == "(":
                    depth += 1
                elif char == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            i = j + 1
            continue
        char = pattern[i]
        if char == "\\":
            escape = pattern[i : i + 2]
            if escape == "\\s":
                out.append(_RE2_SPACE if in_class else f"[{_RE2_SPACE}]")
            elif escape == "\\S":
                if in_class:
                    return None
                out.append(f"[^{_RE2_SPACE}]")
            else:
                out.append(escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class and out and out[-1] not in ("[", "[^"):
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


class _Prefilter:
    """One google-re2 ``Set`` pass over a chunk of an ASCII text says which vocabulary words
    it holds (whole runs of a-z) and which anchors' joined regexes could match in it (their
    patterns without lookarounds: a superset), so the others are not searched at all. A
    second ``Set`` does the same for the anchors searched in the unfolded form. Measured on
    100 KB: ~0.5 ms for both, against ~2 ms to split the text into words and ~90 us per
    anchor searched. Without re2 (or when called without ``base``) the words come from
    splitting and every anchor is searched."""

    def __init__(
        self,
        vocabulary: frozenset[bytes],
        unions: Mapping[tuple[str, bool], Any],
        squashed: Mapping[int, re.Pattern[str]],
    ) -> None:
        self._vocabulary = vocabulary
        self._words = sorted(vocabulary)
        self.always: frozenset[tuple[str, bool]] = frozenset(unions)  # never filtered out
        self._leet: Any = None
        self._base: Any = None
        self._squashed: Any = None
        self._squashed_rules: list[int] = []
        self.squashed_always = frozenset(squashed)
        self._keys: dict[bool, list[tuple[str, bool]]] = {True: [], False: []}
        if _RE2 is None or not vocabulary:
            return
        options = _RE2.Options()
        options.encoding = _RE2.Options.Encoding.LATIN1
        self._leet = _RE2.Set.SearchSet(options)
        self._base = _RE2.Set.SearchSet(options)
        for word in self._words:
            self._leet.Add(b"(?:^|[^a-z])" + word + b"(?:[^a-z]|$)")
        always = set()
        for key, union in unions.items():
            pattern = _without_lookarounds(union.regex.pattern)
            target = self._leet if key[1] else self._base
            try:
                if pattern is None:
                    raise ValueError(key)
                target.Add(pattern.encode("ascii"))
            except Exception:  # RE2 cannot run it: always search this anchor
                always.add(key)
                continue
            self._keys[key[1]].append(key)
        self.always = frozenset(always)
        self._leet.Compile()
        if self._keys[False]:
            self._base.Compile()
        else:
            self._base = None
        self._squashed = _RE2.Set.SearchSet(options)
        squashed_always = set()
        for index, regex in squashed.items():
            pattern = _without_lookarounds(regex.pattern)
            try:
                if pattern is None:
                    raise ValueError(index)
                self._squashed.Add(pattern.encode("ascii"))
            except Exception:
                squashed_always.add(index)
                continue
            self._squashed_rules.append(index)
        self.squashed_always = frozenset(squashed_always)
        if self._squashed_rules:
            self._squashed.Compile()
        else:
            self._squashed = None

    def squashed(self, letters: str) -> frozenset[int] | None:
        """The rules whose squashed patterns could match in ``letters`` (None: unknown)."""
        if len(letters) < SMALL_TEXT:
            return None  # no RE2 call for a short text (see costwarden.security.matching)
        if self._squashed is None:
            return None if not self._squashed_rules else frozenset()
        found = self._squashed.Match(letters.encode("ascii")) or ()
        return frozenset(self._squashed_rules[i] for i in found)

    def __call__(
        self, leet: bytes, base: bytes | None
    ) -> tuple[frozenset[bytes], frozenset[tuple[str, bool]] | None]:
        """(the vocabulary words in ``leet``, the union keys that could match in it or in
        ``base``, or None when that is not known). Both are ASCII (see ``ascii_form``);
        ``base`` None: do not filter."""
        if self._leet is None or base is None or len(leet) < SMALL_TEXT:
            return self._vocabulary.intersection(leet.translate(_WORD_MASK).split()), None
        count, words = len(self._words), self._words
        found = self._leet.Match(leet) or ()
        present = frozenset(words[i] for i in found if i < count)
        possible = {self._keys[True][i - count] for i in found if i >= count}
        if self._base is not None:
            possible.update(self._keys[False][i] for i in self._base.Match(base) or ())
        return present, frozenset(possible)


@dataclasses.dataclass(frozen=True, slots=True)
class _Union:
    """Every continuation of the anchors sharing a stem (of rules with one ``leet``
    setting), joined into one regex that starts with the stem's literal text."""

    regex: re.Pattern[str]
    members: tuple[tuple[str, tuple[int, ...]], ...]  # (anchor, its rules)
    reach: int  # the longest match it may need past where it starts


STEM = 5  # anchors longer than this sharing their first 5 letters share one regex


def _stem(anchor: str) -> str:
    return anchor[:STEM] if len(anchor) > STEM and anchor.isalpha() else anchor


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    rot13_words: frozenset[str]  # rot13'd key words (a text holding one is rot13'd)
    vocabulary: frozenset[bytes] = dataclasses.field(init=False)
    rot13_vocabulary: frozenset[bytes] = dataclasses.field(init=False)
    first_words: Mapping[bytes, tuple[int, ...]] = dataclasses.field(init=False)
    # per rule: its requires groups and word anchors as bytes (the prefilter's currency),
    # and the union keys its anchors are searched under
    requires_b: tuple[tuple[frozenset[bytes], ...], ...] = dataclasses.field(init=False)
    word_keys: tuple[Mapping[bytes, tuple[str, bool]], ...] = dataclasses.field(init=False)
    literal_keys: tuple[tuple[tuple[str, bool], ...], ...] = dataclasses.field(init=False)
    unions: Mapping[tuple[str, bool], _Union] = dataclasses.field(init=False)  # by stem
    squash_rules: tuple[int, ...] = dataclasses.field(init=False)
    meta: tuple[Rule, ...] = dataclasses.field(init=False)
    prefilter: _Prefilter = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        words: set[str] = set(self.rot13_words)
        first: dict[bytes, list[int]] = {}
        by_anchor: dict[tuple[str, bool], list[int]] = {}
        requires_b, word_keys, literal_keys = [], [], []
        for index, rule in enumerate(self.rules):
            for group in rule.requires:
                words.update(group)
            if rule.requires:
                for word in rule.requires[0]:
                    first.setdefault(word.encode(), []).append(index)
            for anchor in rule.anchors:
                by_anchor.setdefault((anchor, rule.leet), []).append(index)
            requires_b.append(tuple(frozenset(w.encode() for w in g) for g in rule.requires))
            word_keys.append(
                {a.encode(): (_stem(a), rule.leet) for a in rule.anchors if a.isalpha()}
            )
            literal_keys.append(
                tuple((_stem(a), rule.leet) for a in rule.anchors if not a.isalpha())
            )
        object.__setattr__(self, "requires_b", tuple(requires_b))
        object.__setattr__(self, "word_keys", tuple(word_keys))
        object.__setattr__(self, "literal_keys", tuple(literal_keys))
        object.__setattr__(
            self, "rot13_vocabulary", frozenset(w.encode() for w in self.rot13_words)
        )
        stems: dict[tuple[str, bool], list[tuple[str, tuple[int, ...]]]] = {}
        for (anchor, leet), indexes in by_anchor.items():
            stems.setdefault((_stem(anchor), leet), []).append((anchor, tuple(indexes)))
        unions = {}
        for (stem, leet), members in stems.items():
            branches = []
            for anchor, members_of in members:
                boundary = "(?![a-z])" if anchor[-1].isalpha() else ""
                alternatives = "|".join(f"(?:{self.rules[i].source})" for i in members_of)
                branches.append(f"{re.escape(anchor[len(stem) :])}{boundary}(?:{alternatives})")
            regex = re.compile(f"{re.escape(stem)}(?:{'|'.join(branches)})")
            reach = max(len(a) + self.rules[i].after for a, rules in members for i in rules)
            unions[(stem, leet)] = _Union(regex, tuple(members), reach)
        object.__setattr__(self, "vocabulary", frozenset(w.encode() for w in words))
        object.__setattr__(self, "first_words", {w: tuple(i) for w, i in first.items()})
        object.__setattr__(self, "unions", unions)
        squashed = {i: r.squashed for i, r in enumerate(self.rules) if r.squashed is not None}
        object.__setattr__(self, "prefilter", _Prefilter(self.vocabulary, unions, squashed))
        object.__setattr__(
            self,
            "squash_rules",
            tuple(i for i, rule in enumerate(self.rules) if rule.squashed is not None),
        )
        object.__setattr__(self, "meta", tuple(r for r in self.rules if r.when is not None))


# ------------------------------------------------------------------ loading


def _expand(pattern: str, macros: Mapping[str, str], where: str) -> str:
    for _ in range(8):
        if "(?&" not in pattern:
            return pattern

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in macros:
                raise RuleError(f"{where}: unknown macro (?&{name})")
            return f"(?:{macros[name]})"

        pattern = _MACRO.sub(sub, pattern)
    raise RuleError(f"{where}: macros nest too deep")


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}: expected a list of strings")
    return list(value)


def _words(value: Any, where: str) -> list[str]:
    words = _strings(value, where)
    for word in words:
        if not _WORD.fullmatch(word):
            raise RuleError(f"{where}: {word!r} is not a lower-case word (a-z only)")
    return words


def _source(patterns: list[str], macros: Mapping[str, str], where: str) -> str:
    """The patterns, macros expanded, checked one by one and joined."""
    expanded = []
    for i, pattern in enumerate(patterns):
        text = _expand(pattern, macros, f"{where}[{i}]")
        try:
            re.compile(text)
        except re.error as exc:
            raise RuleError(f"{where}[{i}]: {exc}") from exc
        expanded.append(text)
    return "|".join(f"(?:{p})" for p in expanded)


def _int(entry: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = entry.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RuleError(f"{where}.{key}: expected an integer >= 0")
    return value


def _context(
    entry: Mapping[str, Any], key: str, macros: Mapping[str, str], where: str
) -> re.Pattern[str] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RuleError(f"{where}.{key}: expected a pattern")
    return re.compile(f"(?:{_source([value], macros, f'{where}.{key}')})\\Z")


_FIELDS = frozenset(
    {
        "id", "family", "severity", "weight", "requires", "anchors", "patterns", "preceded_by",
        "unless_preceded_by", "before", "after", "leet", "squashed", "squashed_anchors", "when",
    }
)  # fmt: skip


def _rule(
    entry: Mapping[str, Any], macros: Mapping[str, str], groups: Mapping[str, list[str]]
) -> Rule:
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not rule_id:
        raise RuleError("a rule has no id")
    if unknown := sorted(set(entry) - _FIELDS):
        raise RuleError(f"{rule_id}: unknown field(s) {', '.join(unknown)}")
    family = entry.get("family")
    if not isinstance(family, str) or not _WORD.fullmatch(family.replace("_", "")):
        raise RuleError(f"{rule_id}.family: expected a lower_case name")
    severity = entry.get("severity")
    if severity not in SEVERITIES:
        raise RuleError(f"{rule_id}.severity: expected one of {', '.join(SEVERITIES)}")
    weight = entry.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise RuleError(f"{rule_id}.weight: expected a number > 0")
    when = entry.get("when")
    if when is not None:
        if when not in WHENS:
            raise RuleError(f"{rule_id}.when: expected one of {', '.join(WHENS)}")
        if set(entry) & {"requires", "anchors", "patterns", "squashed"}:
            raise RuleError(f"{rule_id}: a meta rule (when) has no requires or patterns")
        return Rule(rule_id, family, severity, float(weight), when=when)
    requires: list[frozenset[str]] = []
    for i, group in enumerate(entry.get("requires", [])):
        if isinstance(group, str):
            if not group.startswith("@") or group[1:] not in groups:
                raise RuleError(f"{rule_id}.requires[{i}]: unknown group {group!r}")
            requires.append(frozenset(groups[group[1:]]))
        else:
            requires.append(frozenset(_words(group, f"{rule_id}.requires[{i}]")))
    if not requires or not all(requires):
        raise RuleError(f"{rule_id}.requires: expected one or more non-empty word groups")
    anchors = _strings(entry.get("anchors", sorted(requires[0])), f"{rule_id}.anchors")
    if not anchors or not all(anchors) or any(a != a.lower() for a in anchors):
        raise RuleError(f"{rule_id}.anchors: expected non-empty lower-case strings")
    leet = entry.get("leet", True)
    if not isinstance(leet, bool):
        raise RuleError(f"{rule_id}.leet: expected true or false")
    patterns = _strings(entry.get("patterns"), f"{rule_id}.patterns")
    if not patterns:
        raise RuleError(f"{rule_id}.patterns: expected at least one pattern")
    source = _source(patterns, macros, f"{rule_id}.patterns")
    squashed = _strings(entry.get("squashed", []), f"{rule_id}.squashed")
    squashed_anchors = _words(entry.get("squashed_anchors", []), f"{rule_id}.squashed_anchors")
    if bool(squashed) != bool(squashed_anchors):
        raise RuleError(f"{rule_id}: squashed patterns and squashed_anchors go together")
    return Rule(
        rule_id,
        family,
        severity,
        float(weight),
        requires=tuple(requires),
        anchors=tuple(anchors),
        continuation=re.compile(source),
        preceded_by=_context(entry, "preceded_by", macros, rule_id),
        unless_preceded_by=_context(entry, "unless_preceded_by", macros, rule_id),
        before=_int(entry, "before", DEFAULT_BEFORE, rule_id),
        after=_int(entry, "after", DEFAULT_AFTER, rule_id),
        leet=leet,
        squashed=(
            re.compile(_source(squashed, macros, f"{rule_id}.squashed")) if squashed else None
        ),
        squashed_anchors=tuple(squashed_anchors),
        source=source,
    )


def parse_rules(source: str) -> RuleSet:
    """A rule set from TOML text (the format is described in ``rules/injection.toml``)."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from exc
    macros = data.get("macros", {})
    if not isinstance(macros, dict) or not all(isinstance(v, str) for v in macros.values()):
        raise RuleError("macros: expected a table of strings")
    raw_groups = data.get("groups", {})
    if not isinstance(raw_groups, dict):
        raise RuleError("groups: expected a table of word lists")
    groups = {name: _words(words, f"groups.{name}") for name, words in raw_groups.items()}
    entries = data.get("rule", [])
    if not isinstance(entries, list) or not entries:
        raise RuleError("expected one or more [[rule]] tables")
    rules = tuple(_rule(entry, macros, groups) for entry in entries)
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise RuleError(f"duplicate rule ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    rot13 = _words(data.get("rot13_words", []), "rot13_words")
    return RuleSet(rules, frozenset(nz.rot13(word) for word in rot13))


@functools.cache
def default_rules() -> RuleSet:
    """The shipped rule set, parsed and compiled once per process."""
    resource = importlib.resources.files("costwarden.security").joinpath("rules/injection.toml")
    return parse_rules(resource.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ scanning


@dataclasses.dataclass(frozen=True, slots=True)
class _Hit:
    rule: Rule
    origin: Origin
    span: tuple[int, int] | None  # in the piece; None: not mappable (the whole piece)


class _Text:
    """One text being scanned (the piece, a decoded segment, a rot13), and its forms."""

    __slots__ = ("raw", "folded", "base", "leet", "has_leet", "_marks", "_squashed", "_plain")

    def __init__(self, raw: str, folded: nz.Folded) -> None:
        self.raw = raw
        self.folded = folded
        self.base = nz.ascii_form(folded.text)  # one for one: offsets still hold
        self.leet = nz.fold_leet(self.base)
        self.has_leet = self.leet != self.base
        self._marks: bytes | None = None
        self._squashed: str | None = None
        self._plain: str | None = None

    def leet_near(self, start: int, end: int) -> bool:
        """Whether ``[start, end)`` holds a leetspeak character touching a letter."""
        if not self.has_leet:
            return False
        if self._marks is None:  # see _LEET_MARKS
            self._marks = self.base.encode("ascii", "replace").translate(_LEET_MARKS)
        marks = self._marks
        return marks.find(b"a1", start, end) != -1 or marks.find(b"1a", start, end) != -1

    @property
    def squashed(self) -> str:
        if self._squashed is None:
            self._squashed = nz.squash(self.leet)
        return self._squashed

    @property
    def plain(self) -> str:
        """The text as sent, only lower-cased (to tell what folding revealed)."""
        if self._plain is None:
            self._plain = self.raw.lower()
        return self._plain


def _split_occurrences(text: _Text, word: str) -> list[int]:
    """Where ``word`` occurs in the letters-only text, if it occurs there more often than in
    the folded text (the extra occurrences were split by spaces or punctuation); else none.
    Counting both costs two passes, and spares the windows on any text that is not split."""
    squashed = text.squashed
    count = squashed.count(word)
    if count == 0 or count <= text.leet.count(word):
        return []
    found: list[int] = []
    pos = squashed.find(word)
    while pos != -1 and len(found) < MATCH_CAP:
        found.append(pos)
        pos = squashed.find(word, pos + len(word))
    return found


def _spelled_in_pieces(folded: str, letters: str) -> bool:
    """Whether the letters a squashed pattern matched were written in pieces in the folded
    text ("i g n o r e", "ig-nore pre-vious", "sys tem pro mpt"): the words they span there
    average under 4 letters. Written as plain words, the rule's own patterns had their turn,
    so a squashed match of plain words is not counted."""
    letters = letters[:200]
    region = re.search("[^a-z]*".join(letters), folded)
    if region is None:
        return False
    pieces = _WORD.findall(region.group())
    return len(letters) < 4 * len(pieces)


def _merge(windows: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _bump(rank: int) -> int:
    return min(rank + 1, len(SEVERITIES) - 1)


def _context_ok(rule: Rule, form: str, start: int, pos: int) -> bool:
    preceded, unless = rule.preceded_by, rule.unless_preceded_by
    if preceded is not None and preceded.search(form, start, pos) is None:
        return False
    return unless is None or unless.search(form, start, pos) is None


@dataclasses.dataclass(slots=True)
class _Family:
    score: float = 0.0
    rank: int = 0
    origins: set[Origin] = dataclasses.field(default_factory=set)
    spans: list[tuple[int, int] | None] = dataclasses.field(default_factory=list)


class InjectionDetector:
    """Finds prompt-injection and jailbreak attempts in one text piece (see the module
    docstring). ``rules`` defaults to the shipped set; tests pass their own."""

    name = "injection"

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._rules = rules if rules is not None else default_rules()

    @property
    def rules(self) -> RuleSet:
        return self._rules

    def scan(self, text: str) -> list[Finding]:
        if not text:
            return []
        hits: dict[int, _Hit] = {}
        folded = nz.fold(text)
        self._scan_text(_Text(text, folded), "plain", None, 0, hits, len(text))
        for segment in nz.decode_segments(text, non_ascii=folded.non_ascii):
            piece = _Text(segment.text, nz.fold(segment.text))
            span = (segment.start, segment.end)
            self._scan_text(piece, "decoded", span, segment.depth, hits, len(text))
        return self._findings(hits, len(text))

    # -------------------------------------------------------------- one text

    def _scan_text(
        self,
        text: _Text,
        origin: Origin,
        span: tuple[int, int] | None,
        depth: int,
        hits: dict[int, _Hit],
        size: int,
        rot13: bool = True,
    ) -> None:
        rules = self._rules
        rank = _RANK[origin]
        n = len(text.leet)
        prefilter, first, requires = rules.prefilter, rules.first_words, rules.requires_b
        always = prefilter.always
        seen: set[bytes] = set()
        chunks: list[set[int]] = []
        needed: dict[tuple[str, bool], set[int]] = {}
        data = text.leet.encode("ascii")
        ascii_base = text.base.encode("ascii")
        for number, start in enumerate(range(0, max(n, 1), CHUNK)):
            lo, hi = max(0, start - MARGIN), min(n, start + CHUNK + MARGIN)
            everything = hi - lo >= n
            present, reachable = prefilter(
                data if everything else data[lo:hi],
                None if ascii_base is None else ascii_base if everything else ascii_base[lo:hi],
            )
            candidates: set[int] = set()
            chunks.append(candidates)
            if not present:
                continue
            seen |= present
            possible: set[int] = set()
            for word in present:
                indexes = first.get(word)
                if indexes is not None:
                    possible.update(indexes)
            for index in possible:
                previous = hits.get(index)
                if previous is not None and _RANK[previous.origin] <= rank:
                    continue
                if all(not group.isdisjoint(present) for group in requires[index]):
                    candidates.add(index)
                    keys = rules.word_keys[index]
                    for key in [keys[w] for w in present.intersection(keys)] + list(
                        rules.literal_keys[index]
                    ):
                        if reachable is None or key in reachable or key in always:
                            needed.setdefault(key, set()).add(number)
        for (stem, leet), numbers in needed.items():
            self._search_anchor(text, stem, leet, numbers, chunks, origin, span, hits)
        self._try_squashed(text, origin, span, hits)
        if rot13 and depth < nz.MAX_DEPTH and not rules.rot13_vocabulary.isdisjoint(seen):
            decoded = nz.rot13(text.base)
            whole = span if span is not None else (0, size)
            piece = _Text(decoded, nz.fold(decoded))
            self._scan_text(piece, "decoded", whole, depth + 1, hits, size, rot13=False)

    def _search_anchor(
        self,
        text: _Text,
        stem: str,
        leet: bool,
        numbers: set[int],
        chunks: list[set[int]],
        origin: Origin,
        span: tuple[int, int] | None,
        hits: dict[int, _Hit],
    ) -> None:
        """Search one stem's joined regex over the chunks that need it; check the rules at
        each place it matches. A "\\n" anchor also stands before the text's first line."""
        union = self._rules.unions[(stem, leet)]
        form = text.leet if leet and text.has_leet else text.base
        n, budget = len(form), MATCH_CAP
        if stem == "\n" and 0 in numbers:
            self._check(union, text, form, -1, chunks, origin, span, hits)
        regex, reach = union.regex, union.reach
        for start, end in _merge((k * CHUNK, min(n, (k + 1) * CHUNK)) for k in numbers):
            pos = start
            while budget > 0:
                found = regex.search(form, pos, min(n, end + reach))
                if found is None or found.start() >= end:
                    break
                budget -= 1
                pos = found.start() + 1
                if not self._check(union, text, form, found.start(), chunks, origin, span, hits):
                    return

    def _check(
        self,
        union: _Union,
        text: _Text,
        form: str,
        at: int,
        chunks: list[set[int]],
        origin: Origin,
        span: tuple[int, int] | None,
        hits: dict[int, _Hit],
    ) -> bool:
        """Check the rules of the anchor found at ``at`` (-1: the virtual line break before
        the text). False once every rule of the union has a hit as good as this origin's."""
        rank, pending = _RANK[origin], False
        candidates = chunks[max(at, 0) // CHUNK]
        start = max(at, 0)
        near: bool | None = None  # a leetspeak character near this place (once, lazily)
        for anchor, indexes in union.members:
            if at >= 0:
                if not form.startswith(anchor, at):
                    continue
                end = at + len(anchor)
                if anchor[0].isalpha() and at and form[at - 1] in _LETTERS:
                    continue
                if anchor[-1].isalpha() and end < len(form) and form[end] in _LETTERS:
                    continue
            for index in indexes:
                previous = hits.get(index)
                if previous is not None and _RANK[previous.origin] <= rank:
                    continue
                pending = True
                if index in candidates:
                    rule = self._rules.rules[index]
                    if near is None and rule.leet:
                        near = text.leet_near(max(0, start - LEET_REACH), start + union.reach)
                    hit = self._verify(rule, text, anchor, at, bool(near), origin, span)
                    if hit is not None:
                        hits[index] = hit
        return pending or at < 0

    def _verify(
        self,
        rule: Rule,
        text: _Text,
        anchor: str,
        at: int,
        near: bool,
        origin: Origin,
        span: tuple[int, int] | None,
    ) -> _Hit | None:
        """Whether ``rule`` matches with ``anchor`` at ``at``: in the folded text, else (if
        ``near``: a leetspeak character is close) in its leetspeak-folded form, when every
        folded character it needs sits inside a word."""
        continuation = rule.continuation
        assert continuation is not None
        base, size = text.base, len(anchor)
        if at < 0:  # the virtual line break before the text
            at, size = 0, 0
        lo, end = max(0, at - rule.before), min(len(base), at + size + rule.after)
        context: bool | None = None  # whether the context before the anchor fits (lazily)
        if size == 0 or base.startswith(anchor, at):
            found = continuation.match(base, at + size, end)
            if found is not None:
                context = _context_ok(rule, base, lo, at)
                if context:
                    return self._hit(rule, text, anchor, (at, found.end()), False, origin, span)
                if not (near and text.leet_near(lo, at)):
                    return None  # only the context failed, and folding would not change it
        if not (rule.leet and near):
            return None
        leet = text.leet
        found = continuation.match(leet, at + size, end)
        if found is None or not nz.leet_inside_words(base, at, found.end()):
            return None
        if context is None:
            context = _context_ok(rule, base, lo, at)
        if not context:
            if not text.leet_near(lo, at) or not _context_ok(rule, leet, lo, at):
                return None
            if rule.preceded_by is not None:
                before = rule.preceded_by.search(leet, lo, at)
                if before is None or not nz.leet_inside_words(base, before.start(), at):
                    return None
        return self._hit(rule, text, anchor, (at, found.end()), True, origin, span)

    @staticmethod
    def _hit(
        rule: Rule,
        text: _Text,
        anchor: str,
        where: tuple[int, int],
        leet: bool,
        origin: Origin,
        span: tuple[int, int] | None,
    ) -> _Hit:
        if span is not None:
            return _Hit(rule, origin, span)
        mapped = where if text.folded.exact else None
        if leet:
            return _Hit(rule, "obfuscated", mapped)
        if text.folded.changed:
            # Folding changed the text: does the rule also match the text as sent?
            plain = text.plain
            start = where[0] if text.folded.exact else plain.find(anchor)
            seen = False
            while start != -1 and not seen:
                continuation = rule.continuation
                assert continuation is not None
                after = start + len(anchor)
                found = (
                    continuation.match(plain, after, after + rule.after)
                    if plain.startswith(anchor, start)
                    else None
                )
                lo = max(0, start - rule.before)
                seen = found is not None and _context_ok(rule, plain, lo, start)
                start = -1 if text.folded.exact else plain.find(anchor, start + 1)
            if not seen:
                return _Hit(rule, "obfuscated", mapped)
        return _Hit(rule, origin, mapped)

    def _try_squashed(
        self, text: _Text, origin: Origin, span: tuple[int, int] | None, hits: dict[int, _Hit]
    ) -> None:
        squash_origin: Origin = "decoded" if origin == "decoded" else "obfuscated"
        rank = _RANK[squash_origin]
        pending = [
            i for i in self._rules.squash_rules if i not in hits or _RANK[hits[i].origin] > rank
        ]
        if not pending or text.squashed == text.leet:  # nothing to join: no split words
            return
        prefilter = self._rules.prefilter
        reachable = prefilter.squashed(text.squashed)
        if reachable is not None:
            pending = [i for i in pending if i in reachable or i in prefilter.squashed_always]
        anchors: dict[str, list[int]] = {}
        for index in pending:
            rule = self._rules.rules[index]
            assert rule.squashed is not None
            windows: list[tuple[int, int]] = []
            for word in rule.squashed_anchors:
                found = anchors.get(word)
                if found is None:
                    found = anchors[word] = _split_occurrences(text, word)
                if found:
                    windows.extend(
                        (max(0, p - SQUASH_BEFORE), p + len(word) + SQUASH_AFTER) for p in found
                    )
            if not windows:
                continue
            for start, end in _merge(windows):
                match = rule.squashed.search(text.squashed, start, end)
                if match is not None and _spelled_in_pieces(text.leet, match.group()):
                    hits[index] = _Hit(rule, squash_origin, span)
                    break

    # -------------------------------------------------------------- findings

    def _findings(self, hits: Mapping[int, _Hit], size: int) -> list[Finding]:
        if not hits:  # the meta rules need a family that fired
            return []
        families: dict[str, _Family] = {}
        for hit in hits.values():
            family = families.setdefault(hit.rule.family, _Family())
            family.score += hit.rule.weight
            family.rank = max(family.rank, SEVERITY_RANK[hit.rule.severity])
            family.origins.add(hit.origin)
            family.spans.append(hit.span)
        evaded_best: dict[str, float] = {}
        for meta in self._rules.meta:
            evaded = [
                name
                for name, family in families.items()
                if name != meta.family and _evaded(family, meta.when)
            ]
            if not evaded:
                continue
            target = families.setdefault(meta.family, _Family())
            target.score += meta.weight
            target.rank = max(
                target.rank,
                SEVERITY_RANK[meta.severity],
                _bump(max(families[name].rank for name in evaded)),
            )
            target.origins.add("decoded" if meta.when == "decoded" else "obfuscated")
            for name in evaded:
                target.spans.extend(families[name].spans)
            best = max(families[name].score for name in evaded)
            evaded_best[meta.family] = max(evaded_best.get(meta.family, 0.0), best)
        for name, best in evaded_best.items():
            families[name].score += best
        findings = []
        for name, family in families.items():
            if family.score <= 0:
                continue
            spans = family.spans
            if spans and all(s is not None for s in spans):
                start = min(s[0] for s in spans if s is not None)
                end = max(s[1] for s in spans if s is not None)
            else:
                start, end = 0, size
            findings.append(
                Finding(
                    detector=self.name,
                    family=name,
                    severity=SEVERITIES[family.rank],
                    confidence=round(1.0 - math.exp(-family.score), 4),
                    start=start,
                    end=end,
                )
            )
        findings.sort(key=lambda f: (-SEVERITY_RANK[f.severity], -f.confidence, f.family))
        return findings


def _evaded(family: _Family, when: When | None) -> bool:
    if when == "decoded":
        return family.origins == {"decoded"}
    return "plain" not in family.origins and "obfuscated" in family.origins
