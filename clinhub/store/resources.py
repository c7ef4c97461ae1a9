"""Writing FHIR resources to the store: versioned, with history and search index, no-op when unchanged.

This is the hot path of every bulk load (NDJSON import, the demo, pulls), so it talks to the database
driver directly: JSON is serialised once with orjson, rows go in as plain tuples through `executemany`
(SQLite, MariaDB) or `COPY` (PostgreSQL), and one batch is one transaction. SQLAlchemy's per-row type
processing cost more than the inserts themselves (measured: 4,100 resources/s through Core against the
figures in benchmarks/results.md through this path).

The search index (clinhub/fhir/index.py says which values each resource gives) is written in the same
transaction as the resource: a reader never sees a resource without its index rows or the other way round.
A write goes through three steps, so the costly first one can run in another process (`clinhub fhir
import` parses there): `prepare` turns a resource into a `Prepared` tuple (its JSON without `meta`, and
its index rows), and `put_prepared` writes batches of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection, Dialect, Engine, Text, cast, func, select
from sqlalchemy.exc import IntegrityError

from clinhub.errors import Conflict, InvalidResource
from clinhub.store.schema import SEARCH_TABLES, fhir_resource

BATCH_SIZE = 5000
# Ids per `IN (...)` lookup: well under SQLite's 32,766 bound parameters and the other backends' limits.
_LOOKUP_CHUNK = 2000
_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted", "resource")
_SEARCH_COLUMNS = {table.name: tuple(c.name for c in table.columns) for table in SEARCH_TABLES}
_SEARCH_NAMES = tuple(table.name for table in SEARCH_TABLES)

#: (resource_type, id, JSON without `meta` and without its closing brace, client `meta` or None,
#: index rows as (slot, row) pairs). A tuple, not a class: it crosses processes by the million.
Prepared = tuple[str, str, bytes, dict | None, list]


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


# ------------------------------------------------------------------ timestamps as each driver takes them
def _sqlite_stamp(moment: datetime) -> str:
    # SQLAlchemy's storage format for SQLite DATETIME, so Core queries compare with the same text
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(" ", "microseconds")


def _as_is(moment: datetime) -> datetime:
    return moment


def stamp_for(backend: str) -> Callable[[datetime], object]:
    """How `backend` ('sqlite', 'postgresql', 'mysql') takes a timestamp through its raw driver.

    Module-level functions, so a parser process can be handed one. PostgreSQL and MariaDB take aware
    UTC datetimes (PyMySQL writes their UTC fields; psycopg the instant)."""
    return _sqlite_stamp if backend == "sqlite" else _as_is


def _backend(dialect: Dialect) -> str:
    return "mysql" if dialect.name in ("mysql", "mariadb") else dialect.name


# ------------------------------------------------------------------ step 1: prepare
def _rows_of() -> Callable[..., list]:
    # fhir sits above store; its parameter table is pure data, imported when the first write needs it
    from clinhub.fhir.index import resource_rows

    return resource_rows


_resource_rows: Callable[..., list] | None = None


def prepare(resource: dict, stamp: Callable[[datetime], object] = _as_is) -> Prepared:
    """A resource made ready to write: its key, JSON without `meta`, and index rows (InvalidResource
    when it has no resourceType or id)."""
    global _resource_rows
    if _resource_rows is None:
        _resource_rows = _rows_of()
    resource_type, resource_id = key_of(resource)
    meta = resource.get("meta")
    if meta is None:
        content = orjson.dumps(resource)
    else:
        content = orjson.dumps({k: v for k, v in resource.items() if k != "meta"})
        meta = meta if isinstance(meta, dict) else None
    rows = _resource_rows(resource_type, resource_id, resource, stamp)
    return resource_type, resource_id, content[:-1], meta, rows


# ------------------------------------------------------------------ step 2: write
class _Driver:
    """How one backend takes rows: placeholders, the JSON cast, and the fastest way to insert many."""

    def __init__(self, dialect: Dialect) -> None:
        self.backend = _backend(dialect)
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.json_mark = f"CAST({self.mark} AS JSONB)" if self.backend == "postgresql" else self.mark
        stamp_type = fhir_resource.c.last_updated.type.dialect_impl(dialect)
        flag_type = fhir_resource.c.deleted.type.dialect_impl(dialect)
        self._stamp = stamp_type.bind_processor(dialect) or (lambda value: value)
        self._flag = flag_type.bind_processor(dialect) or (lambda value: value)
        self.index_stamp = stamp_for(self.backend)

    def stamp(self, moment: datetime) -> object:
        return self._stamp(moment)

    def flag(self, value: bool) -> object:
        return self._flag(value)

    def existing(self, conn: Connection, resource_type: str, ids: list[str]) -> dict[str, tuple]:
        """id -> (version_id, deleted, resource JSON as text or dict) of the stored current versions."""
        found: dict[str, tuple] = {}
        if self.backend == "postgresql":
            # a join on the unnested ids plans as one index probe per id; `id IN (...)` was planned,
            # on a table growing faster than its statistics, as a scan of every row of the type
            rows = conn.exec_driver_sql(
                "SELECT r.id, r.version_id, r.deleted, r.resource FROM unnest(CAST(%s AS text[])) AS k(id) "
                "JOIN fhir_resource r ON r.resource_type = %s AND r.id = k.id",
                (ids, resource_type),
            )
            return {rid: (version, bool(deleted), resource) for rid, version, deleted, resource in rows}
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

    def insert(self, conn: Connection, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        # `table` and `columns` are our own constants, never input; values travel as parameters
        names = ", ".join(columns)
        if self.backend == "postgresql":
            raw = conn.connection.driver_connection
            with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        marks = [self.mark] * len(columns)
        if table.startswith("fhir_resource"):
            marks[-1] = self.json_mark
        conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({', '.join(marks)})", rows)  # noqa: S608

    def update(self, conn: Connection, rows: list[tuple]) -> None:
        """rows: (version_id, last_updated, deleted, resource, resource_type, id)."""
        if rows:
            m = self.mark
            conn.exec_driver_sql(
                f"UPDATE fhir_resource SET version_id = {m}, last_updated = {m}, deleted = {m}, "  # noqa: S608
                f"resource = {self.json_mark} WHERE resource_type = {m} AND id = {m}",
                rows,
            )

    def clear_index(self, conn: Connection, keys: list[tuple[str, str]]) -> None:
        """Remove every index row of the resources `keys` (resource_type, id)."""
        if not keys:
            return
        m = self.mark
        for table in _SEARCH_NAMES:
            conn.exec_driver_sql(
                f"DELETE FROM {table} WHERE resource_type = {m} AND resource_id = {m}",  # noqa: S608
                keys,
            )

    def insert_index(self, conn: Connection, rows: Iterable[tuple[int, tuple]]) -> None:
        tables: list[list[tuple]] = [[] for _ in _SEARCH_NAMES]
        for slot, row in rows:
            tables[slot].append(row)
        for name, table_rows in zip(_SEARCH_NAMES, tables, strict=True):
            self.insert(conn, name, _SEARCH_COLUMNS[name], table_rows)


def driver_for(engine_or_conn: Engine | Connection) -> _Driver:
    return _Driver(engine_or_conn.dialect)


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
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
    stamp = stamp_for(_backend(engine.dialect))
    stats = LoadStats()
    with engine.connect() as conn:
        for batch in _batches(resources, batch_size):
            prepared = [prepare(resource, stamp) for resource in batch]
            with conn.begin():
                put_batch(conn, prepared, stats)
    return stats


def put_prepared(conn: Connection, batches: Iterable[list[Prepared]], stats: LoadStats) -> None:
    """Write batches of prepared resources (index rows stamped for this backend), a transaction each."""
    for batch in batches:
        with conn.begin():
            put_batch(conn, batch, stats)


def _meta_tail(meta: dict | None, version: int, stamp: str) -> bytes:
    meta = {**meta, "versionId": str(version), "lastUpdated": stamp} if meta else None
    if meta is None:
        return b',"meta":{"versionId":"%d","lastUpdated":"%s"}}' % (version, stamp.encode())
    return b',"meta":' + orjson.dumps(meta) + b"}"


def put_batch(conn: Connection, batch: list[Prepared], stats: LoadStats) -> None:
    """Write one batch inside the caller's transaction: new versions, history and index rows."""
    driver = _Driver(conn.dialect)
    by_type: dict[str, dict[str, Prepared]] = {}
    for item in batch:
        by_type.setdefault(item[0], {})[item[1]] = item
    now = datetime.now(UTC)
    meta_stamp = now.isoformat().replace("+00:00", "Z")
    stamp, live = driver.stamp(now), driver.flag(False)
    first_tail = b',"meta":{"versionId":"1","lastUpdated":"%s"}}' % meta_stamp.encode()
    inserts: list[tuple] = []
    history: list[tuple] = []
    updates: list[tuple] = []
    replaced: list[tuple[str, str]] = []
    index: list[tuple[int, tuple]] = []
    for resource_type, latest in by_type.items():
        existing = driver.existing(conn, resource_type, list(latest))
        created = updated = 0
        # in id order, every b-tree (the key, history's key, each index's key and resource index) takes
        # its rows at a moving insertion point instead of at random pages: a fifth faster on SQLite
        for resource_id in sorted(latest):
            _, _, content, meta, rows = latest[resource_id]
            current = existing.get(resource_id)
            if current is None:
                tail = first_tail if meta is None else _meta_tail(meta, 1, meta_stamp)
                row = (resource_type, resource_id, 1, stamp, live, (content + tail).decode())
                inserts.append(row)
                history.append(row)
                created += 1
            else:
                old = current[2] if isinstance(current[2], dict) else orjson.loads(current[2])
                if not current[1] and _content(old) == orjson.loads(content + b"}"):
                    stats.add(stats.unchanged, resource_type)
                    continue
                version = current[0] + 1
                body = (content + _meta_tail(meta, version, meta_stamp)).decode()
                history.append((resource_type, resource_id, version, stamp, live, body))
                updates.append((version, stamp, live, body, resource_type, resource_id))
                replaced.append((resource_type, resource_id))
                updated += 1
            index.extend(rows)
        if created:
            stats.add(stats.created, resource_type, created)
        if updated:
            stats.add(stats.updated, resource_type, updated)
    driver.insert(conn, "fhir_resource", _COLUMNS, inserts)
    driver.update(conn, updates)
    driver.insert(conn, "fhir_resource_history", _COLUMNS, history)
    driver.clear_index(conn, replaced)
    driver.insert_index(conn, index)


