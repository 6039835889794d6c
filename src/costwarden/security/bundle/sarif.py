"""A bundle scan as SARIF 2.1.0, the format code-scanning tools read (GitHub, GitLab, IDEs).

Pure: data in, a JSON-ready dict out. Every rule of the rule set is a ``reportingDescriptor``
(so ``ruleIndex`` is stable from one scan to the next); a finding is a ``result`` whose
``level`` follows its severity (critical and high: error, medium: warning, low: note) and
whose ``properties`` carry the points it cost; GitHub's ``security-severity`` is set on each
rule. Paths are relative to the ``BUNDLE`` base (the folder, or the inside of the archive);
a finding on the bundle as a whole points at the bundle itself. The notes (skipped files,
caps) are the invocation's notifications, and the trust score is a property of the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from costwarden.security.bundle.reader import Note
from costwarden.security.bundle.rules import BundleFinding, RuleSet
from costwarden.security.bundle.score import Trust
from costwarden.security.findings import Severity

SCHEMA_URI = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
LEVELS: dict[Severity, str] = {"critical": "error", "high": "error", "medium": "warning",
                               "low": "note"}  # fmt: skip
SECURITY_SEVERITY: dict[Severity, str] = {"critical": "9.5", "high": "8.0", "medium": "5.5",
                                          "low": "2.0"}  # fmt: skip
BASE_ID = "BUNDLE"


def to_sarif(
    *, trust: Trust, rules: RuleSet, notes: Sequence[Note], target: str, base_uri: str | None,
    complete: bool, tool_version: str,
) -> dict[str, Any]:  # fmt: skip
    """The SARIF log of one scan. ``target``: the bundle as the user named it (shown for
    bundle-wide findings); ``base_uri``: the folder's ``file:`` URI ending in '/', or None
    for an archive (its members have no place on disk)."""
    ids = list(rules.infos)
    index = {rule_id: i for i, rule_id in enumerate(ids)}
    base: dict[str, Any] = {"uri": base_uri} if base_uri else {}
    base["description"] = {"text": f"the bundle {target}"}
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "costwarden",
            "version": tool_version,
            "rules": [_descriptor(rules, rule_id) for rule_id in ids],
        }},
        "originalUriBaseIds": {BASE_ID: base},
        "invocations": [{
            "executionSuccessful": True,
            "toolExecutionNotifications": [_notification(n) for n in notes],
        }],
        "results": [
            _result(d.finding, d.points, d.repeat, index[d.finding.rule], target)
            for d in trust.deductions
        ],
        "properties": {"trustScore": trust.score, "complete": complete},
    }  # fmt: skip
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def _descriptor(rules: RuleSet, rule_id: str) -> dict[str, Any]:
    info = rules.info(rule_id)
    return {
        "id": rule_id,
        "name": "".join(word.capitalize() for word in rule_id.split("-")),
        "shortDescription": {"text": info.title},
        "fullDescription": {"text": info.why},
        "help": {"text": info.why},
        "defaultConfiguration": {"level": LEVELS[info.severity]},
        "properties": {
            "category": info.category,
            "severity": info.severity,
            "security-severity": SECURITY_SEVERITY[info.severity],
            "tags": ["security", info.category],
        },
    }


def _result(
    finding: BundleFinding, points: int, repeat: int, rule_index: int, target: str
) -> dict[str, Any]:
    if finding.path:
        location: dict[str, Any] = {"artifactLocation": {"uri": quote(finding.path, safe="/"),
                                                         "uriBaseId": BASE_ID}}  # fmt: skip
        if finding.line is not None:
            region: dict[str, Any] = {"startLine": finding.line}
            if finding.column is not None:
                region["startColumn"] = finding.column
            location["region"] = region
    else:
        location = {"artifactLocation": {"uri": quote(target.replace("\\", "/"), safe="/:")}}
    fingerprint = hashlib.sha256(
        "\x1f".join((finding.rule, finding.path, finding.evidence)).encode("utf-8", "replace")
    ).hexdigest()[:32]
    return {
        "ruleId": finding.rule,
        "ruleIndex": rule_index,
        "level": LEVELS[finding.severity],
        "message": {"text": _message(finding)},
        "locations": [{"physicalLocation": location}],
        "partialFingerprints": {"costwardenFinding/v1": fingerprint},
        "properties": {
            "severity": finding.severity,
            "category": finding.category,
            "points": points,
            "repeat": repeat,
        },
    }


def _message(finding: BundleFinding) -> str:
    return f"{finding.title}: {finding.evidence}" if finding.evidence else finding.title


def _notification(note: Note) -> dict[str, Any]:
    text = f"{note.path}: {note.detail}" if note.path else note.detail
    level = "warning" if note.kind in ("capped", "too_large", "unreadable", "corrupt") else "note"
    return {"level": level, "message": {"text": text}, "descriptor": {"id": note.kind}}
