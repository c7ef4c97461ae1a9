"""Materialised views: a view's rows as a table of the hub's analytic DuckDB file, refreshed by lastUpdated.

Other domains (quality, analytics) read these tables instead of running the view again. A refresh over
the store recomputes only the resources written since the last one: a small table `_clinhub_materialized`
keeps, per table, the view's hash, its source and the high-water mark of `fhir_resource.last_updated`
it has seen. A changed view, a file source or `rebuild()` builds the table afresh in one transaction (a new
table, then the swap), so readers see the old rows or the new ones, never a half-built table.
"""

# ruff: noqa: S608
# (SQL is built from checked pieces: validated table names, quoted literals and compiled views)

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import Conflict, InvalidInput, NotFound, ViewError
from clinhub.views.compiler import compile_definition
from clinhub.views.fhirpath import parse_fhirpath
from clinhub.views.model import Column, Select, ViewDefinition, parse_view
from clinhub.views.runner import (
    PLACEHOLDER,
    engine_message,
    query_over,
    use_utc,
    utc_naive,
    view_query,
)

ANALYTICS_FILE = "analytics.duckdb"
#: the bookkeeping table; a name no view table can take, since table names start with a letter
META = "_clinhub_materialized"
#: the column added to a view without a getResourceKey() column of its own, to find a resource's rows
KEY_COLUMN = "_resource_key"
#: how far before the watermark a refresh looks again. A writer stamps last_updated before it commits,
#: so a transaction that commits after a later-stamped one would otherwise be missed; recomputing a
#: resource twice is harmless
OVERLAP = timedelta(seconds=60)
#: part of every view's hash, so that a clinhub that compiles views differently rebuilds the tables
FORMAT = "clinhub-materialize-1"
_TABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")
_RESOURCE_KEY = parse_fhirpath("getResourceKey()")


@dataclass(frozen=True)
class Materialized:
    """One materialised view as the bookkeeping table records it."""

    table: str
    view: str | None
    view_hash: str
    resource: str
    source: str
    key_column: str
    watermark: datetime | None  # newest last_updated seen (UTC); None for a file source
    rows: int
    refreshed_at: datetime
    mode: str  # how it was last refreshed: full or incremental

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        for name in ("watermark", "refreshed_at"):
            if found[name] is not None:
                found[name] = found[name].isoformat() + "Z"
        return found


@dataclass(frozen=True)
class Refresh:
    """What one refresh did. `resources` counts the resources recomputed by an incremental refresh (of
    which `deleted` were deleted in the store); a full one recomputes everything and leaves both 0."""

    table: str
    mode: str  # full or incremental
    reason: str
    rows: int
    resources: int = 0
    deleted: int = 0


def analytics_path(settings: Settings) -> Path:
    return settings.data_dir / ANALYTICS_FILE


def open_analytics(settings: Settings) -> AnalyticEngine:
    """The hub's analytic database file, with the store attached for views that read it.

    DuckDB lets one process at a time open a database file for writing: close the engine when done.
    """
    path = analytics_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return AnalyticEngine(settings.store_url, database=str(path))
    except duckdb.IOException:
        raise Conflict(f"the analytic database {path} is in use by another process; try again") from None


def check_table(name: str) -> str:
    """A table name: letters, digits and '_', starting with a letter, at most 63 characters."""
    if not isinstance(name, str) or not _TABLE.fullmatch(name):
        raise InvalidInput(
            f"not a table name: {name!r} (letters, digits and '_', starting with a letter, at most 63)"
        )
    return name


def _identifier(name: str) -> str:
    return '"' + check_table(name) + '"'


def view_hash(view: dict[str, Any]) -> str:
    """The hash of a view's content: its id, meta and narrative do not change its rows."""
    content = {k: v for k, v in view.items() if k not in ("id", "meta", "text")}
    data = orjson.dumps(content, option=orjson.OPT_SORT_KEYS) + FORMAT.encode()
    return hashlib.sha256(data).hexdigest()


def keyed(model: ViewDefinition) -> tuple[ViewDefinition, str]:
    """The view with a column holding each row's resource key: its own `getResourceKey()` column outside
    any iteration, or else a hidden first column `_resource_key`."""
    for node in model.select:
        if node.for_each is None and not node.repeat:
            for column in node.columns:
                if column.expression == _RESOURCE_KEY and not column.collection:
                    return model, column.name
    location = "/select/(resource key)"
    hidden = Column(KEY_COLUMN, "getResourceKey()", _RESOURCE_KEY, "string", False, f"{location}/column/0")
    key_select = Select((hidden,), (), (), None, False, (), location)
    return replace(model, select=(key_select, *model.select)), KEY_COLUMN


