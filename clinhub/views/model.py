"""The ViewDefinition model: parse a JSON ViewDefinition into typed objects, validating as it goes."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from clinhub.errors import ViewError
from clinhub.views.fhirpath import Constant as ConstantRef
from clinhub.views.fhirpath import Node, parse_fhirpath, walk

#: value[x] suffix of ViewDefinition.constant -> the FHIR primitive type it carries
CONSTANT_TYPES = {
    "Base64Binary": "base64Binary",
    "Boolean": "boolean",
    "Canonical": "canonical",
    "Code": "code",
    "Date": "date",
    "DateTime": "dateTime",
    "Decimal": "decimal",
    "Id": "id",
    "Instant": "instant",
    "Integer": "integer",
    "Integer64": "integer64",
    "Oid": "oid",
    "String": "string",
    "PositiveInt": "positiveInt",
    "Time": "time",
    "UnsignedInt": "unsignedInt",
    "Uri": "uri",
    "Url": "url",
    "Uuid": "uuid",
}
#: variables the runner itself defines, usable as %name without a constant
ENVIRONMENT = frozenset({"rowIndex", "resource", "rootResource"})

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]*")
_SELECT_KEYS = {"column", "select", "unionAll", "forEach", "forEachOrNull", "repeat", "extension", "id"}
_COLUMN_KEYS = {"name", "path", "type", "collection", "description", "tag", "extension", "id"}


@dataclass(frozen=True)
class Constant:
    name: str
    type: str  # the FHIR primitive type, e.g. "string", "dateTime"
    value: Any


@dataclass(frozen=True)
class Column:
    name: str
    path: str
    expression: Node
    type: str | None
    collection: bool
    location: str


@dataclass(frozen=True)
class Select:
    """One select node: its columns, nested selects and unionAll branches, under an optional iteration."""

    columns: tuple[Column, ...]
    selects: tuple[Select, ...]
    union_all: tuple[Select, ...]
    for_each: Node | None
    or_null: bool
    repeat: tuple[Node, ...]
    location: str

    def output(self) -> list[Column]:
        """The columns this node contributes, in the specification's order."""
        found = list(self.columns)
        for child in self.selects:
            found += child.output()
        if self.union_all:
            found += self.union_all[0].output()
        return found


@dataclass(frozen=True)
class Where:
    path: str
    expression: Node
    location: str


@dataclass(frozen=True)
class ViewDefinition:
    resource: str
    name: str | None
    constants: Mapping[str, Constant]
    where: tuple[Where, ...]
    select: tuple[Select, ...]

    def columns(self) -> list[Column]:
        """The view's output columns in order (a unionAll counts its first branch)."""
        return [column for node in self.select for column in node.output()]


def parse_view(data: Any) -> ViewDefinition:
    """Validate a ViewDefinition (a JSON object) and build its model; errors name the bad element."""
    if not isinstance(data, dict):
        raise ViewError("a ViewDefinition must be a JSON object")
    if data.get("resourceType", "ViewDefinition") != "ViewDefinition":
        raise ViewError(f"/resourceType: expected 'ViewDefinition', got {data['resourceType']!r}")
    resource = data.get("resource")
    if not isinstance(resource, str) or not _RESOURCE_TYPE.fullmatch(resource):
        raise ViewError("/resource: required, a FHIR resource type such as 'Patient'")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise ViewError("/name: must be a string")
    constants = _constants(data.get("constant", []))
    where = tuple(_where(item, f"/where/{i}") for i, item in enumerate(_list(data, "where", "")))
    selects = _list(data, "select", "")
    if not selects:
        raise ViewError("/select: required, a non-empty list")
    view = ViewDefinition(
        resource=resource,
        name=name,
        constants=constants,
        where=where,
        select=tuple(_select(item, f"/select/{i}") for i, item in enumerate(selects)),
    )
    _check_names(view)
    _check_constants(view)
    return view


def _list(data: dict, key: str, location: str) -> list:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ViewError(f"{location}/{key}: must be a list")
    return value


def _expression(text: Any, location: str) -> Node:
    if not isinstance(text, str):
        raise ViewError(f"{location}: must be a FHIRPath expression (a string), got {type(text).__name__}")
    try:
        return parse_fhirpath(text)
    except ViewError as exc:
        raise ViewError(f"{location}: {exc.message}") from None


