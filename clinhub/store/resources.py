"""Writing FHIR resources to the store in bulk: versioned, with history, no-op when unchanged.

This is the hot path of every bulk load (NDJSON import, the demo, backups' test data), so it talks to the
database driver directly: JSON is serialised once with orjson, rows go in as plain tuples through
`executemany` (SQLite, MariaDB) or `COPY` (PostgreSQL), and one batch is one transaction. SQLAlchemy's
per-row type processing cost more than the inserts themselves (measured: 4,100 resources/s through Core
against the figures in benchmarks/results.md through this path).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection, Engine, func, select

from clinhub.errors import InvalidResource
from clinhub.store.schema import fhir_resource

BATCH_SIZE = 5000
# Ids per `IN (...)` lookup: well under SQLite's 32,766 bound parameters and the other backends' limits.
_LOOKUP_CHUNK = 2000
_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted", "resource")


@dataclass
class LoadStats:
    """What a bulk write did, per resource type, and which input it rejected (and why)."""

    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)
    max_errors: int = 1000

    def add(self, bucket: dict[str, int], resource_type: str, count: int = 1) -> None:
        bucket[resource_type] = bucket.get(resource_type, 0) + count

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(reason)

    def merge(self, other: LoadStats) -> None:
        for mine, theirs in (
            (self.created, other.created),
            (self.updated, other.updated),
            (self.unchanged, other.unchanged),
        ):
            for key, value in theirs.items():
                self.add(mine, key, value)
        self.rejected += other.rejected
        self.errors.extend(other.errors[: max(0, self.max_errors - len(self.errors))])

    @property
    def total(self) -> int:
        """Resources accepted (created, updated or unchanged)."""
        return sum(self.created.values()) + sum(self.updated.values()) + sum(self.unchanged.values())

    def as_dict(self) -> dict:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "total": self.total,
            "rejected": self.rejected,
            "errors": self.errors,
        }


def key_of(resource: dict) -> tuple[str, str]:
    """(resourceType, id) of a resource, or InvalidResource saying what is missing."""
    resource_type = resource.get("resourceType")
    resource_id = resource.get("id")
    if not isinstance(resource_type, str) or not resource_type or len(resource_type) > 64:
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
    same file twice makes no new versions. Within one batch the last copy of a resource wins. A resource
    without resourceType or id raises InvalidResource before anything of its batch is written.
    """
    stats = LoadStats()
    for batch in _batches(resources, batch_size):
        _put_batch(engine, batch, stats)
    return stats


class _Driver:
    """How one backend takes rows: placeholders, the JSON cast, and the fastest way to insert many."""

    def __init__(self, conn: Connection) -> None:
        dialect = conn.dialect
        self.backend = "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.json_mark = f"CAST({self.mark} AS JSONB)" if self.backend == "postgresql" else self.mark
        stamp_type = fhir_resource.c.last_updated.type.dialect_impl(dialect)
        flag_type = fhir_resource.c.deleted.type.dialect_impl(dialect)
        self._stamp = stamp_type.bind_processor(dialect) or (lambda value: value)
        self._flag = flag_type.bind_processor(dialect) or (lambda value: value)

    def stamp(self, moment: datetime) -> object:
        return self._stamp(moment)

    def flag(self, value: bool) -> object:
        return self._flag(value)

    def existing(self, conn: Connection, resource_type: str, ids: list[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            marks = ", ".join([self.mark] * len(chunk))
            rows = conn.exec_driver_sql(
                "SELECT id, version_id, deleted, resource FROM fhir_resource "  # noqa: S608 (placeholders only)
                f"WHERE resource_type = {self.mark} AND id IN ({marks})",
                (resource_type, *chunk),
            )
            for resource_id, version, deleted, resource in rows:
                found[resource_id] = (version, bool(deleted), resource)
        return found

    def insert(self, conn: Connection, table: str, rows: list[tuple]) -> None:
        if not rows:
            return
        # `table` is one of our two constant table names, never input; values travel as parameters
        columns = ", ".join(_COLUMNS)
        if self.backend == "postgresql":
            raw = conn.connection.driver_connection
            with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = ", ".join([self.mark] * 5 + [self.json_mark])
        conn.exec_driver_sql(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)  # noqa: S608

    def update(self, conn: Connection, rows: list[tuple]) -> None:
        """rows: (version_id, last_updated, deleted, resource, resource_type, id)."""
        if rows:
            m = self.mark
            conn.exec_driver_sql(
                f"UPDATE fhir_resource SET version_id = {m}, last_updated = {m}, deleted = {m}, "  # noqa: S608
                f"resource = {self.json_mark} WHERE resource_type = {m} AND id = {m}",
                rows,
            )


def _put_batch(engine: Engine, batch: list[dict], stats: LoadStats) -> None:
    by_type: dict[str, dict[str, dict]] = {}
    for resource in batch:
        resource_type, resource_id = key_of(resource)
        by_type.setdefault(resource_type, {})[resource_id] = resource
    now = datetime.now(UTC)
    meta_stamp = now.isoformat().replace("+00:00", "Z")
    with engine.begin() as conn:
        driver = _Driver(conn)
        stamp, live = driver.stamp(now), driver.flag(False)
        inserts: list[tuple] = []
        history: list[tuple] = []
        updates: list[tuple] = []
        for resource_type, latest in by_type.items():
            existing = driver.existing(conn, resource_type, list(latest))
            for resource_id, resource in latest.items():
                current = existing.get(resource_id)
                if current is not None:
                    old = current[2] if isinstance(current[2], dict) else orjson.loads(current[2])
                    if not current[1] and _content(old) == _content(resource):
                        stats.add(stats.unchanged, resource_type)
                        continue
                version = 1 if current is None else current[0] + 1
                meta = resource.get("meta")
                meta = {**meta} if isinstance(meta, dict) else {}
                meta["versionId"] = str(version)
                meta["lastUpdated"] = meta_stamp
                body = orjson.dumps({**resource, "meta": meta}).decode()
                history.append((resource_type, resource_id, version, stamp, live, body))
                if current is None:
                    inserts.append(history[-1])
                    stats.add(stats.created, resource_type)
                else:
                    updates.append((version, stamp, live, body, resource_type, resource_id))
                    stats.add(stats.updated, resource_type)
        driver.insert(conn, "fhir_resource", inserts)
        driver.update(conn, updates)
        driver.insert(conn, "fhir_resource_history", history)


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
