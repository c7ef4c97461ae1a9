"""`clinhub db`: schema migrations of the store."""

from __future__ import annotations

import typer
from rich.console import Console

from clinhub.hub import Hub
from clinhub.store import current_revision, head_revision

app = typer.Typer(
    help="The store's schema: upgrade to the newest migration, show the current one.", no_args_is_help=True
)
console = Console()


@app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Target revision (default: newest)."),
) -> None:
    """Migrate the store to the newest schema (or to REVISION)."""
    with Hub() as hub:
        before = current_revision(hub.store)
        after = hub.migrate(revision)
    console.print(f"store at revision [bold]{after}[/bold] (was {before or 'empty'})")


@app.command("current")
def current_command() -> None:
    """Show the store's revision and the newest one."""
    with Hub() as hub:
        current, head = current_revision(hub.store), head_revision(hub.store)
    state = "up to date" if current == head else "migrations pending: run `clinhub db upgrade`"
    console.print(f"current: {current or 'empty'}  head: {head}  ({state})")
