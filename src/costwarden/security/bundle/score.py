"""The trust score: findings in, a number from 0 to 100 and its explanation out.

A bundle starts at 100 and every finding deducts points by its severity
(:data:`POINTS`). The same rule found again deducts half as much as the time before
(integer halving: a critical rule costs 50, 25, 12, 6, 3, 1, then nothing), so a script
that calls ``subprocess.run`` twenty times is not twenty times worse than one that calls it
once, while different problems add up. One critical finding alone takes a bundle below the
default threshold of 70, a high one alone leaves it at it, and two high ones take it below.

Pure: the same findings give the same score and deductions in the same order (most severe
first, then by file and line), whatever order they came in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from costwarden.security.bundle.rules import BundleFinding
from costwarden.security.findings import SEVERITY_RANK, Severity

POINTS: Mapping[Severity, int] = {"critical": 50, "high": 30, "medium": 10, "low": 3}
START = 100
DEFAULT_FAIL_UNDER = 70


@dataclasses.dataclass(frozen=True, slots=True)
class Deduction:
    """One finding and what it cost: ``repeat`` is its rank among its rule's findings (1:
    the first, at full points)."""

    finding: BundleFinding
    points: int
    repeat: int

    @property
    def explanation(self) -> str:
        base = POINTS[self.finding.severity]
        if self.repeat == 1:
            return f"{self.finding.severity}: -{self.points}"
        return (f"{self.finding.severity}, repeat {self.repeat} of {self.finding.rule}: "
                f"-{self.points} (of {base}, halved for each repeat)")  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {**self.finding.to_json(), "points": self.points, "repeat": self.repeat,
                "explanation": self.explanation}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Trust:
    score: int
    deductions: tuple[Deduction, ...]

    def passes(self, fail_under: int = DEFAULT_FAIL_UNDER) -> bool:
        return self.score >= fail_under

    def counts(self) -> dict[Severity, int]:
        """Findings by severity, most severe first."""
        out: dict[Severity, int] = {"critical": 0, "high": 0, "medium": 0, "low": 0}
        for d in self.deductions:
            out[d.finding.severity] += 1
        return out


def order(findings: Iterable[BundleFinding]) -> list[BundleFinding]:
    """Most severe first, then by file, line and rule."""
    return sorted(
        findings,
        key=lambda f: (-SEVERITY_RANK[f.severity], f.path, f.line or 0, f.column or 0, f.rule),
    )


def assess(findings: Iterable[BundleFinding]) -> Trust:
    """The trust score of a bundle with these findings, and each finding's deduction."""
    seen: dict[str, int] = {}
    deductions: list[Deduction] = []
    for finding in order(findings):
        repeat = seen.get(finding.rule, 0) + 1
        seen[finding.rule] = repeat
        points = POINTS[finding.severity] >> (repeat - 1) if repeat < 64 else 0
        deductions.append(Deduction(finding, points, repeat))
    score = max(0, START - sum(d.points for d in deductions))
    return Trust(score, tuple(deductions))
