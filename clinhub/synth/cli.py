"""`clinhub synth`: write a deterministic synthetic hospital to a folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clinhub.synth._generate import generate

console = Console()


def synth_command(
    patients: int = typer.Option(1000, "--patients", help="Number of synthetic patients."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same bytes."),
    out: Path = typer.Option(Path("synth-out"), "--out", help="Output folder."),
    defect_rate: float = typer.Option(
        0.02, "--defect-rate", help="Share of eligible records given a realistic defect (0 to 1)."
    ),
) -> None:
    """Write a synthetic hospital: FHIR NDJSON, HL7 v2 messages, provider directory CSV, defect manifest."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("synthesising patients", total=patients)
        result = generate(
            out,
            patients=patients,
            seed=seed,
            defect_rate=defect_rate,
            progress=lambda n: progress.advance(task, n),
        )
    table = Table("file", "records", title=f"{patients:,} patients, seed {seed} -> {result.out_dir}")
    for name, count in result.counts.items():
        table.add_row(name, f"{count:,}")
    console.print(table)
    injected = {kind: n for kind, n in result.defects.items() if n}
    if injected:
        defects = Table("defect kind", "count", title="injected defects")
        for kind, n in sorted(injected.items()):
            defects.add_row(kind, f"{n:,}")
        console.print(defects)
    console.print(f"took {result.elapsed_seconds:.1f} s")
