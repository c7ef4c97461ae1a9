"""SQL dialects for the view compiler: each declares its SQL as tables of templates and a few methods."""

# ruff: noqa: S608
# (a compiler builds SQL from strings: names are generated, literals always go through `string()`)

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from clinhub.errors import ViewError

#: a callback that receives a fresh lambda parameter name (and its 1-based position) and returns the body
Body = Callable[[str], str]
IndexedBody = Callable[[str, str], str]


class Dialect:
    """The SQL a compiled view needs, spelled for one engine.

    Subclasses fill in `TYPES` (compiler type -> SQL type), `FUNCTIONS` (name -> template whose `{0}`,
    `{1}`, ... are SQL arguments) and `LAMBDA`, and override a method where a template cannot say it.
    A collection is a list of JSON values; a row set is a list of structs, one field per column.
    """

    name = "generic"
    TYPES: ClassVar[dict[str, str]] = {}
    FUNCTIONS: ClassVar[dict[str, str]] = {}
    LAMBDA = ""
    #: what the dialect's `json_type` answers for each kind of JSON value
    JSON_TYPES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init__(self) -> None:
        self._names = 0

    # ------------------------------------------------------------------ basics
    def func(self, name: str, *args: str) -> str:
        template = self.FUNCTIONS.get(name)
        if template is None:
            raise ViewError(f"the {self.name} dialect cannot compile {name}")
        return template.format(*args)

    def fresh(self, prefix: str = "x") -> str:
        self._names += 1
        return f"_{prefix}{self._names}"

    def string(self, value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    def identifier(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def sql_type(self, code: str) -> str:
        if code.endswith("[]"):
            return self.list_type(self.TYPES[code[:-2]])
        return self.TYPES[code]

    def list_type(self, element: str) -> str:
        return f"{element}[]"

    def cast(self, value: str, code: str) -> str:
        return f"CAST({value} AS {self.sql_type(code)})"

    def try_cast(self, value: str, code: str) -> str:
        """A cast that gives NULL instead of failing (FHIRPath compares unlike values as empty)."""
        return self.func("try_cast", value, self.sql_type(code))

    def null(self, code: str) -> str:
        return self.cast("NULL", code)

    def case(self, whens: Sequence[tuple[str, str]], default: str | None = None) -> str:
        parts = " ".join(f"WHEN {condition} THEN {result}" for condition, result in whens)
        tail = f" ELSE {default}" if default is not None else ""
        return f"CASE {parts}{tail} END"

    def error(self, message: str) -> str:
        return self.func("error", self.string(message))

    # ------------------------------------------------------------------ JSON
    def json_path(self, key: str) -> str:
        if key.isidentifier():
            return self.string(f"$.{key}")
        return self.string('$."' + key.replace('"', '\\"') + '"')

    def json_get(self, value: str, key: str) -> str:
        return self.func("json_get", value, self.json_path(key))

    def json_text(self, value: str) -> str:
        return self.func("json_text", value)

    def json_type(self, value: str) -> str:
        return self.func("json_type", value)

    def json_is(self, value: str, kind: str) -> str:
        """A condition: the JSON value is of `kind` (array, null, string, boolean, object, integer or
        number)."""
        names = ", ".join(self.string(name) for name in self.JSON_TYPES[kind])
        return f"{self.json_type(value)} IN ({names})"

    def to_json(self, value: str) -> str:
        return self.func("to_json", value)

    def json_items(self, value: str) -> str:
        """A JSON value as a collection: an array's non-null items, a scalar or object alone, null as none."""
        return self.case(
            [
                (f"{value} IS NULL OR {self.node_is(value, 'null')}", self.empty()),
                # a JSON null in an array becomes SQL NULL in the list
                (
                    self.node_is(value, "array"),
                    self.filter(self.cast(value, "json[]"), lambda e: f"{e} IS NOT NULL"),
                ),
            ],
            self.list_of([value]),
        )

    def node_is(self, node: str, kind: str) -> str:
        """`json_is` for a node the engine wrote itself (a root field or an extracted value), which a
        dialect may test more cheaply."""
        return self.json_is(node, kind)

    def json_step(self, key: str) -> str | None:
        """A member step of a JSON path (`.code`), or None for a key a path cannot name plainly."""
        return f".{key}" if key.isidentifier() else None

    def json_get_path(self, value: str, path: str) -> str:
        """The JSON value at a JSON path (`$.code.coding[0]`), NULL when absent."""
        return self.func("json_get", value, self.string(path))

    def json_text_path(self, value: str, path: str) -> str:
        return self.func("json_text_at", value, self.string(path))

    def json_one(self, value: str) -> str:
        """A condition: the node (see node_is) is one item, that is present and neither an array nor
        null."""
        return self.case(
            [(f"{value} IS NULL", "false")],
            f"NOT ({self.node_is(value, 'array')} OR {self.node_is(value, 'null')})",
        )

    def node_item(self, node: str, more: str | None) -> str:
        """The first item a node stands for (see `json_items`); `more` is the SQL for a node of several
        items (an error), or None to take the first."""
        items = self.filter(self.cast(node, "json[]"), lambda e: f"{e} IS NOT NULL")
        if more is None:
            first = self.element(items, "1")
        else:
            first = self.let(
                items,
                lambda found: self.case([(f"{self.length(found)} > 1", more)], self.element(found, "1")),
            )
        return self.case([(self.node_is(node, "array"), first), (self.node_is(node, "null"), "NULL")], node)

    def children(self, items: str, key: str) -> str:
        """Member access over a collection: each item's `key`, arrays flattened, missing skipped."""
        values = self.transform(items, lambda x: self.json_get(x, key))
        return self.flatten(self.transform(values, self.json_items))

    # ------------------------------------------------------------------ lists
    def empty(self, code: str = "json") -> str:
        return self.cast(self.func("list", ""), f"{code}[]")

    def list_of(self, items: Sequence[str]) -> str:
        return self.func("list", ", ".join(items))

    def transform(self, items: str, body: Body) -> str:
        name = self.fresh()
        return self.func("transform", items, self.lambda_([name], body(name)))

    def transform_indexed(self, items: str, body: IndexedBody) -> str:
        name, index = self.fresh(), self.fresh("i")
        return self.func("transform", items, self.lambda_([name, index], body(name, index)))

    def filter(self, items: str, body: Body) -> str:
        name = self.fresh()
        return self.func("filter", items, self.lambda_([name], body(name)))

    def filter_indexed(self, items: str, body: IndexedBody) -> str:
        name, index = self.fresh(), self.fresh("i")
        return self.func("filter", items, self.lambda_([name, index], body(name, index)))

    def let(self, value: str, body: Body) -> str:
        """`body` with `value` computed once and bound to a name (for values used more than once)."""
        return self.element(self.transform(self.list_of([value]), body), "1")

    def lambda_(self, params: Sequence[str], body: str) -> str:
        return self.LAMBDA.format(params=", ".join(params), body=body)

    def flatten(self, items: str) -> str:
        return self.func("flatten", items)

    def length(self, items: str) -> str:
        return self.func("len", items)

    def element(self, items: str, position: str) -> str:
        """The item at a 1-based position (negative counts from the end); NULL when out of range."""
        return self.func("element", items, position)

    def concat(self, *lists: str) -> str:
        result = lists[0]
        for other in lists[1:]:
            result = self.func("concat", result, other)
        return result

    # ------------------------------------------------------------------ rows
    def struct(self, fields: Sequence[tuple[str, str]]) -> str:
        return self.func("struct", ", ".join(f"{self.string(name)}: {sql}" for name, sql in fields))

    def struct_concat(self, left: str, right: str) -> str:
        return self.func("struct_concat", left, right)

    def field(self, struct: str, name: str) -> str:
        return self.func("field", struct, self.string(name))

    # ------------------------------------------------------------------ queries
    def root_field(self, number: int) -> str:
        return f"src._r{number}"

    def with_root_fields(self, source: str, paths: Sequence[str]) -> str:
        """The source as `src`: `resource` and its elements at `paths` as `_r1`, `_r2`, ... (one parse)."""
        fields = self.func("json_get_many", "src.resource", ", ".join(paths))
        columns = ", ".join(f"{self.element('_root', str(n))} AS _r{n}" for n in range(1, len(paths) + 1))
        extracted = f"SELECT src.resource, {fields} AS _root FROM {source} AS src"
        return f"(SELECT resource, {columns} FROM ({extracted}) AS src) AS src"

    def root_paths_field(self, number: int) -> str:
        return f"src._j{number}"

    def with_root_paths(self, relation: str, paths: dict[int, list[str]]) -> str:
        """`relation` (aliased `src`) with, per root field, the JSON values at some of its paths as a list
        `_jN` (one parse of the field for all the columns that read it)."""
        if not paths:
            return relation
        columns = ", ".join(
            self.func("json_get_many", self.root_field(n), ", ".join(self.string(p) for p in listed))
            + f" AS _j{n}"
            for n, listed in sorted(paths.items())
        )
        return f"(SELECT src.*, {columns} FROM {relation}) AS src"

    def with_field_columns(self, source: str, fields: Sequence[str]) -> str:
        """The source as `src` when it has one JSON column per element: they become `_r1`, `_r2`, ..."""
        columns = ", ".join(f"src.{self.identifier(key)} AS _r{n}" for n, key in enumerate(fields, start=1))
        return f"(SELECT {columns} FROM {source} AS src) AS src"

    def select_rows(
        self,
        columns: Sequence[tuple[str, str]],
        relation: str,
        where: Sequence[str],
        ctes: Sequence[str] = (),
    ) -> str:
        """One row per row of `relation` (aliased `src`): `columns` are (name, SQL)."""
        listed = ", ".join(f"{sql} AS {self.identifier(name)}" for name, sql in columns)
        return f"{self._with(ctes)}SELECT {listed} FROM {relation}{self._where(where)}"

    def select_unnested(
        self,
        rows: str,
        names: Sequence[str],
        relation: str,
        where: Sequence[str],
        ctes: Sequence[str] = (),
        once: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Many rows per row of `relation` (aliased `src`): `rows` is a list of structs; the columns
        `once` (name, SQL) have one value per row of `relation`, repeated on each of its rows."""
        row = self.fresh("row")
        fixed = {name for name, _ in once}
        listed = ", ".join(
            (
                self.identifier(name)
                if name in fixed
                else f"{self.field(row, name)} AS {self.identifier(name)}"
            )
            for name in names
        )
        computed = "".join(f"{sql} AS {self.identifier(name)}, " for name, sql in once)
        inner = f"SELECT {computed}{self.func('unnest', rows)} AS {row} FROM {relation}{self._where(where)}"
        return f"{self._with(ctes)}SELECT {listed} FROM ({inner}) AS {self.fresh('rows')}"

    def numbered_source(self, relation: str, where: Sequence[str]) -> str:
        """The CTE `_base`: the rows of `relation` (aliased `src`) that pass `where`, numbered `_rid`."""
        numbered = f"SELECT {self.func('row_number')} AS _rid, src.* FROM {relation}"
        return f"_base AS ({numbered}{self._where(where)})"

    def walk_cte(self, number: int, children: Callable[[str], list[str]], seeds: str | None = None) -> str:
        """CTEs for a `repeat`. `_walk{n}` visits every node reached by repeating the paths (`children`
        gives one node's children, one collection per path), keyed by the positions on the way so that
        sorting by key gives depth-first order. From the resource (`seeds` None), `_repeat{n}._nodes`
        lists them per resource; from the nodes of the collection `seeds`, it maps each to its list."""
        walk = f"_walk{number}"
        step = self.fresh("child")
        keyed = [
            self.transform_indexed(
                collection,
                lambda x, i, path=path: self.struct([("path", str(path)), ("position", i), ("node", x)]),
            )
            for path, collection in enumerate(children("_node"))
        ]
        key = self.func(
            "concat", "_key", self.list_of([self.field(step, "path"), self.field(step, "position")])
        )
        unnested = f"SELECT *, {self.func('unnest', self.concat(*keyed))} AS {step} FROM {walk}"
        node = self.field(step, "node")
        expand = f"SELECT _rid, _ctx, {key}, {node} FROM ({unnested}) AS {self.fresh('step')}"
        ordered = self.func("aggregate_ordered", "_node", "_key")
        found = f"coalesce({ordered} FILTER (WHERE {self.length('_key')} > 0), {self.empty()})"
        no_key = self.empty("integer64")
        if seeds is None:
            seed = f"SELECT _rid, {self.null('json')}, {no_key}, src.resource FROM _base AS src"
            nodes = f"SELECT _rid, {found} AS _nodes FROM {walk} GROUP BY _rid"
        else:
            starts = f"SELECT src._rid, {self.func('unnest', self.func('distinct', seeds))} AS _ctx"
            starts += f" FROM {self.join_walks(number - 1)}"
            seed = f"SELECT _rid, _ctx, {no_key}, _ctx FROM ({starts}) AS {self.fresh('seed')}"
            per_node = f"SELECT _rid, _ctx, {found} AS _found FROM {walk} GROUP BY _rid, _ctx"
            entries = self.func("aggregate", self.struct([("k", "_ctx"), ("v", "_found")]))
            nodes = f"SELECT _rid, {self.func('map', entries)} AS _nodes"
            nodes += f" FROM ({per_node}) AS {self.fresh('found')} GROUP BY _rid"
        return f"{walk}(_rid, _ctx, _key, _node) AS ({seed} UNION ALL {expand}), _repeat{number} AS ({nodes})"

    def walk_nodes(self, number: int) -> str:
        return f"coalesce(_repeat{number}._nodes, {self.empty()})"

    def walk_lookup(self, number: int, node: str) -> str:
        return f"coalesce({self.func('map_value', f'_repeat{number}._nodes', node)}, {self.empty()})"

    def join_walks(self, count: int) -> str:
        joins = "".join(f" LEFT JOIN _repeat{n} ON _repeat{n}._rid = src._rid" for n in range(1, count + 1))
        return f"_base AS src{joins}"

    def _with(self, ctes: Sequence[str]) -> str:
        return f"WITH RECURSIVE {', '.join(ctes)} " if ctes else ""

    @staticmethod
    def _where(conditions: Sequence[str]) -> str:
        return " WHERE " + " AND ".join(f"({c})" for c in conditions) if conditions else ""


class DuckDB(Dialect):
    """DuckDB: the JSON extension, lists with lambdas, structs, and `unnest` in the projection."""

    name = "duckdb"
    TYPES: ClassVar[dict[str, str]] = {
        "json": "JSON",
        "string": "VARCHAR",
        "boolean": "BOOLEAN",
        "integer": "INTEGER",
        "integer64": "BIGINT",
        "decimal": "DOUBLE",
    }
    LAMBDA = "lambda {params}: {body}"
    JSON_TYPES: ClassVar[dict[str, tuple[str, ...]]] = {
        "array": ("ARRAY",),
        "null": ("NULL",),
        "string": ("VARCHAR",),
        "boolean": ("BOOLEAN",),
        "object": ("OBJECT",),
        "integer": ("BIGINT", "UBIGINT"),
        "number": ("BIGINT", "UBIGINT", "DOUBLE"),
    }

    def node_is(self, node: str, kind: str) -> str:
        # DuckDB writes JSON minified, so the first character of a value it wrote tells an array or a
        # null without parsing the value
        if kind in ("array", "null"):
            return f"(left({node}, 1) = {self.string('[' if kind == 'array' else 'n')})"
        return self.json_is(node, kind)

    def json_one(self, value: str) -> str:
        return f"(left({value}, 1) NOT IN ('[', 'n'))"

    FUNCTIONS: ClassVar[dict[str, str]] = {
        "try_cast": "TRY_CAST({0} AS {1})",
        "json_get": "json_extract({0}, {1})",
        "json_get_many": "json_extract({0}, [{1}])",
        "json_text": "({0} ->> '$')",
        "json_text_at": "({0} ->> {1})",
        "json_type": "json_type({0})",
        "to_json": "to_json({0})",
        "list": "[{0}]",
        "transform": "list_transform({0}, {1})",
        "filter": "list_filter({0}, {1})",
        "flatten": "flatten({0})",
        "len": "len({0})",
        "element": "list_extract({0}, {1})",
        "concat": "list_concat({0}, {1})",
        "distinct": "list_distinct({0})",
        "contains": "list_contains({0}, {1})",
        "all_true": "list_bool_and({0})",
        "any_true": "list_bool_or({0})",
        "join": "array_to_string({0}, {1})",
        "struct": "{{{0}}}",
        "struct_concat": "struct_concat({0}, {1})",
        "field": "struct_extract({0}, {1})",
        "unnest": "unnest({0})",
        "error": "error({0})",
        "starts_with": "starts_with({0}, {1})",
        "ends_with": "ends_with({0}, {1})",
        "text_contains": "contains({0}, {1})",
        "upper": "upper({0})",
        "lower": "lower({0})",
        "text_length": "length({0})",
        "substring": "substring({0}, {1} + 1, {2})",
        "substring_rest": "substring({0}, {1} + 1)",
        "index_of": "(instr({0}, {1}) - 1)",
        "replace": "replace({0}, {1}, {2})",
        "matches": "regexp_matches({0}, {1})",
        "matches_full": "regexp_full_match({0}, {1})",
        "regex_extract": "regexp_extract({0}, {1}, {2})",
        # a JSON string "Type/id" ({1}: the pattern of Type/id); an id has no characters JSON escapes
        "is_plain_key": "regexp_full_match({0}, '\"' || {1} || '\"')",
        "plain_key": "substr({0}, 2, length({0}) - 2)",
        "trim": "trim({0})",
        "concat_text": "({0} || {1})",
        "mod": "({0} % {1})",
        "abs": "abs({0})",
        "ceiling": "ceil({0})",
        "floor": "floor({0})",
        "round": "round({0}, {1})",
        "truncate": "trunc({0})",
        "power": "power({0}, {1})",
        "sqrt": "sqrt({0})",
        "month_end": "strftime(last_day(CAST({0} || '-01' AS DATE)), '%Y-%m-%d')",
        "decimal_places": "length(regexp_extract({0}, '\\.([0-9]+)', 1))",
        "row_number": "row_number() OVER ()",
        "aggregate": "list({0})",
        "aggregate_ordered": "list({0} ORDER BY {1})",
        "map": "map_from_entries({0})",
        "map_value": "map_extract_value({0}, {1})",
    }


DIALECTS: dict[str, type[Dialect]] = {"duckdb": DuckDB}


def get_dialect(name: str) -> Dialect:
    """A fresh dialect instance (it numbers the lambda parameters of one compilation)."""
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ViewError(f"unknown SQL dialect {name!r}; known: {', '.join(sorted(DIALECTS))}") from None
