"""Checks as data: the YAML format of a rule set, parsed and validated into Check objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clinhub.errors import InvalidInput, NotFound

#: the Kahn framework: category -> its subcategories
KAHN = {
    "conformance": ("value", "relational", "computational"),
    "completeness": ("atemporal", "temporal"),
    "plausibility": ("uniqueness", "atemporal", "temporal"),
}
#: PRODUCT.md's six weighted dimensions of the overall score
DIMENSIONS = {
    "completeness": 0.25,
    "accuracy": 0.25,
    "consistency": 0.20,
    "uniqueness": 0.15,
    "timeliness": 0.10,
    "validity": 0.05,
}
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")

#: check type -> (required parameters, optional parameters)
CHECK_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # conformance
    "data_type": (("column", "data_type"), ()),
    "regex": (("column", "pattern"), ("mode",)),
    "value_set": (("column", "values"), ()),
    "required": (("column",), ()),
    "primary_key": (("columns",), ()),
    "foreign_key": (("columns", "references", "referenced_columns"), ()),
    "code_system": (("column", "system"), ()),
    # completeness
    "null_percent": (("column",), ()),
    "records_per_person": (("person_table", "person_key", "foreign_key"), ("person_where", "min", "max")),
    # plausibility
    "value_range": (("column",), ("min", "max")),
    "temporal_order": (("earlier", "later"), ("strict", "compare_as")),
    "unique": (("columns",), ("normalise",)),
    "cross_field": (("condition",), ()),
    # anything else
    "custom_sql": (("sql",), ()),
}
REGEX_MODES = ("must_match", "must_not_match")
NORMALISERS = ("none", "lower_trim")
#: how temporal_order compares its operands: as they are, or as instants (FHIR date and dateTime text
#: with or without an offset; a partial date such as `1990` is not an instant and is not compared)
COMPARE_AS = ("value", "timestamp")
#: code system -> the regular expression a code of it matches in full
CODE_SYSTEMS = {
    "npi": r"[0-9]{10}",
    "loinc": r"[0-9]{1,7}-[0-9]",
    "snomed": r"[1-9][0-9]{5,17}",
    "icd10cm": r"[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?",
    "rxnorm": r"[0-9]{1,8}",
    "ucum": r"[!-~]{1,40}",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TABLE = re.compile(r"((store|view)\.)?[A-Za-z_][A-Za-z0-9_]{0,62}")
_CHECK_ID = re.compile(r"[a-z][a-z0-9_.-]{0,99}")
_FIELDS = {
    "id",
    "description",
    "table",
    "category",
    "subcategory",
    "dimension",
    "severity",
    "threshold",
    "type",
    "where",
    "key",
    "optional",
    "defects",
}
_RULESET_DIR = "rulesets"


@dataclass(frozen=True)
class Macro:
    """A DuckDB scalar macro a rule set defines for its checks (e.g. the NPI Luhn test)."""

    name: str
    parameters: tuple[str, ...]
    body: str


@dataclass(frozen=True)
class Check:
    id: str
    description: str
    table: str
    category: str
    subcategory: str
    dimension: str
    severity: str
    type: str
    params: dict[str, Any]
    threshold: float = 0.0
    where: str | None = None
    key: tuple[str, ...] = ()
    optional: bool = False
    defects: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "description": self.description,
            "table": self.table,
            "category": self.category,
            "subcategory": self.subcategory,
            "dimension": self.dimension,
            "severity": self.severity,
            "type": self.type,
            "threshold": self.threshold,
            "params": self.params,
            "where": self.where,
            "key": list(self.key),
            "optional": self.optional,
            "defects": list(self.defects),
        }


@dataclass(frozen=True)
class RuleSet:
    name: str
    description: str
    checks: tuple[Check, ...]
    macros: tuple[Macro, ...] = field(default=())


# ------------------------------------------------------------------ validation helpers
def identifier(value: Any, what: str) -> str:
    """`value` if it is a plain SQL identifier; InvalidInput otherwise."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise InvalidInput(f"{what}: not a valid identifier: {value!r}")
    return value