# ------------------------------------------------------------------ bookkeeping
def _ensure_meta(cursor: duckdb.DuckDBPyConnection) -> None:
    cursor.execute(
        f"""CREATE TABLE IF NOT EXISTS {META} (
              table_name VARCHAR PRIMARY KEY,
              view_name VARCHAR,
              view_hash VARCHAR NOT NULL,
              resource_type VARCHAR NOT NULL,
              source VARCHAR NOT NULL,
              key_column VARCHAR NOT NULL,
              watermark TIMESTAMP,
              row_count BIGINT NOT NULL,
              refreshed_at TIMESTAMP NOT NULL,
              mode VARCHAR NOT NULL)"""
    )


_COLUMNS = (
    "table_name, view_name, view_hash, resource_type, source, key_column, watermark, row_count,"
    " refreshed_at, mode"
)


def _record(cursor: duckdb.DuckDBPyConnection, entry: Materialized) -> None:
    cursor.execute(f"DELETE FROM {META} WHERE table_name = ?", [entry.table])
    cursor.execute(
        f"INSERT INTO {META} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            entry.table,
            entry.view,
            entry.view_hash,
            entry.resource,
            entry.source,
            entry.key_column,
            entry.watermark,
            entry.rows,
            entry.refreshed_at,
            entry.mode,
        ],
    )


def _entries(cursor: duckdb.DuckDBPyConnection, table: str | None = None) -> list[Materialized]:
    exists = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'"
        " AND database_name = current_database()",
        [META],
    ).fetchone()[0]
    if not exists:
        return []
    where, params = ("WHERE table_name = ?", [table]) if table is not None else ("", [])
    rows = cursor.execute(f"SELECT {_COLUMNS} FROM {META} {where} ORDER BY table_name", params).fetchall()
    return [Materialized(*row) for row in rows]


def _table_exists(cursor: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main'"
        " AND database_name = current_database()",
        [table],
    ).fetchone()[0]
    return bool(found)


def materialized(engine: AnalyticEngine) -> list[Materialized]:
    """Every materialised view of the analytic database, by table name."""
    with engine.cursor() as cursor:
        return _entries(cursor)


def drop(engine: AnalyticEngine, table: str) -> None:
    """Drop a materialised view's table and its bookkeeping; NotFound if it is not one."""
    check_table(table)
    with engine.cursor() as cursor:
        if not _entries(cursor, table):
            raise NotFound(f"no materialised view {table!r}")
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.execute(f"DROP TABLE IF EXISTS {_identifier(table)}")
            cursor.execute(f"DELETE FROM {META} WHERE table_name = ?", [table])
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise


# ------------------------------------------------------------------ refreshing
@dataclass(frozen=True)
class _Plan:
    table: str
    view: dict[str, Any]
    model: ViewDefinition
    key_column: str
    view_hash: str
    source: str  # "store" or the resolved path of a file or folder


def _plan(view: dict[str, Any], table: str, source: str | Path) -> _Plan:
    check_table(table)
    model, key_column = keyed(parse_view(view))
    where = "store" if str(source) == "store" else str(Path(source).resolve())
    return _Plan(table, view, model, key_column, view_hash(view), where)


def refresh(
    engine: AnalyticEngine, view: dict[str, Any], table: str, source: str | Path = "store"
) -> Refresh:
    """Bring the table up to date with the view over `source` ("store", or an NDJSON/Parquet file or
    folder). Over the store, with the view unchanged, only resources written since the last refresh are
    recomputed (their old rows deleted by resource key, their new rows inserted; deleted resources lose
    their rows); anything else rebuilds the table."""
    plan = _plan(view, table, source)
    with engine.cursor() as cursor:
        use_utc(cursor)
        _ensure_meta(cursor)
        previous = _entries(cursor, table)
        reason = _rebuild_reason(cursor, plan, previous[0] if previous else None)
        if reason is None:
            return _incremental(engine, cursor, plan, previous[0])
        return _full(engine, cursor, plan, reason)


def rebuild(
    engine: AnalyticEngine, view: dict[str, Any], table: str, source: str | Path = "store"
) -> Refresh:
    """Build the table afresh from the view over `source`, whatever it held."""
    plan = _plan(view, table, source)
    with engine.cursor() as cursor:
        use_utc(cursor)
        _ensure_meta(cursor)
        if not _entries(cursor, table) and _table_exists(cursor, table):
            raise Conflict(f"table {table!r} exists and is not a materialised view; choose another name")
        return _full(engine, cursor, plan, "a full rebuild was asked for")


def _rebuild_reason(
    cursor: duckdb.DuckDBPyConnection, plan: _Plan, previous: Materialized | None
) -> str | None:
    """Why the table must be built afresh, or None when an incremental refresh will do."""
    if previous is None:
        if _table_exists(cursor, plan.table):
            raise Conflict(f"table {plan.table!r} exists and is not a materialised view; choose another name")
        return "a new table"
    if not _table_exists(cursor, plan.table):
        return "the table was missing"
    if previous.view_hash != plan.view_hash:
        return "the view changed"
    if previous.source != plan.source:
        return f"the source changed (was {previous.source})"
    if plan.source != "store":
        return "a file source has no lastUpdated to follow"
    if previous.watermark is None:
        return "no watermark yet"
    return None