# ------------------------------------------------------------------ one resource at a time (REST)
@dataclass(frozen=True)
class Current:
    """The stored current version of a resource."""

    version: int
    deleted: bool
    resource: dict


def current(conn: Connection, resource_type: str, resource_id: str) -> Current | None:
    driver = _Driver(conn.dialect)
    found = driver.existing(conn, resource_type, [resource_id]).get(resource_id)
    if found is None:
        return None
    version, deleted, resource = found
    return Current(version, deleted, resource if isinstance(resource, dict) else orjson.loads(resource))


def current_many(conn: Connection, resource_type: str, ids: list[str]) -> dict[str, dict]:
    """id -> the current (not deleted) version of each of `ids` that is stored, in one lookup."""
    found = _Driver(conn.dialect).existing(conn, resource_type, ids)
    return {
        rid: resource if isinstance(resource, dict) else orjson.loads(resource)
        for rid, (_, deleted, resource) in found.items()
        if not deleted
    }


def write_resource(conn: Connection, resource: dict, *, if_match: int | None = None) -> tuple[dict, str]:
    """Store `resource` as the next version of its (type, id) in the caller's transaction.

    Returns the stored resource and what happened: 'created', 'updated' or 'unchanged' (same content as
    the current version: no new version). `if_match` is the version the caller expects to replace;
    another current version raises Conflict with `detail={"precondition": True}`. A concurrent writer
    that got there first also raises Conflict.
    """
    resource_type, resource_id = key_of(resource)
    driver = _Driver(conn.dialect)
    now = datetime.now(UTC)
    meta_stamp = now.isoformat().replace("+00:00", "Z")
    found = current(conn, resource_type, resource_id)
    if if_match is not None and (found is None or found.deleted or found.version != if_match):
        have = "no current version" if found is None or found.deleted else f"version {found.version}"
        raise Conflict(
            f"{resource_type}/{resource_id} is at {have}, not {if_match}", detail={"precondition": True}
        )
    if found is not None and not found.deleted and _content(found.resource) == _content(resource):
        return found.resource, "unchanged"
    version = 1 if found is None else found.version + 1
    meta = resource.get("meta")
    meta = {**meta} if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = meta_stamp
    stored = {**resource, "meta": meta}
    body = orjson.dumps(stored).decode()
    stamp, live = driver.stamp(now), driver.flag(False)
    m = driver.mark
    try:
        if found is None:
            driver.insert(
                conn, "fhir_resource", _COLUMNS, [(resource_type, resource_id, 1, stamp, live, body)]
            )
        else:
            changed = conn.exec_driver_sql(
                f"UPDATE fhir_resource SET version_id = {m}, last_updated = {m}, deleted = {m}, "  # noqa: S608
                f"resource = {driver.json_mark} WHERE resource_type = {m} AND id = {m} AND version_id = {m}",
                (version, stamp, live, body, resource_type, resource_id, found.version),
            ).rowcount
            if changed != 1:
                raise Conflict(f"{resource_type}/{resource_id} was changed by another request; retry")
        driver.insert(
            conn,
            "fhir_resource_history",
            _COLUMNS,
            [(resource_type, resource_id, version, stamp, live, body)],
        )
    except IntegrityError:
        raise Conflict(f"{resource_type}/{resource_id} was written by another request; retry") from None
    driver.clear_index(conn, [(resource_type, resource_id)])
    driver.insert_index(conn, prepare(resource, driver.index_stamp)[4])
    return stored, "created" if found is None else "updated"


