"""Running checks: snapshot the store tables and views they read, run their SQL concurrently, score them."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.quality.checks import Check, Macro, RuleSet
from clinhub.quality.compiler import PLACEHOLDER, CompiledCheck, Context, compile_check, macro_sql
from clinhub.quality.scores import Scores, score
from clinhub.views import library
from clinhub.views.runner import view_query

STATUSES = ("passed", "failed", "not_applicable", "error")
SAMPLE_ROWS = 5
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_MISSING = ("does not exist", "not found", "Referenced column", "Table with name", "Catalog")


@dataclass
class CheckResult:
    check: Check
    status: str
    rows_checked: int = 0
    rows_failed: int = 0
    error: str | None = None
    sample: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def percent_failed(self) -> float:
        return 100.0 * self.rows_failed / self.rows_checked if self.rows_checked else 0.0

    def as_dict(self) -> dict:
        c = self.check
        return {
            "check_id": c.id,
            "description": c.description,
            "table": c.table,
            "category": c.category,
            "subcategory": c.subcategory,
            "dimension": c.dimension,
            "severity": c.severity,
            "threshold": c.threshold,
            "status": self.status,
            "rows_checked": self.rows_checked,
            "rows_failed": self.rows_failed,
            "percent_failed": round(self.percent_failed, 4),
            "error": self.error,
            "sample": self.sample,
            "seconds": round(self.seconds, 4),
        }


@dataclass
class RunResult:
    run_id: str
    ruleset: str
    started_at: datetime
    finished_at: datetime
    as_of: date
    results: list[CheckResult]
    scores: Scores

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status] += 1
        return counts

    def result(self, check_id: str) -> CheckResult:
        return next(r for r in self.results if r.check.id == check_id)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "ruleset": self.ruleset,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": round(self.seconds, 4),
            "as_of": self.as_of.isoformat(),
            "counts": self.counts(),
            "scores": self.scores.as_dict(),
            "results": [r.as_dict() for r in self.results],
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _one_line(exc: BaseException) -> str:
    """The cause of a check's error, on one line. Binder, catalog and parser errors quote the rule set's
    own names and SQL; other errors (a conversion failing) may quote a value from the data, so quoted
    text in them is masked: a stored run must not leak health data."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, duckdb.BinderException | duckdb.CatalogException | duckdb.ParserException):
        text = _QUOTED.sub("'…'", text)
    return text[:300] or type(exc).__name__


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


class ViewUnavailable(Exception):
    """A `view.<name>` table of a run that could not be built; its message is the cause, on one line."""


class Snapshot:
    """Copies of the store tables and library views a run reads, in a schema of the run's own: one scan
    of the store per table or view, and every check sees the same state of the data.

    `store.<table>` is a copy of the store's table; `view.<name>` the rows of the view library's
    ViewDefinition `name` over the store's resources, made once. A view that cannot be built makes the
    checks that read it fail with its cause (ViewUnavailable) while the others run. Names not taken
    resolve to the live store: the table itself, or the view's SQL as a subquery.

    Also a context manager: `with Snapshot(engine) as snap: snap.take(names)` drops the copies at the end.
    """

    def __init__(self, engine: AnalyticEngine, run_id: str | None = None) -> None:
        self.engine = engine
        run_id = run_id or str(uuid.uuid4())
        self.schema = f"quality_{run_id.replace('-', '')[:12]}"
        self.tables: set[str] = set()
        self.views: set[str] = set()
        #: view name -> why it could not be built
        self.failed: dict[str, str] = {}
        self._created = False

    def resolve(self, name: str) -> str:
        if name.startswith("view."):
            view = name.removeprefix("view.")
            if view in self.views:
                return f"{self.schema}.view_{view}"
            if view in self.failed:
                raise ViewUnavailable(self.failed[view])
            return f"({self._view_sql(view)})"
        if not name.startswith("store."):
            return name
        table = name.removeprefix("store.")
        return f"{self.schema}.{table}" if table in self.tables else self.engine.store_table(table)

    def _view_sql(self, view: str) -> str:
        return view_query(self.engine, library.get_view(view), "store")

    def take(self, names: Iterable[str]) -> None:
        names = set(names)
        wanted = sorted({n.removeprefix("store.") for n in names if n.startswith("store.")} - self.tables)
        views = sorted(
            {n.removeprefix("view.") for n in names if n.startswith("view.")} - self.views - set(self.failed)
        )
        if not wanted and not views:
            return
        with self.engine.cursor() as cur:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            self._created = True
            for table in wanted:
                try:
                    source = self.engine.store_table(table)
                    cur.execute(f"CREATE TABLE {self.schema}.{table} AS SELECT * FROM {source}")  # noqa: S608
                except (duckdb.Error, ValueError):
                    continue  # a missing table: the checks that read it report it themselves
                self.tables.add(table)
            for view in views:
                try:
                    cur.execute(f"CREATE TABLE {self.schema}.view_{view} AS {self._view_sql(view)}")
                except Exception as exc:  # an unknown view, a store without resources, bad data
                    self.failed[view] = f"view.{view} cannot be built: {_one_line(exc)}"
                    continue
                self.views.add(view)

    def drop(self) -> None:
        if self._created:
            with self.engine.cursor() as cur:
                cur.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
            self._created = False
        self.tables.clear()
        self.views.clear()
        self.failed.clear()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()


