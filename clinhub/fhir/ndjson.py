"""Bulk NDJSON in: read FHIR resources line by line and write them to the store in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine

from clinhub.errors import InvalidResource
from clinhub.store import LoadStats, put_resources

# Referenced types first, so a reader of a half-loaded store sees fewer dangling references.
LOAD_ORDER = (
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
)


def iter_ndjson(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Yield each resource of an NDJSON file; a bad line raises InvalidResource naming file and line."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidResource(f"{path.name} line {number}: not valid JSON") from None
            if not isinstance(resource, dict):
                raise InvalidResource(f"{path.name} line {number}: not a JSON object")
            if progress:
                progress(1)
            yield resource


def _ordered(paths: list[Path]) -> list[Path]:
    rank = {name: i for i, name in enumerate(LOAD_ORDER)}
    return sorted(paths, key=lambda p: (rank.get(p.stem, len(rank)), p.name))


def load_ndjson(engine: Engine, source: Path, progress: Callable[[int], None] | None = None) -> LoadStats:
    """Load one NDJSON file or every *.ndjson in a directory into the store (create or update)."""
    paths = _ordered(sorted(source.glob("*.ndjson"))) if source.is_dir() else [source]
    if not paths or not all(p.is_file() for p in paths):
        raise InvalidResource(f"no NDJSON files at {source}")
    total = LoadStats()
    for path in paths:
        stats = put_resources(engine, iter_ndjson(path, progress))
        for bucket, part in (
            (total.created, stats.created),
            (total.updated, stats.updated),
            (total.unchanged, stats.unchanged),
        ):
            for key, value in part.items():
                bucket[key] = bucket.get(key, 0) + value
    return total
