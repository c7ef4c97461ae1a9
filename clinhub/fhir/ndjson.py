"""Bulk NDJSON in: read FHIR resources line by line and write them to the store in batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import Engine

from clinhub.errors import InvalidResource
from clinhub.store import LoadStats, put_resources
from clinhub.store.resources import key_of

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


def iter_ndjson(
    path: Path,
    progress: Callable[[int], None] | None = None,
    stats: LoadStats | None = None,
) -> Iterator[dict]:
    """Yield each resource of an NDJSON file.

    Without `stats`, a bad line raises InvalidResource naming file and line. With `stats`, a bad line
    (not JSON, not an object, no resourceType or id) is counted and described there and skipped, so
    one bad line does not cost the good ones.
    """
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if progress:
                progress(1)
            try:
                try:
                    resource = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise InvalidResource("not valid JSON") from None
                if not isinstance(resource, dict):
                    raise InvalidResource("not a JSON object")
                key_of(resource)
            except InvalidResource as exc:
                if stats is None:
                    raise InvalidResource(f"{path.name} line {number}: {exc.message}") from None
                stats.reject(f"{path.name} line {number}: {exc.message}")
                continue
            yield resource


def ndjson_paths(source: Path) -> list[Path]:
    """The NDJSON files at `source` (a file, or a directory's *.ndjson, referenced types first)."""
    if source.is_dir():
        rank = {name: i for i, name in enumerate(LOAD_ORDER)}
        paths = sorted(source.glob("*.ndjson"), key=lambda p: (rank.get(p.stem, len(rank)), p.name))
    else:
        paths = [source]
    if not paths or not all(p.is_file() for p in paths):
        raise InvalidResource(f"no NDJSON files at {source}")
    return paths


def load_ndjson(engine: Engine, source: Path, progress: Callable[[int], None] | None = None) -> LoadStats:
    """Load one NDJSON file or every *.ndjson in a directory into the store (create or update).

    Bad lines are skipped and reported (file and line number) in the returned stats; good lines are kept.
    """
    total = LoadStats()
    for path in ndjson_paths(source):
        rejected = LoadStats()
        stats = put_resources(engine, iter_ndjson(path, progress, rejected))
        stats.merge(rejected)
        total.merge(stats)
    return total
