"""`clinhub jobs` and `clinhub worker`: long work off the request path."""

from __future__ import annotations

import typer

app = typer.Typer(help="Jobs: list and inspect long-running work.", no_args_is_help=True)
