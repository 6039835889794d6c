"""The labelled corpus (``corpus/*.jsonl``): recall of each detector on the lines labelled
for it, and the false-positive rate of every detector on the benign lines.

A line is ``{"text": ..., "label": "benign"}`` or ``{"text": ..., "label": "<detector>:<family>"}``
with the detector ``injection``, ``secrets`` or ``pii``. An attack line is detected when its
detector reports a finding the default policy acts on (confidence >= 0.5); a finding of
another family of the same detector still counts (family mismatches are reported). A benign
line is a false positive when any detector reports such a finding; the raw rate (a finding
of any confidence) is reported beside it. Run with ``-s`` to see the tables.

Asserted: a false-positive rate of at most 2 % over every available detector, and a recall
of at least 0.9 for each injection family. A detector module that does not import yet is
skipped (its lines are reported as such), so the corpus can land before the detector.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections import defaultdict

import pytest

from costwarden.security.findings import Detector
from tests.security.conftest import corpus_lines

ACT = 0.5  # the default policy acts on a finding this confident
MAX_FP_RATE = 0.02
MIN_INJECTION_RECALL = 0.9
DETECTORS = {
    "injection": ("costwarden.security.injection", "InjectionDetector"),
    "secrets": ("costwarden.security.secrets", "SecretsDetector"),
    "pii": ("costwarden.security.pii", "PiiDetector"),
}


LINES = corpus_lines()
INJECTION_FAMILIES = sorted(
    {label.split(":")[1] for _, label, _ in LINES if label.startswith("injection:")}
)


def _detector(prefix: str) -> Detector | None:
    module, name = DETECTORS[prefix]
    try:
        detector: Detector = getattr(importlib.import_module(module), name)()
    except (ImportError, AttributeError):
        return None
    return detector


@dataclasses.dataclass
class Report:
    available: dict[str, Detector]
    missing: list[str]
    # label -> [lines, detected, detected with the label's family]
    recall: dict[str, list[int]]
    benign: int
    false_positives: dict[str, list[str]]  # detector -> texts it acted on
    raw_positives: int  # benign lines with a finding of any confidence
    acted: int  # benign lines any detector acted on
    unknown: list[str]

    def table(self) -> str:
        out = [f"{'label':<46} {'lines':>5} {'recall':>7} {'family':>7}"]
        for label in sorted(self.recall):
            total, hit, same = self.recall[label]
            if label.split(":")[0] not in self.available:
                out.append(f"{label:<46} {total:>5}    (detector missing)")
                continue
            out.append(f"{label:<46} {total:>5} {hit / total:>7.2f} {same / total:>7.2f}")
        out.append(
            f"benign lines {self.benign}: acted on {self.acted} "
            f"({self.acted / max(self.benign, 1):.2%}), any finding {self.raw_positives} "
            f"({self.raw_positives / max(self.benign, 1):.2%})"
        )
        for name, texts in sorted(self.false_positives.items()):
            out.append(f"  {name}: {len(texts)} false positive(s)")
            out.extend(f"    {text[:110]!r}" for text in texts)
        if self.missing:
            out.append(f"detectors not available: {', '.join(self.missing)}")
        if self.unknown:
            out.append(f"labels with no detector: {', '.join(sorted(set(self.unknown)))}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def report() -> Report:
    available: dict[str, Detector] = {}
    missing = []
    for prefix in DETECTORS:
        detector = _detector(prefix)
        if detector is None:
            missing.append(prefix)
        else:
            available[prefix] = detector
    recall: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    false_positives: dict[str, list[str]] = defaultdict(list)
    benign = raw = acted = 0
    unknown: list[str] = []
    for _, label, text in LINES:
        if label == "benign":
            benign += 1
            seen = flagged = False
            for name, detector in available.items():
                findings = detector.scan(text)
                seen = seen or bool(findings)
                if any(f.confidence >= ACT for f in findings):
                    false_positives[name].append(text)
                    flagged = True
            raw += seen
            acted += flagged
            continue
        prefix, family = label.split(":")
        counts = recall[label]
        counts[0] += 1
        if prefix not in DETECTORS:
            unknown.append(label)
            continue
        if prefix not in available:
            continue
        acting = [f for f in available[prefix].scan(text) if f.confidence >= ACT]
        counts[1] += bool(acting)
        counts[2] += any(f.family == family for f in acting)
    result = Report(
        available, missing, dict(recall), benign, dict(false_positives), raw, acted, unknown
    )
    print("\n" + result.table())
    return result


def test_corpus_is_labelled() -> None:
    assert any(label == "benign" for _, label, _ in LINES)
    assert INJECTION_FAMILIES


def test_false_positive_rate(report: Report) -> None:
    rate = report.acted / report.benign
    assert rate <= MAX_FP_RATE, f"false-positive rate {rate:.2%} > {MAX_FP_RATE:.0%}\n" + (
        report.table()
    )


@pytest.mark.parametrize("family", INJECTION_FAMILIES)
def test_injection_recall(report: Report, family: str) -> None:
    if "injection" not in report.available:
        pytest.skip("costwarden.security.injection does not import")
    total, detected, _ = report.recall[f"injection:{family}"]
    assert detected / total >= MIN_INJECTION_RECALL, (
        f"recall of injection:{family} is {detected}/{total}\n" + report.table()
    )