def _constants(items: Any) -> dict[str, Constant]:
    if not isinstance(items, list):
        raise ViewError("/constant: must be a list")
    found: dict[str, Constant] = {}
    for i, item in enumerate(items):
        location = f"/constant/{i}"
        if not isinstance(item, dict):
            raise ViewError(f"{location}: must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ViewError(f"{location}/name: required, letters, digits and '_' starting with a letter")
        if name in found:
            raise ViewError(f"{location}/name: constant {name!r} is defined twice")
        values = [key for key in item if key.startswith("value")]
        if len(values) != 1:
            raise ViewError(f"{location}: constant {name!r} needs exactly one value[x], found {len(values)}")
        fhir_type = CONSTANT_TYPES.get(values[0][len("value") :])
        if fhir_type is None:
            raise ViewError(f"{location}/{values[0]}: not a supported constant type")
        value = _constant_value(item[values[0]], fhir_type, f"{location}/{values[0]}")
        found[name] = Constant(name, fhir_type, value)
    return found


def _constant_value(value: Any, fhir_type: str, location: str) -> Any:
    if fhir_type == "boolean":
        ok = isinstance(value, bool)
    elif fhir_type in ("integer", "integer64", "positiveInt", "unsignedInt"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif fhir_type == "decimal":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ViewError(f"{location}: {value!r} is not a valid {fhir_type}")
    return value


def _where(item: Any, location: str) -> Where:
    if not isinstance(item, dict) or "path" not in item:
        raise ViewError(f"{location}: must be an object with a 'path'")
    return Where(item["path"], _expression(item["path"], f"{location}/path"), location)


def _select(item: Any, location: str) -> Select:
    if not isinstance(item, dict):
        raise ViewError(f"{location}: a select must be an object")
    unknown = sorted(set(item) - _SELECT_KEYS)
    if unknown:
        raise ViewError(f"{location}: unknown element {unknown[0]!r} in a select")
    iterations = [key for key in ("forEach", "forEachOrNull", "repeat") if key in item]
    if len(iterations) > 1:
        raise ViewError(f"{location}: use only one of forEach, forEachOrNull and repeat")
    for_each = None
    if "forEach" in item or "forEachOrNull" in item:
        key = iterations[0]
        for_each = _expression(item[key], f"{location}/{key}")
    repeat: tuple[Node, ...] = ()
    if "repeat" in item:
        paths = item["repeat"]
        if not isinstance(paths, list) or not paths:
            raise ViewError(f"{location}/repeat: must be a non-empty list of FHIRPath expressions")
        repeat = tuple(_expression(path, f"{location}/repeat/{i}") for i, path in enumerate(paths))
    node = Select(
        columns=tuple(
            _column(c, f"{location}/column/{i}") for i, c in enumerate(_list(item, "column", location))
        ),
        selects=tuple(
            _select(s, f"{location}/select/{i}") for i, s in enumerate(_list(item, "select", location))
        ),
        union_all=tuple(
            _select(s, f"{location}/unionAll/{i}") for i, s in enumerate(_list(item, "unionAll", location))
        ),
        for_each=for_each,
        or_null="forEachOrNull" in item,
        repeat=repeat,
        location=location,
    )
    if not node.output():
        raise ViewError(f"{location}: a select needs at least one column (directly, nested or in unionAll)")
    _check_union(node)
    return node


def _column(item: Any, location: str) -> Column:
    if not isinstance(item, dict):
        raise ViewError(f"{location}: a column must be an object")
    unknown = sorted(set(item) - _COLUMN_KEYS)
    if unknown:
        raise ViewError(f"{location}: unknown element {unknown[0]!r} in a column")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ViewError(
            f"{location}/name: required, letters, digits and '_' starting with a letter (got {name!r})"
        )
    if "path" not in item:
        raise ViewError(f"{location}/path: required")
    column_type = item.get("type")
    if column_type is not None and (not isinstance(column_type, str) or not column_type.strip()):
        raise ViewError(f"{location}/type: must be a FHIR type such as 'string'")
    collection = item.get("collection", False)
    if not isinstance(collection, bool):
        raise ViewError(f"{location}/collection: must be true or false")
    expression = _expression(item["path"], f"{location}/path")
    return Column(name, item["path"], expression, column_type, collection, location)


def _check_union(node: Select) -> None:
    if not node.union_all:
        return
    expected = [column.name for column in node.union_all[0].output()]
    for i, branch in enumerate(node.union_all[1:], start=1):
        names = [column.name for column in branch.output()]
        if names != expected:
            raise ViewError(
                f"{node.location}/unionAll/{i}: columns {names} differ from the first branch's {expected}"
                " (every branch needs the same names in the same order)"
            )


def _check_names(view: ViewDefinition) -> None:
    seen: dict[str, str] = {}
    for column in view.columns():
        if column.name in seen:
            raise ViewError(
                f"{column.location}/name: column {column.name!r} is already defined at {seen[column.name]}"
            )
        seen[column.name] = column.location


def _expressions(view: ViewDefinition) -> Iterator[tuple[str, Node]]:
    for item in view.where:
        yield f"{item.location}/path", item.expression
    stack = list(view.select)
    while stack:
        node = stack.pop()
        if node.for_each is not None:
            yield f"{node.location}/{'forEachOrNull' if node.or_null else 'forEach'}", node.for_each
        for i, path in enumerate(node.repeat):
            yield f"{node.location}/repeat/{i}", path
        for column in node.columns:
            yield f"{column.location}/path", column.expression
        stack += node.selects + node.union_all


def _check_constants(view: ViewDefinition) -> None:
    for location, expression in _expressions(view):
        for part in walk(expression):
            if (
                isinstance(part, ConstantRef)
                and part.name not in view.constants
                and part.name not in ENVIRONMENT
            ):
                raise ViewError(f"{location}: %{part.name} is not a constant of this view")
