"""Compiling a check to DuckDB SQL: one query of (rows checked, rows failed), one of the failing rows.

Every check type is a function from the check to two SQL fragments, the rows it looks at and the rows that
fail; the two queries of a check are built from those alone, the same way for every type (as a dialect
in sqlglot overrides a table of transforms). Identifiers were validated when the check was parsed; values
from the rule set are inlined as typed literals made here, never pasted as text.
"""

# ruff: noqa: S608 - this module builds SQL from identifiers checked against a regex at parse time and
# from literals it quotes itself; rule-set SQL fragments (condition, where, sql) are the author's on purpose

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from clinhub.errors import InvalidInput
from clinhub.quality.checks import CODE_SYSTEMS, Check, Macro

PLACEHOLDER = re.compile(r"\{(as_of|(?:store|view)\.[A-Za-z_][A-Za-z0-9_]*)\}")


def literal(value: object) -> str:
    """A SQL literal for a rule-set value: a quoted string, a number or a date."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise InvalidInput(f"cannot use {value!r} as a SQL value")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Context:
    """What compiling needs from the run: how `store.x` and `view.x` tables resolve, the reference date."""

    resolve: Callable[[str], str]
    as_of: date

    def table(self, name: str) -> str:
        return self.resolve(name)

    def expand(self, text: str) -> str:
        """Replace `{as_of}`, `{store.table}` and `{view.name}` placeholders in rule-set SQL."""

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            return literal(self.as_of) if name == "as_of" else self.resolve(name)

        return PLACEHOLDER.sub(replace, text)

    def operand(self, name: str) -> str:
        return literal(self.as_of) if name == "as_of" else quote_identifier(name)


@dataclass(frozen=True)
class CompiledCheck:
    check: Check
    count_sql: str
    #: every failing row, ordered by the check's key (for exports)
    failing_sql: str
    #: failing rows in no particular order: LIMIT can stop at the first rows found
    unordered_sql: str

    def sample_sql(self, limit: int) -> str:
        return f"{self.unordered_sql} LIMIT {int(limit)}"


def _checked(check: Check, ctx: Context) -> str:
    """The rows a check looks at: its table, filtered by `where`."""
    sql = f"SELECT * FROM {ctx.table(check.table)}"
    if check.where:
        sql += f" WHERE ({ctx.expand(check.where)})"
    return sql


def _blank(column: str) -> str:
    c = quote_identifier(column)
    return f"({c} IS NULL OR trim(CAST({c} AS VARCHAR)) = '')"


def _required(check: Check, ctx: Context) -> str:
    return _blank(check.params["column"])


def _data_type(check: Check, ctx: Context) -> str:
    c = quote_identifier(check.params["column"])
    cast = f"TRY_CAST({c} AS {check.params['data_type']})"
    return f"{c} IS NOT NULL AND {cast} IS NULL"


def _regex(check: Check, ctx: Context) -> str:
    c = quote_identifier(check.params["column"])
    text, pattern = f"CAST({c} AS VARCHAR)", literal(check.params["pattern"])
    if check.params.get("mode", "must_match") == "must_match":
        test = f"NOT regexp_full_match({text}, {pattern})"
    else:
        test = f"regexp_matches({text}, {pattern})"
    return f"{c} IS NOT NULL AND trim({text}) <> '' AND {test}"


def _code_system(check: Check, ctx: Context) -> str:
    pattern = CODE_SYSTEMS[check.params["system"]]
    c = quote_identifier(check.params["column"])
    return (
        f"{c} IS NOT NULL AND trim(CAST({c} AS VARCHAR)) <> '' "
        f"AND NOT regexp_full_match(CAST({c} AS VARCHAR), {literal(pattern)})"
    )


def _value_set(check: Check, ctx: Context) -> str:
    c = quote_identifier(check.params["column"])
    values = ", ".join(literal(v) for v in check.params["values"])
    return f"{c} IS NOT NULL AND {c} NOT IN ({values})"


def _duplicates(columns: list[str], normalise: str) -> str:
    """Rows whose key another row shares: a semi-join on the keys that occur more than once (faster than
    a window count over every row)."""

    def norm(alias: str, column: str) -> str:
        c = f"{alias}{quote_identifier(column)}"
        return f"lower(trim(CAST({c} AS VARCHAR)))" if normalise == "lower_trim" else c

    keys = ", ".join(f"{norm('', c)} AS _k{n}" for n, c in enumerate(columns))
    not_null = " AND ".join(f"{quote_identifier(c)} IS NOT NULL" for c in columns)
    on = " AND ".join(f"d._k{n} = {norm('c.', c)}" for n, c in enumerate(columns))
    return (
        f"SELECT c.* FROM checked c SEMI JOIN (SELECT {keys} FROM checked WHERE {not_null} "
        f"GROUP BY ALL HAVING count(*) > 1) d ON {on}"
    )


def _unique(check: Check, ctx: Context) -> str:
    return _duplicates(check.params["columns"], check.params.get("normalise", "none"))


def _primary_key(check: Check, ctx: Context) -> str:
    columns = check.params["columns"]
    blanks = " OR ".join(f"{quote_identifier(c)} IS NULL" for c in columns)
    return f"{_duplicates(columns, 'none')} UNION ALL SELECT * FROM checked WHERE {blanks}"


def _foreign_key(check: Check, ctx: Context) -> str:
    pairs = list(zip(check.params["columns"], check.params["referenced_columns"], strict=True))
    on = " AND ".join(f"r.{quote_identifier(b)} = c.{quote_identifier(a)}" for a, b in pairs)
    present = " AND ".join(f"c.{quote_identifier(a)} IS NOT NULL" for a, _ in pairs)
    referenced = ctx.table(check.params["references"])
    return f"SELECT c.* FROM checked c ANTI JOIN {referenced} r ON {on} WHERE {present}"


def _null_percent(check: Check, ctx: Context) -> str:
    return _required(check, ctx)


def _value_range(check: Check, ctx: Context) -> str:
    c = quote_identifier(check.params["column"])
    tests = []
    if "min" in check.params:
        tests.append(f"{c} < {literal(check.params['min'])}")
    if "max" in check.params:
        tests.append(f"{c} > {literal(check.params['max'])}")
    return f"{c} IS NOT NULL AND ({' OR '.join(tests)})"


def _temporal_order(check: Check, ctx: Context) -> str:
    earlier, later = ctx.operand(check.params["earlier"]), ctx.operand(check.params["later"])
    if check.params.get("compare_as", "value") == "timestamp":
        # text such as FHIR's 2024-05-01T10:00:00+02:00 as an instant; what is not one becomes NULL
        earlier, later = f"TRY_CAST({earlier} AS TIMESTAMPTZ)", f"TRY_CAST({later} AS TIMESTAMPTZ)"
    op = ">=" if check.params.get("strict") else ">"
    present = f"{earlier} IS NOT NULL AND {later} IS NOT NULL"
    return f"{present} AND {earlier} {op} {later}"


def _cross_field(check: Check, ctx: Context) -> str:
    return f"({ctx.expand(check.params['condition'])}) IS NOT TRUE"


def _custom_sql(check: Check, ctx: Context) -> str:
    return f"SELECT * FROM ({ctx.expand(check.params['sql'])})"


#: check types whose failing rows are the checked rows matching a condition: counted in one pass
_ROW_CONDITIONS: dict[str, Callable[[Check, Context], str]] = {
    "data_type": _data_type,
    "regex": _regex,
    "value_set": _value_set,
    "required": _required,
    "code_system": _code_system,
    "null_percent": _null_percent,
    "value_range": _value_range,
    "temporal_order": _temporal_order,
    "cross_field": _cross_field,
}
#: check types whose failing rows come from a query over the checked rows (`checked`)
_FAILING: dict[str, Callable[[Check, Context], str]] = {
    "primary_key": _primary_key,
    "foreign_key": _foreign_key,
    "unique": _unique,
    "custom_sql": _custom_sql,
}


def _records_per_person(check: Check, ctx: Context) -> tuple[str, str]:
    """Persons (the rows checked) whose number of records in the check's table is out of [min, max]."""
    p = check.params
    key, fk = quote_identifier(p["person_key"]), quote_identifier(p["foreign_key"])
    persons = f"SELECT * FROM {ctx.table(p['person_table'])}"
    if p.get("person_where"):
        persons += f" WHERE ({ctx.expand(p['person_where'])})"
    records = _checked(check, ctx)
    counted = (
        f"SELECT person.{key} AS {key}, coalesce(n.records, 0) AS records FROM ({persons}) person "
        f"LEFT JOIN (SELECT {fk} AS k, count(*) AS records FROM ({records}) GROUP BY {fk}) n "
        f"ON n.k = person.{key}"
    )
    tests = []
    if "min" in p:
        tests.append(f"records < {literal(p['min'])}")
    if "max" in p:
        tests.append(f"records > {literal(p['max'])}")
    failing = f"SELECT * FROM counted WHERE {' OR '.join(tests) or 'FALSE'}"
    return f"WITH counted AS ({counted})", failing


