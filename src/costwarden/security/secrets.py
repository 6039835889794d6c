"""Credentials in a prompt: API keys, tokens, private keys, passwords in connection strings and
assignments, found by a gitleaks-style rule set kept as data (``rules/secrets.toml``).

A rule is a regular expression, the keywords without which it cannot match, and what a
match is worth (family, severity, confidence; an entropy floor that tells a random key from
a README's ``sk-xxxx``). Speed comes from two things:

- **one pass for every keyword**: all the rules' keywords, matched case-blind over the text
  once (:class:`matching.KeywordSet`: in Python for a short text, an RE2 set for a long
  one), say which rules can match at all; a prompt without ``ghp_`` never runs the GitHub
  rule. (gitleaks does the same with Aho-Corasick.)
- **RE2, not ``re``**: the rules that do run scan the text in linear time with a DFA, about
  ten times faster than ``re`` on a 100 KB prompt for patterns that do not start with a
  literal, and with no backtracking an adversarial prompt could exploit.

The text is matched as Latin-1 bytes (characters past U+00FF read as ``?``), so a byte
offset is a character offset and a finding's span is exact without mapping: the gateway
replaces ``text[start:end]`` with a placeholder. A finding never holds the matched text.

Where two rules' spans overlap, the earlier rule in the file wins: the specific formats come
first, the generic ``password = ...`` rule last.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import dataclasses
import functools
import math
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol, cast, get_args

import orjson
import re2  # type: ignore[import-untyped]

from costwarden.security.findings import SEVERITIES, Finding, Severity
from costwarden.security.matching import KeywordSet, latin1_options

SecretFamily = Literal[
    "openai_api_key",
    "anthropic_api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "google_api_key",
    "gcp_service_account_key",
    "azure_storage_key",
    "github_token",
    "gitlab_token",
    "slack_token",
    "slack_webhook",
    "stripe_key",
    "twilio_api_key",
    "sendgrid_api_key",
    "npm_token",
    "pypi_token",
    "jwt",
    "private_key",
    "connection_string",
    "generic_secret",
]
SECRET_FAMILIES: tuple[SecretFamily, ...] = get_args(SecretFamily)

Check = Literal["jwt", "basic_auth", "value"]
CHECKS: tuple[Check, ...] = ("jwt", "basic_auth", "value")


class _Match(Protocol):
    def span(self, group: int = 0) -> tuple[int, int]: ...


class _Pattern(Protocol):
    groupindex: dict[bytes, int]  # RE2 names a bytes pattern's groups in bytes

    def finditer(self, data: bytes) -> Iterator[_Match]: ...


def _compile(pattern: bytes) -> _Pattern:
    return cast(_Pattern, re2.compile(pattern, latin1_options()))


@dataclasses.dataclass(frozen=True, slots=True)
class Tier:
    """A severity and confidence for secrets at least this random and this long."""

    min_entropy: float
    min_length: int
    severity: Severity
    confidence: float


@dataclasses.dataclass(frozen=True, slots=True)
class SecretRule:
    """One rule of ``rules/secrets.toml`` (the file's header explains each field)."""

    id: str
    family: SecretFamily
    regex: str
    keywords: tuple[str, ...]
    tiers: tuple[Tier, ...]
    before: str = ""
    after: str = ""
    entropy: float = 0.0
    min_length: int = 0
    check: Check | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules and the file-wide word lists the checks use."""

    rules: tuple[SecretRule, ...]
    placeholders: tuple[str, ...] = ()
    drop_values: tuple[str, ...] = ()
    weak_words: tuple[str, ...] = ()
    not_secret_names: tuple[str, ...] = ()


# ------------------------------------------------------------------ loading


def load_rules(path: str | Path | None = None) -> RuleSet:
    """The rule set in ``path`` (default: the built-in ``rules/secrets.toml``); raises
    ValueError naming the rule on a bad field or a pattern RE2 cannot compile."""
    if path is None:
        raw = resources.files("costwarden.security").joinpath("rules/secrets.toml").read_text()
    else:
        raw = Path(path).read_text(encoding="utf-8")
    data = tomllib.loads(raw)
    rules = tuple(_rule(entry) for entry in data.get("rules", []))
    ids = [rule.id for rule in rules]
    if len(set(ids)) != len(ids):
        raise ValueError("secrets rules: duplicate rule id")
    return RuleSet(
        rules=rules,
        placeholders=tuple(str(p).lower() for p in data.get("placeholders", [])),
        drop_values=tuple(str(v).lower() for v in data.get("drop_values", [])),
        weak_words=tuple(str(w).lower() for w in data.get("weak_words", [])),
        not_secret_names=tuple(str(w).lower() for w in data.get("not_secret_names", [])),
    )


def _rule(entry: dict[str, object]) -> SecretRule:
    rule_id = str(entry.get("id", ""))
    try:
        family = str(entry["family"])
        if family not in SECRET_FAMILIES:
            raise ValueError(f"unknown family {family!r}")
        keywords = tuple(str(k) for k in cast(list[object], entry["keywords"]))
        if not keywords or any(k != k.lower() or not k for k in keywords):
            raise ValueError("keywords must be non-empty lower-case literals")
        raw_tiers = cast(list[dict[str, object]], entry.get("tiers", []))
        if raw_tiers:
            tiers = tuple(
                _tier(
                    t["severity"], t["confidence"], t.get("min_entropy", 0), t.get("min_length", 0)
                )
                for t in raw_tiers
            )
            if tiers[-1].min_entropy > 0 or tiers[-1].min_length > 0:
                raise ValueError("the last tier must accept any secret")
        else:
            tiers = (_tier(entry["severity"], entry["confidence"], 0.0, 0),)
        check = entry.get("check")
        if check is not None and check not in CHECKS:
            raise ValueError(f"unknown check {check!r}")
        rule = SecretRule(
            id=rule_id,
            family=family,
            regex=str(entry["regex"]),
            keywords=keywords,
            tiers=tiers,
            before=str(entry.get("before", "")),
            after=str(entry.get("after", "")),
            entropy=float(cast(float, entry.get("entropy", 0.0))),
            min_length=int(cast(int, entry.get("min_length", 0))),
            check=check,
        )
        _compile(rule.regex.encode("latin-1"))
        for edge in (rule.before, rule.after):
            if edge:
                re.compile(f"[{edge}]".encode("latin-1"))
    except (KeyError, TypeError, ValueError, re.error, re2.error) as exc:
        raise ValueError(f"secrets rule {rule_id or '?'}: {exc}") from exc
    return rule


def _tier(severity: object, confidence: object, entropy: object, length: object) -> Tier:
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    conf = float(cast(float, confidence))
    if not 0.0 <= conf <= 1.0:
        raise ValueError("confidence must be within 0..1")
    return Tier(
        min_entropy=float(cast(float, entropy)),
        min_length=int(cast(int, length)),
        severity=severity,
        confidence=conf,
    )


# ------------------------------------------------------------------ the detector


@dataclasses.dataclass(frozen=True, slots=True)
class _Compiled:
    rule: SecretRule
    pattern: _Pattern
    groups: tuple[int, ...]  # the `secret*` groups, or (0,) for the whole match
    before: frozenset[int]
    after: frozenset[int]


def _edge(cls: str) -> frozenset[int]:
    if not cls:
        return frozenset()
    pattern = re.compile(f"[{cls}]".encode("latin-1"))
    return frozenset(b for b in range(256) if pattern.fullmatch(bytes((b,))))


class SecretsDetector:
    """Finds credentials; each finding's span is the secret alone (in ``user:pass@host``,
    the password), so redaction keeps the text around it readable."""

    name = "secrets"

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._ruleset = rules if rules is not None else _default_rules()
        self._compiled = tuple(self._compile_rule(r) for r in self._ruleset.rules)
        keywords = sorted({k for r in self._ruleset.rules for k in r.keywords})
        self._keywords = (
            KeywordSet([k.encode("latin-1") for k in keywords]) if keywords else None
        )
        by_keyword: list[list[int]] = [[] for _ in keywords]
        for index, rule in enumerate(self._ruleset.rules):
            for keyword in rule.keywords:
                by_keyword[keywords.index(keyword)].append(index)
        self._rules_of_keyword = tuple(tuple(rs) for rs in by_keyword)
        self._placeholders = _any_of(self._ruleset.placeholders)
        self._drop_values = frozenset(v.encode("latin-1") for v in self._ruleset.drop_values)
        self._weak_words = _any_of(self._ruleset.weak_words)
        self._not_secret_names = frozenset(
            n.encode("latin-1") for n in self._ruleset.not_secret_names
        )
        self._checks: dict[str, Callable[[bytes, bytes, int, int], bool | None]] = {
            "jwt": _check_jwt,
            "basic_auth": _check_basic_auth,
            "value": self._check_value,
        }

    @staticmethod
    def _compile_rule(rule: SecretRule) -> _Compiled:
        pattern = _compile(rule.regex.encode("latin-1"))
        return _Compiled(
            rule=rule,
            pattern=pattern,
            groups=tuple(
                index
                for name, index in sorted(pattern.groupindex.items(), key=lambda g: g[1])
                if name.startswith(b"secret")
            )
            or (0,),
            before=_edge(rule.before),
            after=_edge(rule.after),
        )

    def scan(self, text: str) -> list[Finding]:
        if len(text) < 8 or self._keywords is None:
            return []
        data = text.encode("latin-1", "replace")
        hits = self._keywords(data)
        if not hits:
            return []
        indexes = sorted({i for k in hits for i in self._rules_of_keyword[k]})
        found: list[Finding] = []
        spans = _Spans()
        for index in indexes:  # in rule order: an earlier rule's finding wins an overlap
            compiled = self._compiled[index]
            for match in compiled.pattern.finditer(data):
                for group in compiled.groups:
                    start, end = match.span(group)
                    if start >= 0:
                        break
                if end <= start or spans.overlaps(start, end):
                    continue  # checked first: the generic rule re-finds what others found
                finding = self._judge(compiled, data, match.span(0)[0], start, end)
                if finding is not None:
                    found.insert(spans.add(start, end), finding)
        return found

    def _judge(
        self, compiled: _Compiled, data: bytes, m_start: int, start: int, end: int
    ) -> Finding | None:
        """The finding a match of ``compiled`` makes, or None for a lookalike."""
        rule = compiled.rule
        if compiled.before and m_start > 0 and data[m_start - 1] in compiled.before:
            return None
        if compiled.after and end < len(data) and data[end] in compiled.after:
            return None
        if end - start < rule.min_length:
            return None
        secret = data[start:end]
        if self._placeholders is not None and self._placeholders.search(secret.lower()):
            return None
        entropy = shannon_entropy(secret)
        if entropy < rule.entropy:
            return None
        weak = False
        if rule.check is not None:
            verdict = self._checks[rule.check](secret, data, m_start, end)
            if verdict is None:
                return None
            weak = not verdict
        if weak:
            tier = rule.tiers[-1]
        else:
            if _HEX.fullmatch(secret):
                entropy *= _HEX_SCALE
            tier = _tier_for(rule.tiers, entropy, len(secret))
        return Finding(
            detector=self.name,
            family=rule.family,
            severity=tier.severity,
            confidence=tier.confidence,
            start=start,
            end=end,
        )

    def _check_value(self, secret: bytes, data: bytes, m_start: int, end: int) -> bool | None:
        """An assigned value: None when it is no secret (a variable, a call, a type, a path,
        a number, the value of a name like ``publicToken``), False when it is a weak one (a
        word, a README's password)."""
        if self._not_secret_names:
            word = _NAME_TAIL.search(data, max(0, m_start - 24), m_start)
            if word is not None and word.group().lower() in self._not_secret_names:
                return None
        lowered = secret.lower()
        if lowered in self._drop_values or b"://" in secret:
            return None
        if end < len(data) and data[end] in b"([.":
            return None  # a call, an index: password=getpass(), os.environ["..."]
        if secret[0] in _REFERENCE_STARTS or _NUMERIC.fullmatch(secret):
            return None
        if _IDENTIFIER.fullmatch(secret):
            return None
        if _WORDS.fullmatch(secret) or (self._weak_words and self._weak_words.search(lowered)):
            return False
        return True


# A hex string carries 4 bits a character at most (a random 32-digit one about 3.8), a
# base64 one 6 (about 4.7): scaled, a random hex key reaches the tier a random base64 key of
# the same length does. detect-secrets keeps two thresholds, 3.0 and 4.5, for the same reason.
_HEX = re.compile(rb"[0-9a-fA-F]{16,}")
_HEX_SCALE = 1.2

# The word (letters, with "_" "-" "." between them) that ends right before a match.
_NAME_TAIL = re.compile(rb"[A-Za-z]+(?=[_.-]?$)")

_REFERENCE_STARTS = frozenset(b"$%&*@#!?/~.=:-{[(<")
# Numbers, versions, dates: 8080, v1.2.3, 2024-01-01.
_NUMERIC = re.compile(rb"v?[0-9][0-9.:/_-]*")
# Words: adm-token, correct-horse, Secret.Value: a weak secret at best.
_WORDS = re.compile(rb"[A-Za-z]+(?:[-_.][A-Za-z]+)*")
# Names, not values: os.environ, settings.API_KEY, DB_PASSWORD, my_token, apiKey.
_IDENTIFIER = re.compile(
    rb"[A-Za-z_]+[0-9]*(?:\.[A-Za-z_]+[0-9]*)+"
    rb"|_*[a-z]+(?:_[a-z]+)+"
    rb"|_*[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]+"
    rb"|[a-z]+(?:[A-Z][a-z]+)+"
)


class _Spans:
    """The spans kept so far, sorted, for overlap tests in O(log n)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def overlaps(self, start: int, end: int) -> bool:
        at = bisect.bisect_left(self._starts, start)
        if at > 0 and self._ends[at - 1] > start:
            return True
        return at < len(self._starts) and self._starts[at] < end

    def add(self, start: int, end: int) -> int:
        """Keeps a span; returns its index in start order."""
        at = bisect.bisect_left(self._starts, start)
        self._starts.insert(at, start)
        self._ends.insert(at, end)
        return at


def _tier_for(tiers: Sequence[Tier], entropy: float, length: int) -> Tier:
    for tier in tiers:
        if entropy >= tier.min_entropy and length >= tier.min_length:
            return tier
    return tiers[-1]


def _check_jwt(secret: bytes, data: bytes, m_start: int, end: int) -> bool | None:
    """A JWT's header is base64url of a JSON object: anything else is no JWT."""
    header = secret.split(b".", 1)[0]
    try:
        decoded = orjson.loads(base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return True if isinstance(decoded, dict) else None


_WEAK_PASSWORDS = frozenset(
    (b"password", b"passwd", b"secret", b"changeme", b"admin", b"guest", b"test", b"demo")
)


def _check_basic_auth(secret: bytes, data: bytes, m_start: int, end: int) -> bool | None:
    """HTTP Basic credentials are base64 of ``user:password``; ``demo:demo`` is weak."""
    try:
        decoded = base64.b64decode(secret + b"=" * (-len(secret) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon or not password or not all(32 <= b < 127 for b in decoded):
        return None
    lowered = password.lower()
    weak = len(password) < 6 or lowered == user.lower() or lowered in _WEAK_PASSWORDS
    return not weak


def shannon_entropy(data: bytes) -> float:
    """Shannon entropy in bits per character: 0 for ``aaaa``, log2(n) for n distinct."""
    n = len(data)
    if n == 0:
        return 0.0
    # H = log2(n) - sum(c * log2(c)) / n over the counts c, with c * log2(c) from a table
    counts = Counter(data).values()
    if n < len(_C_LOG_C):
        return max(0.0, math.log2(n) - sum(map(_C_LOG_C.__getitem__, counts)) / n)
    return max(0.0, math.log2(n) - sum(c * math.log2(c) for c in counts) / n)


_C_LOG_C = tuple(c * math.log2(c) if c else 0.0 for c in range(4096))


def _any_of(words: Sequence[str]) -> re.Pattern[bytes] | None:
    """One pattern that finds any of ``words`` (one C call instead of one per word)."""
    if not words:
        return None
    return re.compile(b"|".join(re.escape(w.encode("latin-1")) for w in words))


@functools.cache
def _default_rules() -> RuleSet:
    return load_rules()
