"""Job kinds of the quality domain: a rule set run on the job system."""

from __future__ import annotations

from datetime import date

from clinhub.errors import InvalidInput
from clinhub.platform.jobs import JobContext, job_kind
from clinhub.quality.service import DEFAULT_RULESET, run_and_save

KIND = "quality.run"


def parse_as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"as_of must be a date such as 2025-06-30, got {value!r}") from None


@job_kind(KIND, permission="quality:run", retries=1)
def quality_run(ctx: JobContext, ruleset: str = DEFAULT_RULESET, as_of: str | None = None) -> dict:
    """Run a quality rule set over the store and keep the result."""
    result = run_and_save(ctx.hub, ruleset, as_of=parse_as_of(as_of), actor=ctx.created_by)
    return {
        "run_id": result.run_id,
        "ruleset": result.ruleset,
        "grade": result.scores.grade,
        "overall": result.scores.overall,
        **result.counts(),
    }
