"""Run views on the analytic engine over the store, NDJSON or Parquet, and write their rows with COPY."""

# ruff: noqa: S608
# (SQL is built from checked pieces: quoted literals, validated names and compiled views)

from __future__ import annotations

import itertools
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.engine.duck import file_pattern
from clinhub.errors import InvalidInput, ViewError
from clinhub.views.compiler import CompiledView, compile_definition
from clinhub.views.model import ViewDefinition


@dataclass(frozen=True)
class StoreSource:
    """The store's current resources, optionally only those of some patients or changed since a moment.

    A resource belongs to a patient when it is that Patient or its `subject` or `patient` refers to it;
    a resource type with neither (Practitioner, Organization...) then gives no rows.
    """

    patients: tuple[str, ...] = ()
    since: datetime | None = None


Source = str | Path | StoreSource | duckdb.DuckDBPyRelation
PLACEHOLDER = "source"  # the relation name compiled SQL reads; the runner binds it to the real source
FORMATS = {
    "csv": "FORMAT csv, HEADER true",
    "ndjson": "FORMAT json",
    "json": "FORMAT json, ARRAY true",
    "parquet": "FORMAT parquet",
}
#: elements holding the patient a resource belongs to, for StoreSource.patients
PATIENT_ELEMENTS = ("subject", "patient")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_names = itertools.count(1)


def quote(text: str) -> str:
    """A SQL string literal (DuckDB: only the quote itself is escaped)."""
    return "'" + text.replace("'", "''") + "'"


def utc_naive(moment: datetime) -> datetime:
    """A moment as the store keeps it: UTC without a zone (a naive value is taken as UTC already)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def use_utc(connection: duckdb.DuckDBPyConnection) -> None:
    """Compare the store's timestamps in UTC: PostgreSQL's are TIMESTAMPTZ, which DuckDB converts to and
    from plain TIMESTAMP in the session's time zone."""
    connection.execute("SET TimeZone = 'UTC'")


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet")))


def store_sql(engine: AnalyticEngine, resource_type: str, source: StoreSource | None = None) -> str:
    """SQL of the store's current resources of one type (a JSON column `resource`), filtered by `source`.

    Values are written into the text only after checking them (a resource type, FHIR ids, a timestamp),
    so the query stays lazy: DuckDB materialises a relation built with `?` parameters.
    """
    if not re.fullmatch(r"[A-Z][A-Za-z]*", resource_type):
        raise InvalidInput(f"not a resource type: {resource_type!r}")
    table = engine.store_table("fhir_resource")
    conditions = [f"resource_type = {quote(resource_type)}", "NOT deleted"]
    source = source or StoreSource()
    if source.since is not None:
        # the session must compare in UTC (use_utc): PostgreSQL keeps TIMESTAMPTZ
        stamp = utc_naive(source.since).isoformat(sep=" ")
        conditions.append(f"last_updated >= TIMESTAMP {quote(stamp)}")
    if source.patients:
        for patient in source.patients:
            if not _FHIR_ID.fullmatch(patient):
                raise InvalidInput(f"not a FHIR id: {patient!r}")
        if resource_type == "Patient":
            conditions.append(f"id IN ({', '.join(quote(p) for p in source.patients)})")
        else:
            wanted = ", ".join(quote(f"Patient/{p}") for p in source.patients)
            tests = []
            for element in PATIENT_ELEMENTS:
                reference = f"(CAST(resource AS JSON) ->> '$.{element}.reference')"
                # relative or absolute references (http://host/fhir/Patient/1) alike
                key = f"regexp_extract({reference}, '(^|/)(Patient/[A-Za-z0-9\\-.]{{1,64}})$', 2)"
                tests.append(f"{key} IN ({wanted})")
            conditions.append("(" + " OR ".join(tests) + ")")
    where = " AND ".join(conditions)
    return f"SELECT CAST(resource AS JSON) AS resource FROM {table} WHERE {where}"


