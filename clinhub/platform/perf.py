"""The performance advisor: store statement timings, slow statements, index hints, table stats, upkeep."""

from __future__ import annotations

import math
import os
import re
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from sqlalchemy import Connection, Engine, event, func, inspect, select, text
from sqlalchemy.engine import Inspector
from sqlalchemy.exc import DBAPIError

from clinhub.errors import InvalidInput, StoreUnavailable
from clinhub.store.schema import metadata

if TYPE_CHECKING:
    from clinhub.hub import Hub

OPERATIONS = ("select", "insert", "update", "delete", "other")
ACTIONS = ("analyze", "vacuum")
#: a statement shape is worth an index only when it runs this often or this slowly (mean)
FREQUENT_CALLS = 10
SLOW_MEAN_MS = 50.0
#: statement shapes the query log keeps (the heaviest by total time)
LOG_CAPACITY = 200
#: checkouts of the pool it takes before its observed peak is a basis for a pool size
MIN_CHECKOUTS = 100
#: longer statement shapes are cut: they are for people to read, and memory stays bounded
MAX_SHAPE = 4000

STORE_QUERY_LATENCY = Histogram(
    "clinhub_store_query_duration_seconds",
    "Store statement latency by operation (select, insert, update, delete, other)",
    ["operation"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
# looked up once: labels() on every statement would be a measurable part of the hook's cost
_LATENCY_BY_OPERATION = {operation: STORE_QUERY_LATENCY.labels(operation) for operation in OPERATIONS}

# ------------------------------------------------------------------ statement shapes
# Literals, bind placeholders and comments all become one thing (`?`, or a space for comments) in a
# single left-to-right scan, so a quote inside a comment or a `--` inside a string cannot derail it.
_REST = r"""
| (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
| (?P<keep>::)
| (?P<param>\?|%s|%\([^)]*\)s|(?<![\w:]):[A-Za-z_]\w*|\$\d+)
| (?P<number>(?<![\w.$])(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
"""
# PostgreSQL and SQLite: '...' is a string ('' escapes a quote; X'..', N'..', U&'..' prefixes), E'..'
# also takes backslash escapes, $tag$...$tag$ is PostgreSQL's dollar-quoted string, "..." names.
# An unterminated string swallows the rest: better to lose the tail of a shape than to leak a value.
_STANDARD_LITERALS = re.compile(
    r"""(?P<literal>(?<!\w)[Ee]'(?:[^'\\]|\\.|'')*'
        | (?:(?<!\w)(?:[NnXxBb]|[Uu]&))?'(?:[^']|'')*'
        | \$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$
        | '.* | \$(?:[A-Za-z_]\w*)?\$.*)
    | (?P<keep_ident>"(?:[^"]|"")*")"""
    + _REST,
    re.X | re.S,
)
# MariaDB/MySQL: "..." is a string too, and a backslash escapes the next character; `...` names.
_MYSQL_LITERALS = re.compile(
    r"""(?P<literal>(?:(?<!\w)[NnXxBb])?'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|['"].*)
    | (?P<keep_ident>`(?:[^`]|``)*`)"""
    + _REST,
    re.X | re.S,
)
_LITERALS_BY_DIALECT = {"mysql": _MYSQL_LITERALS, "mariadb": _MYSQL_LITERALS}

_ELEMENT = r"\?(?:::\w+(?:\([?, ]*\))?)*"  # a placeholder, possibly with PostgreSQL casts (?::VARCHAR)
_IN_LIST = re.compile(rf"\bIN\s*\(\s*({_ELEMENT})(?:\s*,\s*{_ELEMENT})*\s*\)", re.I)
_ROW = r"\((?:[^()]|\([^()]*\))*\)"
_VALUES_ROWS = re.compile(rf"\b(VALUES\s*)({_ROW})(?:\s*,\s*\2)+", re.I)
_SPACE = re.compile(r"\s+")


def _mask(match: re.Match) -> str:
    kind = match.lastgroup
    if kind in ("keep", "keep_ident"):
        return match.group()
    return " " if kind == "comment" else "?"


def statement_shape(statement: str, dialect: str = "sqlite") -> str:
    """The shape of a SQL statement: literals and placeholders as `?`, comments dropped, whitespace
    collapsed, IN-lists and repeated VALUES rows collapsed to one. Values never survive it."""
    literals = _LITERALS_BY_DIALECT.get(dialect, _STANDARD_LITERALS)
    shape = _SPACE.sub(" ", literals.sub(_mask, statement)).strip()
    shape = _IN_LIST.sub(r"IN (\1)", shape)
    shape = _VALUES_ROWS.sub(r"\1\2", shape)
    return shape if len(shape) <= MAX_SHAPE else shape[:MAX_SHAPE] + " …"


@lru_cache(maxsize=1024)  # the hook sees the same statements over and over; this memory is never reported
def _classify(statement: str, dialect: str) -> tuple[str, str]:
    shape = statement_shape(statement, dialect)
    return shape, _operation(shape)


# ------------------------------------------------------------------ a small tokenizer for shapes
_TOKEN = re.compile(
    r"""(?P<name>"(?:[^"]|"")*"|`(?:[^`]|``)*`|[A-Za-z_][\w$]*)
    | (?P<op><=|>=|<>|!=|=|<|>)
    | (?P<punct>[().,?])
    | (?P<other>\S)""",
    re.X,
)
_CLAUSES = frozenset(
    {
        "SELECT",
        "FROM",
        "JOIN",
        "ON",
        "WHERE",
        "GROUP",
        "ORDER",
        "HAVING",
        "LIMIT",
        "OFFSET",
        "SET",
        "VALUES",
        "RETURNING",
        "UNION",
        "INTERSECT",
        "EXCEPT",
        "INTO",
        "UPDATE",
        "DELETE",
        "INSERT",
        "USING",
        "WINDOW",
        "FOR",
    }
)
_KEYWORDS = _CLAUSES | frozenset(
    {
        "AS",
        "AND",
        "OR",
        "NOT",
        "IN",
        "IS",
        "NULL",
        "LIKE",
        "ILIKE",
        "BETWEEN",
        "EXISTS",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "DISTINCT",
        "ALL",
        "ANY",
        "SOME",
        "LEFT",
        "RIGHT",
        "FULL",
        "INNER",
        "OUTER",
        "CROSS",
        "NATURAL",
        "LATERAL",
        "BY",
        "ASC",
        "DESC",
        "NULLS",
        "FIRST",
        "LAST",
        "TRUE",
        "FALSE",
        "WITH",
        "RECURSIVE",
        "CAST",
        "INTERVAL",
        "COLLATE",
        "ESCAPE",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
    }
)
_RANGE_OPS = frozenset({"<", ">", "<=", ">="})
_PREDICATE_OPS = _RANGE_OPS | {"=", "IN", "BETWEEN"}


@dataclass(frozen=True)
class _Token:
    kind: str  # name, keyword, op, punct, other
    text: str
    parts: tuple[str, ...] = ()  # a name's dotted parts, unquoted and lower-cased


def _unquote(word: str) -> str:
    if word[:1] in ('"', "`"):
        return word[1:-1].replace(word[0] * 2, word[0]).lower()
    return word.lower()


def _tokens(shape: str) -> list[_Token]:
    """Tokens of a shape, with dotted names (alias.column, schema.table) joined into one name token."""
    raw = [(m.lastgroup or "other", m.group()) for m in _TOKEN.finditer(shape)]
    tokens: list[_Token] = []
    i = 0
    while i < len(raw):
        kind, word = raw[i]
        if kind == "name" and word.upper() in _KEYWORDS and word[0] not in ('"', "`"):
            tokens.append(_Token("keyword", word.upper()))
            i += 1
            continue
        if kind != "name":
            tokens.append(_Token(kind, word))
            i += 1
            continue
        parts = [_unquote(word)]
        while i + 2 < len(raw) and raw[i + 1] == ("punct", ".") and raw[i + 2][0] == "name":
            parts.append(_unquote(raw[i + 2][1]))
            i += 2
        tokens.append(_Token("name", ".".join(parts), tuple(parts)))
        i += 1
    return tokens


def _operation(shape: str) -> str:
    """select/insert/update/delete from a shape's verb; after WITH, the verb that follows the CTEs."""
    verb = shape.split(" ", 1)[0].lower()
    if verb != "with":
        return verb if verb in OPERATIONS else "other"
    depth = 0
    for token in _tokens(shape):
        if token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif depth == 0 and token.kind == "keyword" and token.text.lower() in OPERATIONS:
            return token.text.lower()
    return "other"


@dataclass(frozen=True)
class ColumnUse:
    """A column a statement filters or joins on: `kind` is equality, range or join."""

    table: str
    column: str
    kind: str


def column_uses(shape: str) -> list[ColumnUse]:
    """Columns used in WHERE equality/range tests and JOIN ... ON conditions of a statement shape.

    A careful regex tokenizer plus a clause tracker (sqlglot is not a dependency of clinhub): it knows
    FROM/JOIN tables and their aliases, which clause each token is in (a parenthesis keeps its clause
    unless a sub-SELECT starts), and the operand on each side of =, <, >, <=, >=, IN and BETWEEN. Columns
    are resolved to store tables through aliases, or, when unqualified, to the one table of the
    statement that has such a column; anything else (expressions, derived tables) is left out."""
    tokens = _tokens(shape)
    aliases: dict[str, str | None] = {}
    clause = ["SELECT"]
    expect_table = False  # true for the token right after FROM, JOIN, UPDATE, INTO or a FROM-list comma
    for i, token in enumerate(tokens):
        expecting, expect_table = expect_table, False
        if token.kind == "keyword" and token.text in _CLAUSES:
            clause[-1] = token.text
            expect_table = token.text in ("FROM", "JOIN", "UPDATE", "INTO")
        elif token.text == "(":
            clause.append(clause[-1])
        elif token.text == ")":
            if len(clause) > 1:
                clause.pop()
            if clause[-1] in ("FROM", "JOIN"):  # a derived table: its alias names no store table
                _read_alias(tokens, i, None, aliases)
        elif token.text == "," and clause[-1] == "FROM":
            expect_table = True
        elif token.kind == "name" and expecting:
            table = token.parts[-1]
            aliases[table] = table
            _read_alias(tokens, i, table, aliases)
    tables = {table for table in aliases.values() if table in metadata.tables}
    uses: list[ColumnUse] = []
    clause = ["SELECT"]
    for i, token in enumerate(tokens):
        if token.kind == "keyword" and token.text in _CLAUSES:
            clause[-1] = token.text
        elif token.text == "(":
            clause.append(clause[-1])
        elif token.text == ")" and len(clause) > 1:
            clause.pop()
        if clause[-1] in ("WHERE", "ON"):
            uses.extend(_predicate(tokens, i, aliases, tables))
    return uses


def _read_alias(tokens: list[_Token], i: int, table: str | None, aliases: dict[str, str | None]) -> None:
    """After a table (or a derived table's closing parenthesis), `AS alias` or a bare alias names it."""
    j = i + 1
    if j < len(tokens) and tokens[j].text == "AS":
        j += 1
    if j < len(tokens) and tokens[j].kind == "name" and len(tokens[j].parts) == 1:
        aliases[tokens[j].parts[0]] = table


def _predicate(
    tokens: list[_Token], i: int, aliases: dict[str, str | None], tables: set[str]
) -> list[ColumnUse]:
    operator = tokens[i].text
    if tokens[i].kind not in ("op", "keyword") or operator not in _PREDICATE_OPS:
        return []
    # NOT IN / NOT BETWEEN select most rows: an index does not help them
    if i == 0 or i + 1 >= len(tokens) or tokens[i - 1].text == "NOT":
        return []
    lhs, rhs = tokens[i - 1], tokens[i + 1]
    # a name followed by "(" is a function call, not a column
    rhs_is_column = rhs.kind == "name" and not (i + 2 < len(tokens) and tokens[i + 2].text == "(")
    lhs_column = _resolve(lhs, aliases, tables) if lhs.kind == "name" else None
    rhs_column = _resolve(rhs, aliases, tables) if rhs_is_column else None
    if operator == "=" and lhs.kind == "name" and rhs_is_column:
        return [ColumnUse(*c, "join") for c in (lhs_column, rhs_column) if c is not None]
    kind = "range" if operator in _RANGE_OPS or operator == "BETWEEN" else "equality"
    if lhs_column is not None:
        return [ColumnUse(*lhs_column, kind)]
    if lhs.text == "?" and rhs_column is not None and operator != "IN":  # `? < column`, reversed
        return [ColumnUse(*rhs_column, kind)]
    return []


def _resolve(token: _Token, aliases: dict[str, str | None], tables: set[str]) -> tuple[str, str] | None:
    """(table, column) of a column reference, if it names a column of a store table in the statement."""
    column = token.parts[-1]
    if len(token.parts) >= 2:
        qualifier = token.parts[-2]
        table = aliases.get(qualifier, qualifier)
        candidates = [table] if table in tables else []
    else:
        candidates = [t for t in sorted(tables) if column in metadata.tables[t].c]
    if len(candidates) != 1 or column not in metadata.tables[candidates[0]].c:
        return None
    return candidates[0], column


# ------------------------------------------------------------------ the hook
@dataclass
class _Entry:
    shape: str
    operation: str
    calls: int = 0
    total: float = 0.0
    max: float = 0.0


class QueryLog:
    """Statement shapes with call count, total and max time; bounded to the heaviest `capacity`.

    When full, a new shape takes the place of the shape with the least total time, so the heavy
    statements a report is about stay, and a stream of one-off statements churns only one slot."""

    def __init__(self, capacity: int = LOG_CAPACITY) -> None:
        self.capacity = capacity
        self.since = datetime.now(UTC)
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def add(self, shape: str, operation: str, seconds: float) -> None:
        with self._lock:
            entry = self._entries.get(shape)
            if entry is None:
                if len(self._entries) >= self.capacity:
                    lightest = min(self._entries.values(), key=lambda e: e.total)
                    del self._entries[lightest.shape]
                entry = self._entries[shape] = _Entry(shape, operation)
            entry.calls += 1
            entry.total += seconds
            entry.max = max(entry.max, seconds)

    def snapshot(self) -> list[dict]:
        """Every kept shape, heaviest (total time) first, times in milliseconds."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.total, reverse=True)
            return [
                {
                    "statement": e.shape,
                    "operation": e.operation,
                    "calls": e.calls,
                    "total_ms": round(e.total * 1000, 3),
                    "mean_ms": round(e.total * 1000 / e.calls, 3),
                    "max_ms": round(e.max * 1000, 3),
                }
                for e in entries
            ]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class PoolUsage:
    """Connections checked out of the engine's pool now, the most at once, and checkouts in total."""

    def __init__(self) -> None:
        self.checked_out = 0
        self.peak = 0
        self.checkouts = 0
        self._lock = threading.Lock()

    def checkout(self, *_args: object) -> None:
        with self._lock:
            self.checked_out += 1
            self.checkouts += 1
            self.peak = max(self.peak, self.checked_out)

    def checkin(self, *_args: object) -> None:
        with self._lock:
            # connections checked out before instrument() come back without having been counted
            self.checked_out = max(0, self.checked_out - 1)


@dataclass
class Advisor:
    """What `instrument` attaches to one engine."""

    log: QueryLog = field(default_factory=QueryLog)
    pool: PoolUsage = field(default_factory=PoolUsage)


_ADVISORS: weakref.WeakKeyDictionary[Engine, Advisor] = weakref.WeakKeyDictionary()
_INSTALL = threading.Lock()
_QUIET: ContextVar[bool] = ContextVar("clinhub_perf_quiet", default=False)
_STARTED = "_clinhub_perf_started"


@contextmanager
def _quiet() -> Iterator[None]:
    """The advisor's own catalogue and maintenance statements stay out of the log it reports on."""
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def instrument(engine: Engine) -> Advisor:
    """Time every statement `engine` runs and follow its pool; calling it again changes nothing."""
    with _INSTALL:
        advisor = _ADVISORS.get(engine)
        if advisor is not None:
            return advisor
        advisor = _ADVISORS[engine] = Advisor()
    dialect = engine.dialect.name
    log = advisor.log

    def before(_conn, _cursor, _statement, _parameters, context, _executemany) -> None:
        if context is not None and not _QUIET.get():
            setattr(context, _STARTED, time.perf_counter())

    def after(_conn, _cursor, statement, _parameters, context, _executemany) -> None:
        started = getattr(context, _STARTED, None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        shape, operation = _classify(statement, dialect)
        _LATENCY_BY_OPERATION[operation].observe(elapsed)
        log.add(shape, operation, elapsed)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "checkout", advisor.pool.checkout)
    event.listen(engine, "checkin", advisor.pool.checkin)
    return advisor


# ------------------------------------------------------------------ the report
def report(hub: Hub, *, limit: int = 20) -> dict:
    """Slow statements, missing-index suggestions, table statistics and pool sizing for the hub's store.

    Statement timings come from `instrument`'s hook (installed here if it was not, so they start now),
    and on PostgreSQL also from pg_stat_statements when that extension is usable in the database."""
    engine = hub.store
    advisor = instrument(engine)
    backend = _backend(engine)
    statements = advisor.log.snapshot()
    with _quiet():
        # as many server statements as the log keeps feed the index advice; `limit` of them are shown
        server = _pg_stat_statements(engine, LOG_CAPACITY) if backend == "postgresql" else _not_postgres()
        inspector = inspect(engine)
        present = _present_tables(inspector)
        tables = _table_stats(engine, backend, present)
        rows = {entry["table"]: entry["rows"] for entry in tables}
        suggestions = index_suggestions(
            engine, inspector, [*statements, *server.get("statements", [])], present, rows
        )
        database = _database_stats(engine) if backend == "sqlite" else {}
    return {
        "backend": backend,
        "generated_at": _iso(datetime.now(UTC)),
        "query_log": {
            "since": _iso(advisor.log.since),
            "statements_kept": len(statements),
            "capacity": advisor.log.capacity,
        },
        "slow_statements": statements[:limit],
        "pg_stat_statements": {k: v[:limit] if k == "statements" else v for k, v in server.items()},
        "index_suggestions": suggestions,
        "tables": tables,
        "database": database,
        "pool": pool_report(engine, advisor.pool),
    }


def _backend(engine: Engine) -> str:
    name = engine.dialect.name
    return "mysql" if name == "mariadb" else name


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _plain(value: object) -> object:
    """A database value as JSON can carry it."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _present_tables(inspector: Inspector) -> list[str]:
    existing = set(inspector.get_table_names())
    return [name for name in metadata.tables if name in existing]


def _not_postgres() -> dict:
    return {"available": False, "reason": "pg_stat_statements exists only on PostgreSQL"}


def _pg_stat_statements(engine: Engine, limit: int) -> dict:
    """The heaviest statements of this database by pg_stat_statements, or why it is not available."""
    try:
        with engine.connect() as conn:
            installed = conn.execute(
                text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            ).first()
            if installed is None:
                return {
                    "available": False,
                    "reason": "extension pg_stat_statements is not installed in this database",
                }
            rows = conn.execute(
                text(
                    "SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, rows"
                    " FROM pg_stat_statements"
                    " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    " ORDER BY total_exec_time DESC LIMIT :limit"
                ),
                {"limit": limit},
            ).all()
    except DBAPIError as exc:
        # typically "pg_stat_statements must be loaded via shared_preload_libraries"
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        return {"available": False, "reason": cause}
    return {
        "available": True,
        "statements": [
            {
                "statement": statement_shape(row.query, "postgresql"),
                "calls": int(row.calls),
                "total_ms": round(float(row.total_exec_time), 3),
                "mean_ms": round(float(row.mean_exec_time), 3),
                "max_ms": round(float(row.max_exec_time), 3),
                "rows": int(row.rows),
            }
            for row in rows
        ],
    }


def _table_stats(engine: Engine, backend: str, present: list[str]) -> list[dict]:
    """Exact row counts per store table, with what the backend's catalogue adds about each."""
    with engine.connect() as conn:
        counts = {
            name: conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
            for name in present
        }
    details = _TABLE_DETAILS[backend](engine) if backend in _TABLE_DETAILS else {}
    return [{"table": name, "rows": counts[name], **details.get(name, {})} for name in present]


def _postgres_table_details(engine: Engine) -> dict[str, dict]:
    query = text(
        "SELECT relname, n_live_tup, n_dead_tup, seq_scan, idx_scan, last_vacuum, last_autovacuum,"
        " last_analyze, last_autoanalyze, pg_total_relation_size(relid) AS total_bytes"
        " FROM pg_stat_user_tables WHERE schemaname = current_schema()"
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return {row["relname"]: {k: _plain(v) for k, v in row.items() if k != "relname"} for row in rows}


def _mysql_table_details(engine: Engine) -> dict[str, dict]:
    query = text(
        "SELECT TABLE_NAME AS table_name, ENGINE AS engine, TABLE_ROWS AS estimated_rows,"
        " DATA_LENGTH AS data_bytes, INDEX_LENGTH AS index_bytes, DATA_FREE AS free_bytes,"
        " UPDATE_TIME AS updated_at"
        " FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return {row["table_name"]: {k: _plain(v) for k, v in row.items() if k != "table_name"} for row in rows}


_TABLE_DETAILS = {"postgresql": _postgres_table_details, "mysql": _mysql_table_details}


def _database_stats(engine: Engine) -> dict:
    """SQLite keeps no per-table statistics without dbstat; its file's pages are what VACUUM reclaims."""
    with engine.connect() as conn:
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    return {
        "page_size": page_size,
        "page_count": pages,
        "freelist_count": free,
        "size_bytes": page_size * pages,
        "free_bytes": page_size * free,
    }


# ------------------------------------------------------------------ index suggestions
def _leading_columns(inspector: Inspector, table: str) -> set[str]:
    """Columns some index, primary key or unique constraint of `table` starts with."""
    leads: list[str | None] = []
    leads.extend((index.get("column_names") or [None])[0] for index in inspector.get_indexes(table))
    leads.extend((inspector.get_pk_constraint(table).get("constrained_columns") or [None])[:1])
    leads.extend((u.get("column_names") or [None])[0] for u in inspector.get_unique_constraints(table))
    return {lead.lower() for lead in leads if lead}


def index_suggestions(
    engine: Engine,
    inspector: Inspector,
    statements: Iterable[dict],
    present: list[str],
    rows: dict[str, int],
) -> list[dict]:
    """Columns that frequent or slow statements filter or join on, and that no index leads with.

    A statement counts when it ran at least FREQUENT_CALLS times or took SLOW_MEAN_MS on average. Its
    columns come from `column_uses` (a regex tokenizer, not sqlglot). When one of the columns a
    statement filters a table on already leads an index, the database has an access path and the
    other filter columns of that table are not suggested for that statement; join columns are judged
    on their own."""
    by_shape: dict[str, dict] = {}
    for entry in statements:
        known = by_shape.get(entry["statement"])
        if known is None or entry["calls"] > known["calls"]:
            by_shape[entry["statement"]] = entry
    covered: dict[str, set[str]] = {}
    found: dict[tuple[str, str], dict] = {}
    for shape, entry in by_shape.items():
        if entry["calls"] < FREQUENT_CALLS and entry["mean_ms"] < SLOW_MEAN_MS:
            continue
        uses = [use for use in column_uses(shape) if use.table in present]
        for use in uses:
            if use.table not in covered:
                covered[use.table] = _leading_columns(inspector, use.table)
        filtered_on_index = {
            use.table for use in uses if use.kind != "join" and use.column in covered[use.table]
        }
        seen: set[tuple[str, str]] = set()
        for use in uses:
            if use.column in covered[use.table]:
                continue
            if use.kind != "join" and use.table in filtered_on_index:
                continue
            key = (use.table, use.column)
            suggestion = found.setdefault(key, _new_suggestion(engine, use, rows))
            suggestion["used_as"] = sorted({*suggestion["used_as"], use.kind})
            if key in seen:
                continue
            seen.add(key)
            suggestion["statements"] += 1
            suggestion["calls"] += entry["calls"]
            suggestion["total_ms"] = round(suggestion["total_ms"] + entry["total_ms"], 3)
            if suggestion["example"] is None or entry["total_ms"] > suggestion["_example_ms"]:
                suggestion["example"], suggestion["_example_ms"] = shape, entry["total_ms"]
    ranked = sorted(found.values(), key=lambda s: s["total_ms"], reverse=True)
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in ranked]


def _new_suggestion(engine: Engine, use: ColumnUse, rows: dict[str, int]) -> dict:
    quote = engine.dialect.identifier_preparer.quote
    name = f"ix_{use.table}_{use.column}"
    return {
        "table": use.table,
        "column": use.column,
        "used_as": [],
        "statements": 0,
        "calls": 0,
        "total_ms": 0.0,
        "table_rows": rows.get(use.table),
        "ddl": f"CREATE INDEX {quote(name)} ON {quote(use.table)} ({quote(use.column)})",
        "example": None,
        "_example_ms": 0.0,
    }


# ------------------------------------------------------------------ pool
def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _pool_number(pool: object, name: str) -> int | None:
    method = getattr(pool, name, None)
    return int(method()) if callable(method) else None


def pool_report(engine: Engine, usage: PoolUsage) -> dict:
    """The pool's configuration and state, the peak seen by the hook, and a recommended pool size."""
    pool = engine.pool
    size = _pool_number(pool, "size")
    overflow = _pool_number(pool, "overflow")
    # QueuePool has no public accessor for max_overflow; other pool classes have no overflow at all
    max_overflow = getattr(pool, "_max_overflow", None)
    capacity = None if size is None else size + max(0, max_overflow or 0)
    cpus = _cpu_count()
    recommended, reason = recommend_pool_size(usage.peak, usage.checkouts, size, capacity, cpus)
    return {
        "pool_class": type(pool).__name__,
        "size": size,
        "max_overflow": max_overflow,
        "checked_out": _pool_number(pool, "checkedout"),
        "overflow": None if overflow is None else max(0, overflow),
        "checked_in": _pool_number(pool, "checkedin"),
        "observed_peak_checked_out": usage.peak,
        "observed_checkouts": usage.checkouts,
        "cpu_count": cpus,
        "recommended_pool_size": recommended,
        "reason": reason,
    }


def recommend_pool_size(
    peak: int, checkouts: int, size: int | None, capacity: int | None, cpus: int
) -> tuple[int, str]:
    """A pool size from the busiest moment seen and the CPU count, with the reason in words.

    The peak gets 25% headroom. The ceiling is 2 x CPUs + 1 (the PostgreSQL wiki's rule of thumb for
    active connections, taking this machine's CPUs as the database's): beyond it, statements queue for
    CPU instead of running sooner, so an exhausted pool above it calls for faster statements. Below
    MIN_CHECKOUTS checkouts the peak says too little, unless the pool ran out."""
    ceiling = 2 * cpus + 1
    current = size if size is not None else ceiling
    if capacity is not None and peak >= capacity:
        if capacity < ceiling:
            return ceiling, (
                f"the pool ran out ({peak} connections at once = pool_size + max_overflow);"
                f" raise pool_size to 2 x {cpus} CPUs + 1 = {ceiling}"
            )
        return current, (
            f"the pool ran out ({peak} connections at once), but more than 2 x {cpus} CPUs + 1 ="
            f" {ceiling} active connections would queue for CPU; make the slow statements faster instead"
        )
    if checkouts < MIN_CHECKOUTS:
        return current, f"only {checkouts} checkouts observed so far; keep the current size"
    recommended = max(2, min(math.ceil(peak * 1.25), ceiling))
    return recommended, (
        f"at most {peak} of {checkouts} checkouts overlapped; that plus 25% headroom,"
        f" capped at 2 x {cpus} CPUs + 1 = {ceiling}"
    )


# ------------------------------------------------------------------ maintenance
_MAINTENANCE = {
    ("postgresql", "analyze"): "ANALYZE {table}",
    # VACUUM cannot run inside a transaction block: maintain() runs it in autocommit
    ("postgresql", "vacuum"): "VACUUM (ANALYZE) {table}",
    ("sqlite", "analyze"): "ANALYZE {table}",
    # SQLite rebuilds the whole file; it has no per-table VACUUM
    ("sqlite", "vacuum"): "VACUUM",
    ("mysql", "analyze"): "ANALYZE TABLE {table}",
    # InnoDB answers OPTIMIZE with a rebuild plus ANALYZE, its equivalent of VACUUM
    ("mysql", "vacuum"): "OPTIMIZE TABLE {table}",
}


def _validated_tables(engine: Engine, tables: Iterable[str] | None) -> list[str]:
    valid = sorted(metadata.tables)
    requested = list(dict.fromkeys(tables or []))
    unknown = [name for name in requested if name not in metadata.tables]
    if unknown:
        raise InvalidInput(f"unknown table {', '.join(unknown)}; valid tables: {', '.join(valid)}")
    present = _present_tables(inspect(engine))
    missing = [name for name in requested if name not in present]
    if missing:
        raise StoreUnavailable(f"table {', '.join(missing)} is not in the store; run `clinhub db upgrade`")
    return requested or present


def maintain(hub: Hub, action: str, tables: Iterable[str] | None = None) -> dict:
    """Refresh planner statistics (`analyze`) or reclaim space and refresh them (`vacuum`) for the given
    store tables (default: all), in autocommit; table names must be tables of the store's schema."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown maintenance action {action!r}; use one of: {', '.join(ACTIONS)}")
    engine = hub.store
    backend = _backend(engine)
    template = _MAINTENANCE[(backend, action)]
    with _quiet():
        names = _validated_tables(engine, tables)
        format_table = engine.dialect.identifier_preparer.format_table
        if "{table}" in template:
            work = [(name, template.format(table=format_table(metadata.tables[name]))) for name in names]
        else:
            work = [("(database)", template)]
        steps = []
        started = time.perf_counter()
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for target, statement in work:
                steps.append(_run_step(conn, target, statement))
    return {
        "action": action,
        "backend": backend,
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _run_step(conn: Connection, target: str, statement: str) -> dict:
    started = time.perf_counter()
    try:
        result = conn.exec_driver_sql(statement)
    except DBAPIError as exc:
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise StoreUnavailable(f"{statement} failed: {cause}") from None
    # MariaDB answers ANALYZE/OPTIMIZE TABLE with rows of (Table, Op, Msg_type, Msg_text)
    messages = [f"{row[2]}: {row[3]}" for row in result] if result.returns_rows else []
    return {
        "target": target,
        "statement": statement,
        "seconds": round(time.perf_counter() - started, 3),
        "ok": not any(message.startswith("error:") for message in messages),
        "messages": messages,
    }