def _transaction(cursor: duckdb.DuckDBPyConnection, table: str, work) -> Any:
    cursor.execute("BEGIN TRANSACTION")
    try:
        result = work()
        cursor.execute("COMMIT")
        return result
    except duckdb.TransactionException:
        cursor.execute("ROLLBACK")
        raise Conflict(f"another refresh of {table!r} ran at the same time; try again") from None
    except duckdb.Error as exc:
        cursor.execute("ROLLBACK")
        raise ViewError(f"materialising {table!r} failed: {engine_message(exc)}") from None
    except BaseException:
        cursor.execute("ROLLBACK")
        raise


def _newest(engine: AnalyticEngine, cursor: duckdb.DuckDBPyConnection, resource_type: str) -> datetime | None:
    """The store's newest last_updated of a resource type, deleted resources included."""
    table = engine.store_table("fhir_resource")
    (newest,) = cursor.execute(
        f"SELECT max(CAST(last_updated AS TIMESTAMP)) FROM {table} WHERE resource_type = ?",
        [resource_type],
    ).fetchone()
    return newest


def _full(engine: AnalyticEngine, cursor: duckdb.DuckDBPyConnection, plan: _Plan, reason: str) -> Refresh:
    staging = f"_staging_{plan.table}"  # starts with '_': no view table can have this name

    def work() -> Refresh:
        # the watermark is read before the rows: a resource written in between is in the table and
        # newer than the watermark, so the next refresh recomputes it, which is harmless
        watermark = _newest(engine, cursor, plan.model.resource) if plan.source == "store" else None
        cursor.execute(f'DROP TABLE IF EXISTS "{staging}"')
        cursor.execute(f'CREATE TABLE "{staging}" AS {view_query(engine, plan.model, plan.source)}')
        cursor.execute(f"DROP TABLE IF EXISTS {_identifier(plan.table)}")
        cursor.execute(f'ALTER TABLE "{staging}" RENAME TO {_identifier(plan.table)}')
        rows = _count(cursor, plan.table)
        _record(cursor, _entry(plan, watermark, rows, "full"))
        return Refresh(plan.table, "full", reason, rows)

    return _transaction(cursor, plan.table, work)


def _incremental(
    engine: AnalyticEngine, cursor: duckdb.DuckDBPyConnection, plan: _Plan, previous: Materialized
) -> Refresh:
    assert previous.watermark is not None
    store = engine.store_table("fhir_resource")
    key = '"' + plan.key_column.replace('"', '""') + '"'

    def work() -> Refresh:
        # one read of what changed, used for both the deletion and the insertion
        cursor.execute(
            f"""CREATE OR REPLACE TEMP TABLE _changed AS
                SELECT resource_type || '/' || id AS resource_key, CAST(last_updated AS TIMESTAMP) AS stamp,
                       deleted, CAST(resource AS JSON) AS resource
                FROM {store} WHERE resource_type = ? AND last_updated > ?""",
            [plan.model.resource, previous.watermark - OVERLAP],
        )
        changed, deleted, newest = cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE deleted), max(stamp) FROM _changed"
        ).fetchone()
        table = _identifier(plan.table)
        cursor.execute(f"DELETE FROM {table} WHERE {key} IN (SELECT resource_key FROM _changed)")
        compiled = compile_definition(plan.model, "duckdb", PLACEHOLDER)
        current = "SELECT resource FROM _changed WHERE NOT deleted"
        cursor.execute(f"INSERT INTO {table} BY NAME SELECT * FROM ({query_over(current, compiled.sql)})")
        cursor.execute("DROP TABLE _changed")
        rows = _count(cursor, plan.table)
        watermark = max(previous.watermark, newest) if newest is not None else previous.watermark
        _record(cursor, _entry(plan, watermark, rows, "incremental"))
        reason = f"the view is unchanged; resources written since {previous.watermark.isoformat()}Z"
        return Refresh(plan.table, "incremental", reason, rows, changed, deleted)

    return _transaction(cursor, plan.table, work)


def _count(cursor: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(cursor.execute(f"SELECT count(*) FROM {_identifier(table)}").fetchone()[0])


def _entry(plan: _Plan, watermark: datetime | None, rows: int, mode: str) -> Materialized:
    return Materialized(
        table=plan.table,
        view=plan.view.get("name"),
        view_hash=plan.view_hash,
        resource=plan.model.resource,
        source=plan.source,
        key_column=plan.key_column,
        watermark=utc_naive(watermark) if watermark is not None else None,
        rows=rows,
        refreshed_at=datetime.now(UTC).replace(tzinfo=None),
        mode=mode,
    )