def source_sql(
    engine: AnalyticEngine, compiled: CompiledView, source: str | Path | StoreSource
) -> tuple[str, str]:
    """The SQL of the relation a compiled view reads, and the view's SQL fitting it: `compiled.sql`
    over a JSON column `resource`, or `compiled.fields_sql` over NDJSON split into the elements the view
    reads."""
    if isinstance(source, StoreSource):
        return store_sql(engine, compiled.resource, source), compiled.sql
    if str(source) == "store":
        return store_sql(engine, compiled.resource), compiled.sql
    path = Path(source)
    if _is_parquet(path):
        pattern = quote(file_pattern(path, "parquet"))
        return f"SELECT CAST(resource AS JSON) AS resource FROM read_parquet({pattern})", compiled.sql
    pattern = quote(file_pattern(path, "ndjson"))
    if compiled.fields is not None and compiled.fields_sql is not None:
        # DuckDB's JSON reader splits each line into the elements the view reads, in parallel, instead
        # of keeping the whole resource as text for json_extract to parse again
        columns = ", ".join(f"{quote(name)}: 'JSON'" for name in compiled.fields)
        reader = f"read_json({pattern}, format = 'newline_delimited', columns = {{{columns}}})"
        return f"SELECT * FROM {reader}", compiled.fields_sql
    reader = f"read_json_objects({pattern}, format = 'newline_delimited')"
    return f"SELECT json AS resource FROM {reader}", compiled.sql


def query_over(source: str, sql: str) -> str:
    """A compiled view's SQL (which reads `source`) over the SQL of a relation, as one statement."""
    return f"WITH {PLACEHOLDER} AS ({source}) SELECT * FROM ({sql}) AS view_rows"


def view_query(engine: AnalyticEngine, view: dict | ViewDefinition, source: str | Path | StoreSource) -> str:
    """One SQL text with the view's rows over a source, for statements of their own (COPY, CREATE TABLE)."""
    compiled = compile_definition(view, "duckdb", PLACEHOLDER)
    return query_over(*source_sql(engine, compiled, source))


def run_view(engine: AnalyticEngine, view: dict | ViewDefinition, source: Source) -> duckdb.DuckDBPyRelation:
    """The view's rows as a lazy DuckDB relation (errors the data causes surface when it is read).

    `source` is "store", a StoreSource, an NDJSON or Parquet file or folder, or a relation with a JSON
    column `resource`.
    """
    # a name of its own: DuckDB resolves a relation's name when the lazy result is read, so two views
    # read together must not both call their source `source`
    name = f"{PLACEHOLDER}_{next(_names)}"
    compiled = compile_definition(view, "duckdb", name)
    if isinstance(source, duckdb.DuckDBPyRelation):
        relation, sql = source, compiled.sql
    else:
        if isinstance(source, StoreSource) and source.since is not None:
            engine.sql("SET TimeZone = 'UTC'")  # see use_utc
        relation_sql, sql = source_sql(engine, compiled, source)
        relation = engine.sql(relation_sql)
    try:
        return relation.query(name, sql)
    except duckdb.Error as exc:
        raise ViewError(f"the view cannot run: {engine_message(exc)}") from None


def write_view(
    engine: AnalyticEngine,
    view: dict | ViewDefinition,
    source: str | Path | StoreSource,
    out: Path,
    fmt: str = "csv",
    limit: int | None = None,
) -> int:
    """Write the view's rows to `out` with DuckDB's COPY (rows stream to the file, never through Python);
    returns how many rows it wrote."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(source, duckdb.DuckDBPyRelation):
        raise InvalidInput("write_view reads the store or files; for a relation use run_view")
    query = view_query(engine, view, source)
    if limit is not None:
        query = f"SELECT * FROM ({query}) AS limited LIMIT {int(limit)}"
    with engine.cursor() as cursor:
        try:
            if isinstance(source, StoreSource) and source.since is not None:
                use_utc(cursor)
            (written,) = cursor.execute(f"COPY ({query}) TO {quote(str(out))} ({FORMATS[fmt]})").fetchone()
        except duckdb.Error as exc:
            raise ViewError(f"the view failed: {engine_message(exc)}") from None
    return int(written)


def stream_view(
    engine: AnalyticEngine,
    view: dict | ViewDefinition,
    source: str | Path | StoreSource,
    stream: IO[bytes],
    fmt: str = "csv",
    limit: int | None = None,
) -> None:
    """Write the view's rows to a byte stream (stdout): COPY to a temporary file, then copy its bytes."""
    if fmt == "parquet":
        raise InvalidInput("parquet output needs a file (--out)")
    with tempfile.TemporaryDirectory(prefix="clinhub-view-") as folder:
        path = Path(folder) / f"rows.{fmt}"
        write_view(engine, view, source, path, fmt, limit)
        with path.open("rb") as handle:
            shutil.copyfileobj(handle, stream)


def engine_message(exc: duckdb.Error) -> str:
    """DuckDB's message without its error-class prefix (error() raised by a view reads as its own text)."""
    text = str(exc).strip()
    for prefix in ("Invalid Input Error: ", "Conversion Error: ", "Binder Error: "):
        text = text.removeprefix(prefix)
    return text.splitlines()[0] if text else type(exc).__name__
