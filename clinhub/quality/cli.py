"""`clinhub quality`: run a rule set over the store, list its checks, follow the score over runs."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.quality import history
from clinhub.quality.checks import load_ruleset, ruleset_names
from clinhub.quality.jobs import parse_as_of
from clinhub.quality.report import render_html
from clinhub.quality.runner import failing_rows
from clinhub.quality.service import DEFAULT_RULESET, run_and_save

app = typer.Typer(
    help="Data quality: run rule sets of checks over the store, see scores, history and failing rows.",
    no_args_is_help=True,
)
console = Console()

RULESET = typer.Option(
    DEFAULT_RULESET, "--ruleset", "-r", help="A packaged rule set (e.g. directory) or a YAML file."
)
_STYLE = {"passed": "green", "failed": "bold red", "error": "yellow", "not_applicable": "dim"}


@app.command("run")
def run_command(
    ruleset: str = RULESET,
    report: Path = typer.Option(None, "--report", help="Write the HTML report here.", dir_okay=False),
    json_out: Path = typer.Option(None, "--json", help="Write the run as JSON here.", dir_okay=False),
    as_of: str = typer.Option(None, "--as-of", help="The date checks compare with (default: today)."),
) -> None:
    """Run a rule set over the store, store the run, print the scores and the checks that failed."""
    with Hub() as hub:
        result = run_and_save(hub, ruleset, as_of=parse_as_of(as_of), actor="cli")
        run = result.as_dict()
        if report:
            report.write_text(render_html(run, history.trend(hub.store, result.ruleset)), encoding="utf-8")
    if json_out:
        json_out.write_text(json.dumps(run, indent=2), encoding="utf-8")
    table = Table("check", "severity", "status", "failed", "checked", "%", title=f"quality: {result.ruleset}")
    for r in sorted(result.results, key=lambda r: (r.status == "passed", r.check.id)):
        style = _STYLE[r.status]
        status = r.status if r.status != "error" else f"error: {r.error}"
        table.add_row(
            r.check.id,
            r.check.severity,
            f"[{style}]{escape(status)}[/]",
            f"{r.rows_failed:,}",
            f"{r.rows_checked:,}",
            f"{r.percent_failed:.2f}",
        )
    console.print(table)
    s = result.scores
    counts = result.counts()
    console.print(
        f"grade {s.grade or '-'} · overall {s.overall if s.overall is not None else '-'} · "
        f"checks passed {s.percent_passed if s.percent_passed is not None else '-'}% · "
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors, "
        f"{counts['not_applicable']} not applicable · {result.seconds:.2f} s · run {result.run_id}"
    )


@app.command("checks")
def checks_command(
    ruleset: str = RULESET, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")
) -> None:
    """List the checks of a rule set."""
    rules = load_ruleset(ruleset)
    if as_json:
        typer.echo(json.dumps([c.as_dict() for c in rules.checks], indent=2))
        return
    table = Table("id", "table", "category", "dimension", "severity", "type", "description", title=rules.name)
    for c in rules.checks:
        table.add_row(
            c.id, c.table, f"{c.category}/{c.subcategory}", c.dimension, c.severity, c.type, c.description
        )
    console.print(table)
    console.print(f"packaged rule sets: {', '.join(ruleset_names())}")


@app.command("history")
def history_command(
    ruleset: str = typer.Option(None, "--ruleset", "-r", help="Only runs of this rule set."),
    limit: int = typer.Option(20, help="How many runs."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Past runs, newest first, with their scores."""
    with Hub() as hub:
        runs = history.list_runs(hub.store, ruleset, limit)
    if as_json:
        typer.echo(json.dumps(runs, indent=2))
        return
    table = Table("run", "rule set", "started", "grade", "overall", "passed %", "failed", "errors")
    for run in runs:
        table.add_row(
            run["id"],
            run["ruleset"],
            run["started_at"],
            run["grade"] or "-",
            str(run["overall"]),
            str(run["percent_passed"]),
            str(run["failed"]),
            str(run["errors"]),
        )
    console.print(table)


@app.command("diff")
def diff_command(
    old: str = typer.Argument(..., help="The earlier run's id."),
    new: str = typer.Argument("latest", help="The later run's id (default: the latest run)."),
) -> None:
    """What changed between two runs: checks newly failing, fixed, worse, better."""
    with Hub() as hub:
        changes = history.diff(hub.store, old, new)
    typer.echo(json.dumps(changes, indent=2))


@app.command("export")
def export_command(
    check_id: str = typer.Argument(..., help="The check whose failing rows to export."),
    out: Path = typer.Option(..., "--out", "-o", help="A .csv or .parquet file.", dir_okay=False),
    ruleset: str = RULESET,
    as_of: str = typer.Option(None, "--as-of", help="The date checks compare with (default: today)."),
) -> None:
    """Write every failing row of one check to CSV or Parquet."""
    rules = load_ruleset(ruleset)
    check = next((c for c in rules.checks if c.id == check_id), None)
    if check is None:
        raise InvalidInput(f"rule set {rules.name} has no check {check_id!r}")
    if out.suffix not in (".csv", ".parquet"):
        raise InvalidInput("--out must end in .csv or .parquet")
    with Hub() as hub:
        relation = failing_rows(
            hub.engine, check, as_of=parse_as_of(as_of) or date.today(), macros=rules.macros
        )
        if out.suffix == ".csv":
            relation.write_csv(str(out))
        else:
            relation.write_parquet(str(out))
    console.print(f"wrote the failing rows of {check_id} to {out}")
