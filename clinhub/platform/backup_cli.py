"""`clinhub backup`: create, list, verify, restore and prune backups of the store."""

from __future__ import annotations

import typer

app = typer.Typer(help="Backups of the store: create, list, verify, restore, prune.", no_args_is_help=True)
