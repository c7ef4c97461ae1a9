"""`clinhub perf`: the performance advisor."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from clinhub.hub import Hub
from clinhub.platform import audit, perf
from clinhub.platform.cli import CLI_ACTOR

console = Console()
app = typer.Typer(
    help="Performance advisor: slow queries, index suggestions, pool sizing, maintenance.",
    no_args_is_help=True,
)


def _cell(value: object) -> Text:
    # plain Text: statement shapes hold brackets that Rich would otherwise read as markup
    return Text("" if value is None else str(value))


def _statements_table(title: str, statements: list[dict]) -> Table:
    table = Table(title=title)
    table.add_column("statement", overflow="fold", ratio=1)
    for name in ("calls", "total ms", "mean ms", "max ms"):
        table.add_column(name, justify="right")
    for row in statements:
        table.add_row(*(_cell(row[key]) for key in ("statement", "calls", "total_ms", "mean_ms", "max_ms")))
    return table


def _suggestions_table(suggestions: list[dict]) -> Table:
    table = Table(title="missing-index suggestions")
    for name in ("table", "column", "used as", "statements", "calls", "total ms", "rows"):
        table.add_column(name)
    table.add_column("suggested index", overflow="fold")
    for row in suggestions:
        table.add_row(
            _cell(row["table"]),
            _cell(row["column"]),
            _cell(", ".join(row["used_as"])),
            *(_cell(row[key]) for key in ("statements", "calls", "total_ms", "table_rows", "ddl")),
        )
    return table


def _tables_table(tables: list[dict]) -> Table:
    extra = [key for key in (tables[0] if tables else {}) if key not in ("table", "rows")]
    table = Table("table", "rows", *extra, title="tables")
    for row in tables:
        table.add_row(_cell(row["table"]), _cell(f"{row['rows']:,}"), *(_cell(row.get(key)) for key in extra))
    return table


def _pairs_table(title: str, pairs: dict) -> Table:
    table = Table("", "", title=title, show_header=False)
    for key, value in pairs.items():
        table.add_row(_cell(key.replace("_", " ")), _cell(value))
    return table


@app.command("report")
def report_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Slow statements, missing-index suggestions, table statistics and pool sizing of the store.

    Statement timings are those this process observed (so, from the command line, mostly none) plus,
    on PostgreSQL, pg_stat_statements; the serving process's timings are at GET /admin/performance."""
    with Hub() as hub:
        found = perf.report(hub)
    if as_json:
        console.print_json(json.dumps(found))
        return
    log = found["query_log"]
    console.print(
        _statements_table(f"slow statements (this process, since {log['since']})", found["slow_statements"])
    )
    server = found["pg_stat_statements"]
    if server["available"]:
        console.print(_statements_table("pg_stat_statements (this database)", server["statements"]))
    else:
        console.print(Text(f"pg_stat_statements: not available ({server['reason']})"))
    console.print(_suggestions_table(found["index_suggestions"]))
    console.print(_tables_table(found["tables"]))
    if found["database"]:
        console.print(_pairs_table("database file", found["database"]))
    console.print(_pairs_table("connection pool", found["pool"]))


@app.command("maintain")
def maintain_command(
    action: str = typer.Argument(..., metavar="analyze|vacuum", help="What to run."),
    table: list[str] = typer.Option(None, "--table", help="A store table (repeatable); default: all."),
) -> None:
    """Refresh planner statistics (analyze) or reclaim space and refresh them (vacuum)."""
    with Hub() as hub:
        result = perf.maintain(hub, action, table)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="perf.maintain",
            detail={"action": action, "tables": [step["target"] for step in result["steps"]]},
        )
    summary = Table(
        "target", "statement", "seconds", "ok", "messages", title=f"{action} ({result['backend']})"
    )
    for step in result["steps"]:
        summary.add_row(
            *(_cell(step[key]) for key in ("target", "statement", "seconds")),
            _cell("yes" if step["ok"] else "NO"),
            _cell("; ".join(step["messages"])),
        )
    console.print(summary)
    if not all(step["ok"] for step in result["steps"]):
        raise typer.Exit(1)
