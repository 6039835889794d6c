"""What the bundle scanner looks for: functions from what the reader yields to findings.

The text rules are data (``costwarden/security/rules/bundle.toml``): regular expressions
gated by keywords, so a new download-and-run idiom is one line of TOML and a test. What a
regular expression cannot say is code here: invisible Unicode (zero-width, bidi controls,
tag characters, whose hidden ASCII is decoded and read), prompt injection in what an agent
reads as instructions or descriptions (prose, prompts, manifests; any
:class:`costwarden.security.findings.Detector`, by default the built-in
:class:`costwarden.security.injection.InjectionDetector`), injection that only shows once
invisible characters are gone ("hidden injection"), MCP manifests (how their servers start)
and the bundle's own structure (links, traversal, bombs), each described by a ``[[check]]``
of the same file.

Findings are deduplicated per file, line and category (the most severe stays), and a rule
reports at most :data:`MAX_PER_FILE` findings a file: past that repeats score nothing and
only cost time and memory.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import importlib.resources
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

from costwarden.security.bundle.reader import (
    Anomaly,
    BinaryFile,
    ReadStats,
    TextFile,
    printable,
)
from costwarden.security.findings import SEVERITIES, SEVERITY_RANK, Detector, Severity
from costwarden.security.injection import InjectionDetector

Category = Literal[
    "shell_exec", "download_exec", "exfiltration", "credential_access", "obfuscation",
    "injection", "hidden_unicode", "mcp", "bundle_integrity",
]  # fmt: skip
CATEGORIES: tuple[Category, ...] = (
    "shell_exec", "download_exec", "exfiltration", "credential_access", "obfuscation",
    "injection", "hidden_unicode", "mcp", "bundle_integrity",
)  # fmt: skip
Transport = Literal["stdio", "http"]

MAX_PER_FILE = 20  # findings of one rule in one file
DETECTOR_CHARS = 512 * 1024  # of a file the detectors read (the text rules read it all)
_EVIDENCE = 120  # characters of a match shown


@dataclasses.dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    category: Category
    severity: Severity
    title: str
    why: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """A compiled pattern. ``word_start``: it began with ``\\b``, which is checked here
    rather than by the regular expression: a pattern that starts with a literal is searched
    for in C at memchr speed, one that starts with ``\\b`` is tried at every position."""

    regex: re.Pattern[str]
    word_start: bool = False

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        if not self.word_start:
            yield from self.regex.finditer(text)
            return
        pos = 0
        while (m := self.regex.search(text, pos)) is not None:
            start = m.start()
            if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
                pos = start + 1  # not at a word's start: look again from the next character
                continue
            yield m
            pos = max(m.end(), start + 1)


@dataclasses.dataclass(frozen=True, slots=True)
class TextRule:
    info: RuleInfo
    patterns: tuple[Pattern, ...]
    keywords: tuple[str, ...]  # lower case; none: always runs
    near: re.Pattern[str] | None = None
    near_lines: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class RuleSet:
    text_rules: tuple[TextRule, ...]
    infos: Mapping[str, RuleInfo]  # every rule: text rules and checks

    def info(self, rule_id: str) -> RuleInfo:
        return self.infos[rule_id]


@dataclasses.dataclass(frozen=True, slots=True)
class BundleFinding:
    """One thing found in a bundle, where, and why it matters."""

    rule: str
    category: Category
    severity: Severity
    path: str  # inside the bundle ("" for the bundle as a whole)
    line: int | None  # 1-based
    column: int | None  # 1-based, in characters
    title: str
    why: str
    evidence: str  # a short, printable excerpt or description

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class McpServer:
    """An MCP server a manifest of the bundle declares."""

    name: str
    path: str
    transport: Transport
    target: str  # the command line, or the URL

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- the rule file


def parse_rules(text: str) -> RuleSet:
    """The rule set of a TOML rule file (see bundle.toml); ValueError says what is wrong."""
    data = tomllib.loads(text)
    infos: dict[str, RuleInfo] = {}
    text_rules: list[TextRule] = []
    for table in ("rule", "check"):
        for raw in data.get(table, []):
            info = _info(raw)
            if info.id in infos:
                raise ValueError(f"rule {info.id!r} is defined twice")
            infos[info.id] = info
            if table == "rule":
                text_rules.append(_text_rule(info, raw))
    return RuleSet(tuple(text_rules), infos)


def _info(raw: Mapping[str, Any]) -> RuleInfo:
    rule_id = str(raw.get("id", ""))
    if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", rule_id):
        raise ValueError(f"rule id {rule_id!r}: lower case words joined by '-'")
    if raw.get("category") not in CATEGORIES:
        raise ValueError(f"rule {rule_id}: category must be one of {', '.join(CATEGORIES)}")
    if raw.get("severity") not in SEVERITIES:
        raise ValueError(f"rule {rule_id}: severity must be one of {', '.join(SEVERITIES)}")
    if not raw.get("title") or not raw.get("why"):
        raise ValueError(f"rule {rule_id}: needs a title and a why")
    return RuleInfo(rule_id, raw["category"], raw["severity"], str(raw["title"]),
                    str(raw["why"]))  # fmt: skip


def _text_rule(info: RuleInfo, raw: Mapping[str, Any]) -> TextRule:
    patterns = raw.get("patterns")
    if not isinstance(patterns, list) or not patterns:
        raise ValueError(f"rule {info.id}: needs patterns")
    try:
        compiled = tuple(_compile(str(p)) for p in patterns)
        near = re.compile(raw["near"], re.MULTILINE) if raw.get("near") else None
    except re.error as exc:
        raise ValueError(f"rule {info.id}: bad pattern: {exc}") from None
    keywords = tuple(str(k).lower() for k in raw.get("keywords", []))
    near_lines = int(raw.get("near_lines", 5 if near is not None else 0))
    return TextRule(info, compiled, keywords, near, near_lines)


_GAP = re.compile(r"\{gap:(\d+):([^{}]+)\}")
_WORD_START = re.compile(r"(\(\?[a-zA-Z]+\))?\\b")


def _compile(source: str) -> Pattern:
    expanded = _expand(source)
    lead = _WORD_START.match(expanded)
    if lead is None:
        return Pattern(re.compile(expanded, re.MULTILINE))
    stripped = (lead.group(1) or "") + expanded[lead.end() :]
    return Pattern(re.compile(stripped, re.MULTILINE), word_start=True)


def _expand(pattern: str) -> str:
    """``{gap:N:LEAD}``: up to N characters of the line, none starting a match of LEAD."""
    return _GAP.sub(lambda m: f"(?:(?!{m.group(2)})[^\\n]){{0,{m.group(1)}}}?", pattern)


@functools.cache
def default_rules() -> RuleSet:
    """The rules costwarden ships (security/rules/bundle.toml)."""
    resource = importlib.resources.files("costwarden.security").joinpath("rules/bundle.toml")
    return parse_rules(resource.read_text(encoding="utf-8"))


@functools.cache
def default_detectors() -> tuple[Detector, ...]:
    """The built-in prompt-injection detector (built once: it compiles its rules)."""
    return (InjectionDetector(),)


# ---------------------------------------------------------------------- text files


@dataclasses.dataclass(frozen=True, slots=True)
class _Hit:
    start: int
    end: int
    rule: str
    severity: Severity | None = None  # None: the rule's
    evidence: str | None = None  # None: the matched text
    located: bool = True  # False: somewhere in the file (a detector's whole-text finding)


def check_text(
    file: TextFile, rules: RuleSet, detectors: Sequence[Detector] = (),
    stop: Callable[[], bool] | None = None,
) -> list[BundleFinding]:  # fmt: skip
    """Every finding in one text file: the text rules, invisible Unicode and prompt
    injection, visible and hidden (an MCP manifest's servers: :func:`manifest_findings`).
    ``stop`` is asked between rules: once it says so, the file's remaining rules are skipped
    (the caller's time cap)."""
    text = file.text
    halt = stop or _never
    keywords = _Keywords(text)
    hits = _rule_hits(text, rules.text_rules, keywords, halt)
    if not halt():
        hidden = _hidden_unicode(text)
        hits.extend(hidden.hits)
        readers = detectors if reads_instructions(file.path) else ()
        hits.extend(_injection_hits(text, rules, readers, keywords))
        if hidden.cleaned is not None or hidden.payloads:
            hits.extend(_hidden_injection(text, hidden, rules, readers))
    return _dedup(_findings(file.path, text, hits, rules))


def _never() -> bool:
    return False


class _Keywords:
    """Which keywords a text holds, each looked up once."""

    def __init__(self, text: str) -> None:
        self._lowered = text.lower()
        self._held: dict[str, bool] = {}

    def any(self, keywords: Sequence[str]) -> bool:
        if not keywords:
            return True
        for keyword in keywords:
            held = self._held.get(keyword)
            if held is None:
                held = self._held[keyword] = keyword in self._lowered
            if held:
                return True
        return False


def _rule_hits(
    text: str, text_rules: Iterable[TextRule], keywords: _Keywords, stop: Callable[[], bool]
) -> list[_Hit]:
    hits: list[_Hit] = []
    for rule in text_rules:
        if rule.info.category == "injection":
            continue  # with the detectors, on the raw and the cleaned text
        if not keywords.any(rule.keywords):
            continue
        if stop():
            break
        hits.extend(_matches(text, rule))
    return hits


def _matches(text: str, rule: TextRule) -> list[_Hit]:
    found: list[_Hit] = []
    near: _NearIndex | None = None
    for pattern in rule.patterns:
        line, at = 1, 0
        for m in pattern.finditer(text):
            if rule.near is not None:
                near = near or _NearIndex(text, rule.near)
                line += text.count("\n", at, m.start())
                at = m.start()
                if not near.has(line, rule.near_lines, m.start(), m.end()):
                    continue
            found.append(_Hit(m.start(), m.end(), rule.info.id))
            if len(found) >= MAX_PER_FILE:
                return found
    return found


class _NearIndex:
    """Where a rule's ``near`` pattern matches in a file, by line: built in one pass, so a
    file full of candidates costs one search, not one per candidate."""

    _MAX = 100_000  # matches indexed; a file with more is hostile anyway
    _PROBES = 64  # matches looked at for one candidate

    def __init__(self, text: str, pattern: re.Pattern[str]) -> None:
        self._spans: list[tuple[int, int]] = []
        self._lines: list[int] = []
        line, at = 1, 0
        for m in pattern.finditer(text):
            line += text.count("\n", at, m.start())
            at = m.start()
            self._spans.append(m.span())
            self._lines.append(line)
            if len(self._lines) >= self._MAX:
                break

    def has(self, line: int, within: int, start: int, end: int) -> bool:
        """A match within ``within`` lines of ``line``, not inside [start, end) (a blob is
        not near itself). Past _PROBES matches in reach: yes."""
        i = bisect.bisect_left(self._lines, line - within)
        for probe, j in enumerate(range(i, len(self._lines))):
            if self._lines[j] > line + within:
                return False
            s, e = self._spans[j]
            if not (start <= s and e <= end) or probe >= self._PROBES:
                return True
        return False


# Invisible characters. Zero-width joiners are legitimate in emoji sequences and in scripts
# such as Persian or Devanagari: only between ASCII letters or digits do they hide something.
_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_ZERO_WIDTH = re.compile(
    "[\u200b\u2060-\u2064\u180e\ufeff\u115f\u1160\u3164\uffa0]"
    "|(?<=[A-Za-z0-9])[\u200c\u200d]|[\u200c\u200d](?=[A-Za-z0-9])"
)
_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164"
    "\ufe00-\ufe0f\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Hidden:
    hits: list[_Hit]
    cleaned: str | None  # the text without invisible characters (None: it had none)
    payloads: list[tuple[int, str]]  # (offset, ASCII decoded from a run of tag characters)


def _hidden_unicode(text: str) -> _Hidden:
    hits: list[_Hit] = []
    payloads: list[tuple[int, str]] = []
    if text.isascii() or _INVISIBLE.search(text) is None:  # every check below is a subset
        return _Hidden(hits, None, payloads)
    for m in _TAGS.finditer(text):
        decoded = "".join(
            chr(ord(ch) - 0xE0000) for ch in m.group() if 0x20 <= ord(ch) - 0xE0000 < 0x7F
        )
        payloads.append((m.start(), decoded))
        shown = f"{len(m.group())} tag characters" + (
            f" hiding {decoded[:80]!r}" if decoded.strip() else ""
        )
        hits.append(_Hit(m.start(), m.end(), "unicode-tags", evidence=printable(shown)))
        if len(payloads) >= MAX_PER_FILE:
            break
    for pattern, rule in ((_BIDI, "bidi-control"), (_ZERO_WIDTH, "zero-width"),
                          (_SELECTORS, "variation-selectors")):  # fmt: skip
        hits.extend(_invisible_hits(text, pattern, rule))
    return _Hidden(hits, _INVISIBLE.sub("", text), payloads)


def _invisible_hits(text: str, pattern: re.Pattern[str], rule: str) -> list[_Hit]:
    """One hit a line, showing the line's start with the characters escaped."""
    hits: list[_Hit] = []
    pos = 0
    while len(hits) < MAX_PER_FILE and (m := pattern.search(text, pos)) is not None:
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.start())
        line_end = len(text) if line_end < 0 else line_end
        shown = text[line_start : min(line_end, line_start + 4 * _EVIDENCE)]
        hits.append(_Hit(m.start(), m.end(), rule, evidence=_clip(printable(shown.strip()))))
        pos = line_end + 1
    return hits


def _injection_hits(
    text: str, rules: RuleSet, detectors: Sequence[Detector], keywords: _Keywords | None = None
) -> list[_Hit]:
    hits: list[_Hit] = []
    keywords = keywords or _Keywords(text)
    for rule in rules.text_rules:
        if rule.info.category == "injection" and keywords.any(rule.keywords):
            hits.extend(_matches(text, rule))
    scanned = text[:DETECTOR_CHARS]
    whole = "\n" in scanned.rstrip("\n")  # a span over all of it says "somewhere in here"
    for detector in detectors:
        for finding in detector.scan(scanned)[:MAX_PER_FILE]:
            start = min(max(finding.start, 0), len(scanned))
            end = min(max(finding.end, start), len(scanned))
            if whole and start == 0 and end >= len(scanned.rstrip()):
                hits.append(_Hit(0, 0, "prompt-injection", finding.severity,
                                 f"{finding.family} (in a normalised or decoded form of the "
                                 "file)", located=False))  # fmt: skip
                continue
            excerpt = _clip(printable(" ".join(scanned[start:end].split())))
            hits.append(_Hit(start, end, "prompt-injection", finding.severity,
                             f"{finding.family}: {excerpt}"))  # fmt: skip
    return hits


_INSTRUCTION_EXTS = frozenset(
    ".md .markdown .mdc .mdx .txt .rst .adoc .prompt .j2 .jinja .jinja2 .json .jsonc .yaml .yml "
    ".toml .xml .html .htm".split()
)


def reads_instructions(path: str) -> bool:
    """Whether a file is text an agent reads as instructions or descriptions (prose,
    prompts, manifests), which the prompt-injection detectors read: not scripts, where
    the text rules already cover what code does."""
    name = path.rsplit("/", 1)[-1].lower()
    ext = name.rsplit(".", 1)[-1] if "." in name.lstrip(".") else ""
    return not ext or f".{ext}" in _INSTRUCTION_EXTS


def _hidden_injection(
    text: str, hidden: _Hidden, rules: RuleSet,
    detectors: Sequence[Detector],
) -> list[_Hit]:  # fmt: skip
    """Injection that appears only without the invisible characters, or in the ASCII that
    tag characters hide. Removing characters keeps every newline, so lines still match."""
    seen: set[int] = set()
    hits: list[_Hit] = []
    if hidden.cleaned is not None:
        cleaned = hidden.cleaned
        for h in _injection_hits(cleaned, rules, detectors):
            phrase = cleaned[h.start : h.end]
            line = _line_no(cleaned, h.start)
            if not phrase or phrase in text or line in seen:
                continue  # visible as it is: reported as such
            seen.add(line)
            start = _offset_of_line(text, line)
            hits.append(_Hit(start, start, "hidden-injection",
                             evidence=_clip(printable(phrase))))  # fmt: skip
    for offset, payload in hidden.payloads:
        found = _injection_hits(payload, rules, detectors)
        if found:
            phrase = payload[found[0].start : found[0].end] or payload
            hits.append(_Hit(offset, offset, "hidden-injection", evidence=_clip(printable(phrase))))
    return hits


def _line_no(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _offset_of_line(text: str, line: int) -> int:
    pos = 0
    for _ in range(line - 1):
        pos = text.find("\n", pos) + 1
    return pos


def _findings(path: str, text: str, hits: list[_Hit], rules: RuleSet) -> list[BundleFinding]:
    hits.sort(key=lambda h: h.start)
    findings: list[BundleFinding] = []
    line, at = 1, 0
    for hit in hits:
        line += text.count("\n", at, hit.start)
        at = hit.start
        column = hit.start - (text.rfind("\n", 0, hit.start) + 1) + 1
        info = rules.info(hit.rule)
        evidence = hit.evidence
        if evidence is None:  # the match, on one line
            evidence = _clip(printable(" ".join(text[hit.start : hit.end].split())))
        findings.append(
            BundleFinding(hit.rule, info.category, hit.severity or info.severity, path,
                          line if hit.located else None, column if hit.located else None,
                          info.title, info.why, evidence)
        )  # fmt: skip
    return findings


def _clip(text: str) -> str:
    return text if len(text) <= _EVIDENCE else text[: _EVIDENCE - 1] + "…"


def _dedup(findings: list[BundleFinding]) -> list[BundleFinding]:
    """The most severe finding of each category on each line (the first among equals); a
    finding without a line only when no finding of its category in the file is as severe;
    at most MAX_PER_FILE findings of a rule."""
    best: dict[tuple[str, str, int], BundleFinding] = {}
    located: dict[str, int] = {}  # category: the highest severity rank with a line
    for f in findings:
        key = (f.category, f.path, f.line if f.line is not None else -1)
        kept = best.get(key)
        if kept is None or SEVERITY_RANK[f.severity] > SEVERITY_RANK[kept.severity]:
            best[key] = f
        if f.line is not None:
            rank = SEVERITY_RANK[f.severity]
            located[f.category] = max(located.get(f.category, -1), rank)
    for slot, f in list(best.items()):
        if f.line is None and located.get(f.category, -1) >= SEVERITY_RANK[f.severity]:
            del best[slot]
    counts: dict[str, int] = {}
    out: list[BundleFinding] = []
    for f in sorted(best.values(), key=lambda f: (f.line or 0, f.column or 0, f.rule)):
        counts[f.rule] = counts.get(f.rule, 0) + 1
        if counts[f.rule] <= MAX_PER_FILE:
            out.append(f)
    return out


# ---------------------------------------------------------------------- MCP manifests

_MANIFEST_NAMES = frozenset(
    {"mcp.json", ".mcp.json", "server.json", "claude_desktop_config.json", "package.json",
     "manifest.json", "mcp_settings.json", "cline_mcp_settings.json"}
)  # fmt: skip
_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "cmd", "powershell", "pwsh"})
_SHELL_FLAGS = frozenset({"-c", "/c", "/k", "-command", "-encodedcommand", "-e", "-ec", "-enc"})
_FETCHERS = frozenset({"npx", "bunx", "pnpx", "uvx", "pipx", "pnpm", "yarn", "docker", "podman",
                       "deno"})  # fmt: skip
