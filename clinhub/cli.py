"""The `clinhub` command: mounts each domain's commands and turns errors into one-line causes."""

from __future__ import annotations

import json
import os
import sys

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clinhub import __version__
from clinhub.analytics.cli import app as analytics_app
from clinhub.config import Settings, get_settings
from clinhub.errors import ClinhubError, InvalidInput, NotFound
from clinhub.fhir.cli import app as fhir_app
from clinhub.hl7.cli import app as hl7_app
from clinhub.hub import Hub
from clinhub.mentor.cli import app as mentor_app
from clinhub.platform.backup_cli import app as backup_app
from clinhub.platform.cli import audit_app, keys_app, users_app
from clinhub.platform.jobs_cli import app as jobs_app
from clinhub.platform.jobs_cli import worker_command
from clinhub.platform.perf_cli import app as perf_app
from clinhub.quality.cli import app as quality_app
from clinhub.store.cli import app as db_app
from clinhub.synth.cli import synth_command
from clinhub.views.cli import app as views_app

app = typer.Typer(
    name="clinhub",
    help="clinhub: a clinical data hub. HL7 v2 and FHIR R4 in; views, quality and analytics out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(views_app, name="views")
app.add_typer(hl7_app, name="hl7")
app.add_typer(backup_app, name="backup")
app.add_typer(jobs_app, name="jobs")
app.add_typer(perf_app, name="perf")
app.add_typer(fhir_app, name="fhir")
app.add_typer(quality_app, name="quality")
app.add_typer(mentor_app, name="mentor")
app.add_typer(analytics_app, name="analytics")
app.command("synth")(synth_command)
app.command("worker")(worker_command)
console = Console()
err_console = Console(stderr=True)


@app.command("version")
def version_command() -> None:
    """Print the clinhub version."""
    console.print(f"clinhub {__version__}")


@app.command("config")
def config_command(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Print the effective settings (from CLINHUB_* variables and .env), secrets masked."""
    shown = get_settings().masked()
    if as_json:
        console.print_json(json.dumps(shown))
        return
    table = Table("setting", "value", "environment variable", title="clinhub settings")
    for name, value in shown.items():
        table.add_row(name, value, f"CLINHUB_{name.upper()}")
    console.print(table)


@app.command("serve")
def serve_command(
    host: str = typer.Option(None, help="Bind address (default: CLINHUB_HOST)."),
    port: int = typer.Option(None, help="HTTP port (default: CLINHUB_PORT)."),
    migrate: bool = typer.Option(False, "--migrate", help="Upgrade the store's schema first."),
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs, health at /health, metrics at /metrics)."""
    _serve(host, port, migrate)


def _serve(host: str | None, port: int | None, migrate: bool, settings: Settings | None = None) -> None:
    import uvicorn

    from clinhub.app import create_app

    settings = settings or get_settings()
    settings.token_secret()  # refuse to start without a signing key rather than fail on the first login
    if migrate:
        hub = Hub(settings)
        hub.migrate()
        hub.close()
    uvicorn.run(
        create_app(settings, run_worker=settings.inprocess_worker),
        host=host or settings.host,
        port=port or settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,  # ours logs route templates; uvicorn's logs raw paths, which may name patients
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.command("demo")
def demo_command(
    patients: int = typer.Option(1000, min=1, help="Synthetic patients to generate."),
    seed: int = typer.Option(42, help="Random seed (same seed, same data)."),
    serve: bool = typer.Option(False, "--serve", help="Start the HTTP API afterwards."),
) -> None:
    """Synthesise a hospital, load it into the embedded store and print what is stored."""
    from clinhub.demo import run_demo

    settings = get_settings()
    with Hub(settings) as hub, _progress() as progress:
        synth_task = progress.add_task("synthesising patients", total=patients)
        load_task = progress.add_task("loading FHIR resources", total=None)
        result = run_demo(
            hub,
            patients=patients,
            seed=seed,
            synth_progress=lambda n: progress.advance(synth_task, n),
            load_progress=lambda n: progress.advance(load_task, n),
        )
    table = Table("stored", "count", title=f"clinhub demo: {patients} synthetic patients (seed {seed})")
    for resource_type, count in result.resources.items():
        table.add_row(f"FHIR {resource_type}", f"{count:,}")
    for name, count in result.directory.items():
        table.add_row(f"directory {name}", f"{count:,}")
    table.add_row("HL7 v2 messages (written, ready to send)", f"{result.hl7_messages:,}")
    table.add_row("injected defects (see defects.ndjson)", f"{sum(result.synth.defects.values()):,}")
    console.print(table)
    console.print(
        f"store: {settings.masked()['database_url']} (schema {result.revision})\n"
        f"files: {result.synth.out_dir}   took {result.elapsed_seconds:.1f} s"
    )
    if serve:
        _serve(None, None, False, settings.model_copy(update={"demo": True}))


def main() -> None:
    """Run the CLI; a ClinhubError becomes a one-line cause and an exit code, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except ClinhubError as exc:
        if os.environ.get("CLINHUB_DEBUG"):
            raise
        err_console.print(f"clinhub: error: {exc.message}", markup=False, highlight=False)
        sys.exit(2 if isinstance(exc, InvalidInput | NotFound) else 1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        err_console.print("clinhub: aborted")
        sys.exit(130)
    except Exception as exc:
        # Typer ships its own copy of click; its usage errors are ClickExceptions in all but class
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if os.environ.get("CLINHUB_DEBUG"):
            raise
        err_console.print(
            f"clinhub: internal error ({type(exc).__name__}); rerun with CLINHUB_DEBUG=1 for details",
            markup=False,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
