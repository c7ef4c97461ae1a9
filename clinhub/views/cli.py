"""`clinhub views`: compile, validate, run, export and materialise ViewDefinitions; the conformance suite."""

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
from clinhub.views import export, library, materialize
from clinhub.views.compiler import compile_definition
from clinhub.views.conformance import report, run_suite
from clinhub.views.dialects import DIALECTS
from clinhub.views.runner import FORMATS, stream_view, write_view

app = typer.Typer(
    help="SQL on FHIR v2 views: compile ViewDefinitions to SQL; run, export and materialise them over the"
    " store or files.",
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


def named_view(view: str) -> dict[str, Any]:
    """A library view by name or a ViewDefinition file; a file of that name wins, so a local view can
    shadow a library one."""
    if library.has_view(view) and not Path(view).is_file():
        return library.get_view(view)
    return load_view(Path(view))


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
    definition = named_view(view)
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


@app.command("materialize")
def materialize_command(
    view: str = typer.Argument(..., help="A library view's name or a ViewDefinition (JSON file)."),
    name: str | None = typer.Option(
        None, "--name", help="Table to write in the analytic database (default: the view's name)."
    ),
    source: str = typer.Option(
        "store",
        "--source",
        help="'store' (refreshed incrementally by lastUpdated), or an NDJSON or Parquet file or folder"
        " (rebuilt every time).",
    ),
    full: bool = typer.Option(False, "--full", help="Rebuild the table even when a refresh would do."),
) -> None:
    """Write a view's rows into a table of the hub's analytic database ($CLINHUB_DATA_DIR/analytics.duckdb)
    for other tools to read; run it again to refresh the table."""
    definition = named_view(view)
    table = materialize.check_table(name or definition.get("name") or "")
    settings = get_settings()
    with materialize.open_analytics(settings) as engine:
        build = materialize.rebuild if full else materialize.refresh
        done = build(engine, definition, table, source)
    if done.mode == "incremental":
        what = f"incremental: {done.resources:,} resources recomputed ({done.deleted:,} deleted)"
    else:
        what = f"full rebuild: {done.reason}"
    console.print(
        f"{done.table}: {done.rows:,} rows; {what} ({materialize.analytics_path(settings)})", highlight=False
    )


@app.command("materialized")
def materialized_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the materialised views: table, view, source, watermark, rows, last refresh."""
    settings = get_settings()
    if not materialize.analytics_path(settings).exists():
        found = []
    else:
        with materialize.open_analytics(settings) as engine:
            found = materialize.materialized(engine)
    if as_json:
        typer.echo(json.dumps([entry.as_dict() for entry in found], indent=2))
        return
    table = Table("table", "view", "resource", "source", "watermark", "rows", "refreshed", "mode")
    table.title = f"materialised views in {materialize.analytics_path(settings)}"
    for entry in found:
        shown = entry.as_dict()
        table.add_row(
            entry.table,
            entry.view or "",
            entry.resource,
            entry.source,
            shown["watermark"] or "",
            f"{entry.rows:,}",
            shown["refreshed_at"],
            entry.mode,
        )
    console.print(table)


@app.command("export")
def export_command(
    views: list[str] = typer.Argument(..., help="Library views' names or ViewDefinitions (JSON files)."),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the files: NAME.FORMAT per view, then manifest.json.", file_okay=False
    ),
    fmt: str = typer.Option("csv", "--format", help=f"Output format: {', '.join(FORMATS)}."),
    source: str = typer.Option(
        "store", "--source", help="'store', or an NDJSON file/directory, or a Parquet file/directory."
    ),
) -> None:
    """Export views to files, as $viewdefinition-export does, but here and now: each file is named after
    its view (its `name`, or view_N); manifest.json lists the files and their row counts."""
    items = export.export_views_of([(None, view, named_view(view)) for view in views])
    engine = _engine(source)
    try:
        manifest = export.export_views(engine, items, out, fmt, source)
    finally:
        engine.close()
    for output in manifest["output"]:
        console.print(f"{out / output['file']}: {output['rows']:,} rows", highlight=False)
