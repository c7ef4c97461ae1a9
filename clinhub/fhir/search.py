"""FHIR search: parse a query string into conditions, compile them to SQL over the index tables, run it.

A search drives from its most selective condition (an identifier or a reference before a code): that
condition's index rows are read in `resource_id` order through the lookup index, every other condition is
an EXISTS probe on the same resource, and LIMIT stops the scan after one page. So a page costs about the
same whether the type holds a thousand resources or a million. Deleted resources have no index rows, so
they never match; a search with no indexed condition reads `fhir_resource` in id order instead.

Semantics follow FHIR R4 search: repeated parameters AND, comma-separated values OR; token `system|code`,
`|code`, `system|`; string starts-with (case and accents ignored), `:exact`, `:contains`; date prefixes
eq ne gt lt ge le sa eb over the value's implicit range; `:missing`; token `:not`; quantity with
`number|system|code`; reference `id`, `Type/id` or an absolute URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    Text,
    and_,
    cast,
    distinct,
    exists,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)

from clinhub.errors import InvalidInput
from clinhub.fhir.index import (
    DATE,
    ID_MAX,
    NARROW,
    QUANTITY,
    REFERENCE,
    STRING,
    TEXT_MAX,
    TOKEN,
    UNIT_MAX,
    SearchParam,
    date_range,
    normalise,
    search_param,
)
from clinhub.store.schema import (
    fhir_resource,
    fhir_search_date,
    fhir_search_quantity,
    fhir_search_reference,
    fhir_search_string,
    fhir_search_token,
)

DEFAULT_COUNT = 20
MAX_COUNT = 1000
_TABLES: dict[str, Table] = {
    TOKEN: fhir_search_token,
    STRING: fhir_search_string,
    DATE: fhir_search_date,
    REFERENCE: fhir_search_reference,
    QUANTITY: fhir_search_quantity,
}
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
#: which kind of condition drives a search best (most selective first)
_RANK = {"_id": 0, REFERENCE: 1, TOKEN: 3, STRING: 2, DATE: 4, QUANTITY: 5, "_lastUpdated": 6}
_SELECTIVE_TOKENS = frozenset({"identifier"})
#: parameters every search accepts and ignores (only JSON is served)
_IGNORED = frozenset({"_format", "_pretty"})
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_SORT_COLUMN = {DATE: "low", STRING: "value_norm", TOKEN: "code", QUANTITY: "value"}
_SORTABLE = tuple(_SORT_COLUMN)


@dataclass
class Condition:
    """One search parameter occurrence: its values OR together; `negated` turns it into NOT EXISTS."""

    name: str
    kind: str
    stored: str
    values: list[Any]
    negated: bool = False
    #: :missing=true/false (values then unused)
    missing: bool | None = None
    modifier: str | None = None
    target: str | None = None

    @property
    def rank(self) -> int:
        if self.kind == TOKEN and self.stored in _SELECTIVE_TOKENS:
            return 0
        if self.kind == STRING and self.modifier == "contains":
            return 7  # a scan of the parameter's every value
        return _RANK[self.kind]

    @property
    def drives(self) -> bool:
        """Whether its index rows can be the search's source (positive, index-backed)."""
        return self.kind in _TABLES and not self.negated and self.missing is not True


@dataclass
class SortKey:
    name: str
    kind: str
    stored: str
    descending: bool


@dataclass
class SearchRequest:
    resource_type: str
    conditions: list[Condition] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[SortKey] = field(default_factory=list)
    summary_count: bool = False
    total: bool = False
    includes: list[tuple[str, SearchParam, str | None]] = field(default_factory=list)
    #: the query as given, less paging, to build links with
    echo: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------ parsing
