"""`clinhub jobs` and `clinhub worker`: long work off the request path."""

from __future__ import annotations

import importlib
import json
import signal
import threading
import time

import orjson
import typer
from prometheus_client import start_http_server
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clinhub.config import get_settings
from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import audit, jobs
from clinhub.platform.cli import CLI_ACTOR
from clinhub.platform.logging import configure as configure_logging

console = Console()
app = typer.Typer(help="Jobs: submit, list, inspect and cancel long-running work.", no_args_is_help=True)

_FINISHED = ("succeeded", "failed", "cancelled")


def _parse_params(pairs: list[str]) -> dict:
    """`k=v` pairs; a value that reads as JSON (a number, true, a list) is taken as that, else as text."""
    params: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--param takes key=value, not {pair!r}")
        try:
            params[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            params[key] = raw
    return params


def _table(rows: list[dict]) -> Table:
    table = Table(title="jobs")
    table.add_column("id", no_wrap=True, min_width=36)  # ids are copied into `show`: never cut them
    for name in ("kind", "status", "progress", "attempts", "by", "created"):
        table.add_column(name)
    for row in rows:
        table.add_row(
            row["id"],
            row["kind"],
            row["status"],
            f"{row['progress']}%",
            str(row["attempts"]),
            row["created_by"] or "",
            row["created_at"][:19].replace("T", " "),
        )
    return table


@app.command("list")
def list_command(
    status: str = typer.Option(None, help=f"Only jobs in this status ({', '.join(jobs.STATUSES)})."),
    kind: str = typer.Option(None, help="Only jobs of this kind."),
    limit: int = typer.Option(50, min=1, max=1000, help="At most this many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """List jobs, newest first."""
    with Hub() as hub:
        rows = jobs.list_jobs(hub, status=status, kind=kind, limit=limit)
    if as_json:
        console.print_json(json.dumps(rows))
        return
    console.print(_table(rows))


@app.command("show")
def show_command(job_id: str) -> None:
    """Show one job: status, progress, attempts, result or error (as JSON)."""
    with Hub() as hub:
        found = jobs.get_job(hub, job_id)
    console.print_json(json.dumps(found))


@app.command("kinds")
def kinds_command() -> None:
    """List the job kinds this installation knows, with their parameters."""
    table = Table("kind", "parameters", "permission (HTTP)", "retries", "what it does", title="job kinds")
    for kind in jobs.kinds():
        table.add_row(
            kind.name, ", ".join(kind.parameters()), kind.permission, str(kind.retries), kind.description
        )
    console.print(table)


def _wait(hub: Hub, job_id: str) -> dict:
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=console,
    ) as progress:  # fmt: skip
        bar = progress.add_task(f"job {job_id}", total=100)
        while True:
            found = jobs.get_job(hub, job_id)
            progress.update(bar, completed=found["progress"], description=f"job {job_id} {found['status']}")
            if found["status"] in _FINISHED:
                return found
            time.sleep(0.5)


@app.command("submit")
def submit_command(
    kind: str,
    param: list[str] = typer.Option([], "--param", "-p", help="A parameter as key=value (repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until it finishes; exit 1 if it fails."),
) -> None:
    """Submit a job of KIND (see `clinhub jobs kinds`); a running `clinhub worker` picks it up."""
    with Hub() as hub:
        job_id = jobs.submit(hub, kind, _parse_params(param), created_by=CLI_ACTOR)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="job.submit",
            resource_type="Job",
            resource_id=job_id,
            detail={"kind": kind},
        )
        console.print(job_id)
        if not wait:
            return
        found = _wait(hub, job_id)
    if found["status"] != "succeeded":
        console.print(f"job {found['status']}: {found['error'] or ''}", markup=False)
        raise typer.Exit(1)
    console.print_json(json.dumps(found["result"]))


@app.command("cancel")
def cancel_command(job_id: str) -> None:
    """Cancel a queued job."""
    with Hub() as hub:
        cancelled = jobs.cancel(hub, job_id)
        audit.record(
            hub.store,
            actor=CLI_ACTOR,
            action="job.cancel",
            resource_type="Job",
            resource_id=job_id,
            detail={"kind": cancelled["kind"]},
        )
    console.print(f"job {job_id} cancelled")


def worker_command(
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Jobs run at the same time (threads)."),
    shutdown_timeout: float = typer.Option(
        30.0, "--shutdown-timeout", min=0, help="On SIGINT/SIGTERM, seconds to let running jobs finish."
    ),
    metrics_port: int = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve Prometheus metrics on this port."
    ),
    imports: list[str] = typer.Option(
        [], "--import", help="A module that registers more job kinds (repeatable)."
    ),
) -> None:
    """Run a job worker in the foreground until Ctrl-C or SIGTERM."""
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise InvalidInput(f"cannot import {module}: {exc}") from None
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    if metrics_port:
        start_http_server(metrics_port, addr=settings.host)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with Hub(settings) as hub:
        worker = jobs.Worker(hub, workers=workers, shutdown_timeout=shutdown_timeout).start()
        console.print(
            f"worker: {workers} thread(s) on the queue at {jobs.queue_location(settings)}; "
            f"kinds: {', '.join(kind.name for kind in jobs.kinds())}; Ctrl-C stops",
            markup=False,
        )
        while not stop.wait(1.0):
            continue
        console.print("worker: stopping (running jobs get the shutdown timeout to finish)")
        worker.stop()


if __name__ == "__main__":
    # `python -m clinhub.platform.jobs_cli worker ...` runs a worker without the `clinhub` command
    app.command("worker")(worker_command)
    app()