_INSTALL_HOOKS = ("preinstall", "install", "postinstall", "prepare")
_LOCAL_HOST = re.compile(r"^https?://(?:localhost|127(?:\.\d{1,3}){3}|\[::1\])(?:[:/]|$)", re.I)


def is_manifest(path: str, text: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return name in _MANIFEST_NAMES or (name.endswith(".json") and '"mcpServers"' in text)


def manifest_findings(
    path: str, text: str, rules: RuleSet
) -> tuple[list[BundleFinding], list[McpServer]]:
    """The servers an MCP manifest declares and what is risky in how they start; a
    package.json's install hooks. Not JSON (or nested too deep to parse): nothing."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return [], []
    if not isinstance(data, dict):
        return [], []
    findings: list[BundleFinding] = []
    servers: list[McpServer] = []
    for name, config in _server_configs(path, data):
        line = _line_of_key(text, name)
        server, found = _server(path, name, config, line, rules)
        if server is not None:
            servers.append(server)
        findings.extend(found)
    if path.rsplit("/", 1)[-1].lower() == "package.json":
        scripts = data.get("scripts")
        if isinstance(scripts, dict):
            for hook in _INSTALL_HOOKS:
                if isinstance(scripts.get(hook), str):
                    evidence = _clip(printable(f"{hook}: {scripts[hook]}"))
                    findings.append(_finding(rules, "install-script", path,
                                             _line_of_key(text, hook), evidence))  # fmt: skip
    return findings, servers


def _server_configs(path: str, data: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    configs: list[tuple[str, Mapping[str, Any]]] = []
    mcp = data.get("mcp")
    for table in (data.get("mcpServers"), data.get("servers"),
                  mcp.get("servers") if isinstance(mcp, dict) else None):  # fmt: skip
        if isinstance(table, dict):
            configs.extend((str(k), v) for k, v in table.items() if isinstance(v, dict))
    server = data.get("server")
    if isinstance(server, dict) and isinstance(server.get("mcp_config"), dict):
        configs.append((str(data.get("name") or "server"), server["mcp_config"]))
    for remote in data.get("remotes") or []:  # the MCP registry's server.json
        if isinstance(remote, dict) and isinstance(remote.get("url"), str):
            configs.append((str(data.get("name") or "remote"), remote))
    for package in data.get("packages") or []:
        if isinstance(package, dict):
            configs.append((str(data.get("name") or "package"), _registry_package(package)))
    return configs


def _registry_package(package: Mapping[str, Any]) -> dict[str, Any]:
    """A server.json package entry as the command that would run it."""
    hint = package.get("runtimeHint") or package.get("runtime_hint")
    kind = str(package.get("registryType") or package.get("registry_type") or "")
    name = str(package.get("identifier") or package.get("name") or "")
    version = package.get("version")
    runner = hint or {"npm": "npx", "pypi": "uvx", "oci": "docker"}.get(kind, kind or "?")
    sep = "==" if runner == "uvx" else ":" if runner == "docker" else "@"
    spec = f"{name}{sep}{version}" if version else name
    args = ["run", spec] if runner == "docker" else [spec]
    return {"command": runner, "args": args}


def _server(
    path: str, name: str, config: Mapping[str, Any], line: int | None, rules: RuleSet
) -> tuple[McpServer | None, list[BundleFinding]]:
    findings: list[BundleFinding] = []
    url = config.get("url") or config.get("serverUrl")
    if isinstance(url, str) and url:
        if url.lower().startswith(("http://", "https://")) and not _LOCAL_HOST.match(url):
            rule = "mcp-cleartext-remote" if url.lower().startswith("http://") else (
                "mcp-remote-server")  # fmt: skip
            findings.append(_finding(rules, rule, path, line, _clip(printable(f"{name}: {url}"))))
        return McpServer(printable(name), path, "http", printable(url)), findings
    command = config.get("command")
    if not isinstance(command, str) or not command:
        return None, findings
    raw_args = config.get("args")
    args = [str(a) for a in raw_args if isinstance(a, str | int | float)] if isinstance(
        raw_args, list) else []  # fmt: skip
    shown = _clip(printable(" ".join([command, *args])))
    program = re.split(r"[/\\]", command)[-1].lower().removesuffix(".exe")
    if program in _SHELLS and any(a.lower() in _SHELL_FLAGS for a in args):
        findings.append(_finding(rules, "mcp-inline-shell", path, line, f"{name}: {shown}"))
    elif program in _FETCHERS and not _pinned(program, args):
        findings.append(_finding(rules, "mcp-unpinned-package", path, line, f"{name}: {shown}"))
    return McpServer(printable(name), path, "stdio", shown), findings


def _pinned(program: str, args: list[str]) -> bool:
    """Whether a fetch-and-run command names an exact version (or runs nothing fetched)."""
    if program == "docker" or program == "podman":
        return any("@sha256:" in a or re.fullmatch(r"[\w./-]+:(?!latest$)[\w.-]+", a)
                   for a in args)  # fmt: skip
    if program == "deno":
        return not any(a.startswith(("http://", "https://", "npm:", "jsr:")) and "@" not in a
                       for a in args)  # fmt: skip
    words = [a for a in args if a not in ("dlx", "exec", "run", "x")]
    spec = next((a for a in words if not a.startswith("-")), "")
    for flag_at, arg in enumerate(words):
        if arg in ("--from", "-p", "--package") and flag_at + 1 < len(words):
            spec = words[flag_at + 1]
        elif arg.startswith(("--from=", "--package=")):
            spec = arg.split("=", 1)[1]
    if not spec or spec.startswith((".", "/", "~")) or re.match(r"[A-Za-z]:[/\\]", spec):
        return True  # a local path: nothing is fetched
    if program in ("uvx", "pipx"):
        return bool(re.search(r"==\s*\d|@\s*\d", spec))
    return bool(re.fullmatch(r"(?:@[^/@\s]+/)?[^@\s]+@\d[\w.+-]*", spec))


def _line_of_key(text: str, key: str) -> int | None:
    at = text.find(json.dumps(key))
    return None if at < 0 else text.count("\n", 0, at) + 1


def _finding(
    rules: RuleSet, rule_id: str, path: str, line: int | None, evidence: str,
    severity: Severity | None = None,
) -> BundleFinding:  # fmt: skip
    info = rules.info(rule_id)
    return BundleFinding(rule_id, info.category, severity or info.severity, path, line, None,
                         info.title, info.why, evidence)  # fmt: skip


# ---------------------------------------------------------------------- everything else

_ANOMALY_RULES: Mapping[str, str] = {
    "symlink_escape": "symlink-escape",
    "link_member": "archive-link",
    "path_traversal": "path-traversal",
    "special_file": "special-file",
    "bomb": "archive-bomb",
    "size_mismatch": "archive-size-mismatch",
    "duplicate": "duplicate-member",
    "encrypted": "encrypted-member",
}


def check_anomaly(anomaly: Anomaly, rules: RuleSet) -> BundleFinding:
    """The finding a structural anomaly is: a link member that leaves the bundle counts as
    a symbolic link out of it."""
    rule_id = _ANOMALY_RULES[anomaly.kind]
    if anomaly.kind == "link_member" and anomaly.outside:
        rule_id = "symlink-escape"
    return _finding(rules, rule_id, anomaly.path, None, anomaly.detail)


def check_binary(file: BinaryFile, rules: RuleSet) -> BundleFinding | None:
    if file.magic in ("elf", "pe", "macho"):
        kind = {"elf": "ELF", "pe": "Windows PE", "macho": "Mach-O"}[file.magic]
        return _finding(rules, "binary-executable", file.path, None, f"{kind} executable")
    if file.magic == "archive":
        return _finding(rules, "nested-archive", file.path, None, "archive: not scanned")
    return None


def check_stats(stats: ReadStats, rules: RuleSet) -> BundleFinding | None:
    """A finding when the scan did not read the whole bundle."""
    if stats.complete:
        return None
    parts: list[str] = []
    if stats.caps:
        parts.append("stopped at the " + ", ".join(dict.fromkeys(stats.caps)) + " cap")
    if stats.not_read:
        parts.append(f"{stats.not_read} file(s) not read")
    if stats.unscanned_text:
        parts.append(f"{stats.unscanned_text} text file(s) skipped")
    return _finding(rules, "scan-incomplete", "", None, "; ".join(parts))


def code_rule_ids() -> frozenset[str]:
    """The ids code here emits (each must have a [[check]] in the rule file)."""
    return frozenset(
        {"unicode-tags", "bidi-control", "zero-width", "variation-selectors",
         "prompt-injection", "hidden-injection", "mcp-inline-shell", "mcp-unpinned-package",
         "mcp-remote-server", "mcp-cleartext-remote", "install-script", "binary-executable",
         "nested-archive", "scan-incomplete", *_ANOMALY_RULES.values()}
    )  # fmt: skip