def split_values(raw: str) -> list[str]:
    """Comma-separated values, with `\\,` an escaped comma."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char if char in ",$|\\" else "\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return [v for v in values if v != ""]


def _split_pipe(value: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return number


def _prefixed(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in _PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _date_value(name: str, value: str) -> tuple[str, datetime, datetime]:
    prefix, text = _prefixed(value)
    found = date_range(text)
    if found is None:
        raise InvalidInput(f"{name}: {text!r} is not a FHIR date, dateTime or instant")
    return prefix, found[0], found[1]


def _token_value(value: str) -> tuple[str | None, str | None, bool]:
    """(system, code, system given): `code`, `system|code`, `|code` (no system), `system|`."""
    parts = _split_pipe(value)
    if len(parts) == 1:
        return None, parts[0][:TEXT_MAX], False
    if len(parts) != 2:
        raise InvalidInput(f"token {value!r} has more than one '|'")
    system, code = parts
    return (system[:TEXT_MAX] or None), (code[:TEXT_MAX] or None), True


def _reference_value(value: str, target: str | None) -> tuple[str | None, str]:
    parts = value.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) == 1:
        return target, parts[0]
    resource_type, resource_id = parts[-2], parts[-1]
    if target and resource_type != target:
        raise InvalidInput(f"this parameter finds {target} resources, not {resource_type}")
    return resource_type, resource_id


def _quantity_value(name: str, value: str) -> tuple[str, Decimal, str | None, str | None]:
    parts = _split_pipe(value)
    if len(parts) not in (1, 3):
        raise InvalidInput(f"{name}: give a number, or number|system|code")
    prefix, number = _prefixed(parts[0])
    try:
        amount = Decimal(number)
    except InvalidOperation:
        raise InvalidInput(f"{name}: {number!r} is not a number") from None
    if not amount.is_finite():
        raise InvalidInput(f"{name}: {number!r} is not a number")
    system = parts[1] or None if len(parts) == 3 else None
    unit = parts[2] or None if len(parts) == 3 else None
    return prefix, amount, system, unit


def parse_search(resource_type: str, query: list[tuple[str, str]], *, strict: bool = True) -> SearchRequest:
    """A SearchRequest from the query's (name, value) pairs; InvalidInput names what is wrong.

    Lenient (`strict=False`, FHIR's default unless `Prefer: handling=strict`) skips parameters it does not
    know, as the specification asks; the self link then shows only those used. A known parameter used
    wrongly is an error either way.
    """
    request = SearchRequest(resource_type)
    for name, raw in query:
        if name in _IGNORED:
            continue
        if not strict and not _known(resource_type, name):
            continue
        if name == "_offset":
            request.offset = _int("_offset", raw, 0, 10_000_000)
            continue
        request.echo.append((name, raw))
        if name == "_count":
            request.count = _int("_count", raw, 0, MAX_COUNT)
        elif name == "_summary":
            if raw != "count":
                raise InvalidInput("_summary supports only 'count'")
            request.summary_count = True
        elif name == "_total":
            if raw not in ("none", "estimate", "accurate"):
                raise InvalidInput("_total must be none, estimate or accurate")
            request.total = raw != "none"
        elif name == "_sort":
            request.sort = [_sort_key(resource_type, key) for key in split_values(raw)]
        elif name == "_include":
            request.includes.append(_include(raw))
        elif name in ("_revinclude", "_elements", "_contained", "_containedType", "_has", "_list", "_text"):
            raise InvalidInput(f"{name} is not supported (see the CapabilityStatement at /fhir/metadata)")
        else:
            request.conditions.append(_condition(resource_type, name, raw))
    return request


_RESULT_PARAMETERS = frozenset(
    {"_offset", "_count", "_summary", "_total", "_sort", "_include", "_id", "_lastUpdated"}
)


def _known(resource_type: str, key: str) -> bool:
    name = key.partition(":")[0]
    return name in _RESULT_PARAMETERS or search_param(resource_type, name) is not None


def _sort_key(resource_type: str, key: str) -> SortKey:
    descending = key.startswith("-")
    name = key.lstrip("-")
    if name in ("_id", "_lastUpdated"):
        return SortKey(name, name, name, descending)
    param = search_param(resource_type, name)
    if param is None or param.kind not in _SORTABLE:
        raise InvalidInput(f"cannot sort {resource_type} by {name!r}")
    return SortKey(name, param.kind, param.stored, descending)


def _include(raw: str) -> tuple[str, SearchParam, str | None]:
    parts = raw.split(":")
    if len(parts) not in (2, 3):
        raise InvalidInput(f"_include must be Type:parameter[:TargetType], got {raw!r}")
    source, name = parts[0], parts[1]
    param = search_param(source, name)
    if param is None or param.kind != REFERENCE:
        raise InvalidInput(f"_include {raw!r}: {source} has no reference parameter {name!r}")
    target = parts[2] if len(parts) == 3 else param.target
    return source, param, target


def _condition(resource_type: str, key: str, raw: str) -> Condition:
    name, _, modifier = key.partition(":")
    modifier = modifier or None
    values = split_values(raw)
    if name == "_id":
        if modifier not in (None, "missing", "not"):
            raise InvalidInput(f"_id does not take :{modifier}")
        for value in values:
            if not _ID.fullmatch(value):
                raise InvalidInput(f"_id: {value!r} is not a FHIR id")
        return Condition("_id", "_id", "_id", values, negated=modifier == "not")
    if name == "_lastUpdated":
        if modifier is not None:
            raise InvalidInput(f"_lastUpdated does not take :{modifier}")
        return Condition(name, name, name, [_date_value(name, v) for v in values])
    param = search_param(resource_type, name)
    if param is None:
        raise InvalidInput(f"unknown search parameter {name!r} for {resource_type}")
    condition = Condition(name, param.kind, param.stored, [], modifier=modifier, target=param.target)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise InvalidInput(f"{key} must be true or false")
        condition.missing = raw == "true"
        condition.negated = condition.missing
        return condition
    if not values:
        raise InvalidInput(f"{key} has no value")
    kind = param.kind
    if kind == TOKEN:
        if modifier not in (None, "not"):
            raise InvalidInput(f"token parameter {name} does not take :{modifier}")
        condition.negated = modifier == "not"
        condition.values = [_token_value(v) for v in values]
    elif kind == STRING:
        if modifier not in (None, "exact", "contains"):
            raise InvalidInput(f"string parameter {name} does not take :{modifier}")
        condition.values = values
    elif kind == DATE:
        if modifier is not None:
            raise InvalidInput(f"date parameter {name} does not take :{modifier}")
        condition.values = [_date_value(name, v) for v in values]
    elif kind == QUANTITY:
        if modifier is not None:
            raise InvalidInput(f"quantity parameter {name} does not take :{modifier}")
        condition.values = [_quantity_value(name, v) for v in values]
    else:
        target = param.target
        if modifier is not None:
            if not modifier[:1].isupper():
                raise InvalidInput(f"reference parameter {name} does not take :{modifier}")
            if target and modifier != target:
                raise InvalidInput(f"{name} finds {target} resources, not {modifier}")
            target = modifier
        condition.values = [_reference_value(v, target) for v in values]
        for _, resource_id in condition.values:
            if not resource_id or len(resource_id) > ID_MAX:
                raise InvalidInput(f"{name}: {resource_id!r} is not a FHIR id")
    return condition


# ------------------------------------------------------------------ compiling
def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _next_prefix(text: str) -> str:
    return text[:-1] + chr(ord(text[-1]) + 1)


def _date_predicate(low: ColumnElement, high: ColumnElement, prefix: str, plo: datetime, phi: datetime):
    """Whether a resource range [low, high] matches `prefix` and the search range [plo, phi]."""
    # `ne` finds resources that have a value and it is not `eq` (none: :missing=true)
    if prefix == "eq":
        return and_(low >= plo, high <= phi)
    if prefix == "ne":
        return ~and_(low >= plo, high <= phi)
    if prefix == "gt":
        return high > phi
    if prefix == "lt":
        return low < plo
    if prefix == "ge":
        return high >= plo
    if prefix == "le":
        return low <= phi
    if prefix == "sa":
        return low > phi
    if prefix == "eb":
        return high < plo
    # ap: within 10 % of the gap between the value and now, at least a day
    slack = max(abs(datetime.now(plo.tzinfo) - plo) / 10, NARROW)
    return and_(high >= plo - slack, low <= phi + slack)


def _narrow_low_bound(low: ColumnElement, prefix: str, plo: datetime, phi: datetime):
    """For ranges at most a day wide, the bound on `low` that `high`'s condition implies (index-usable)."""
    if prefix == "gt":
        return low > phi - NARROW
    if prefix == "ge":
        return low >= plo - NARROW
    return true()


class Compiler:
    """Turns conditions into SQL for one backend (MariaDB needs a binary collation for `:exact`)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def _value_clause(self, condition: Condition, t: Table, wide: bool | None = None) -> ColumnElement:
        """The condition's values (ORed) on index rows `t`; for dates, on narrow rows (`wide` False),
        wide rows (True) or either (None), since each kind has its own index-usable form."""
        kind = condition.kind
        clauses = []
        if kind == TOKEN:
            for system, code, system_given in condition.values:
                parts = []
                if code is not None:
                    parts.append(t.c.code == code)
                if system_given:
                    parts.append(t.c.system.is_(None) if system is None else t.c.system == system)
                clauses.append(and_(*parts) if parts else true())
        elif kind == STRING:
            for value in condition.values:
                if condition.modifier == "exact":
                    column = t.c.value_exact
                    if self.backend == "mysql":
                        column = column.collate("utf8mb4_bin")
                    clauses.append(column == value[:TEXT_MAX])
                    continue
                norm = normalise(value)
                if not norm:
                    raise InvalidInput(f"{condition.name}: give some text to search for")
                if condition.modifier == "contains":
                    clauses.append(t.c.value_norm.like(f"%{_escape_like(norm)}%", escape="\\"))
                else:
                    clauses.append(
                        and_(
                            t.c.value_norm >= norm,
                            t.c.value_norm < _next_prefix(norm),
                            t.c.value_norm.like(f"{_escape_like(norm)}%", escape="\\"),
                        )
                    )
        elif kind == DATE:
            for prefix, plo, phi in condition.values:
                test = _date_predicate(t.c.low, t.c.high, prefix, plo, phi)
                narrow = and_(_narrow_low_bound(t.c.low, prefix, plo, phi), test)
                if wide is None:
                    clauses.append(or_(and_(t.c.wide == false(), narrow), and_(t.c.wide == true(), test)))
                else:
                    clauses.append(test if wide else narrow)
        elif kind == QUANTITY:
            for prefix, amount, system, unit in condition.values:
                parts = [_quantity_predicate(t.c.value, prefix, amount)]
                if system is not None:
                    parts.append(t.c.system == system[:TEXT_MAX])
                if unit is not None:
                    parts.append(t.c.code == unit[:UNIT_MAX])
                clauses.append(and_(*parts))
        else:
            for target_type, target_id in condition.values:
                parts = [t.c.target_id == target_id]
                if target_type:
                    parts.append(t.c.target_type == target_type)
                clauses.append(and_(*parts))
        return or_(*clauses) if len(clauses) > 1 else clauses[0]

    def _rows(
        self, condition: Condition, resource_type: str, t: Table, wide: bool | None = None
    ) -> list[ColumnElement]:
        where = [t.c.resource_type == resource_type, t.c.param == condition.stored]
        if wide is not None:
            where.append(t.c.wide == (true() if wide else false()))
        if condition.missing is not None:
            if condition.target:
                where.append(t.c.target_type == condition.target)
            return where
        if condition.kind == REFERENCE and condition.target and not condition.values:
            where.append(t.c.target_type == condition.target)
        where.append(self._value_clause(condition, t, wide))
        return where

    def probe(self, condition: Condition, resource_type: str, id_column: ColumnElement) -> ColumnElement:
        """EXISTS (or NOT EXISTS) over the resource whose id is `id_column`."""
        if condition.kind == "_id":
            test = id_column.in_(condition.values)
            return ~test if condition.negated else test
        if condition.kind == "_lastUpdated":
            r = fhir_resource.alias("lu")
            found = exists(
                select(literal(1))
                .select_from(r)
                .where(r.c.resource_type == resource_type, r.c.id == id_column, _last_updated(r, condition))
            )
            return found
        t = _TABLES[condition.kind].alias()
        found = exists(
            select(literal(1))
            .select_from(t)
            .where(t.c.resource_id == id_column, *self._rows(condition, resource_type, t))
        )
        return ~found if condition.negated else found

    def matches(self, request: SearchRequest) -> list[Select]:
        """SELECTs of matching ids, unordered and unpaged; their union is the result."""
        resource_type = request.resource_type
        drivers = sorted((c for c in request.conditions if c.drives), key=lambda c: c.rank)
        if not drivers:
            r = fhir_resource.alias("r")
            where = [r.c.resource_type == resource_type, r.c.deleted == false()]
            for condition in request.conditions:
                if condition.kind == "_lastUpdated":
                    where.append(_last_updated(r, condition))
                else:
                    where.append(self.probe(condition, resource_type, r.c.id))
            return [select(r.c.id.label("id")).where(*where)]
        driver = drivers[0]
        # each date parameter has at most one row per resource, so `date=ge..&date=lt..` bounds the same
        # row: both go into the driving scan, which makes a range search one index range
        same_row = [
            c
            for c in request.conditions
            if c is not driver and driver.kind == c.kind == DATE and c.stored == driver.stored and c.drives
        ]
        others = [c for c in request.conditions if c is not driver and c not in same_row]
        branches = (False, True) if driver.kind == DATE else (None,)
        selects = []
        for wide in branches:
            t = _TABLES[driver.kind].alias("d")
            # a date-driven search is ordered by the date: the (wide, low) index yields that order
            columns = (
                [t.c.resource_id.label("id"), t.c.low.label("low")]
                if wide is not None
                else [t.c.resource_id.label("id")]
            )
            selects.append(
                select(*columns).where(
                    *self._rows(driver, resource_type, t, wide),
                    *(self._value_clause(c, t, wide) for c in same_row),
                    *(self.probe(c, resource_type, t.c.resource_id) for c in others),
                )
            )
        return selects

    def sort_columns(self, request: SearchRequest, id_column: ColumnElement) -> list[ColumnElement]:
        order = []
        for key in request.sort:
            if key.kind == "_id":
                expression = id_column
            elif key.kind == "_lastUpdated":
                r = fhir_resource.alias()
                expression = (
                    select(r.c.last_updated)
                    .where(r.c.resource_type == request.resource_type, r.c.id == id_column)
                    .scalar_subquery()
                )
            else:
                t = _TABLES[key.kind].alias()
                column = t.c[_SORT_COLUMN[key.kind]]
                if key.descending and key.kind == DATE:
                    column = t.c.high
                aggregate = func.max(column) if key.descending else func.min(column)
                expression = (
                    select(aggregate)
                    .where(
                        t.c.resource_type == request.resource_type,
                        t.c.resource_id == id_column,
                        t.c.param == key.stored,
                    )
                    .scalar_subquery()
                )
            # resources without the value sort last either way
            order.append(expression.is_(None))
            order.append(expression.desc() if key.descending else expression.asc())
        if not any(key.kind == "_id" for key in request.sort):
            order.append(id_column)
        return order


def _last_updated(r: Table, condition: Condition) -> ColumnElement:
    clauses = []
    for prefix, plo, phi in condition.values:
        clauses.append(_date_predicate(r.c.last_updated, r.c.last_updated, prefix, plo, phi))
    return or_(*clauses) if len(clauses) > 1 else clauses[0]


def _quantity_predicate(column: ColumnElement, prefix: str, amount: Decimal) -> ColumnElement:
    # eq/ne compare against the range the value's precision implies: 5.4 means [5.35, 5.45)
    exponent = amount.as_tuple().exponent
    half = Decimal(5).scaleb(exponent - 1) if isinstance(exponent, int) else Decimal(0)
    low, high, value = float(amount - half), float(amount + half), float(amount)
    if prefix == "eq":
        test = and_(column >= low, column < high)
    elif prefix == "ne":
        test = ~and_(column >= low, column < high)
    elif prefix == "gt":
        test = column > value
    elif prefix == "lt":
        test = column < value
    elif prefix == "ge":
        test = column >= value
    elif prefix == "le":
        test = column <= value
    elif prefix == "sa":
        test = column > value
    elif prefix == "eb":
        test = column < value
    else:  # ap: within 10 %
        slack = abs(value) * 0.1
        test = and_(column >= value - slack, column <= value + slack)
    return test


# ------------------------------------------------------------------ running
@dataclass
class SearchResult:
    """One page: (id, resource JSON text) in order, whether more follow, the total when counted, and
    included resources as (type, id, JSON text)."""

    matches: list[tuple[str, str]]
    has_more: bool
    total: int | None
    included: list[tuple[str, str, str]] = field(default_factory=list)


def backend_of(conn: Connection) -> str:
    name = conn.dialect.name
    return "mysql" if name in ("mysql", "mariadb") else name


def _union(selects: list[Select]):
    return selects[0].subquery() if len(selects) == 1 else union_all(*selects).subquery()


def count(conn: Connection, request: SearchRequest) -> int:
    ids = _union(Compiler(backend_of(conn)).matches(request))
    return conn.execute(select(func.count(distinct(ids.c.id)))).scalar_one()


def page_ids(conn: Connection, request: SearchRequest, limit: int, offset: int) -> list[str]:
    """The ids of one page of matches, in the search's order."""
    compiler = Compiler(backend_of(conn))
    selects = compiler.matches(request)
    if not request.sort and "low" in selects[0].selected_columns:
        return _by_date(conn, selects, limit, offset)
    if not request.sort and len(selects) == 1:
        # an equality on the lookup index yields resource_id order: the scan stops after the page
        query = selects[0]
        id_column = query.selected_columns.id
        query = query.group_by(id_column).order_by(id_column)
    else:
        ids = _union(selects)
        inner = select(ids.c.id).distinct().subquery()
        query = select(inner.c.id).order_by(*compiler.sort_columns(request, inner.c.id))
    return list(conn.execute(query.limit(limit).offset(offset)).scalars())


def _by_date(conn: Connection, selects: list[Select], limit: int, offset: int) -> list[str]:
    """A page of a date-driven search, in (date, id) order: each branch (narrow and wide ranges) reads
    its index in that order and stops after offset + limit rows; the branches merge here. A resource has
    at most one row per date parameter, so the branches never repeat an id."""
    rows = []
    for query in selects:
        columns = query.selected_columns
        rows.extend(conn.execute(query.order_by(columns.low, columns.id).limit(offset + limit)).all())
    rows.sort(key=lambda row: (row.low, row.id))
    return [row.id for row in rows[offset : offset + limit]]


def fetch(conn: Connection, resource_type: str, ids: list[str]) -> dict[str, str]:
    """id -> current JSON text of the live resources among `ids`."""
    if not ids:
        return {}
    r = fhir_resource
    rows = conn.execute(
        select(r.c.id, cast(r.c.resource, Text)).where(
            r.c.resource_type == resource_type, r.c.id.in_(ids), r.c.deleted == false()
        )
    )
    return dict(rows.all())


def included(conn: Connection, request: SearchRequest, ids: list[str]) -> list[tuple[str, str, str]]:
    """Resources the page's matches reference through the `_include` parameters, once each."""
    found: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for source, param, target in request.includes:
        if source != request.resource_type or not ids:
            continue
        t = fhir_search_reference
        where = [t.c.resource_type == source, t.c.resource_id.in_(ids), t.c.param == param.stored]
        if target:
            where.append(t.c.target_type == target)
        targets: dict[str, list[str]] = {}
        for target_type, target_id in conn.execute(select(t.c.target_type, t.c.target_id).where(*where)):
            if (target_type, target_id) not in seen:
                seen.add((target_type, target_id))
                targets.setdefault(target_type, []).append(target_id)
        for target_type, target_ids in targets.items():
            for target_id, text in fetch(conn, target_type, target_ids).items():
                found.append((target_type, target_id, text))
    return found


def run_search(conn: Connection, request: SearchRequest) -> SearchResult:
    """One page of a search (and, when asked or cheap, the total)."""
    if request.summary_count:
        return SearchResult([], False, count(conn, request))
    ids = page_ids(conn, request, request.count + 1, request.offset) if request.count else []
    has_more = len(ids) > request.count
    ids = ids[: request.count]
    texts = fetch(conn, request.resource_type, ids)
    matches = [(i, texts[i]) for i in ids if i in texts]
    total = None
    if request.total or request.count == 0:
        total = count(conn, request)
    elif not has_more:
        total = request.offset + len(matches)
    include = included(conn, request, ids) if request.includes else []
    return SearchResult(matches, has_more, total, include)
