"""The demo: a synthetic hospital generated, migrated into the embedded store and summarised."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clinhub.fhir import load_ndjson
from clinhub.hub import Hub
from clinhub.store import count_directory, count_resources, load_directory
from clinhub.synth import SynthResult, generate


@dataclass(frozen=True)
class DemoResult:
    synth: SynthResult
    revision: str | None
    resources: dict[str, int]
    directory: dict[str, int]
    hl7_messages: int
    elapsed_seconds: float


def run_demo(
    hub: Hub,
    *,
    patients: int,
    seed: int,
    synth_progress: Callable[[int], None] | None = None,
    load_progress: Callable[[int], None] | None = None,
) -> DemoResult:
    """Migrate the store, synthesise `patients`, load FHIR and the directory, count what is stored."""
    start = time.perf_counter()
    revision = hub.migrate()
    out = Path(hub.settings.data_dir) / "synth"
    synth = generate(out, patients=patients, seed=seed, progress=synth_progress)
    load_ndjson(hub.store, out / "fhir", progress=load_progress)
    load_directory(hub.store, out / "directory")
    return DemoResult(
        synth=synth,
        revision=revision,
        resources=count_resources(hub.store),
        directory=count_directory(hub.store),
        hl7_messages=synth.counts.get("hl7/messages.hl7", 0),
        elapsed_seconds=time.perf_counter() - start,
    )
