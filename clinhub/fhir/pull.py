"""Pulling resources from an external FHIR server into the store, incrementally, in parallel by type.

Each type is one search (`_lastUpdated=ge` the newest change seen last time, or `--since`), paged through
`next` links; pages are written as they arrive with the store's bulk writer, so a resource pulled twice is
`unchanged`, never a duplicate. After a type completes, its high-water mark (the newest `meta.lastUpdated`
it returned) is kept in `fhir_pull_state` for the next incremental pull.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, insert, select

from clinhub.errors import ClinhubError, InvalidInput
from clinhub.fhir.client import FhirClient
from clinhub.fhir.validation import is_resource_type
from clinhub.store.resources import LoadStats, put_resources
from clinhub.store.schema import fhir_pull_state

PAGE_SIZE = 500


@dataclass
class TypeSummary:
    resource_type: str
    since: str | None
    fetched: int = 0
    pages: int = 0
    stats: LoadStats = field(default_factory=LoadStats)
    high_water: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "type": self.resource_type,
            "since": self.since,
            "fetched": self.fetched,
            "pages": self.pages,
            "created": sum(self.stats.created.values()),
            "updated": sum(self.stats.updated.values()),
            "unchanged": sum(self.stats.unchanged.values()),
            "high_water": self.high_water,
            "error": self.error,
        }


@dataclass
class PullSummary:
    source: str
    types: list[TypeSummary]

    @property
    def ok(self) -> bool:
        return all(t.error is None for t in self.types)

    def as_dict(self) -> dict:
        return {"source": self.source, "ok": self.ok, "types": [t.as_dict() for t in self.types]}


def parse_types(value: str) -> list[str]:
    types = [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in types if not is_resource_type(t)]
    if not types or unknown:
        raise InvalidInput(
            f"--types needs FHIR resource types; unknown: {', '.join(unknown) or 'none given'}"
        )
    return types


def high_water(engine: Engine, source: str, resource_type: str) -> str | None:
    s = fhir_pull_state
    with engine.connect() as conn:
        return conn.execute(
            select(s.c.high_water).where(s.c.source == source, s.c.resource_type == resource_type)
        ).scalar()


def _save_high_water(engine: Engine, source: str, resource_type: str, mark: str) -> None:
    s = fhir_pull_state
    with engine.begin() as conn:
        conn.execute(delete(s).where(s.c.source == source, s.c.resource_type == resource_type))
        conn.execute(
            insert(s).values(
                source=source, resource_type=resource_type, high_water=mark, pulled_at=datetime.now(UTC)
            )
        )


def _pull_type(
    engine: Engine, client: FhirClient, summary: TypeSummary, progress: Callable[[int], None] | None
) -> None:
    params = {"_count": str(PAGE_SIZE)}
    if summary.since:
        params["_lastUpdated"] = f"ge{summary.since}"
    try:
        for bundle in client.pages(summary.resource_type, params):
            summary.pages += 1
            resources = []
            for entry in bundle.get("entry", []):
                resource = entry.get("resource") if isinstance(entry, dict) else None
                mode = (entry.get("search") or {}).get("mode", "match")
                if not isinstance(resource, dict) or mode != "match":
                    continue
                if resource.get("resourceType") != summary.resource_type:
                    continue
                updated = (resource.get("meta") or {}).get("lastUpdated")
                if isinstance(updated, str) and (summary.high_water is None or updated > summary.high_water):
                    summary.high_water = updated
                meta = {
                    k: v
                    for k, v in (resource.get("meta") or {}).items()
                    if k not in ("versionId", "lastUpdated")
                }
                meta["source"] = client.base_url
                resources.append({**resource, "meta": meta})
            summary.fetched += len(resources)
            summary.stats.merge(put_resources(engine, resources))
            if progress:
                progress(len(resources))
    except ClinhubError as exc:
        summary.error = exc.message
        return
    if summary.high_water:
        _save_high_water(engine, client.base_url, summary.resource_type, summary.high_water)


def pull(
    engine: Engine,
    client: FhirClient,
    types: list[str],
    *,
    since: str | None = None,
    incremental: bool = True,
    parallel: int = 4,
    progress: Callable[[int], None] | None = None,
) -> PullSummary:
    """Pull `types` from the client's server into the store; `since` (an instant) overrides the stored
    high-water marks, `incremental=False` ignores them. At most `parallel` types are fetched at once."""
    summaries = []
    for resource_type in types:
        start = since or (high_water(engine, client.base_url, resource_type) if incremental else None)
        summaries.append(TypeSummary(resource_type, start))
    with ThreadPoolExecutor(
        max_workers=max(1, min(parallel, len(types))), thread_name_prefix="fhir-pull"
    ) as pool:
        for future in [pool.submit(_pull_type, engine, client, s, progress) for s in summaries]:
            future.result()
    return PullSummary(client.base_url, summaries)
