"""The view compiler: a ViewDefinition and its FHIRPath expressions become one SQL query of a dialect."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from clinhub.errors import ViewError
from clinhub.views import fhirpath as fp
from clinhub.views.dialects import Dialect, get_dialect
from clinhub.views.model import Column, Select, ViewDefinition, parse_view

_TEXT_PRIMITIVES = ("string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown")
#: FHIR primitive type -> (FHIRPath system type, column type code)
PRIMITIVES = {
    "boolean": ("Boolean", "boolean"),
    "integer": ("Integer", "integer"),
    "positiveInt": ("Integer", "integer"),
    "unsignedInt": ("Integer", "integer"),
    "integer64": ("Integer", "integer64"),
    "decimal": ("Decimal", "decimal"),
    "date": ("Date", "string"),
    "dateTime": ("DateTime", "string"),
    "instant": ("DateTime", "string"),
    "time": ("Time", "string"),
    **{name: ("String", "string") for name in (*_TEXT_PRIMITIVES, "base64Binary", "xhtml")},
}
#: FHIRPath system types by their own names, as in `ofType(System.String)`
SYSTEM_TYPES = {
    "String": ("String", "string"),
    "Boolean": ("Boolean", "boolean"),
    "Integer": ("Integer", "integer64"),
    "Decimal": ("Decimal", "decimal"),
    "Date": ("Date", "string"),
    "DateTime": ("DateTime", "string"),
    "Time": ("Time", "string"),
}
#: the column type code of a value whose FHIRPath type is known
TYPE_CODES = {name: code for name, code in SYSTEM_TYPES.values()}
TEXT_TYPES = frozenset({"String", "Date", "DateTime", "Time"})
NUMBER_TYPES = frozenset({"Integer", "Decimal"})
COMPARISONS = {"=": "=", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
#: a reference's key: the last Type/id of its URL, ignoring a trailing /_history/version
REFERENCE_KEY = r"([A-Z][A-Za-z]*/[A-Za-z0-9\-\.]{1,64})(/_history/[^/]+)?$"
#: a reference that is only the key of a resource of one type (filled in for {}), as most references are
PLAIN_KEY = r"{}/[A-Za-z0-9\-\.]{{1,64}}"
TEMPORAL = r"^([0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?)(?:T([0-9:.]*))?(Z|[+-][0-9]{2}:[0-9]{2})?$"
DATE = r"^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"
TIME = r"^[0-9]{2}(:|$)"
ROOT = "src.resource"

MANY, NODE, ONE = "many", "node", "one"


@dataclass(frozen=True)
class Value:
    """A compiled FHIRPath expression, in one of three shapes:

    - MANY: a collection, a list of JSON values (never NULL);
    - NODE: one JSON value read from a single node, standing for its items: an array for its elements,
      NULL or JSON null for none, anything else for itself (member access on one node stays cheap);
    - ONE: one value or NULL for empty; JSON when `json`, else native SQL of FHIRPath type `type`.

    `type` is the FHIRPath type of the items when it is known before run time. `chain` says how to read
    the value with one JSON path, `fast` gives a cheaper form of it outright (see Chain and Fast).
    """

    sql: str
    shape: str
    type: str | None = None
    json: bool = True
    chain: Chain | None = None
    fast: Fast | None = None


@dataclass(frozen=True)
class Chain:
    """A value reached from one node, `base`, by member access, first() and `[0]` (`steps` such as
    `.code` or `[0]`). Where every node on the way has its usual shape (an object where a member
    is read, an array where an element is taken), one JSON path reads it: `code.coding.first().code` is
    `code ->> '$.coding[0].code'` rather than lists built and filtered per resource. `root` numbers a
    root field, whose shapes are read once per resource; `item` says the base is one item, not an array.
    """

    base: str
    steps: tuple[str, ...] = ()
    root: int | None = None
    item: bool = False

    def then(self, step: str) -> Chain:
        return replace(self, steps=(*self.steps, step))


@dataclass(frozen=True)
class Fast:
    """A cheap form of a value, valid where `guard` holds: the collection then has one item, `json`,
    whose text is `text`; where `absent` holds it has none. Elsewhere the general form answers."""

    guard: str
    json: str
    text: str
    absent: str | None = None  # where this holds, the value is empty without further ado


def native(sql: str, fhirpath_type: str) -> Value:
    return Value(sql, ONE, fhirpath_type, json=False)


#: the items an iteration (forEach, repeat) yields for a focus: focus SQL -> collection SQL
Iterate = Callable[[str], str]


@dataclass(frozen=True)
class Scope:
    """What an expression is evaluated against: the focus ($this), %rowIndex and $index.

    `contexts`, inside an iteration, gives the SQL of every node the focus can be, as one collection per
    resource (a nested `repeat` expands them all at once); None at the resource itself.
    """

    focus: Value
    row_index: str
    index: str | None = None
    contexts: Callable[[], str] | None = None


@dataclass
class Rows:
    """The rows a select node yields for one focus: one row (column SQL) or a list of structs."""

    columns: list[tuple[str, str]]  # (name, type code)
    single: list[str] | None = None
    many: str = ""


@dataclass(frozen=True)
class OutputColumn:
    name: str
    type: str  # a type code: string, boolean, integer, integer64, decimal or json
    collection: bool


@dataclass(frozen=True)
class CompiledView:
    """A compiled view. `sql` reads a relation with a JSON column `resource`. When the view reads only
    top-level elements of the resource (most views), `fields` names them and `fields_sql` reads a
    relation with one JSON column per element instead, which a reader can fill without keeping the
    resource's text (DuckDB's read_json with `columns`)."""

    sql: str
    columns: list[OutputColumn]
    resource: str
    fields: tuple[str, ...] | None = None
    fields_sql: str | None = None


def compile_view(view: dict | ViewDefinition, dialect: str = "duckdb", source: str = "source") -> str:
    """The SQL of a view; `source` names the relation it reads, with one JSON column `resource`."""
    return compile_definition(view, dialect, source).sql


def compile_definition(
    view: dict | ViewDefinition, dialect: str = "duckdb", source: str = "source"
) -> CompiledView:
    """The SQL of a view and its output columns (name, type code, collection)."""
    definition = view if isinstance(view, ViewDefinition) else parse_view(view)
    return Compiler(definition, get_dialect(dialect)).compile(source)


class Compiler:
    """Compiles one ViewDefinition: FHIRPath nodes compile to `Value`s, select nodes to `Rows`."""

    def __init__(self, view: ViewDefinition, dialect: Dialect) -> None:
        self.view = view
        self.d = dialect
        self.root_keys: list[str] = []  # top-level elements read from the resource, in extraction order
        self.walks: list[str] = []  # CTEs expanding `repeat`, each joined back by row number
        self.root_paths: dict[int, list[str]] = {}  # root field -> JSON paths read from it for each row
        self.cheap: set[str] = set()  # SQL that reads a column of the relation: cheap to repeat

    # ================================================================== the view
    def compile(self, source: str) -> CompiledView:
        scope = Scope(Value(ROOT, ONE), row_index="0")
        resource_type = self.d.json_text(self.member(scope.focus, "resourceType").sql)
        conditions = [f"{resource_type} = {self.d.string(self.view.resource)}"]
        wheres = []
        for item in self.view.where:
            value = self.expression(item.expression, scope, f"{item.location}/path")
            wheres.append(self.boolean(value, strict=f"where path {item.path!r} must return a boolean"))
        if wheres:
            # CASE, not AND: the engine may reorder a conjunction, and a where path must never raise an
            # error for a resource of another type
            conditions = [self.d.case([(conditions[0], " AND ".join(wheres))], "false")]
        parts = [self.select(node, scope) for node in self.view.select]
        codes = dict(column for part in parts for column in part.columns)
        columns = [
            OutputColumn(c.name, codes[c.name].removesuffix("[]"), codes[c.name].endswith("[]"))
            for c in self.view.columns()
        ]
        names = [c.name for c in columns]
        # one row per resource (columns outside any iteration) stays out of the lists: those columns are
        # computed once per resource and repeated by unnest, never copied into every row's struct
        fixed = [part for part in parts if part.single is not None]
        spread = [part for part in parts if part.single is None]
        rows = (
            self.product(fixed) if fixed else None,
            self.product(spread) if spread else None,
        )
        paths = [self.d.json_path(key) for key in self.root_keys]
        relation = self.d.with_root_paths(self.d.with_root_fields(source, paths), self.root_paths)
        sql = self.query(rows, names, relation, conditions)
        body = [
            *(rows[0].single if rows[0] else []),
            rows[1].many if rows[1] else "",
            *conditions,
            *self.walks,
        ]
        fields: tuple[str, ...] | None = tuple(self.root_keys)
        if any(ROOT in part for part in body) or len({k.lower() for k in self.root_keys}) < len(fields):
            # the view needs the whole resource, or two of its elements differ only by case (DuckDB
            # names columns case-insensitively)
            fields = None
        fields_sql = None
        if fields is not None:
            relation = self.d.with_root_paths(self.d.with_field_columns(source, fields), self.root_paths)
            fields_sql = self.query(rows, names, relation, conditions)
        return CompiledView(sql, columns, self.view.resource, fields, fields_sql)

    def query(
        self, rows: tuple[Rows | None, Rows | None], names: list[str], relation: str, conditions: list[str]
    ) -> str:
        """The view's SELECT over `relation` (aliased `src`, holding the root fields `_r1`, `_r2`...):
        `rows` are the columns with one row per resource and those of the iterations."""
        ctes: list[str] = []
        if self.walks:
            ctes = [self.d.numbered_source(relation, conditions), *self.walks]
            relation, conditions = self.d.join_walks(len(self.walks)), []
        fixed, spread = rows
        once = (
            [(name, sql) for (name, _), sql in zip(fixed.columns, fixed.single or [], strict=True)]
            if fixed
            else []
        )
        if spread is None:
            by_name = dict(once)
            return self.d.select_rows([(name, by_name[name]) for name in names], relation, conditions, ctes)
        return self.d.select_unnested(spread.many, names, relation, conditions, ctes, once)

    # ================================================================== select nodes
    def select(self, node: Select, scope: Scope) -> Rows:
        if node.repeat:
            iterate = self.walk(node, scope)
            items, item_type = iterate(scope.focus.sql), None
        elif node.for_each is not None:
            location = f"{node.location}/{'forEachOrNull' if node.or_null else 'forEach'}"
            iterated = self.expression(node.for_each, scope, location)
            items, item_type = self.items(iterated), iterated.type

            def iterate(focus: str) -> str:
                return self.items(self.expression(node.for_each, Scope(Value(focus, ONE), "0"), location))

        else:
            return self.body(node, scope)
        contexts = self.contexts(scope, iterate)
        if node.or_null:
            # one row with an empty focus when there is nothing to iterate
            nothing = self.d.list_of([self.d.null("json")])
            items = self.d.let(items, lambda c: self.d.case([(f"{self.d.length(c)} = 0", nothing)], c))
        found: list[Rows] = []

        def each(item: str, position: str) -> str:
            inner = Scope(Value(item, ONE, item_type), row_index=f"({position} - 1)", contexts=contexts)
            found.append(self.body(node, inner))
            return self.as_list(found[0]) if found[0].single is None else self.struct(found[0])

        rows = self.d.transform_indexed(items, each)
        return Rows(found[0].columns, many=rows if found[0].single is not None else self.d.flatten(rows))

    def body(self, node: Select, scope: Scope) -> Rows:
        parts: list[Rows] = []
        if node.columns:
            compiled = [self.column(column, scope) for column in node.columns]
            names = [column.name for column in node.columns]
            columns = [(name, code) for name, (_, code) in zip(names, compiled, strict=True)]
            parts.append(Rows(columns, single=[sql for sql, _ in compiled]))
        parts += [self.select(child, scope) for child in node.selects]
        if node.union_all:
            parts.append(self.union(node, scope))
        return self.product(parts)

    def union(self, node: Select, scope: Scope) -> Rows:
        branches = [self.select(branch, scope) for branch in node.union_all]
        expected = branches[0].columns
        for i, branch in enumerate(branches[1:], start=1):
            for (name, code), (_, other) in zip(expected, branch.columns, strict=True):
                if code != other:
                    raise ViewError(
                        f"{node.location}/unionAll/{i}: column {name!r} is {other} here but {code} in the"
                        " first branch; give the columns the same type"
                    )
        return Rows(expected, many=self.d.concat(*(self.as_list(branch) for branch in branches)))

    def product(self, parts: Sequence[Rows]) -> Rows:
        """Every combination of the parts' rows (for one focus), columns in order."""
        result = parts[0]
        for part in parts[1:]:
            result = self.cross(result, part)
        return result

    def cross(self, left: Rows, right: Rows) -> Rows:
        columns = left.columns + right.columns
        if left.single is not None and right.single is not None:
            return Rows(columns, single=left.single + right.single)
        if left.single is not None or right.single is not None:
            # the one row is computed once, outside the loop over the other side's rows
            one, others = (left, right) if left.single is not None else (right, left)

            def joined(row: str) -> str:
                return self.d.transform(
                    others.many,
                    lambda r: self.d.struct_concat(row, r) if one is left else self.d.struct_concat(r, row),
                )

            return Rows(columns, many=self.d.let(self.struct(one), joined))

        def pairs(right_rows: str) -> str:
            return self.d.flatten(
                self.d.transform(
                    left.many,
                    lambda r: self.d.transform(right_rows, lambda o: self.d.struct_concat(r, o)),
                )
            )

        return Rows(columns, many=self.d.let(right.many, pairs))

    def struct(self, rows: Rows) -> str:
        return self.d.struct(
            [(name, sql) for (name, _), sql in zip(rows.columns, rows.single or [], strict=True)]
        )

    def as_list(self, rows: Rows) -> str:
        return self.d.list_of([self.struct(rows)]) if rows.single is not None else rows.many

    def contexts(self, scope: Scope, iterate: Iterate) -> Callable[[], str]:
        """Every node an iteration in `scope` yields, per resource (built only if a nested repeat asks)."""
        if scope.contexts is None:
            return lambda: iterate(ROOT)
        outer = scope.contexts
        return lambda: self.d.flatten(self.d.transform(outer(), iterate))

    def walk(self, node: Select, scope: Scope) -> Iterate:
        """A `repeat`: a recursive CTE of the nodes reached by repeating the paths, in depth-first order.
        At the resource it is one list per resource; deeper, a map from each node it starts at."""
        number = len(self.walks) + 1

        def children(parent: str) -> list[str]:
            inner = Scope(Value(parent, ONE), "0")
            return [
                self.items(self.expression(path, inner, f"{node.location}/repeat/{i}"))
                for i, path in enumerate(node.repeat)
            ]

        if scope.contexts is None:
            self.walks.append(self.d.walk_cte(number, children))
            return lambda _: self.d.walk_nodes(number)
        self.walks.append(self.d.walk_cte(number, children, seeds=scope.contexts()))
        return lambda focus: self.d.walk_lookup(number, focus)

    def column(self, column: Column, scope: Scope) -> tuple[str, str]:
        """The SQL of a column and its type code (`string`, or `string[]` for a collection)."""
        value = self.expression(column.expression, scope, f"{column.location}/path")
        code = self.column_code(column, value)
        if column.collection:
            converted = self.d.transform(
                self.items(value), lambda x: self.convert(Value(x, ONE, value.type), code)
            )
            return converted, f"{code}[]"
        what = f"column {column.name!r} (path {column.path!r}) returned more than one value"
        what += "; set collection to true"
        if code == "string" and value.json:
            return self.text(value, what), code
        single = Value(self.single(value, what), ONE, value.type, json=value.json)
        return self.convert(single, code), code

    def column_code(self, column: Column, value: Value) -> str:
        """A declared type picks the column's SQL type; else the expression's type if known, else JSON."""
        if column.type is not None:
            # a type may be a StructureDefinition URL (.../StructureDefinition/string); complex types are JSON
            name = column.type.rsplit("/", 1)[-1]
            return PRIMITIVES.get(name, ("", "json"))[1]
        return TYPE_CODES.get(value.type or "", "json")

    # ================================================================== shapes and conversions
    def items(self, value: Value) -> str:
        """A value as a collection (a list of JSON values)."""
        if value.shape == MANY:
            return value.sql
        if value.shape == NODE:
            return self.bind(value.sql, self.d.json_items)
        item = value.sql if value.json else self.d.to_json(value.sql)
        return self.bind(item, lambda x: self.d.case([(f"{x} IS NULL", self.d.empty())], self.d.list_of([x])))

    def single(self, value: Value, what: str) -> str:
        """The one value (JSON unless native), NULL if empty; more than one is an error at run time."""
        fast = self.fast(value)
        if fast is None:
            return self.single_general(value, what)
        if fast.guard == "true":
            return fast.json
        return self.d.case(self.fast_cases(fast, fast.json), self.single_general(value, what))

    def fast_cases(self, fast: Fast, result: str) -> list[tuple[str, str]]:
        cases = [(fast.absent, "NULL")] if fast.absent else []
        return [*cases, (fast.guard, result)]

    def single_general(self, value: Value, what: str) -> str:
        if value.shape == ONE:
            return value.sql
        if value.shape == NODE:
            return self.bind(value.sql, lambda j: self.d.node_item(j, self.d.error(what)))
        return self.d.let(
            value.sql,
            lambda c: self.d.case([(f"{self.d.length(c)} > 1", self.d.error(what))], self.d.element(c, "1")),
        )

    def bind(self, sql: str, body: Callable[[str], str]) -> str:
        """`body` over `sql`, binding it to a name first unless it is cheap to repeat."""
        return body(sql) if _simple(sql) or sql in self.cheap else self.d.let(sql, body)

    def convert(self, value: Value, code: str) -> str:
        """A single value (shape ONE) as SQL of a column type code."""
        if not value.json:
            if code == "json":
                return self.d.to_json(value.sql)
            return value.sql if code == TYPE_CODES[value.type or "String"] else self.d.cast(value.sql, code)
        if code == "json":
            return value.sql
        if code == "string":
            return self.d.json_text(value.sql)
        return self.d.cast(value.sql, code)

    def text(self, value: Value, what: str = "a text operand has more than one value") -> str:
        """A single value as SQL text."""
        fast = self.fast(value)
        if value.json and fast is not None:
            if fast.guard == "true":
                return fast.text
            general = self.d.json_text(self.single_general(value, what))
            return self.d.case(self.fast_cases(fast, fast.text), general)
        sql = self.single(value, what)
        if value.json:
            return self.d.json_text(sql)
        return sql if value.type in TEXT_TYPES else self.d.cast(sql, "string")

    # ------------------------------------------------------------------ JSON paths (Chain and Fast)
    def fast(self, value: Value) -> Fast | None:
        if value.fast is not None:
            return value.fast
        if value.chain is None or not value.json:
            return None
        return self.chain_fast(value.chain)

    def chain_of(self, value: Value) -> Chain | None:
        """The value's chain, or a new one starting at it when it is one JSON node named by simple SQL."""
        if value.chain is not None:
            return value.chain
        if value.json and value.shape in (ONE, NODE) and value.sql != ROOT and _simple(value.sql):
            return Chain(value.sql, item=value.shape == ONE)
        return None

    def chain_fast(self, chain: Chain) -> Fast:
        """The value at the chain's JSON path, valid where it is one item: not an array (several items)
        and not absent or null. A path reads a member only from an object and an element only from an
        array, so any other shape on the way leaves it absent, and the general form decides."""
        path = "$" + "".join(chain.steps)
        if chain.root is not None and chain.steps:
            found = self.root_value(chain.root, path)
            return Fast(self.d.json_one(found), found, self.d.json_text(found), f"{chain.base} IS NULL")
        if not chain.steps:
            absent = f"{chain.base} IS NULL" if chain.root is not None else None
            return Fast(self.d.json_one(chain.base), chain.base, self.d.json_text(chain.base), absent)
        found = self.d.json_get_path(chain.base, path)
        return Fast(self.d.json_one(found), found, self.d.json_text_path(chain.base, path))

    def root_value(self, root: int, path: str) -> str:
        """The JSON value at `path` of root field `root`, read once per resource with its other paths."""
        paths = self.root_paths.setdefault(root, [])
        if path not in paths:
            paths.append(path)
        found = self.d.element(self.d.root_paths_field(root), str(paths.index(path) + 1))
        self.cheap.add(found)
        return found

    def number(self, value: Value) -> str:
        sql = self.single(value, "a numeric operand has more than one value")
        if not value.json:
            return sql
        return self.d.try_cast(sql, "integer64" if value.type == "Integer" else "decimal")

    def as_boolean(self, value: Value) -> str:
        sql = self.single(value, "a boolean operand has more than one value")
        return self.d.try_cast(sql, "boolean") if value.json else sql

    def boolean(self, value: Value, strict: str | None = None) -> str:
        """A value as SQL BOOLEAN (NULL for empty). FHIRPath takes one non-boolean value as true; a
        view's `where` (`strict`) must return a boolean."""
        otherwise = self.d.error(strict) if strict else "true"
        if not value.json:
            if value.type == "Boolean":
                return value.sql
            return self.d.case([(f"{value.sql} IS NULL", "NULL")], otherwise)

        def as_boolean(x: str) -> str:
            return self.d.case(
                [(self.d.json_is(x, "boolean"), self.d.cast(x, "boolean")), (f"{x} IS NULL", "NULL")],
                otherwise,
            )

        general = self.bind(
            self.single_general(value, strict or "a boolean operand has more than one value"), as_boolean
        )
        fast = self.fast(value)
        if fast is None:
            return general
        return self.d.case(self.fast_cases(fast, self.bind(fast.json, as_boolean)), general)

    # ================================================================== FHIRPath
    def expression(self, node: fp.Node, scope: Scope, location: str) -> Value:
        try:
            return self.compile_node(node, scope)
        except ViewError as exc:
            if exc.message.startswith("/"):
                raise
            raise ViewError(f"{location}: {exc.message}") from None

    def compile_node(self, node: fp.Node, scope: Scope) -> Value:
        if isinstance(node, fp.Literal):
            return self.literal(node)
        if isinstance(node, fp.Empty):
            return Value(self.d.empty(), MANY)
        if isinstance(node, fp.Constant):
            return self.constant(node, scope)
        if isinstance(node, fp.Variable):
            return self.variable(node, scope)
        if isinstance(node, fp.Identifier):
            if node.name == self.view.resource and scope.focus.sql == ROOT:
                return scope.focus
            return self.member(scope.focus, node.name)
        if isinstance(node, fp.Member):
            return self.member(self.compile_node(node.target, scope), node.name)
        if isinstance(node, fp.Index):
            return self.index(node, scope)
        if isinstance(node, fp.Unary):
            operand = self.compile_node(node.operand, scope)
            return native(f"(-{self.number(operand)})", "Integer" if operand.type == "Integer" else "Decimal")
        if isinstance(node, fp.Binary):
            return self.binary(node, scope)
        if isinstance(node, fp.TypeTest):
            return self.type_test(node.op, node.target, node.type_name, scope)
        if isinstance(node, fp.Call):
            return self.call(node, scope)
        assert isinstance(node, fp.Quantity)
        raise ViewError(
            f"quantity literals ({node.value} {node.unit!r}) are not supported, at position {node.pos}"
        )

    def literal(self, node: fp.Literal) -> Value:
        if node.type == "Boolean":
            return native("true" if node.value else "false", "Boolean")
        if node.type == "Integer":
            return native(str(node.value), "Integer")
        if node.type == "Decimal":
            return native(self.d.cast(str(node.value), "decimal"), "Decimal")
        text = str(node.value)
        return native(self.d.string(text[1:] if node.type == "Time" else text), node.type)

    def constant(self, node: fp.Constant, scope: Scope) -> Value:
        if node.name == "rowIndex":
            return native(scope.row_index, "Integer")
        if node.name in ("resource", "rootResource"):
            return Value(ROOT, ONE)
        constant = self.view.constants.get(node.name)
        if constant is None:
            raise ViewError(f"%{node.name} is not a constant of this view")
        fhirpath_type = PRIMITIVES[constant.type][0]
        return native(self.sql_literal(constant.value, fhirpath_type), fhirpath_type)

    def sql_literal(self, value: Any, fhirpath_type: str) -> str:
        if fhirpath_type == "Boolean":
            return "true" if value else "false"
        if fhirpath_type == "Integer":
            return str(int(value))
        if fhirpath_type == "Decimal":
            return self.d.cast(repr(float(value)), "decimal")
        return self.d.string(str(value))

    def variable(self, node: fp.Variable, scope: Scope) -> Value:
        if node.name == "this":
            return scope.focus
        if node.name == "index" and scope.index is not None:
            return native(scope.index, "Integer")
        raise ViewError(f"${node.name} is not available here, at position {node.pos}")

    def member(self, value: Value, name: str, type_name: str | None = None) -> Value:
        if not value.json:
            return Value(self.d.empty(), MANY)  # primitives have no members
        if value.sql == ROOT:
            if name not in self.root_keys:
                self.root_keys.append(name)
            number = self.root_keys.index(name) + 1
            field = self.d.root_field(number)
            return Value(field, NODE, type_name, chain=Chain(field, root=number))
        chain = self.chain_of(value)
        step = self.d.json_step(name)
        chain = chain.then(step) if chain is not None and step is not None else None
        if value.shape == ONE:
            return Value(self.d.json_get(value.sql, name), NODE, type_name, chain=chain)
        return Value(self.d.children(self.items(value), name), MANY, type_name, chain=chain)

    def index(self, node: fp.Index, scope: Scope) -> Value:
        target = self.compile_node(node.target, scope)
        position = self.compile_node(node.index, scope)
        if position.type != "Integer":
            raise ViewError(f"an index must be an integer, at position {node.index.pos}")
        offset = self.single(position, "an index has more than one value")
        if not _simple(offset):
            offset = f"({offset})"
        element = self.d.element(self.items(target), f"{offset} + 1")
        if not offset.isdigit():
            element = self.d.case([(f"{offset} < 0", "NULL")], element)
            return Value(element, ONE, target.type)
        # only [0] reads by a JSON path: a path counts null elements, which FHIRPath skips
        chain = self.chain_of(target) if offset == "0" else None
        return Value(element, ONE, target.type, chain=chain.then("[0]") if chain is not None else None)

    # ------------------------------------------------------------------ operators
    def binary(self, node: fp.Binary, scope: Scope) -> Value:
        left = self.compile_node(node.left, scope)
        right = self.compile_node(node.right, scope)
        op = node.op
        if op in ("and", "or", "xor", "implies"):
            a, b = self.boolean(left), self.boolean(right)
            logic = {"and": f"({a} AND {b})", "or": f"({a} OR {b})", "xor": f"({a} <> {b})"}
            return native(logic.get(op, f"((NOT {a}) OR {b})"), "Boolean")
        if op in ("=", "!="):
            return self.equality(op, left, right)
        if op in ("~", "!~"):
            return self.equivalence(op, left, right)
        if op in COMPARISONS:
            return native(self.compare(op, left, right), "Boolean")
        if op == "|":
            union = self.d.func("distinct", self.d.concat(self.items(left), self.items(right)))
            return Value(union, MANY, left.type if left.type == right.type else None)
        if op in ("in", "contains"):
            element, collection = (left, right) if op == "in" else (right, left)
            return self.membership(element, collection)
        if op == "&":
            parts = (f"coalesce({self.text(side)}, '')" for side in (left, right))
            return native(self.d.func("concat_text", *parts), "String")
        return self.arithmetic(op, left, right, node.pos)

    def kind(self, left: Value, right: Value) -> str | None:
        """How two values compare: as booleans, numbers or text; None when only the data can tell."""
        types = {left.type, right.type} - {None}
        if "Boolean" in types:
            return "boolean"
        if types & NUMBER_TYPES:
            return "number"
        if types & TEXT_TYPES:
            return "text"
        return None

    def compare(self, op: str, left: Value, right: Value) -> str:
        kind = self.kind(left, right)
        symbol = COMPARISONS[op]
        if kind == "number":
            return f"({self.number(left)} {symbol} {self.number(right)})"
        if kind == "text":
            return f"({self.text(left)} {symbol} {self.text(right)})"
        if kind == "boolean":
            return f"({self.as_boolean(left)} {symbol} {self.as_boolean(right)})"
        a = self.single(left, "a comparison operand has more than one value")
        b = self.single(right, "a comparison operand has more than one value")

        def dynamic(x: str, y: str) -> str:
            both_numbers = f"{self.d.json_is(x, 'number')} AND {self.d.json_is(y, 'number')}"
            as_numbers = f"{self.d.cast(x, 'decimal')} {symbol} {self.d.cast(y, 'decimal')}"
            return self.d.case(
                [(both_numbers, as_numbers)], f"{self.d.json_text(x)} {symbol} {self.d.json_text(y)}"
            )

        return self.bind(a, lambda x: self.bind(b, lambda y: dynamic(x, y)))

    def equality(self, op: str, left: Value, right: Value) -> Value:
        if left.shape == ONE and right.shape == ONE:
            return native(self.compare(op, left, right), "Boolean")
        general = self.general_equality(op, left, right)
        for one, other in ((left, right), (right, left)):
            fast = self.fast(one)
            if fast is not None and other.shape == ONE:
                # at most one item where the guard holds: compare it as a single value
                item = Value(fast.json, ONE, one.type, fast=Fast("true", fast.json, fast.text))
                compared = self.compare(op, item, other)
                return native(self.d.case(self.fast_cases(fast, compared), general.sql), "Boolean")
        return general

    def general_equality(self, op: str, left: Value, right: Value) -> Value:
        if {left.shape, right.shape} == {NODE, ONE}:
            # a node of several items never equals one value; otherwise compare its item
            node, other = (left, right) if left.shape == NODE else (right, left)

            def against(j: str) -> str:
                item = Value(self.d.node_item(j, None), ONE, node.type)
                several = f"{self.d.node_is(j, 'array')} AND {self.d.length(self.d.json_items(j))} > 1"
                return self.d.case([(several, "false")], self.compare("=", item, other))

            result = self.bind(node.sql, against)
            return native(result if op == "=" else f"(NOT {result})", "Boolean")

        # FHIRPath compares collections item by item; most paths hold one item, compared by its type
        def equal(a: str, b: str) -> str:
            first = (
                Value(self.d.element(side, "1"), ONE, value.type) for side, value in ((a, left), (b, right))
            )
            result = self.d.case(
                [
                    (f"{self.d.length(a)} = 0 OR {self.d.length(b)} = 0", "NULL"),
                    (f"{self.d.length(a)} = 1 AND {self.d.length(b)} = 1", self.compare("=", *first)),
                ],
                f"{a} = {b}",
            )
            return result if op == "=" else f"(NOT {result})"

        return native(
            self.d.let(self.items(left), lambda a: self.d.let(self.items(right), lambda b: equal(a, b))),
            "Boolean",
        )

    def equivalence(self, op: str, left: Value, right: Value) -> Value:
        kind = self.kind(left, right)
        if kind == "number":
            a, b = self.number(left), self.number(right)
        elif kind == "boolean":
            a, b = self.as_boolean(left), self.as_boolean(right)
        else:
            a, b = (self.d.func("lower", self.d.func("trim", self.text(side))) for side in (left, right))

        def same(x: str, y: str) -> str:
            return self.d.case(
                [(f"{x} IS NULL AND {y} IS NULL", "true"), (f"{x} IS NULL OR {y} IS NULL", "false")],
                f"{x} = {y}",
            )

        result = self.bind(a, lambda x: self.bind(b, lambda y: same(x, y)))
        return native(result if op == "~" else f"(NOT {result})", "Boolean")

    def membership(self, element: Value, collection: Value) -> Value:
        kind = self.kind(element, collection)
        items = self.items(collection)
        if kind == "number":
            needle = self.number(element)
            haystack = self.d.transform(items, lambda x: self.d.try_cast(x, "decimal"))
        elif kind == "boolean":
            needle = self.as_boolean(element)
            haystack = self.d.transform(items, lambda x: self.d.try_cast(x, "boolean"))
        else:
            needle, haystack = self.text(element), self.d.transform(items, self.d.json_text)
        found = self.bind(
            needle, lambda n: self.d.case([(f"{n} IS NULL", "NULL")], self.d.func("contains", haystack, n))
        )
        return native(found, "Boolean")

    def arithmetic(self, op: str, left: Value, right: Value, position: int) -> Value:
        if op == "+" and self.kind(left, right) == "text":
            return native(self.d.func("concat_text", self.text(left), self.text(right)), "String")
        if {left.type, right.type} & {"Date", "DateTime", "Time"}:
            raise ViewError(f"date and time arithmetic is not supported, at position {position}")
        integers = left.type == right.type == "Integer"
        a, b = self.number(left), self.number(right)
        if op == "/":
            return native(f"({self.d.cast(a, 'decimal')} / nullif({b}, 0))", "Decimal")
        if op == "div":
            return native(
                self.d.cast(self.d.func("truncate", f"({a} / nullif({b}, 0))"), "integer64"), "Integer"
            )
        result = self.d.func("mod", a, f"nullif({b}, 0)") if op == "mod" else f"({a} {op} {b})"
        return native(result, "Integer" if integers else "Decimal")

    # ------------------------------------------------------------------ types
    def type_test(self, op: str, target: fp.Node, type_name: str, scope: Scope) -> Value:
        typed = self.of_type(target, type_name, scope)
        if op == "as":
            return Value(self.single(typed, f"'as {type_name}' applies to one value"), ONE, typed.type)
        return native(f"({self.d.length(self.items(typed))} > 0)", "Boolean")

    def of_type(self, target: fp.Node | None, type_name: str, scope: Scope) -> Value:
        """Items of a type. After a member `x`, a FHIR choice element is read as `x` + type (valueString)."""
        name = type_name.split(".")[-1]
        fhirpath_type = PRIMITIVES.get(name, SYSTEM_TYPES.get(name, (None, "")))[0]
        is_resource = isinstance(target, fp.Identifier) and target.name == self.view.resource
        if isinstance(target, fp.Identifier | fp.Member) and not is_resource:
            owner = (
                scope.focus if isinstance(target, fp.Identifier) else self.compile_node(target.target, scope)
            )
            return self.member(owner, target.name + name[0].upper() + name[1:], fhirpath_type)
        value = scope.focus if target is None else self.compile_node(target, scope)
        kept = self.d.filter(self.items(value), lambda x: self.type_check(x, name))
        return Value(kept, MANY, fhirpath_type)

    def type_check(self, item: str, name: str) -> str:
        """Whether a JSON item is of a type: primitives by their JSON kind, resources by resourceType."""
        fhirpath_type = PRIMITIVES.get(name, SYSTEM_TYPES.get(name, (None, "")))[0]
        if fhirpath_type is None:
            return f"{self.d.json_text(self.d.json_get(item, 'resourceType'))} = {self.d.string(name)}"
        kind = {"Boolean": "boolean", "Integer": "integer", "Decimal": "number"}.get(fhirpath_type, "string")
        return self.d.json_is(item, kind)

    # ------------------------------------------------------------------ functions
    def call(self, node: fp.Call, scope: Scope) -> Value:
        spec = FUNCTIONS.get(node.name)
        if spec is None:
            raise ViewError(f"unknown or unsupported FHIRPath function {node.name}(), at position {node.pos}")
        low, high, method = spec
        if not low <= len(node.args) <= high:
            expected = str(low) if low == high else f"{low} to {high}"
            raise ViewError(
                f"{node.name}() takes {expected} argument(s), got {len(node.args)}, at position {node.pos}"
            )
        if node.name in ("ofType", "is", "as"):
            return method(self, node, scope)
        target = scope.focus if node.target is None else self.compile_node(node.target, scope)
        return method(self, target, node, scope)

    def type_argument(self, node: fp.Call) -> str:
        arg = node.args[0]
        if isinstance(arg, fp.Identifier):
            return arg.name
        if isinstance(arg, fp.Member) and isinstance(arg.target, fp.Identifier):
            return f"{arg.target.name}.{arg.name}"
        raise ViewError(f"{node.name}() needs a type name, at position {arg.pos}")

    def fn_of_type(self, node: fp.Call, scope: Scope) -> Value:
        return self.of_type(node.target, self.type_argument(node), scope)

    def fn_type_test(self, node: fp.Call, scope: Scope) -> Value:
        return self.type_test(node.name, node.target or fp.Variable("this"), self.type_argument(node), scope)

    def over_items(self, target: Value, node: fp.Call, scope: Scope) -> Callable[[str, str], Value]:
        """The function's first argument compiled for one item of the target (with $index)."""

        def each(item: str, position: str) -> Value:
            inner = replace(scope, focus=Value(item, ONE, target.type), index=f"({position} - 1)")
            return self.compile_node(node.args[0], inner)

        return each

    def fn_where(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        each = self.over_items(target, node, scope)
        kept = self.d.filter_indexed(self.items(target), lambda x, i: self.boolean(each(x, i)))
        return Value(kept, MANY, target.type)

    def fn_select(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        each = self.over_items(target, node, scope)
        projected = self.d.transform_indexed(self.items(target), lambda x, i: self.items(each(x, i)))
        return Value(self.d.flatten(projected), MANY)

    def fn_all(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        each = self.over_items(target, node, scope)
        failing = self.d.filter_indexed(
            self.items(target), lambda x, i: f"NOT coalesce({self.boolean(each(x, i))}, false)"
        )
        return native(f"({self.d.length(failing)} = 0)", "Boolean")

    def fn_exists(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        if node.args:
            target = self.fn_where(target, node, scope)
        if target.shape == ONE:
            return native(f"({target.sql} IS NOT NULL)", "Boolean")
        return native(f"({self.d.length(self.items(target))} > 0)", "Boolean")

    def fn_empty(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        if target.shape == ONE:
            return native(f"({target.sql} IS NULL)", "Boolean")
        return native(f"({self.d.length(self.items(target))} = 0)", "Boolean")

    def fn_count(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        return native(self.d.length(self.items(target)), "Integer")

    def fn_first(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        if target.shape == ONE:
            return target
        chain = self.chain_of(target)
        chain = chain.then("[0]") if chain is not None else None
        if target.shape == NODE:
            first = self.bind(target.sql, lambda j: self.d.node_item(j, None))
            return Value(first, ONE, target.type, chain=chain)
        return Value(self.d.element(target.sql, "1"), ONE, target.type, chain=chain)

    def fn_last(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        if target.shape == ONE:
            return target
        return Value(self.d.element(self.items(target), "-1"), ONE, target.type)

    def fn_single(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        one = self.single(target, "single() found more than one value")
        return Value(one, ONE, target.type, target.json)

    def positions(self, target: Value, keep: Callable[[str], str]) -> Value:
        return Value(self.d.filter_indexed(self.items(target), lambda _, i: keep(i)), MANY, target.type)

    def fn_tail(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        return self.positions(target, lambda i: f"{i} > 1")

    def fn_skip(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        count = self.number(self.compile_node(node.args[0], scope))
        return self.positions(target, lambda i: f"{i} > {count}")

    def fn_take(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        count = self.number(self.compile_node(node.args[0], scope))
        return self.positions(target, lambda i: f"{i} <= {count}")

    def fn_distinct(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        return Value(self.d.func("distinct", self.items(target)), MANY, target.type)

    def fn_combine(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        other = self.compile_node(node.args[0], scope)
        combined = self.d.concat(self.items(target), self.items(other))
        if node.name == "union":
            combined = self.d.func("distinct", combined)
        return Value(combined, MANY, target.type if target.type == other.type else None)

    def fn_not(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        return native(f"(NOT {self.boolean(target)})", "Boolean")

    def fn_all_true(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        flags = self.d.transform(self.items(target), lambda x: self.d.try_cast(x, "boolean"))
        if node.name.endswith("False"):
            flags = self.d.transform(flags, lambda x: f"(NOT {x})")
        aggregate, default = ("all_true", "true") if node.name.startswith("all") else ("any_true", "false")
        return native(f"coalesce({self.d.func(aggregate, flags)}, {default})", "Boolean")

    def fn_iif(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        inner = replace(scope, focus=target)
        condition = self.boolean(self.compile_node(node.args[0], inner))
        then = self.items(self.compile_node(node.args[1], inner))
        otherwise = (
            self.items(self.compile_node(node.args[2], inner)) if len(node.args) > 2 else self.d.empty()
        )
        return Value(self.d.case([(condition, then)], otherwise), MANY)

    def fn_extension(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        url = self.text(self.compile_node(node.args[0], scope))
        extensions = self.items(self.member(target, "extension"))
        matching = self.d.filter(
            extensions, lambda e: f"{self.d.json_text(self.d.json_get(e, 'url'))} = {url}"
        )
        return Value(matching, MANY)

    def fn_join(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        separator = self.text(self.compile_node(node.args[0], scope)) if node.args else self.d.string("")
        texts = self.d.transform(self.items(target), self.d.json_text)
        return native(self.d.func("join", texts, separator), "String")

    def fn_resource_key(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        resource = Value(self.single(target, "getResourceKey() applies to one resource"), ONE)
        if target.sql == ROOT:
            resource = target
        kind, key = (self.text(self.member(resource, name)) for name in ("resourceType", "id"))
        return native(self.d.func("concat_text", self.d.func("concat_text", kind, "'/'"), key), "String")

    def fn_reference_key(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        pattern = self.d.string(REFERENCE_KEY)

        def key(reference: str) -> str:
            text = self.d.json_text(self.d.json_get(reference, "reference"))
            return self.d.func("regex_extract", text, pattern, "1")

        prefix = self.d.string(self.type_argument(node).split(".")[-1] + "/") if node.args else None

        def wanted(k: str) -> str:
            found = f"coalesce({k}, '') <> ''"
            return f"{found} AND {self.d.func('starts_with', k, prefix)}" if prefix else found

        kept = self.d.filter(self.d.transform(self.items(target), key), wanted)
        return Value(
            self.d.transform(kept, self.d.to_json), MANY, "String", fast=self.reference_key_fast(target, node)
        )

    def reference_key_fast(self, target: Value, node: fp.Call) -> Fast | None:
        """getReferenceKey() of one reference read by a JSON path: the type goes into the pattern."""
        chain = self.chain_of(target)
        kind = self.type_argument(node).split(".")[-1] if node.args else None
        if chain is None or (kind is not None and not re.fullmatch(r"[A-Z][A-Za-z]*", kind)):
            return None
        reference = self.chain_fast(chain.then(".reference"))
        pattern = REFERENCE_KEY if kind is None else REFERENCE_KEY.replace("[A-Z][A-Za-z]*", kind, 1)
        found = self.d.func("regex_extract", reference.text, self.d.string(pattern), "1")
        key = f"nullif({found}, '')"
        if kind is not None:
            # most references are just `Type/id`: tell those from the JSON text, no pattern needed
            key = self.bind(
                reference.json,
                lambda j: self.d.case(
                    [
                        (
                            self.d.func("is_plain_key", j, self.d.string(PLAIN_KEY.format(kind))),
                            self.d.func("plain_key", j),
                        )
                    ],
                    key,
                ),
            )
        return Fast(reference.guard, self.d.to_json(key), key, reference.absent)

    def fn_boundary(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        high = node.name == "highBoundary"
        one = self.single(target, f"{node.name}() applies to one value")
        if not target.json:
            return self.boundary(one, target.type, high)
        if target.type is not None:
            # the JSON text keeps a decimal's written precision (1.0 is not 1)
            return self.boundary(self.d.json_text(one), target.type, high)
        return Value(self.bind(one, lambda x: self.dynamic_boundary(x, high)), ONE)

    def dynamic_boundary(self, item: str, high: bool) -> str:
        """The boundary of a value only the data types: a number, a date, a time or a dateTime."""
        text = self.d.json_text(item)

        def bound(fhirpath_type: str) -> str:
            return self.d.to_json(self.boundary(text, fhirpath_type, high).sql)

        whens = [
            (self.d.json_is(item, "number"), bound("Decimal")),
            (f"NOT {self.d.json_is(item, 'string')}", "NULL"),
        ]
        whens += [(self.d.func("matches", text, self.d.string(DATE)), bound("Date"))]
        whens += [(self.d.func("matches", text, self.d.string(TIME)), bound("Time"))]
        return self.d.case(whens, bound("DateTime"))

    def boundary(self, sql: str, fhirpath_type: str | None, high: bool) -> Value:
        builders = {
            "Integer": self.decimal_boundary,
            "Decimal": self.decimal_boundary,
            "Date": self.date_boundary,
            "DateTime": self.datetime_boundary,
            "Time": self.time_boundary,
        }
        if fhirpath_type not in builders:
            name = "highBoundary" if high else "lowBoundary"
            raise ViewError(f"{name}() applies to decimals, dates, dateTimes and times")
        result_type = "Decimal" if fhirpath_type == "Integer" else fhirpath_type
        return native(self.bind(sql, lambda x: builders[fhirpath_type](x, high)), result_type)

    def decimal_boundary(self, value: str, high: bool) -> str:
        # half a unit of the last written decimal place: 1.0 -> [0.95, 1.05]
        places = f"coalesce({self.d.func('decimal_places', self.d.cast(value, 'string'))}, 0)"
        half = f"(0.5 / {self.d.func('power', '10', places)})"
        bound = f"({self.d.cast(value, 'decimal')} {'+' if high else '-'} {half})"
        return self.d.func("round", bound, self.d.cast(f"{places} + 1", "integer"))

    def date_boundary(self, value: str, high: bool) -> str:
        length = self.d.func("text_length", value)
        year = f"{value} || '-12-31'" if high else f"{value} || '-01-01'"
        month = self.d.func("month_end", value) if high else f"{value} || '-01'"
        return self.d.case([(f"{length} = 4", year), (f"{length} = 7", month)], value)

    def time_boundary(self, value: str, high: bool) -> str:
        length = self.d.func("text_length", value)
        if high:
            fills = ("23:59:59.999", ":59:59.999", ":59.999", ".999")
        else:
            fills = ("00:00:00.000", ":00:00.000", ":00.000", ".000")
        whens = [(f"{length} = 0", self.d.string(fills[0]))]
        whens += [
            (f"{length} = {n}", f"{value} || {self.d.string(fill)}")
            for n, fill in zip((2, 5, 8), fills[1:], strict=True)
        ]
        return self.d.case(whens, value)

    def datetime_boundary(self, value: str, high: bool) -> str:
        pattern = self.d.string(TEMPORAL)
        date, time, zone = (self.d.func("regex_extract", value, pattern, str(group)) for group in (1, 2, 3))
        # without a time zone the widest offsets bound every possible instant
        zone = f"coalesce(nullif({zone}, ''), {self.d.string('-12:00' if high else '+14:00')})"
        built = f"{self.date_boundary(date, high)} || 'T' || {self.time_boundary(time, high)} || {zone}"
        return self.d.case([(f"{date} = ''", "NULL")], built)

    def fn_text(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        """String functions: the input is one string; arguments are evaluated against the outer focus."""
        text = self.text(target)
        name = node.name
        if name in TEXT_TESTS:
            arg = self.text(self.compile_node(node.args[0], scope))
            return native(self.d.func(TEXT_TESTS[name], text, arg), "Boolean")
        if name == "length":
            return native(self.d.func("text_length", text), "Integer")
        if name == "indexOf":
            return native(
                self.d.func("index_of", text, self.text(self.compile_node(node.args[0], scope))), "Integer"
            )
        if name == "substring":
            start, *count = (
                self.d.cast(self.number(self.compile_node(a, scope)), "integer") for a in node.args
            )
            function = "substring" if count else "substring_rest"
            return native(self.d.func(function, text, start, *count), "String")
        if name == "replace":
            pattern, substitution = (self.text(self.compile_node(arg, scope)) for arg in node.args)
            return native(self.d.func("replace", text, pattern, substitution), "String")
        return native(self.d.func(name, text) if name != "toString" else text, "String")

    def fn_to_number(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        fhirpath_type = "Integer" if node.name == "toInteger" else "Decimal"
        sql = self.single(target, f"{node.name}() applies to one value")
        source = self.d.json_text(sql) if target.json else sql
        return native(self.d.try_cast(source, TYPE_CODES[fhirpath_type]), fhirpath_type)

    def fn_math(self, target: Value, node: fp.Call, scope: Scope) -> Value:
        number = self.number(target)
        if node.name == "round":
            digits = self.number(self.compile_node(node.args[0], scope)) if node.args else "0"
            return native(self.d.func("round", number, self.d.cast(digits, "integer")), "Decimal")
        if node.name in ("ceiling", "floor", "truncate"):
            return native(self.d.cast(self.d.func(node.name, number), "integer64"), "Integer")
        keeps_type = node.name == "abs" and target.type in NUMBER_TYPES
        return native(self.d.func(node.name, number), target.type if keeps_type else "Decimal")


def _simple(sql: str) -> bool:
    """SQL cheap enough to repeat: a name, a number or a quoted string without quotes inside."""
    return sql.replace(".", "").replace("_", "").isalnum() or (sql.startswith("'") and sql.count("'") == 2)


TEXT_TESTS = {
    "startsWith": "starts_with",
    "endsWith": "ends_with",
    "contains": "text_contains",
    "matches": "matches",
    "matchesFull": "matches_full",
}

_Function = tuple[int, int, Callable[..., Value]]
FUNCTIONS: dict[str, _Function] = {
    "where": (1, 1, Compiler.fn_where),
    "select": (1, 1, Compiler.fn_select),
    "all": (1, 1, Compiler.fn_all),
    "exists": (0, 1, Compiler.fn_exists),
    "hasValue": (0, 0, Compiler.fn_exists),
    "empty": (0, 0, Compiler.fn_empty),
    "count": (0, 0, Compiler.fn_count),
    "first": (0, 0, Compiler.fn_first),
    "last": (0, 0, Compiler.fn_last),
    "single": (0, 0, Compiler.fn_single),
    "tail": (0, 0, Compiler.fn_tail),
    "skip": (1, 1, Compiler.fn_skip),
    "take": (1, 1, Compiler.fn_take),
    "distinct": (0, 0, Compiler.fn_distinct),
    "union": (1, 1, Compiler.fn_combine),
    "combine": (1, 1, Compiler.fn_combine),
    "not": (0, 0, Compiler.fn_not),
    "iif": (2, 3, Compiler.fn_iif),
    "ofType": (1, 1, Compiler.fn_of_type),
    "is": (1, 1, Compiler.fn_type_test),
    "as": (1, 1, Compiler.fn_type_test),
    "extension": (1, 1, Compiler.fn_extension),
    "join": (0, 1, Compiler.fn_join),
    "getResourceKey": (0, 0, Compiler.fn_resource_key),
    "getReferenceKey": (0, 1, Compiler.fn_reference_key),
    "lowBoundary": (0, 1, Compiler.fn_boundary),
    "highBoundary": (0, 1, Compiler.fn_boundary),
    "toInteger": (0, 0, Compiler.fn_to_number),
    "toDecimal": (0, 0, Compiler.fn_to_number),
    "round": (0, 1, Compiler.fn_math),
    "substring": (1, 2, Compiler.fn_text),
    "replace": (2, 2, Compiler.fn_text),
    **{name: (0, 0, Compiler.fn_all_true) for name in ("allTrue", "anyTrue", "allFalse", "anyFalse")},
    **{name: (0, 0, Compiler.fn_math) for name in ("abs", "ceiling", "floor", "truncate", "sqrt")},
    **{name: (1, 1, Compiler.fn_text) for name in (*TEXT_TESTS, "indexOf")},
    **{name: (0, 0, Compiler.fn_text) for name in ("upper", "lower", "trim", "length", "toString")},
}
