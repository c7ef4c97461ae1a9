"""`clinhub backup`: create, list, verify, restore and prune backups of the store."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import backup, jobs
from clinhub.platform.cli import CLI_ACTOR

console = Console()
app = typer.Typer(help="Backups of the store: create, list, verify, restore, prune.", no_args_is_help=True)

BACKUP_ID = typer.Argument(..., help="A backup id (see `clinhub backup list`), or 'latest'.")


@contextmanager
def _session(action: str, resource_id: str | None = None) -> Iterator[tuple[Hub, backup.AuditNote]]:
    """A hub for one command, and the audit event it writes when it ends."""
    with Hub() as hub, backup.audited(hub, actor=CLI_ACTOR, action=action, resource_id=resource_id) as note:
        yield hub, note


@contextmanager
def _phases() -> Iterator[Callable[[str], None]]:
    """Show each phase of a long operation on its own line, with a spinner and its elapsed time."""
    with Progress(
        SpinnerColumn(finished_text="[green]done[/green]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: list[TaskID] = []

        def phase(description: str) -> None:
            if tasks:
                progress.update(tasks[-1], total=1, completed=1)
            tasks.append(progress.add_task(description, total=None))

        yield phase
        if tasks:
            progress.update(tasks[-1], total=1, completed=1)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _age(age: timedelta) -> str:
    minutes = int(age.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    return f"{minutes // (24 * 60)} d {minutes % (24 * 60) // 60} h"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _table(title: str, backups: list[backup.BackupInfo]) -> Table:
    table = Table(title=title)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("name", no_wrap=True)
    for name in ("created (UTC)", "age", "size", "status", "verified (UTC)"):
        table.add_column(name)
    for info in backups:
        status = info.status if info.present else f"{info.status} (folder missing)"
        table.add_row(
            str(info.id),
            info.name,
            _when(info.created_at),
            _age(info.age),
            _size(info.size_bytes),
            status,
            _when(info.verified_at),
        )
    return table


@app.command("create")
def create_command(
    as_job: bool = typer.Option(
        False, "--job", help="Submit it to the job queue and print the job id instead of waiting."
    ),
) -> None:
    """Take an online backup of the store and the analytic files; writers may keep going."""
    if as_job:
        with Hub() as hub:
            job_id = jobs.submit(hub, "backup.create", {}, created_by=CLI_ACTOR)
        console.print(f"backup job [bold]{job_id}[/bold] queued; follow it with `clinhub jobs show {job_id}`")
        return
    with _session("backup.create") as (hub, note), _phases() as phase:
        info = backup.create_backup(hub, phase)
        note.resource_id = str(info.id)
        note.detail = {"name": info.name, "size_bytes": info.size_bytes}
    console.print(f"backup [bold]{info.id}[/bold] created: {info.name}, {_size(info.size_bytes)}")
    console.print(f"in {escape(info.path)}", highlight=False)


def _schedule_line(hub: Hub) -> str:
    hours = hub.settings.backup_interval_hours
    last = backup.last_success(hub)
    age = f"last good backup {_age(datetime.now(UTC) - last)} ago" if last else "no good backup yet"
    if hours <= 0:
        return f"{age}; no scheduled backups (set CLINHUB_BACKUP_INTERVAL_HOURS)"
    return f"{age}; a worker takes one every {hours:g} h (CLINHUB_BACKUP_INTERVAL_HOURS)"


@app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List backups, newest first, with age, size and status."""
    with _session("backup.list") as (hub, _):
        backups = backup.list_backups(hub)
        root = backup.backups_dir(hub)
        schedule = _schedule_line(hub)
    if as_json:
        print(json.dumps([info.as_dict() for info in backups], indent=2))
        return
    console.print(_table(f"backups in {escape(str(root))}", backups))
    console.print(schedule, highlight=False)


@app.command("verify")
def verify_command(backup_id: str = BACKUP_ID) -> None:
    """Check checksums, test-restore into a scratch database, compare with the manifest; exit 1 on failure."""
    with _session("backup.verify", backup_id) as (hub, note), _phases() as phase:
        result = backup.verify_backup(hub, backup_id, phase)
        note.resource_id = str(result.backup.id)
        note.outcome = "success" if result.ok else "failure"
        note.detail = {"reason": result.reason}
    if not result.ok:
        console.print(
            f"[red]backup {result.backup.id} FAILED verification: {escape(result.reason or '')}[/red]"
        )
        raise typer.Exit(1)
    rows = sum(result.tables.values())
    console.print(
        f"backup {result.backup.id} verified: restored into a scratch database, {rows:,} rows in "
        f"{len(result.tables)} tables and the schema revision match the manifest ({result.seconds:.1f} s)"
    )


@app.command("restore")
def restore_command(
    backup_id: str = BACKUP_ID,
    yes: bool = typer.Option(False, "--yes", help="Confirm: the store is replaced by the backup."),
) -> None:
    """Replace the store and analytic files with a backup. Stop the API, MLLP listener and workers first."""
    if not yes:
        raise InvalidInput("restore replaces the store with the backup; rerun with --yes to confirm")
    with _session("backup.restore", backup_id) as (hub, note), _phases() as phase:
        result = backup.restore_backup(hub, backup_id, phase)
        note.resource_id = str(result.backup.id)
        note.outcome = "success" if result.ok else "failure"
        note.detail = {"reason": result.reason, "files": result.files}
    if not result.ok:
        console.print(
            f"[red]backup {result.backup.id} restored, but the store does not match its manifest: "
            f"{escape(result.reason or '')}[/red]"
        )
        raise typer.Exit(1)
    rows = sum(result.tables.values())
    console.print(
        f"backup {result.backup.id} ({result.backup.name}) restored: {rows:,} rows in {len(result.tables)} "
        f"tables match the manifest, {result.files} analytic files ({result.seconds:.1f} s)"
    )


@app.command("prune")
def prune_command(
    keep_days: int = typer.Option(30, min=0, help="Remove backups older than this many days."),
    keep_min: int = typer.Option(7, min=0, help="Always keep this many newest backups that did not fail."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be removed; remove nothing."),
) -> None:
    """Remove old backups: older than --keep-days, always keeping the newest --keep-min."""
    with _session("backup.prune") as (hub, note):
        if dry_run:
            result = backup.plan_prune(hub, keep_days, keep_min)
        else:
            result = backup.prune_backups(hub, keep_days, keep_min)
        note.detail = {
            "keep_days": keep_days,
            "keep_min": keep_min,
            "dry_run": dry_run,
            "removed": [info.id for info in result.removed],
        }
    verb = "would remove" if dry_run else "removed"
    if result.removed:
        console.print(_table(f"{verb} {len(result.removed)} backups", result.removed))
    console.print(f"{verb} {len(result.removed)}, kept {len(result.kept)} backups")
