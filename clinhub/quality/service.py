"""Running a rule set over a hub's store and keeping the result: what the CLI, the API and the job share."""

from __future__ import annotations

from datetime import date

from clinhub.hub import Hub
from clinhub.platform import audit
from clinhub.quality.checks import load_ruleset
from clinhub.quality.history import save_run
from clinhub.quality.runner import RunResult, run_checks

DEFAULT_RULESET = "directory"


def run_and_save(
    hub: Hub,
    ruleset: str = DEFAULT_RULESET,
    *,
    as_of: date | None = None,
    actor: str | None = None,
    client_address: str | None = None,
) -> RunResult:
    """Run a rule set (packaged name or YAML file) over the store, store the run, audit it."""
    rules = load_ruleset(ruleset)
    result = run_checks(hub.engine, rules, as_of=as_of)
    save_run(hub.store, result, actor)
    counts = result.counts()
    audit.record(
        hub.store,
        actor=actor or "system",
        action="quality.run",
        resource_type="QualityRun",
        resource_id=result.run_id,
        client_address=client_address,
        detail={"ruleset": result.ruleset, "grade": result.scores.grade, **counts},
    )
    return result
