"""The tables analytics read: library views over the store and the HL7 message facts, built once per use.

`with Sources(engine) as src:` gives a schema of its own on the analytic engine in which each table is
made the first time a query names it, from one scan of the store, so the many queries of one report see
the same state of the data and a view is compiled and scanned once. Queries name the tables in braces:
`src.rows("SELECT count(*) FROM {patients}")`. A store without a resource type (or without a store at
all) gives an empty table with the view's columns, never an error. The schema is dropped at exit.

| table | from |
|---|---|
| patients | view patient_demographics |
| encounters | view encounters |
| conditions | view conditions |
| medications | view medication_requests |
| observations | view observations |
| messages | `clinhub.hl7.messages.facts_sql`: one row per stored HL7 message, without its content |
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.errors import ClinhubError, InvalidInput
from clinhub.hl7.messages import FACT_COLUMNS, facts_sql
from clinhub.views import library
from clinhub.views.compiler import compile_definition
from clinhub.views.runner import PLACEHOLDER, query_over, use_utc, view_query

#: table name -> the library view it holds
VIEWS = {
    "patients": "patient_demographics",
    "encounters": "encounters",
    "conditions": "conditions",
    "medications": "medication_requests",
    "observations": "observations",
}
MESSAGES = "messages"
TABLES = (*VIEWS, MESSAGES)

#: the types of the message facts, for an empty table when the store has no message table
_MESSAGE_TYPES = {"id": "BIGINT", "received_at": "TIMESTAMP", "processed_at": "TIMESTAMP"}
_NO_RESOURCES = "SELECT CAST(NULL AS JSON) AS resource LIMIT 0"


class _Names(Mapping[str, str]):
    """Table name -> qualified name, making the table on first use (for str.format_map)."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def __getitem__(self, name: str) -> str:
        return self._sources.table(name)

    def __iter__(self) -> Iterator[str]:
        return iter(TABLES)

    def __len__(self) -> int:
        return len(TABLES)


class Sources:
    """The analytics tables over one analytic engine; a context manager (one thread at a time)."""

    def __init__(self, engine: AnalyticEngine) -> None:
        self.engine = engine
        self.schema = f"analytics_{uuid.uuid4().hex[:12]}"
        self.built: set[str] = set()
        self._stack: ExitStack | None = None
        self._cursor: duckdb.DuckDBPyConnection | None = None

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> Sources:
        self._stack = ExitStack()
        self._cursor = self._stack.enter_context(self.engine.cursor())
        use_utc(self._cursor)  # the store keeps UTC; PostgreSQL's TIMESTAMPTZ would follow the session
        self._cursor.execute(f"CREATE SCHEMA {self.schema}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is None:
            return
        try:
            self._cursor.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        finally:
            self._stack.close()
            self._stack = None
            self._cursor = None
            self.built.clear()

    @property
    def cursor(self) -> duckdb.DuckDBPyConnection:
        if self._cursor is None:
            raise InvalidInput("analytics sources are used inside `with Sources(engine) as src:`")
        return self._cursor

    # ------------------------------------------------------------------ tables
    def table(self, name: str) -> str:
        """The qualified name of table `name` (one of TABLES), made from the store on first use."""
        if name not in TABLES:
            raise InvalidInput(f"no analytics table {name!r}; there are {', '.join(TABLES)}")
        qualified = f"{self.schema}.{name}"
        if name not in self.built:
            self._build(name, qualified)
            self.built.add(name)
        return qualified

    def _build(self, name: str, qualified: str) -> None:
        cursor = self.cursor
        if name == MESSAGES:
            try:
                cursor.execute(f"CREATE TABLE {qualified} AS {facts_sql(self.engine)}")
            except (duckdb.Error, ClinhubError):  # no store, or a store without the message table
                columns = ", ".join(f"{c} {_MESSAGE_TYPES.get(c, 'VARCHAR')}" for c in FACT_COLUMNS)
                cursor.execute(f"CREATE TABLE {qualified} ({columns})")
            return
        view = library.get_view(VIEWS[name])
        try:
            cursor.execute(f"CREATE TABLE {qualified} AS {view_query(self.engine, view, 'store')}")
        except (duckdb.Error, ClinhubError):  # no store, or not migrated: the view's columns, no rows
            compiled = compile_definition(view, "duckdb", PLACEHOLDER)
            cursor.execute(f"CREATE TABLE {qualified} AS {query_over(_NO_RESOURCES, compiled.sql)}")

    # ------------------------------------------------------------------ queries
    def text(self, query: str) -> str:
        """`query` with each `{table}` replaced by its qualified name (so no other braces in it)."""
        return query.format_map(_Names(self))

    def relation(self, query: str, params: Sequence[Any] | None = None) -> duckdb.DuckDBPyRelation:
        """A lazy relation over the tables; read it before leaving the `with` block."""
        return self.cursor.sql(self.text(query), params=list(params) if params else None)

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple]:
        return self.cursor.execute(self.text(query), list(params or [])).fetchall()

    def records(self, query: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        result = self.cursor.execute(self.text(query), list(params or []))
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def one(self, query: str, params: Sequence[Any] | None = None) -> tuple:
        return self.cursor.execute(self.text(query), list(params or [])).fetchone()


def day(value: date | datetime | None) -> date:
    """A day to compute at: `value`'s date, today (UTC) by default."""
    if value is None:
        return datetime.now(UTC).date()
    return value.date() if isinstance(value, datetime) else value


def rate(part: float | None, whole: float | None) -> float | None:
    """part / whole, None when whole is zero or unknown."""
    return None if not whole or part is None else part / whole
