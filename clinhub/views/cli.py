"""`clinhub views`: compile, validate and run SQL on FHIR ViewDefinitions; run the conformance suite."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clinhub.config import get_settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput, NotFound
from clinhub.views import library
from clinhub.views.compiler import compile_definition
from clinhub.views.conformance import report, run_suite
from clinhub.views.dialects import DIALECTS
from clinhub.views.runner import FORMATS, stream_view, write_view

app = typer.Typer(
    help="SQL on FHIR v2 views: compile ViewDefinitions to SQL and run them over the store or files.",
    no_args_is_help=True,
)
console = Console()

VIEW_ARGUMENT = typer.Argument(..., help="A ViewDefinition (JSON file).", dir_okay=False)


def load_view(path: Path) -> dict[str, Any]:
    """A ViewDefinition from a JSON file; a missing or malformed file is a one-line error."""
    if not path.is_file():
        raise NotFound(f"no such file: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid JSON ({exc})") from None


@app.command("sql")
def sql_command(
    view: Path = VIEW_ARGUMENT,
    dialect: str = typer.Option("duckdb", help=f"SQL dialect: {', '.join(DIALECTS)}."),
    source: str = typer.Option(
        "source", help="Name of the relation the SQL reads (a JSON column `resource`)."
    ),
) -> None:
    """Print the SQL a ViewDefinition compiles to."""
    compiled = compile_definition(load_view(view), dialect, source)
    typer.echo(compiled.sql)


@app.command("validate")
def validate_command(view: Path = VIEW_ARGUMENT) -> None:
    """Check a ViewDefinition (structure, FHIRPath, constants, functions) and list its columns."""
    compiled = compile_definition(load_view(view))
    table = Table("column", "type", "collection", title=f"{view.name}: valid view of {compiled.resource}")
    for column in compiled.columns:
        table.add_row(column.name, column.type, "yes" if column.collection else "")
    console.print(table)


@app.command("library")
def library_command() -> None:
    """List the views shipped with clinhub (run one with `clinhub views run NAME`)."""
    table = Table("name", "resource", "description", title="view library")
    for view in library.list_views():
        table.add_row(view["name"], view["resource"], view["description"])
    console.print(table)


@app.command("run")
def run_command(
    view: str = typer.Argument(..., help="A library view's name or a ViewDefinition (JSON file)."),
    source: str = typer.Option(
        ..., "--source", help="'store', or an NDJSON file/directory, or a Parquet file/directory."
    ),
    fmt: str = typer.Option("csv", "--format", help=f"Output format: {', '.join(FORMATS)}."),
    out: Path | None = typer.Option(None, "--out", help="Write to this file (default: standard output)."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="At most this many rows."),
) -> None:
    """Run a library view or a ViewDefinition and write its rows (streamed by DuckDB, not held in memory)."""
    # a file of that name wins, so a local view can shadow a library one
    definition = (
        library.get_view(view)
        if library.has_view(view) and not Path(view).is_file()
        else load_view(Path(view))
    )
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    engine = _engine(source)
    try:
        if out is None:
            stream_view(engine, definition, source, sys.stdout.buffer, fmt, limit)
            sys.stdout.flush()
        else:
            write_view(engine, definition, source, out, fmt, limit)
            console.print(f"wrote {out} ({fmt})", highlight=False)
    finally:
        engine.close()


def _engine(source: str) -> AnalyticEngine:
    return AnalyticEngine(get_settings().store_url if source == "store" else None)


@app.command("test-suite")
def test_suite_command(
    directory: Path = typer.Argument(..., help="A folder of SQL on FHIR v2 test files.", file_okay=False),
    report_path: Path | None = typer.Option(None, "--report", help="Write the test report (JSON) here."),
) -> None:
    """Run the SQL on FHIR v2 conformance tests in DIRECTORY; exit code 1 if any fails."""
    if not directory.is_dir():
        raise NotFound(f"no such folder: {directory}")
    results = run_suite(directory)
    if report_path is not None:
        report_path.write_text(json.dumps(report(results), indent=2) + "\n", encoding="utf-8")
    table = Table("file", "passed", "failed", title="SQL on FHIR v2 conformance")
    for result in results:
        failed = f"[red]{result.failed}[/red]" if result.failed else "0"
        table.add_row(result.name, str(result.passed), failed)
    passed = sum(result.passed for result in results)
    total = sum(len(result.tests) for result in results)
    table.add_section()
    table.add_row("total", f"{passed}/{total}", str(total - passed))
    console.print(table)
    for result in results:
        for test in result.tests:
            if not test["result"]["passed"]:
                failure = f"{result.name}: {test['name']}: {test['result']['error']}"
                console.print(f"[red]FAIL[/red] {escape(failure)}")
    if report_path is not None:
        console.print(f"report: {report_path}", highlight=False)
    if passed < total:
        raise typer.Exit(1)
