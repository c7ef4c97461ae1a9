"""`clinhub perf`: the performance advisor."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Performance advisor: slow queries, index suggestions, pool sizing, maintenance.",
    no_args_is_help=True,
)