def table_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _TABLE.fullmatch(value):
        raise InvalidInput(f"{what}: not a valid table name (name, store.name or view.name): {value!r}")
    return value


def _identifiers(value: Any, what: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidInput(f"{what}: expected a column name or a list of them")
    return [identifier(item, what) for item in items]


def _expression(value: Any, what: str) -> str:
    """A SQL fragment written by the rule set's author; one statement, no comments that could hide one."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what}: expected SQL text")
    if ";" in value or "--" in value or "/*" in value:
        raise InvalidInput(f"{what}: SQL must be one statement without ';' or comments")
    return value.strip()


def _number(value: Any, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{what}: expected a number, got {value!r}")
    return value


def _scalar(value: Any, what: str) -> str | int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidInput(f"{what}: expected a string or number, got {value!r}")
    return value


def _operand(value: Any, what: str) -> str:
    """A temporal operand: a column name or `as_of` (the run's reference date)."""
    return identifier(value, what)


def _params(kind: str, raw: dict, where: str) -> dict[str, Any]:
    required, optional = CHECK_TYPES[kind]
    unknown = sorted(set(raw) - set(required) - set(optional))
    if unknown:
        raise InvalidInput(f"{where}: unknown parameter(s) for {kind}: {', '.join(unknown)}")
    missing = [name for name in required if name not in raw]
    if missing:
        raise InvalidInput(f"{where}: {kind} needs {', '.join(missing)}")
    p: dict[str, Any] = {}
    for name, value in raw.items():
        label = f"{where}.{name}"
        if name in ("column", "person_key", "foreign_key"):
            p[name] = identifier(value, label)
        elif name in ("columns", "referenced_columns"):
            p[name] = _identifiers(value, label)
        elif name in ("references", "person_table"):
            p[name] = table_name(value, label)
        elif name in ("earlier", "later"):
            p[name] = _operand(value, label)
        elif name in ("condition", "person_where", "sql"):
            p[name] = _expression(value, label)
        elif name in ("min", "max"):
            p[name] = _number(value, label)
        elif name == "values":
            if not isinstance(value, list) or not value:
                raise InvalidInput(f"{label}: expected a non-empty list")
            p[name] = [_scalar(item, label) for item in value]
        elif name == "pattern":
            p[name] = _pattern(value, label)
        elif name == "mode":
            p[name] = _choice(value, REGEX_MODES, label)
        elif name == "normalise":
            p[name] = _choice(value, NORMALISERS, label)
        elif name == "compare_as":
            p[name] = _choice(value, COMPARE_AS, label)
        elif name == "system":
            p[name] = _choice(value, tuple(CODE_SYSTEMS), label)
        elif name == "data_type":
            p[name] = _data_type(value, label)
        elif name == "strict":
            if not isinstance(value, bool):
                raise InvalidInput(f"{label}: expected true or false")
            p[name] = value
    if kind == "foreign_key" and len(p["columns"]) != len(p["referenced_columns"]):
        raise InvalidInput(f"{where}: columns and referenced_columns differ in length")
    if kind == "value_range" and "min" not in p and "max" not in p:
        raise InvalidInput(f"{where}: value_range needs min, max or both")
    return p


def _choice(value: Any, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise InvalidInput(f"{what}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _pattern(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what}: expected a regular expression")
    try:
        re.compile(value)
    except re.error as exc:
        raise InvalidInput(f"{what}: bad regular expression ({exc})") from None
    return value


_DATA_TYPE = re.compile(r"[A-Za-z]+( ?\([0-9, ]+\))?")


def _data_type(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DATA_TYPE.fullmatch(value):
        raise InvalidInput(f"{what}: not a SQL type name: {value!r}")
    return value.upper()


# ------------------------------------------------------------------ parsing
def parse_check(raw: Any, position: int = 0) -> Check:
    """One check from its YAML mapping; InvalidInput with a one-line cause when anything is wrong."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"check #{position + 1}: expected a mapping")
    check_id = raw.get("id")
    if not isinstance(check_id, str) or not _CHECK_ID.fullmatch(check_id):
        raise InvalidInput(f"check #{position + 1}: id must be lower case letters, digits, _ . -")
    where = f"check {check_id}"
    params = {k: v for k, v in raw.items() if k not in _FIELDS}
    kind = raw.get("type")
    if kind not in CHECK_TYPES:
        raise InvalidInput(f"{where}: unknown type {kind!r} (known: {', '.join(CHECK_TYPES)})")
    for name in ("table", "category", "subcategory", "dimension", "severity"):
        if name not in raw:
            raise InvalidInput(f"{where}: {name} is missing")
    category = _choice(raw["category"], tuple(KAHN), f"{where}.category")
    subcategory = _choice(raw["subcategory"], KAHN[category], f"{where}.subcategory")
    threshold = _number(raw.get("threshold", 0), f"{where}.threshold")
    if not 0 <= threshold <= 100:
        raise InvalidInput(f"{where}.threshold: a percent between 0 and 100")
    optional = raw.get("optional", False)
    if not isinstance(optional, bool):
        raise InvalidInput(f"{where}.optional: expected true or false")
    defects = raw.get("defects", [])
    if not isinstance(defects, list) or not all(isinstance(d, str) for d in defects):
        raise InvalidInput(f"{where}.defects: expected a list of defect kinds")
    return Check(
        id=check_id,
        description=str(raw.get("description", "")),
        table=table_name(raw["table"], f"{where}.table"),
        category=category,
        subcategory=subcategory,
        dimension=_choice(raw["dimension"], tuple(DIMENSIONS), f"{where}.dimension"),
        severity=_choice(raw["severity"], SEVERITIES, f"{where}.severity"),
        type=kind,
        params=_params(kind, params, where),
        threshold=float(threshold),
        where=_expression(raw["where"], f"{where}.where") if raw.get("where") is not None else None,
        key=tuple(_identifiers(raw["key"], f"{where}.key")) if raw.get("key") else (),
        optional=optional,
        defects=tuple(defects),
    )


def _macro(raw: Any, position: int) -> Macro:
    if not isinstance(raw, dict) or set(raw) - {"name", "parameters", "body"}:
        raise InvalidInput(f"macro #{position + 1}: expected name, parameters and body")
    name = identifier(raw.get("name"), f"macro #{position + 1}.name")
    parameters = tuple(_identifiers(raw.get("parameters"), f"macro {name}.parameters"))
    return Macro(name, parameters, _expression(raw.get("body"), f"macro {name}.body"))


def parse_ruleset(text: str, source: str = "rule set") -> RuleSet:
    """A rule set from YAML text: `name`, `description`, optional `macros`, and `checks`."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InvalidInput(f"{source}: not valid YAML{where}") from None
    if isinstance(data, list):
        data = {"name": Path(source).stem, "checks": data}
    if not isinstance(data, dict) or not isinstance(data.get("checks"), list):
        raise InvalidInput(f"{source}: expected a mapping with a list of checks")
    checks = tuple(parse_check(raw, n) for n, raw in enumerate(data["checks"]))
    seen: set[str] = set()
    for check in checks:
        if check.id in seen:
            raise InvalidInput(f"{source}: check id {check.id} appears twice")
        seen.add(check.id)
    macros = tuple(_macro(raw, n) for n, raw in enumerate(data.get("macros") or []))
    return RuleSet(str(data.get("name", source)), str(data.get("description", "")), checks, macros)


def ruleset_names() -> list[str]:
    """The rule sets packaged with clinhub."""
    folder = resources.files("clinhub.quality") / _RULESET_DIR
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_ruleset(name_or_path: str | Path) -> RuleSet:
    """A packaged rule set by name (e.g. `directory`) or a YAML file."""
    name = str(name_or_path)
    if name in ruleset_names():
        text = (resources.files("clinhub.quality") / _RULESET_DIR / f"{name}.yaml").read_text("utf-8")
        return parse_ruleset(text, name)
    path = Path(name)
    if not path.is_file():
        known = ", ".join(ruleset_names())
        raise NotFound(f"no rule set {name!r} (packaged: {known}; or give a YAML file)")
    return parse_ruleset(path.read_text(encoding="utf-8"), str(path))
