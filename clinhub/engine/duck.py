"""The analytic engine: DuckDB reading the store's live tables in place, and NDJSON/Parquet files.

Why attach by default, and copy on purpose: DuckDB's sqlite, postgres and mysql scanners (PyPI wheels
pinned to duckdb 1.5.5, because extensions cannot be downloaded at run time here) read the store's
tables where they are, so every query sees data committed a moment ago, with no copy to keep in step and
no second footprint. `benchmarks/engine_store_scan.py` measured the alternative on 65,574 resources
(2,000 patients): a DuckDB copy costs about one to two attached scans to make (0.24 s from SQLite, 0.88 s
from PostgreSQL) and then answers 1.4x to 20x faster than the attachment, but it is stale the moment the
hub writes. So live reads go through the attachment, and work that makes many passes over one state of
the data (views, quality runs) materialises what it needs with `snapshot()`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

import duckdb
from sqlalchemy.engine import make_url

from clinhub.errors import ConfigError, InvalidInput, NotFound, StoreUnavailable
from clinhub.store.db import backend_name, normalise_url

STORE = "store"  # the catalog name the store is attached under

# backend -> (extension wheel module, extension name, DuckDB attach TYPE)
_SCANNERS = {
    "sqlite": ("duckdb_extension_sqlite_scanner", "sqlite_scanner", "sqlite"),
    "postgresql": ("duckdb_extension_postgres_scanner", "postgres_scanner", "postgres"),
    "mysql": ("duckdb_extension_mysql_scanner", "mysql_scanner", "mysql"),
}


def _extension_path(module: str, name: str) -> Path:
    package = Path(import_module(module).__file__).parent
    path = package / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.is_file():
        raise ConfigError(f"DuckDB extension {name} for duckdb {duckdb.__version__} is not installed")
    return path


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _attach_target(url: str) -> str:
    """The connection string DuckDB's scanner wants for a SQLAlchemy store URL."""
    parsed = make_url(normalise_url(url))
    backend = backend_name(url)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("the analytic engine needs a SQLite file, not an in-memory database")
        return str(Path(parsed.database).resolve())
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": str(parsed.port or ""),
        "user": parsed.username or "",
    }
    if parsed.password:
        parts["password"] = parsed.password
    parts["dbname" if backend == "postgresql" else "database"] = parsed.database or ""
    if backend == "postgresql":
        # libpq key=value; quoted so spaces and quotes in passwords survive
        return " ".join(f"{k}={_quote(v)}" for k, v in parts.items() if v)
    # the mysql scanner's parser takes bare values
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


class AnalyticEngine:
    """One DuckDB database (in memory by default) with the store attached read-only as `store`."""

    def __init__(
        self, store_url: str | None = None, *, database: str = ":memory:", threads: int | None = None
    ):
        self._conn = duckdb.connect(database)
        self._lock = threading.Lock()
        if threads:
            self._conn.execute(f"SET threads = {int(threads)}")
        self.store_url = store_url
        self._attached = False

    # ------------------------------------------------------------------ store
    def attach_store(self) -> None:
        """Attach the store's database read-only under the catalog `store` (idempotent)."""
        if self._attached or self.store_url is None:
            return
        backend = backend_name(self.store_url)
        if backend not in _SCANNERS:
            raise ConfigError(f"the analytic engine cannot read a {backend} store")
        module, extension, attach_type = _SCANNERS[backend]
        target = _attach_target(self.store_url)
        with self._lock:
            self._conn.execute(f"LOAD {_quote(str(_extension_path(module, extension)))}")
            try:
                self._conn.execute(f"ATTACH {_quote(target)} AS {STORE} (TYPE {attach_type}, READ_ONLY)")
            except duckdb.Error as exc:
                # the scanner's message can echo the connection string, password included
                raise StoreUnavailable(f"analytic engine cannot attach the {backend} store") from exc
        self._attached = True

    def store_table(self, table: str) -> str:
        """A qualified name for a store table, e.g. `store.fhir_resource` (PostgreSQL: `store.public.x`)."""
        self.attach_store()
        if not table.isidentifier():
            raise InvalidInput(f"not a table name: {table!r}")
        schema = "public." if self.store_url and backend_name(self.store_url) == "postgresql" else ""
        return f"{STORE}.{schema}{table}"

    def resources(self, resource_type: str | None = None) -> duckdb.DuckDBPyRelation:
        """Current FHIR resources from the store: columns resource_type, id, version_id, resource (JSON)."""
        table = self.store_table("fhir_resource")
        relation = self.sql(
            f"SELECT resource_type, id, version_id, last_updated, CAST(resource AS JSON) AS resource "  # noqa: S608
            f"FROM {table} WHERE NOT deleted"
        )
        if resource_type is None:
            return relation
        # a filter on the lazy relation, not a `?` parameter: DuckDB materialises parameterised results
        return relation.filter(f"resource_type = {_quote(resource_type)}")

    def refresh(self) -> None:
        """Detach and re-attach the store, so a long-lived engine sees newly created tables."""
        if self._attached:
            with self._lock:
                self._conn.execute(f"DETACH {STORE}")
            self._attached = False
        self.attach_store()

    # ------------------------------------------------------------------ files
    def ndjson(self, path: str | Path) -> duckdb.DuckDBPyRelation:
        """FHIR NDJSON (a file, a glob or a directory of *.ndjson) as one column `resource` of JSON."""
        # the path as a quoted literal, not a parameter: with a parameter DuckDB reads the whole file
        # into memory before the query starts, instead of streaming it
        pattern = _literal(file_pattern(path, "ndjson"))
        return self.sql(
            f"SELECT json AS resource FROM read_json_objects({pattern}, format = 'newline_delimited')"  # noqa: S608
        )

    def parquet(self, path: str | Path) -> duckdb.DuckDBPyRelation:
        return self.sql(f"SELECT * FROM read_parquet({_literal(file_pattern(path, 'parquet'))})")  # noqa: S608

    # ------------------------------------------------------------------ queries
    def sql(self, query: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        """Run `query` with `?` parameters; returns a lazy DuckDB relation."""
        try:
            with self._lock:
                return self._conn.sql(query, params=list(params) if params else None)
        except duckdb.Error as exc:
            raise InvalidInput(f"query failed: {exc}") from None

    def fetchall(self, query: str, params: Sequence[Any] | None = None) -> list[tuple]:
        relation = self.sql(query, params)
        return relation.fetchall() if relation is not None else []

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for a thread: DuckDB connections are not safe to share across threads."""
        cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def snapshot(self, name: str, relation_sql: str, params: Sequence[Any] | None = None) -> None:
        """Materialise a query as a DuckDB table `name` (for repeated analytic passes over one state)."""
        if not name.isidentifier():
            raise InvalidInput(f"not a table name: {name!r}")
        with self._lock:
            self._conn.execute(f"CREATE OR REPLACE TABLE {name} AS {relation_sql}", list(params or []))

    def version(self) -> str:
        return duckdb.__version__

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AnalyticEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _literal(text: str) -> str:
    """`text` as a SQL string literal (quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


def file_pattern(path: str | Path, suffix: str) -> str:
    """A file, a glob, or every `*.suffix` of a folder, as a pattern for DuckDB's readers."""
    text = str(path)
    if any(ch in text for ch in "*?["):
        return text
    candidate = Path(text)
    if candidate.is_dir():
        if not any(candidate.glob(f"*.{suffix}")):
            raise NotFound(f"no *.{suffix} files in {candidate}")
        return str(candidate / f"*.{suffix}")
    if not candidate.is_file():
        raise NotFound(f"no such file: {candidate}")
    return text