def delete_resource(
    conn: Connection, resource_type: str, resource_id: str, *, if_match: int | None = None
) -> int | None:
    """Mark a resource deleted (a new version flagged deleted; history kept; index rows removed).

    Returns the deleted version, or None when there was nothing to delete (absent or already deleted).
    """
    driver = _Driver(conn.dialect)
    found = current(conn, resource_type, resource_id)
    if if_match is not None and (found is None or found.deleted or found.version != if_match):
        raise Conflict(
            f"{resource_type}/{resource_id} is not at version {if_match}", detail={"precondition": True}
        )
    if found is None or found.deleted:
        return None
    now = datetime.now(UTC)
    version = found.version + 1
    stamp, gone = driver.stamp(now), driver.flag(True)
    body = orjson.dumps(found.resource).decode()
    m = driver.mark
    changed = conn.exec_driver_sql(
        f"UPDATE fhir_resource SET version_id = {m}, last_updated = {m}, deleted = {m} "  # noqa: S608
        f"WHERE resource_type = {m} AND id = {m} AND version_id = {m}",
        (version, stamp, gone, resource_type, resource_id, found.version),
    ).rowcount
    if changed != 1:
        raise Conflict(f"{resource_type}/{resource_id} was changed by another request; retry")
    try:
        driver.insert(
            conn,
            "fhir_resource_history",
            _COLUMNS,
            [(resource_type, resource_id, version, stamp, gone, body)],
        )
    except IntegrityError:
        raise Conflict(f"{resource_type}/{resource_id} was changed by another request; retry") from None
    driver.clear_index(conn, [(resource_type, resource_id)])
    return version


