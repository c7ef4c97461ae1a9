"""Writing FHIR resources to the store in bulk: versioned, with history, no-op when unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, and_, func, select, tuple_, update

from clinhub.errors import InvalidResource
from clinhub.store.schema import fhir_resource, fhir_resource_history

BATCH_SIZE = 1000


@dataclass
class LoadStats:
    """What a bulk write did, per resource type."""

    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)

    def add(self, bucket: dict[str, int], resource_type: str) -> None:
        bucket[resource_type] = bucket.get(resource_type, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.created.values()) + sum(self.updated.values()) + sum(self.unchanged.values())


def _key(resource: dict) -> tuple[str, str]:
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidResource("resource has no resourceType")
    if not isinstance(resource_id, str) or not resource_id or len(resource_id) > 64:
        raise InvalidResource(f"{resource_type} has no id, or an id longer than 64 characters")
    return resource_type, resource_id


def _content(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "meta"}


def _batches(resources: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for resource in resources:
        batch.append(resource)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def put_resources(engine: Engine, resources: Iterable[dict], *, batch_size: int = BATCH_SIZE) -> LoadStats:
    """Create or update each resource (FHIR `update` semantics) in batches, one transaction per batch.

    A resource whose content (ignoring `meta`) equals the current version is left alone, so loading the
    same file twice makes no new versions. Within one batch the last copy of a resource wins.
    """
    stats = LoadStats()
    for batch in _batches(resources, batch_size):
        _put_batch(engine, batch, stats)
    return stats


def _put_batch(engine: Engine, batch: list[dict], stats: LoadStats) -> None:
    latest: dict[tuple[str, str], dict] = {}
    for resource in batch:
        latest[_key(resource)] = resource
    now = datetime.now(UTC)
    stamp = now.isoformat().replace("+00:00", "Z")
    with engine.begin() as conn:
        rows = conn.execute(
            select(
                fhir_resource.c.resource_type,
                fhir_resource.c.id,
                fhir_resource.c.version_id,
                fhir_resource.c.resource,
                fhir_resource.c.deleted,
            ).where(tuple_(fhir_resource.c.resource_type, fhir_resource.c.id).in_(list(latest)))
        ).all()
        existing = {(r.resource_type, r.id): r for r in rows}
        inserts, history = [], []
        for key, resource in latest.items():
            current = existing.get(key)
            if (
                current is not None
                and not current.deleted
                and _content(current.resource) == _content(resource)
            ):
                stats.add(stats.unchanged, key[0])
                continue
            version = 1 if current is None else current.version_id + 1
            stored = {
                **resource,
                "meta": {**resource.get("meta", {}), "versionId": str(version), "lastUpdated": stamp},
            }
            row = {
                "resource_type": key[0],
                "id": key[1],
                "version_id": version,
                "last_updated": now,
                "deleted": False,
                "resource": stored,
            }
            history.append(row)
            if current is None:
                inserts.append(row)
                stats.add(stats.created, key[0])
            else:
                conn.execute(
                    update(fhir_resource)
                    .where(and_(fhir_resource.c.resource_type == key[0], fhir_resource.c.id == key[1]))
                    .values(version_id=version, last_updated=now, deleted=False, resource=stored)
                )
                stats.add(stats.updated, key[0])
        if inserts:
            conn.execute(fhir_resource.insert(), inserts)
        if history:
            conn.execute(fhir_resource_history.insert(), history)


def count_resources(engine: Engine) -> dict[str, int]:
    """Current (not deleted) resources per type."""
    query = (
        select(fhir_resource.c.resource_type, func.count())
        .where(fhir_resource.c.deleted.is_(False))
        .group_by(fhir_resource.c.resource_type)
        .order_by(fhir_resource.c.resource_type)
    )
    with engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(query)}
