"""The skill-bundle scanner: is this agent skill or tool bundle safe to install?

A bundle (a folder, a .zip or a .tar.gz/.tgz/.tar) holds instructions an agent will read,
scripts it will run and maybe an MCP manifest saying how to start a server. The scanner reads
it from disk only (no network), looks for what a malicious skill does -- shell execution,
downloads piped into a shell, exfiltration, credential and wallet theft, obfuscated payloads,
prompt injection, hidden Unicode, risky MCP server commands -- and turns what it finds into
a trust score from 0 to 100, each deduction explained.

The layers: :mod:`.reader` is the only I/O (bounded against hostile archives); :mod:`.rules`
turns what it reads into findings; :mod:`.score` turns findings into the score; :mod:`.sarif`
writes the report as SARIF. :func:`scan_bundle` wires them together for the CLI
(``costwarden scan``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from costwarden.security.bundle.reader import (
    Anomaly,
    BinaryFile,
    BundleKind,
    BundleReader,
    Limits,
    Note,
    Progress,
    ReadStats,
    TextFile,
)
from costwarden.security.bundle.rules import (
    BundleFinding,
    McpServer,
    RuleSet,
    check_anomaly,
    check_binary,
    check_stats,
    check_text,
    default_detectors,
    default_rules,
    is_manifest,
    manifest_findings,
)
from costwarden.security.bundle.sarif import to_sarif
from costwarden.security.bundle.score import DEFAULT_FAIL_UNDER, Deduction, Trust, assess, order
from costwarden.security.findings import Detector

__all__ = [
    "DEFAULT_FAIL_UNDER", "BundleFinding", "Deduction", "Limits", "McpServer", "Report",
    "Trust", "scan_bundle",
]  # fmt: skip

MAX_PER_RULE = 50  # findings of one rule a report lists; past that repeats score nothing


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """One scan: the score and its deductions, what was skipped, the MCP servers found."""

    target: str
    kind: BundleKind
    trust: Trust
    notes: tuple[Note, ...]
    servers: tuple[McpServer, ...]
    stats: ReadStats
    rules: RuleSet
    base_uri: str | None  # the folder's file: URI (None: an archive or a single file)

    @property
    def score(self) -> int:
        return self.trust.score

    @property
    def complete(self) -> bool:
        return self.stats.complete

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "target": self.target,
            "kind": self.kind,
            "score": self.trust.score,
            "complete": s.complete,
            "counts": self.trust.counts(),
            "deductions": [d.to_json() for d in self.trust.deductions],
            "notes": [dataclasses.asdict(n) for n in self.notes],
            "servers": [server.to_json() for server in self.servers],
            "stats": {"members": s.members, "files_read": s.files_read,
                      "bytes_read": s.bytes_read, "expanded_bytes": s.expanded_bytes,
                      "unscanned_text": s.unscanned_text, "not_read": s.not_read,
                      "caps": list(dict.fromkeys(s.caps))},
        }  # fmt: skip

    def to_sarif(self) -> dict[str, Any]:
        return to_sarif(trust=self.trust, rules=self.rules, notes=self.notes,
                        target=self.target, base_uri=self.base_uri, complete=self.complete,
                        tool_version=_version())  # fmt: skip


def scan_bundle(
    path: str | Path,
    *,
    limits: Limits | None = None,
    rules: RuleSet | None = None,
    detectors: Sequence[Detector] | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Scan the bundle at ``path`` (a folder, an archive, or a single file).

    ``detectors``: prompt-injection detectors run over every text file (None: the built-in
    one, when installed). A missing or unreadable path, or an archive that cannot be opened,
    raises :class:`costwarden.core.errors.InvalidInput`.
    """
    rules = rules or default_rules()
    chosen = default_detectors() if detectors is None else tuple(detectors)
    reader = BundleReader(path, limits, progress=progress, clock=clock)
    deadline = clock() + reader.limits.max_seconds
    out_of_time = False

    def stop() -> bool:
        nonlocal out_of_time
        out_of_time = out_of_time or clock() > deadline
        return out_of_time

    findings: list[BundleFinding] = []
    notes: list[Note] = []
    servers: list[McpServer] = []
    for item in reader:
        if isinstance(item, TextFile):
            findings.extend(check_text(item, rules, chosen, stop))
            if is_manifest(item.path, item.text):
                found, declared = manifest_findings(item.path, item.text, rules)
                findings.extend(found)
                servers.extend(declared)
        elif isinstance(item, BinaryFile):
            binary = check_binary(item, rules)
            if binary is not None:
                findings.append(binary)
        elif isinstance(item, Anomaly):
            findings.append(check_anomaly(item, rules))
        else:
            notes.append(item)
    if out_of_time and "time" not in reader.stats.caps:
        reader.stats.caps.append("time")
        notes.append(Note("capped", "", f"stopped after {reader.limits.max_seconds:g} s: "
                          "the last file was scanned in part"))  # fmt: skip
    incomplete = check_stats(reader.stats, rules)
    if incomplete is not None:
        findings.append(incomplete)
    findings, more = _bounded(findings)
    notes.extend(Note("capped", "", f"{n} more finding(s) of {rule_id} not listed (they "
                      "score nothing)") for rule_id, n in more.items())  # fmt: skip
    base_uri = Path(path).resolve().as_uri() + "/" if reader.kind == "folder" else None
    return Report(str(path), reader.kind, assess(findings), tuple(notes), tuple(servers),
                  reader.stats, rules, base_uri)  # fmt: skip


def _bounded(findings: list[BundleFinding]) -> tuple[list[BundleFinding], dict[str, int]]:
    """At most MAX_PER_RULE findings of a rule (the most severe first)."""
    kept: list[BundleFinding] = []
    counts: dict[str, int] = {}
    more: dict[str, int] = {}
    for finding in order(findings):
        counts[finding.rule] = counts.get(finding.rule, 0) + 1
        if counts[finding.rule] <= MAX_PER_RULE:
            kept.append(finding)
        else:
            more[finding.rule] = more.get(finding.rule, 0) + 1
    return kept, more


def _version() -> str:
    try:
        return importlib.metadata.version("costwarden")
    except importlib.metadata.PackageNotFoundError:
        return "0"
