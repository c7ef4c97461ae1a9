"""Stored quality runs: save a run, list and read runs, the score trend, and the diff of two runs."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select

from clinhub.errors import InvalidInput, NotFound
from clinhub.quality.runner import RunResult
from clinhub.store.schema import quality_check_result, quality_run

#: the kinds of change `diff` reports
CHANGES = ("new", "fixed", "worse", "better", "errors")
_RESULT_COLUMNS = (
    "check_id",
    "category",
    "subcategory",
    "dimension",
    "severity",
    "status",
    "rows_checked",
    "rows_failed",
    "percent_failed",
    "threshold",
    "error",
    "sample",
    "seconds",
)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _iso(moment: datetime) -> str:
    return _naive(moment).isoformat(timespec="microseconds") + "Z"


def save_run(store: Engine, result: RunResult, created_by: str | None = None) -> str:
    """Store a run and the result of each of its checks, in one transaction; returns the run id."""
    counts = result.counts()
    scores = result.scores
    rows = []
    for r in result.results:
        values = r.as_dict()
        rows.append({"run_id": result.run_id, **{name: values[name] for name in _RESULT_COLUMNS}})
    with store.begin() as conn:
        conn.execute(
            insert(quality_run).values(
                id=result.run_id,
                ruleset=result.ruleset,
                started_at=_naive(result.started_at),
                finished_at=_naive(result.finished_at),
                as_of=result.as_of,
                created_by=created_by,
                checks=len(result.results),
                passed=counts["passed"],
                failed=counts["failed"],
                not_applicable=counts["not_applicable"],
                errors=counts["error"],
                overall=scores.overall,
                grade=scores.grade,
                percent_passed=scores.percent_passed,
                scores=scores.as_dict(),
            )
        )
        if rows:
            conn.execute(insert(quality_check_result), rows)
    return result.run_id


def _run_dict(row) -> dict:
    data = dict(row._mapping)
    data["started_at"] = _iso(data["started_at"])
    data["finished_at"] = _iso(data["finished_at"])
    data["as_of"] = data["as_of"].isoformat()
    return data


def list_runs(store: Engine, ruleset: str | None = None, limit: int = 50) -> list[dict]:
    """Runs, newest first."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    query = select(quality_run).order_by(quality_run.c.started_at.desc()).limit(limit)
    if ruleset:
        query = query.where(quality_run.c.ruleset == ruleset)
    with store.connect() as conn:
        return [_run_dict(row) for row in conn.execute(query)]


def latest_run_id(store: Engine, ruleset: str | None = None, *, before: str | None = None) -> str | None:
    query = select(quality_run.c.id, quality_run.c.started_at).order_by(quality_run.c.started_at.desc())
    if ruleset:
        query = query.where(quality_run.c.ruleset == ruleset)
    with store.connect() as conn:
        if before:
            started = conn.execute(
                select(quality_run.c.started_at).where(quality_run.c.id == before)
            ).scalar_one_or_none()
            if started is None:
                raise NotFound(f"no quality run {before}")
            query = query.where(quality_run.c.started_at < started)
        row = conn.execute(query.limit(1)).first()
    return row.id if row else None


def get_run(store: Engine, run_id: str) -> dict:
    """A stored run with the result of each check (failing checks first, most failing rows first)."""
    if run_id == "latest":
        run_id = latest_run_id(store) or ""
    with store.connect() as conn:
        row = conn.execute(select(quality_run).where(quality_run.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"no quality run {run_id or 'yet'}")
        results = [
            dict(r._mapping)
            for r in conn.execute(
                select(quality_check_result)
                .where(quality_check_result.c.run_id == run_id)
                .order_by(quality_check_result.c.check_id)
            )
        ]
    order = {"failed": 0, "error": 1, "passed": 2, "not_applicable": 3}
    results.sort(key=lambda r: (order.get(r["status"], 9), -r["rows_failed"], r["check_id"]))
    return {**_run_dict(row), "results": results}


def trend(store: Engine, ruleset: str | None = None, limit: int = 30) -> list[dict]:
    """The scores of the last `limit` runs, oldest first (for a chart)."""
    runs = list_runs(store, ruleset, limit)
    keys = ("id", "ruleset", "started_at", "overall", "grade", "percent_passed", "passed", "failed", "errors")
    return [
        {**{k: run[k] for k in keys}, "dimensions": run["scores"].get("dimensions", {})}
        for run in reversed(runs)
    ]


def diff(store: Engine, old_id: str, new_id: str) -> dict:
    """What changed from run `old_id` to run `new_id`: checks newly failing, fixed, worse, better."""
    old = {r["check_id"]: r for r in get_run(store, old_id)["results"]}
    new = {r["check_id"]: r for r in get_run(store, new_id)["results"]}
    changes: dict[str, list[dict]] = {kind: [] for kind in CHANGES}
    for check_id, now in sorted(new.items()):
        before = old.get(check_id)
        entry = {
            "check_id": check_id,
            "severity": now["severity"],
            "old_status": before["status"] if before else None,
            "new_status": now["status"],
            "old_rows_failed": before["rows_failed"] if before else None,
            "new_rows_failed": now["rows_failed"],
        }
        was_failing = bool(before) and before["status"] == "failed"
        if now["status"] == "error":
            changes["errors"].append(entry)
        elif now["status"] == "failed" and not was_failing:
            changes["new"].append(entry)
        elif was_failing and now["status"] == "passed":
            changes["fixed"].append(entry)
        elif was_failing and now["status"] == "failed":
            if now["percent_failed"] > before["percent_failed"]:
                changes["worse"].append(entry)
            elif now["percent_failed"] < before["percent_failed"]:
                changes["better"].append(entry)
    return {"old_run": old_id, "new_run": new_id, **changes}
