"""The SQL on FHIR v2 conformance suite: run its test files through the compiler and write the report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.errors import ViewError
from clinhub.views.compiler import OutputColumn, compile_definition
from clinhub.views.runner import PLACEHOLDER, engine_message


@dataclass
class FileResult:
    name: str
    tests: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(1 for test in self.tests if test["result"]["passed"])

    @property
    def failed(self) -> int:
        return len(self.tests) - self.passed


def test_files(directory: Path) -> list[Path]:
    """The suite's test files: JSON files with `tests` (the schemas beside them are skipped)."""
    found = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "tests" in data:
            found.append(path)
    return found


def run_suite(directory: Path, engine: AnalyticEngine | None = None) -> list[FileResult]:
    """Run every test file in `directory`; each file's resources are loaded once into DuckDB."""
    own = engine is None
    engine = engine or AnalyticEngine()
    try:
        return [run_file(engine, path) for path in test_files(directory)]
    finally:
        if own:
            engine.close()


def run_file(engine: AnalyticEngine, path: Path) -> FileResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    texts = [json.dumps(resource) for resource in data.get("resources", [])]
    resources = engine.sql("SELECT CAST(unnest(?::VARCHAR[]) AS JSON) AS resource", [texts])
    result = FileResult(path.name)
    for test in data["tests"]:
        outcome = run_test(resources, test)
        result.tests.append({"name": test.get("title", ""), "result": outcome})
    return result


def run_test(resources: duckdb.DuckDBPyRelation, test: dict[str, Any]) -> dict[str, Any]:
    """One test: {"passed": true} or {"passed": false, "error": why}."""
    try:
        compiled = compile_definition(test["view"], "duckdb", PLACEHOLDER)
        relation = resources.query(PLACEHOLDER, compiled.sql)
        rows = relation.fetchall()
        names = list(relation.columns)
    except ViewError as exc:
        return _expected_error(test, exc.message)
    except duckdb.Error as exc:
        return _expected_error(test, engine_message(exc))
    if test.get("expectError"):
        return {"passed": False, "error": f"expected an error, got {len(rows)} row(s)"}
    if "expectColumns" in test and names != test["expectColumns"]:
        return {"passed": False, "error": f"expected columns {test['expectColumns']}, got {names}"}
    if "expectCount" in test:
        if len(rows) != test["expectCount"]:
            return {"passed": False, "error": f"expected {test['expectCount']} row(s), got {len(rows)}"}
        return {"passed": True}
    actual = [_row(names, row, compiled.columns) for row in rows]
    problem = compare_rows(test.get("expect", []), actual)
    return {"passed": True} if problem is None else {"passed": False, "error": problem}


def _expected_error(test: dict[str, Any], message: str) -> dict[str, Any]:
    if test.get("expectError"):
        return {"passed": True}
    return {"passed": False, "error": message}


def _row(names: list[str], row: tuple, columns: list[OutputColumn]) -> dict[str, Any]:
    decoded = {}
    for name, value, column in zip(names, row, columns, strict=True):
        if column.type == "json" and value is not None:
            value = [json.loads(v) for v in value] if column.collection else json.loads(value)
        decoded[name] = value
    return decoded


def compare_rows(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> str | None:
    """None when both hold the same rows in any order (numbers compared by value), else the difference."""
    want = sorted(_canonical(row) for row in expected)
    got = sorted(_canonical(row) for row in actual)
    if want == got:
        return None
    missing = [row for row in want if row not in got]
    extra = [row for row in got if row not in want]
    return f"expected {len(want)} row(s), got {len(got)}; missing {missing[:3]}; unexpected {extra[:3]}"


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps({key: _normal(value) for key, value in row.items()}, sort_keys=True)


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        # 5 and 5.0 are the same number; decimals compare to 9 significant digits
        return float(f"{value:.9g}") if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return str(value)


def report(results: list[FileResult]) -> dict[str, Any]:
    """The report in the suite's test-report.schema.json format."""
    return {result.name: {"tests": result.tests} for result in results}
