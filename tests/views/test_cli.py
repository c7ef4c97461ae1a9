"""`clinhub views`: sql, validate and run, driven through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput, NotFound, ViewError
from clinhub.views.cli import app

VIEW = {
    "resourceType": "ViewDefinition",
    "resource": "Patient",
    "select": [
        {"column": [{"name": "id", "path": "id", "type": "id"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family", "type": "string"}]},
    ],
}


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    view = tmp_path / "view.json"
    view.write_text(json.dumps(VIEW))
    data = tmp_path / "patients.ndjson"
    patients = [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Smith"}, {"family": "Jones"}]},
        {"resourceType": "Patient", "id": "p2", "name": [{"family": "Brown"}]},
    ]
    data.write_text("".join(json.dumps(p) + "\n" for p in patients))
    return view, data


runner = CliRunner()


def test_sql_prints_the_compiled_query(files: tuple[Path, Path]) -> None:
    result = runner.invoke(app, ["sql", str(files[0]), "--source", "patients"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("SELECT") and "FROM patients AS src" in result.output


def test_validate_lists_the_columns_or_says_what_is_wrong(files: tuple[Path, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(files[0])])
    assert result.exit_code == 0, result.output
    assert "valid view of Patient" in result.output and "family" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(VIEW | {"select": [{"forEach": "@@"}]}))
    result = runner.invoke(app, ["validate", str(bad)])
    assert isinstance(result.exception, ViewError)
    assert "/select/0/forEach: invalid date/time literal at position 0" in result.exception.message


def test_run_writes_csv_to_stdout_and_other_formats_to_files(
    files: tuple[Path, Path], tmp_path: Path
) -> None:
    view, data = files
    result = runner.invoke(app, ["run", str(view), "--source", str(data)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "id,family" and sorted(lines[1:]) == ["p1,Jones", "p1,Smith", "p2,Brown"]
    result = runner.invoke(
        app, ["run", str(view), "--source", str(data), "--format", "ndjson", "--limit", "2"]
    )
    assert [set(json.loads(line)) for line in result.output.splitlines()] == [{"id", "family"}] * 2
    out = tmp_path / "names.parquet"
    result = runner.invoke(
        app, ["run", str(view), "--source", str(data), "--format", "parquet", "--out", str(out)]
    )
    assert result.exit_code == 0 and f"wrote {out}" in result.output.replace("\n", "")
    with AnalyticEngine() as engine:
        assert engine.fetchall(f"SELECT count(*) FROM '{out}'") == [(3,)]


def test_run_errors_are_one_line_causes(files: tuple[Path, Path], tmp_path: Path) -> None:
    view, data = files
    assert isinstance(
        runner.invoke(app, ["run", str(tmp_path / "none.json"), "--source", str(data)]).exception, NotFound
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = runner.invoke(app, ["run", str(broken), "--source", str(data)])
    assert isinstance(result.exception, InvalidInput) and "not valid JSON" in result.exception.message
    result = runner.invoke(app, ["run", str(view), "--source", str(data), "--format", "xml"])
    assert isinstance(result.exception, InvalidInput) and "unknown format 'xml'" in result.exception.message
    result = runner.invoke(app, ["run", str(view), "--source", str(tmp_path / "missing.ndjson")])
    assert isinstance(result.exception, NotFound)