# ------------------------------------------------------------------ rebuilding the index
def reindex(
    engine: Engine,
    resource_types: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> int:
    """Rebuild the search index of the current resources (all, or of `resource_types`); returns how many
    resources were indexed. Each batch is one transaction; rows of deleted or vanished resources go too."""
    driver = _Driver(engine.dialect)
    stamp = driver.index_stamp
    types = list(resource_types) if resource_types is not None else None
    indexed = 0
    with engine.connect() as conn:
        if types is None:
            types = [row[0] for row in conn.execute(select(fhir_resource.c.resource_type).distinct())]
        rows_of = _rows_of()
        for resource_type in types:
            after = ""
            while True:
                page = conn.execute(
                    select(fhir_resource.c.id, cast(fhir_resource.c.resource, Text))
                    .where(
                        fhir_resource.c.resource_type == resource_type,
                        fhir_resource.c.id > after,
                        fhir_resource.c.deleted.is_(False),
                    )
                    .order_by(fhir_resource.c.id)
                    .limit(batch_size)
                ).all()
                conn.rollback()
                if not page:
                    break
                keys = [(resource_type, resource_id) for resource_id, _ in page]
                rows: list[tuple[int, tuple]] = []
                for resource_id, text in page:
                    rows.extend(rows_of(resource_type, resource_id, orjson.loads(text), stamp))
                with conn.begin():
                    driver.clear_index(conn, keys)
                    driver.insert_index(conn, rows)
                indexed += len(page)
                after = page[-1][0]
                if progress:
                    progress(len(page))
        with conn.begin():
            _drop_orphans(conn)
    return indexed


def _drop_orphans(conn: Connection) -> None:
    """Index rows whose resource is deleted or gone (left by a writer that bypassed the index)."""
    for table in SEARCH_TABLES:
        live = (
            select(fhir_resource.c.id)
            .where(
                fhir_resource.c.resource_type == table.c.resource_type,
                fhir_resource.c.id == table.c.resource_id,
                fhir_resource.c.deleted.is_(False),
            )
            .exists()
        )
        conn.execute(table.delete().where(~live))


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
