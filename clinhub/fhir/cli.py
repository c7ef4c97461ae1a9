"""`clinhub fhir`: bulk NDJSON import and export, search-index rebuild, pulls from external FHIR servers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clinhub.errors import InvalidInput
from clinhub.fhir.bulk import import_ndjson
from clinhub.fhir.client import BearerToken, FhirClient, SmartBackendAuth
from clinhub.fhir.export import LEVELS, export, parse_since, parse_types
from clinhub.fhir.ndjson import ndjson_paths
from clinhub.fhir.pull import parse_types as parse_pull_types
from clinhub.fhir.pull import pull
from clinhub.hub import Hub
from clinhub.store.resources import reindex

app = typer.Typer(
    help="FHIR R4: bulk NDJSON import and export, search index, pulls from external FHIR servers.",
    no_args_is_help=True,
)
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _count_lines(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(4 * 1024 * 1024):
                total += block.count(b"\n")
    return total


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="An NDJSON file, or a directory of *.ndjson files."),
    processes: int = typer.Option(
        None,
        "--processes",
        min=0,
        help="Parser processes (default: up to 2 for large inputs; 0: parse here).",
    ),
    durable_each_batch: bool = typer.Option(
        False,
        "--durable-each-batch",
        help="SQLite: fsync every batch, not once at the end (slower; the end result is equally durable).",
    ),
    show_errors: int = typer.Option(20, "--show-errors", min=0, help="Rejected lines to list."),
) -> None:
    """Load FHIR NDJSON into the store; bad lines are skipped and listed with file and line number."""
    paths = ndjson_paths(path)
    with Hub() as hub, _progress() as progress:
        task = progress.add_task("importing resources", total=_count_lines(paths))
        stats = import_ndjson(
            hub.store,
            path,
            processes=processes,
            durable_each_batch=durable_each_batch,
            progress=lambda n: progress.advance(task, n),
        )
    table = Table("type", "created", "updated", "unchanged", title=f"imported {stats.total:,} resources")
    for resource_type in sorted({*stats.created, *stats.updated, *stats.unchanged}):
        table.add_row(
            resource_type,
            f"{stats.created.get(resource_type, 0):,}",
            f"{stats.updated.get(resource_type, 0):,}",
            f"{stats.unchanged.get(resource_type, 0):,}",
        )
    console.print(table)
    if stats.rejected:
        console.print(f"[yellow]{stats.rejected:,} lines rejected (skipped):[/yellow]")
        for reason in stats.errors[:show_errors]:
            console.print(f"  {reason}", markup=False, highlight=False)


@app.command("reindex")
def reindex_command(
    resource_type: list[str] = typer.Option(None, "--type", help="Only these resource types (repeatable)."),
) -> None:
    """Rebuild the search index from the stored resources (after an upgrade that adds parameters)."""
    with Hub() as hub, _progress() as progress:
        task = progress.add_task("indexing resources", total=None)
        done = reindex(hub.store, resource_type or None, progress=lambda n: progress.advance(task, n))
    console.print(f"indexed {done:,} resources")


@app.command("export")
def export_command(
    out: Path = typer.Argument(..., help="Folder for the NDJSON files (one per resource type)."),
    level: str = typer.Option("system", "--level", help=f"One of {', '.join(LEVELS)}."),
    group: str = typer.Option(None, "--group", help="Group id (with --level group)."),
    types: str = typer.Option(None, "--type", help="Comma-separated resource types."),
    since: str = typer.Option(None, "--since", help="Only resources stored after this instant."),
) -> None:
    """Bulk Data export to a folder, without the job system (the HTTP $export runs as a job)."""
    if level == "group" and not group:
        raise InvalidInput("--level group needs --group ID")
    with Hub() as hub:
        result = export(
            hub.store, out, level=level, group_id=group, types=parse_types(types), since=parse_since(since)
        )
    table = Table("type", "resources", "file", title=f"exported at {result.transaction_time}")
    for item in result.output:
        table.add_row(item["type"], f"{item['count']:,}", str(out / item["file"]))
    console.print(table)


@app.command("pull")
def pull_command(
    source: str = typer.Option(
        ..., "--from", help="Base URL of the FHIR server, e.g. https://ehr.example/fhir"
    ),
    types: str = typer.Option(
        ..., "--types", help="Comma-separated resource types, e.g. Patient,Observation"
    ),
    since: str = typer.Option(None, "--since", help="Only resources changed at or after this instant."),
    full: bool = typer.Option(False, "--full", help="Ignore the marks of earlier pulls; fetch everything."),
    token: str = typer.Option(None, "--token", envvar="CLINHUB_PULL_TOKEN", help="A bearer token."),
    client_id: str = typer.Option(None, "--client-id", help="SMART Backend Services client id."),
    key_file: Path = typer.Option(None, "--key-file", help="SMART: the client's private key (PEM)."),
    token_url: str = typer.Option(None, "--token-url", help="SMART: token endpoint (default: discovered)."),
    scope: str = typer.Option("system/*.read", "--scope", help="SMART: scopes to ask for."),
    algorithm: str = typer.Option("RS384", "--algorithm", help="SMART: RS384 or ES384."),
    parallel: int = typer.Option(4, "--parallel", min=1, max=16, help="Resource types fetched at once."),
    timeout: float = typer.Option(30.0, "--timeout", min=1, help="Seconds per request."),
) -> None:
    """Pull resources from an external FHIR server (incremental by _lastUpdated) and summarise changes."""
    auth: BearerToken | SmartBackendAuth | None = None
    if client_id or key_file:
        if not (client_id and key_file):
            raise InvalidInput("SMART Backend Services needs both --client-id and --key-file")
        auth = SmartBackendAuth(client_id, key_file.read_text(), token_url, scope, algorithm)
    elif token:
        auth = BearerToken(token)
    wanted = parse_pull_types(types)
    with Hub() as hub, FhirClient(source, auth=auth, timeout=timeout) as client, _progress() as progress:
        task = progress.add_task("pulling resources", total=None)
        summary = pull(
            hub.store,
            client,
            wanted,
            since=since,
            incremental=not full,
            parallel=parallel,
            progress=lambda n: progress.advance(task, n),
        )
    table = Table(
        "type", "since", "fetched", "created", "updated", "unchanged", "error", title=f"pulled from {source}"
    )
    for item in summary.as_dict()["types"]:
        table.add_row(
            item["type"],
            item["since"] or "(everything)",
            f"{item['fetched']:,}",
            f"{item['created']:,}",
            f"{item['updated']:,}",
            f"{item['unchanged']:,}",
        )
    console.print(table)
    for item in summary.types:
        if item.error:
            console.print(f"{item.resource_type}: {item.error}", markup=False, highlight=False)
    if not summary.ok:
        raise typer.Exit(1)
