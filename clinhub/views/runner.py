"""Run views on the analytic engine over the store, NDJSON or Parquet, and write their rows with COPY."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput, ViewError
from clinhub.views.compiler import CompiledView, compile_definition
from clinhub.views.model import ViewDefinition

Source = str | Path | duckdb.DuckDBPyRelation
PLACEHOLDER = "source"  # the relation name compiled SQL reads; run_view binds it to the real source
FORMATS = {
    "csv": "FORMAT csv, HEADER true",
    "ndjson": "FORMAT json",
    "json": "FORMAT json, ARRAY true",
    "parquet": "FORMAT parquet",
}


def source_relation(engine: AnalyticEngine, resource_type: str, source: Source) -> duckdb.DuckDBPyRelation:
    """Resources as a relation with a JSON column `resource`: the store ("store"), NDJSON or Parquet.

    NDJSON and Parquet may hold several resource types; the compiled view keeps its own type.
    """
    if isinstance(source, duckdb.DuckDBPyRelation):
        return source
    if str(source) == "store":
        # filtered by the relation API, not a parameter, so the scan stays lazy and streams
        return engine.resources().filter(f"resource_type = '{resource_type}'")
    path = Path(source)
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return engine.parquet(path).project("CAST(resource AS JSON) AS resource")
    return engine.ndjson(path)


def run_view(engine: AnalyticEngine, view: dict | ViewDefinition, source: Source) -> duckdb.DuckDBPyRelation:
    """The view's rows as a lazy DuckDB relation (errors the data causes surface when it is read)."""
    compiled = compile_definition(view, "duckdb", PLACEHOLDER)
    return _query(engine, compiled, source)


def _query(engine: AnalyticEngine, compiled: CompiledView, source: Source) -> duckdb.DuckDBPyRelation:
    relation = source_relation(engine, compiled.resource, source)
    try:
        return relation.query(PLACEHOLDER, compiled.sql)
    except duckdb.Error as exc:
        raise ViewError(f"the view cannot run: {engine_message(exc)}") from None


def write_view(
    engine: AnalyticEngine,
    view: dict | ViewDefinition,
    source: Source,
    out: Path,
    fmt: str = "csv",
    limit: int | None = None,
) -> None:
    """Write the view's rows to `out` with DuckDB's COPY: rows stream to the file, never through Python."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
    relation = run_view(engine, view, source)
    if limit is not None:
        relation = relation.limit(limit)
    target = str(out).replace("'", "''")
    try:
        relation.query("view_rows", f"COPY (SELECT * FROM view_rows) TO '{target}' ({FORMATS[fmt]})")  # noqa: S608
    except duckdb.Error as exc:
        raise ViewError(f"the view failed: {engine_message(exc)}") from None


def stream_view(
    engine: AnalyticEngine,
    view: dict | ViewDefinition,
    source: Source,
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
