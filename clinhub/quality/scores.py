"""Scores of a run: PRODUCT.md's six weighted dimensions and grade, and DQD-style percent passed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from clinhub.quality.checks import DIMENSIONS, KAHN

if TYPE_CHECKING:
    from clinhub.quality.runner import CheckResult

#: a failing row of a CRITICAL check weighs four times one of a LOW check in its dimension's score
SEVERITY_WEIGHTS = {"CRITICAL": 4.0, "HIGH": 3.0, "MEDIUM": 2.0, "LOW": 1.0}
GRADES = (("A", 95.0), ("B", 85.0), ("C", 75.0), ("D", 65.0))


def grade(value: float | None) -> str | None:
    if value is None:
        return None
    return next((letter for letter, floor in GRADES if value >= floor), "F")


@dataclass(frozen=True)
class Scores:
    overall: float | None
    grade: str | None
    dimensions: dict[str, float | None]
    percent_passed: float | None
    categories: dict[str, float | None]

    def as_dict(self) -> dict:
        return {
            "overall": self.overall,
            "grade": self.grade,
            "dimensions": self.dimensions,
            "dimension_weights": DIMENSIONS,
            "percent_passed": self.percent_passed,
            "categories": self.categories,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _percent_passed(results: Sequence[CheckResult]) -> float | None:
    decided = [r for r in results if r.status in ("passed", "failed")]
    if not decided:
        return None
    return 100.0 * sum(r.status == "passed" for r in decided) / len(decided)


def score(results: Sequence[CheckResult]) -> Scores:
    """Each dimension scores the severity-weighted mean share of rows that pass its checks; the overall
    score weights the dimensions as PRODUCT.md says, over the dimensions that have a check that ran.
    Percent passed counts checks that passed among those that passed or failed (DQD's measure)."""
    ran = [r for r in results if r.status in ("passed", "failed")]
    dimensions: dict[str, float | None] = {}
    for dimension in DIMENSIONS:
        mine = [r for r in ran if r.check.dimension == dimension]
        weight = sum(SEVERITY_WEIGHTS[r.check.severity] for r in mine)
        if not weight:
            dimensions[dimension] = None
            continue
        passing = sum(SEVERITY_WEIGHTS[r.check.severity] * (100.0 - r.percent_failed) for r in mine)
        dimensions[dimension] = passing / weight
    present = {d: v for d, v in dimensions.items() if v is not None}
    total_weight = sum(DIMENSIONS[d] for d in present)
    overall = sum(DIMENSIONS[d] * v for d, v in present.items()) / total_weight if total_weight else None
    categories = {c: _round(_percent_passed([r for r in results if r.check.category == c])) for c in KAHN}
    return Scores(
        overall=_round(overall),
        grade=grade(overall),
        dimensions={d: _round(v) for d, v in dimensions.items()},
        percent_passed=_round(_percent_passed(results)),
        categories=categories,
    )