def compile_check(check: Check, ctx: Context) -> CompiledCheck:
    """The two queries of `check`: `count_sql` gives (checked, failed); `failing_sql` the failing rows."""
    order = ""
    if check.key:
        order = " ORDER BY " + ", ".join(quote_identifier(k) for k in check.key)
    if check.type in _ROW_CONDITIONS:
        condition = _ROW_CONDITIONS[check.type](check, ctx)
        checked = _checked(check, ctx)
        count_sql = (
            f"SELECT count(*) AS checked, count(*) FILTER (WHERE {condition}) AS failed FROM ({checked})"
        )
        unordered_sql = f"SELECT * FROM ({checked}) WHERE {condition}"
        return CompiledCheck(check, count_sql, unordered_sql + order, unordered_sql)
    if check.type == "records_per_person":
        with_clause, failing = _records_per_person(check, ctx)
        base = "counted"
    else:
        with_clause = f"WITH checked AS ({_checked(check, ctx)})"
        failing = _FAILING[check.type](check, ctx)
        base = "checked"
    unordered_sql = f"{with_clause} SELECT * FROM ({failing})"
    count_sql = (
        f"{with_clause} SELECT (SELECT count(*) FROM {base}) AS checked, "
        f"(SELECT count(*) FROM ({failing})) AS failed"
    )
    return CompiledCheck(check, count_sql, unordered_sql + order, unordered_sql)


def macro_sql(macro: Macro) -> str:
    parameters = ", ".join(macro.parameters)
    return f"CREATE OR REPLACE MACRO {macro.name}({parameters}) AS ({macro.body})"
