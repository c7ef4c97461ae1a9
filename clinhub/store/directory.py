"""Loading a provider directory (providers, facilities, affiliations, activities) from CSV files."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import date
from pathlib import Path

from sqlalchemy import Boolean, Date, Engine, Integer, Table, delete, func, select

from clinhub.errors import InvalidInput
from clinhub.store.schema import activity, affiliation, facility, provider

#: file name -> table, in load order
DIRECTORY_FILES: dict[str, Table] = {
    "providers.csv": provider,
    "facilities.csv": facility,
    "affiliations.csv": affiliation,
    "activities.csv": activity,
}

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def _as_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _converter(table: Table, name: str) -> Callable[[str], object]:
    column_type = table.c[name].type
    if isinstance(column_type, Boolean):
        return _as_bool
    if isinstance(column_type, Date):
        return date.fromisoformat
    if isinstance(column_type, Integer):
        return int
    return str


def _rows(path: Path, table: Table) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        unknown = [name for name in header if name not in table.c]
        if unknown:
            raise InvalidInput(f"{path.name}: unknown column(s) {', '.join(unknown)}")
        converters = {name: _converter(table, name) for name in header}
        rows = []
        for line, record in enumerate(reader, start=2):
            row = {}
            for name, text in record.items():
                if text is None or text == "":
                    row[name] = None
                    continue
                try:
                    row[name] = converters[name](text)
                except ValueError:
                    raise InvalidInput(f"{path.name} line {line}: bad value for {name}") from None
            rows.append({k: v for k, v in row.items() if v is not None or table.c[k].nullable})
        return rows


def load_directory(engine: Engine, directory: Path) -> dict[str, int]:
    """Replace the provider directory with the CSV files in `directory`, in one transaction."""
    missing = [name for name in DIRECTORY_FILES if not (directory / name).is_file()]
    if missing:
        raise InvalidInput(f"{directory}: missing {', '.join(missing)}")
    loaded = {name: _rows(directory / name, table) for name, table in DIRECTORY_FILES.items()}
    with engine.begin() as conn:
        for table in reversed(DIRECTORY_FILES.values()):
            conn.execute(delete(table))
        for name, table in DIRECTORY_FILES.items():
            if loaded[name]:
                conn.execute(table.insert(), loaded[name])
    return {table.name: len(loaded[name]) for name, table in DIRECTORY_FILES.items()}


def count_directory(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in DIRECTORY_FILES.values()
        }