def tables_read(checks: Iterable[Check]) -> list[str]:
    """The `store.` and `view.` tables (and others) the checks read."""
    return [name for check in checks for name in _tables_read(check)]


def _tables_read(check: Check) -> list[str]:
    names = [check.table]
    for key in ("references", "person_table"):
        if key in check.params:
            names.append(check.params[key])
    for key in ("sql", "condition", "person_where"):
        text = check.params.get(key) or ""
        names += [m.group(1) for m in PLACEHOLDER.finditer(text)]
    if check.where:
        names += [m.group(1) for m in PLACEHOLDER.finditer(check.where)]
    return names


def _run_one(engine: AnalyticEngine, compiled: CompiledCheck, sample_rows: int) -> CheckResult:
    check = compiled.check
    started = time.perf_counter()
    try:
        with engine.cursor() as cur:
            checked, failed = cur.execute(compiled.count_sql).fetchone()
            sample: list[dict[str, Any]] = []
            if failed and sample_rows:
                relation = cur.sql(compiled.sample_sql(sample_rows))
                names = relation.columns
                sample = [
                    {n: _json_value(v) for n, v in zip(names, row, strict=True)}
                    for row in relation.fetchall()
                ]
    except duckdb.Error as exc:
        seconds = time.perf_counter() - started
        if check.optional and any(marker in str(exc) for marker in _MISSING):
            return CheckResult(check, "not_applicable", error=_one_line(exc), seconds=seconds)
        return CheckResult(check, "error", error=_one_line(exc), seconds=seconds)
    seconds = time.perf_counter() - started
    if not checked:
        return CheckResult(check, "not_applicable", 0, 0, seconds=seconds)
    status = "failed" if 100.0 * failed / checked > check.threshold else "passed"
    return CheckResult(check, status, int(checked), int(failed), sample=sample, seconds=seconds)


def run_checks(
    engine: AnalyticEngine,
    checks: Sequence[Check] | RuleSet,
    *,
    as_of: date | None = None,
    macros: Sequence[Macro] = (),
    workers: int = 4,
    sample_rows: int = SAMPLE_ROWS,
    snapshot: bool = True,
) -> RunResult:
    """Run `checks` (or a rule set) over `engine`; a check that cannot run is reported, never raised.

    `as_of` is the date checks compare with (`{as_of}` in SQL, `as_of` in temporal_order; default today).
    """
    ruleset = "custom"
    if isinstance(checks, RuleSet):
        ruleset, macros, checks = checks.name, (*checks.macros, *macros), checks.checks
    run_id = str(uuid.uuid4())
    started_at = datetime.now(UTC)
    as_of = as_of or started_at.date()
    for macro in macros:
        with engine.cursor() as cur:
            cur.execute(macro_sql(macro))
    snap = Snapshot(engine, run_id)
    if snapshot:
        snap.take(tables_read(checks))
    try:
        ctx = Context(snap.resolve, as_of)
        compiled: list[CompiledCheck | CheckResult] = []
        for check in checks:
            try:
                compiled.append(compile_check(check, ctx))
            except Exception as exc:  # a store that cannot be attached, a bad placeholder
                compiled.append(CheckResult(check, "error", error=_one_line(exc)))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [
                pool.submit(_run_one, engine, item, sample_rows) if isinstance(item, CompiledCheck) else None
                for item in compiled
            ]
            results = [
                future.result() if future is not None else item
                for future, item in zip(futures, compiled, strict=True)
            ]
    finally:
        snap.drop()
    return RunResult(run_id, ruleset, started_at, datetime.now(UTC), as_of, results, score(results))


def failing_rows(
    engine: AnalyticEngine,
    check: Check,
    *,
    as_of: date | None = None,
    macros: Sequence[Macro] = (),
    snapshot: Snapshot | None = None,
) -> duckdb.DuckDBPyRelation:
    """Every failing row of one check, as a DuckDB relation (write it with `.to_csv()`/`.to_parquet()`).

    It reads the live store, or the copies of `snapshot` (read the relation before the snapshot is
    dropped): with many checks over views, one snapshot builds each view once.
    """
    for macro in macros:
        with engine.cursor() as cur:
            cur.execute(macro_sql(macro))
    resolve = snapshot.resolve if snapshot is not None else Snapshot(engine, "live").resolve
    ctx = Context(resolve, as_of or date.today())
    return engine.sql(compile_check(check, ctx).failing_sql)
