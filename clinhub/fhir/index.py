"""Search parameters per resource type, and the index rows each resource gives them (no FHIRPath per row).

Every searchable element is read by a small function written for it, so indexing a resource costs a few
dict lookups per parameter. A parameter is stored under one name in one of the five index tables
(`clinhub.store.schema.SEARCH_TABLES`); several URL parameters may read the same stored rows (`patient`
is `subject` restricted to Patient targets), which keeps the index small.

This module knows nothing of the database: it turns a resource into plain tuples, which the store's
writers insert (clinhub/store/resources.py) and the search compiler queries (clinhub/fhir/search.py).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

TOKEN = "token"  # noqa: S105 (a parameter kind, not a secret)
STRING = "string"
DATE = "date"
REFERENCE = "reference"
QUANTITY = "quantity"

#: column sizes of the index tables: values are cut to them on write and on search alike
TEXT_MAX = 255
ID_MAX = 64
UNIT_MAX = 64

DATE_MIN = datetime(1000, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
#: a date range at most this wide is "narrow": its `low` is within a day of its `high`
NARROW = timedelta(days=1)
_MICRO = timedelta(microseconds=1)


@dataclass(frozen=True)
class SearchParam:
    """A search parameter as the REST API knows it."""

    name: str
    kind: str
    stored: str
    #: reference parameters: the one resource type they find (None: any)
    target: str | None = None
    #: for the CapabilityStatement: where the value comes from
    expression: str = ""


# ------------------------------------------------------------------ value readers
# Exact type checks (`type(x) is dict`), not isinstance: JSON gives exactly these types, and the check
# runs for every element of every resource a bulk load writes.
def _items(value: object) -> list | tuple:
    kind = type(value)
    if kind is list:
        return value  # type: ignore[return-value]
    if kind is dict:
        return (value,)
    return ()


def _system(value: object) -> str | None:
    return value if type(value) is str and value else None


def codings(concepts: object) -> list[tuple[str | None, str]]:
    """(system, code) of every coding of one CodeableConcept or a list of them."""
    found = []
    for concept in _items(concepts):
        if type(concept) is dict:
            for item in _items(concept.get("coding")):
                if type(item) is dict:
                    value = item.get("code")
                    if type(value) is str and value:
                        found.append((_system(item.get("system")), value))
    return found


def coding(value: object) -> list[tuple[str | None, str]]:
    """(system, code) of a Coding (or a list of Codings)."""
    found = []
    for item in _items(value):
        if type(item) is dict:
            code_value = item.get("code")
            if type(code_value) is str and code_value:
                found.append((_system(item.get("system")), code_value))
    return found


def identifiers(value: object) -> list[tuple[str | None, str]]:
    found = []
    for item in _items(value):
        if type(item) is dict:
            identifier = item.get("value")
            if type(identifier) is str and identifier:
                found.append((_system(item.get("system")), identifier))
    return found


def code(system: str | None) -> Callable[[object], list[tuple[str | None, str]]]:
    """A reader for a `code` element whose system is fixed by its value set."""

    def read(value: object) -> list[tuple[str | None, str]]:
        return [(system, value)] if type(value) is str and value else []  # type: ignore[list-item]

    return read


def human_names(parts: tuple[str, ...]) -> Callable[[object], list[str]]:
    """A reader for the given parts (family, given, text, prefix, suffix) of HumanNames."""

    def read(value: object) -> list[str]:
        found: list[str] = []
        for name in _items(value):
            if type(name) is not dict:
                continue
            for part in parts:
                item = name.get(part)
                if type(item) is str:
                    if item:
                        found.append(item)  # type: ignore[arg-type]
                elif type(item) is list:
                    found.extend(x for x in item if type(x) is str and x)  # type: ignore[union-attr]
        return found

    return read


def strings(value: object) -> list[str]:
    if type(value) is str:
        return [value] if value else []  # type: ignore[list-item]
    return [item for item in _items(value) if type(item) is str and item]


def references(value: object) -> list[tuple[str, str]]:
    """(type, id) of relative references `Type/id` (or `Type/id/_history/n`); others are not indexed."""
    found = []
    for item in _items(value):
        if type(item) is not dict:
            continue
        reference = item.get("reference")
        if type(reference) is not str:
            continue
        parts = reference.split("/")  # type: ignore[union-attr]
        if len(parts) in (2, 4) and parts[0][:1].isupper() and parts[1] and len(parts[1]) <= ID_MAX:
            found.append((parts[0], parts[1]))
    return found


def quantities(value: object) -> list[tuple[float, str | None, str | None]]:
    found = []
    for item in _items(value):
        if type(item) is not dict:
            continue
        number = item.get("value")
        if type(number) in (int, float):
            unit = item.get("code") or item.get("unit")
            found.append((float(number), _system(item.get("system")), unit if type(unit) is str else None))
    return found


# ------------------------------------------------------------------ dates
def _month_end(year: int, month: int) -> datetime:
    first_next = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return first_next - _MICRO


def date_range(value: object) -> tuple[datetime, datetime] | None:
    """The UTC range, both ends inclusive, that a FHIR date, dateTime or instant covers; None if invalid.

    A value without a time zone is taken as UTC. Precision sets the width: `2024` is the whole year,
    `2024-03-05T10:00:00Z` the second from 10:00:00 to 10:00:00.999999.
    """
    if not isinstance(value, str):
        return None
    try:
        size = len(value)
        if size == 4:
            year = int(value)
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
        if size == 7:
            year, month = int(value[:4]), int(value[5:7])
            return datetime(year, month, 1, tzinfo=UTC), _month_end(year, month)
        if size == 10:
            day = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return day, day + (NARROW - _MICRO)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    zone = moment.tzinfo
    if zone is None:
        moment = moment.replace(tzinfo=UTC)
    elif zone is not UTC:
        moment = moment.astimezone(UTC)
    if "." in value[19:20]:
        return moment, moment
    return moment, moment + timedelta(seconds=1) - _MICRO


def period_range(value: object) -> tuple[datetime, datetime] | None:
    if not isinstance(value, dict):
        return None
    start, end = date_range(value.get("start")), date_range(value.get("end"))
    if start is None and end is None:
        return None
    return (start[0] if start else DATE_MIN), (end[1] if end else DATE_MAX)


def dates(value: object) -> list[tuple[datetime, datetime]]:
    found = date_range(value)
    return [found] if found else []


def periods(value: object) -> list[tuple[datetime, datetime]]:
    found = period_range(value)
    return [found] if found else []


def choice(readers: dict[str, Callable[[object], list]]) -> Callable[[dict], list]:
    """A reader of a choice element (`effective[x]`): the first of its typed names present."""

    def read(resource: dict) -> list:
        for name, reader in readers.items():
            if name in resource:
                return reader(resource[name])
        return []

    return read


def element(name: str, reader: Callable[[object], list]) -> Callable[[dict], list]:
    def read(resource: dict) -> list:
        value = resource.get(name)
        return reader(value) if value is not None else []

    return read


# ------------------------------------------------------------------ the parameters
@dataclass(frozen=True)
class Stored:
    """A parameter as stored: its index-table kind and how to read its values from a resource."""

    name: str
    kind: str
    read: Callable[[dict], list]
    expression: str


_NAME_PARTS = ("family", "given", "text", "prefix", "suffix")
_ADMIN_GENDER = "http://hl7.org/fhir/administrative-gender"
_CLINICAL_DATE = choice({"effectiveDateTime": dates, "effectivePeriod": periods, "effectiveInstant": dates})


def _identifier() -> Stored:
    return Stored("identifier", TOKEN, element("identifier", identifiers), "identifier")


def _subject() -> Stored:
    return Stored("subject", REFERENCE, element("subject", references), "subject")


STORED: dict[str, tuple[Stored, ...]] = {
    "Patient": (
        _identifier(),
        Stored("name", STRING, element("name", human_names(_NAME_PARTS)), "name"),
        Stored("family", STRING, element("name", human_names(("family",))), "name.family"),
        Stored("given", STRING, element("name", human_names(("given",))), "name.given"),
        Stored("birthdate", DATE, element("birthDate", dates), "birthDate"),
        Stored("gender", TOKEN, element("gender", code(_ADMIN_GENDER)), "gender"),
    ),
    "Encounter": (
        _identifier(),
        _subject(),
        Stored("date", DATE, element("period", periods), "period"),
        Stored("status", TOKEN, element("status", code("http://hl7.org/fhir/encounter-status")), "status"),
        Stored("class", TOKEN, element("class", coding), "class"),
    ),
    "Observation": (
        _identifier(),
        _subject(),
        Stored("code", TOKEN, element("code", codings), "code"),
        Stored("category", TOKEN, element("category", codings), "category"),
        Stored("date", DATE, _CLINICAL_DATE, "effective"),
        Stored("value-quantity", QUANTITY, element("valueQuantity", quantities), "value.as(Quantity)"),
    ),
    "Condition": (
        _identifier(),
        _subject(),
        Stored("code", TOKEN, element("code", codings), "code"),
        Stored("clinical-status", TOKEN, element("clinicalStatus", codings), "clinicalStatus"),
        Stored(
            "onset-date",
            DATE,
            choice({"onsetDateTime": dates, "onsetPeriod": periods}),
            "onset.as(dateTime) | onset.as(Period)",
        ),
    ),
    "MedicationRequest": (
        _identifier(),
        _subject(),
        Stored(
            "status",
            TOKEN,
            element("status", code("http://hl7.org/fhir/CodeSystem/medicationrequest-status")),
            "status",
        ),
        Stored(
            "code", TOKEN, element("medicationCodeableConcept", codings), "medication.as(CodeableConcept)"
        ),
    ),
    "AllergyIntolerance": (
        _identifier(),
        Stored("patient", REFERENCE, element("patient", references), "patient"),
    ),
    "Practitioner": (
        _identifier(),
        Stored("name", STRING, element("name", human_names(_NAME_PARTS)), "name"),
    ),
    "Organization": (
        _identifier(),
        Stored("name", STRING, lambda r: strings(r.get("name")) + strings(r.get("alias")), "name | alias"),
    ),
    "PractitionerRole": (
        _identifier(),
        Stored("practitioner", REFERENCE, element("practitioner", references), "practitioner"),
        Stored("organization", REFERENCE, element("organization", references), "organization"),
    ),
}


def _params() -> dict[str, dict[str, SearchParam]]:
    found: dict[str, dict[str, SearchParam]] = {}
    for resource_type, stored in STORED.items():
        params = {s.name: SearchParam(s.name, s.kind, s.name, None, s.expression) for s in stored}
        if "subject" in params:
            params["patient"] = SearchParam(
                "patient", REFERENCE, "subject", "Patient", "subject.where(Patient)"
            )
        found[resource_type] = params
    return found


#: resource type -> URL parameter name -> definition
PARAMS: dict[str, dict[str, SearchParam]] = _params()


def search_param(resource_type: str, name: str) -> SearchParam | None:
    return PARAMS.get(resource_type, {}).get(name)


# ------------------------------------------------------------------ index rows
def normalise(text: str) -> str:
    """Lower case without accents: what string search compares (`Müller` finds `muller`)."""
    if text.isascii():
        return text.lower()[:TEXT_MAX]
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()[:TEXT_MAX]


#: slots of the (slot, row) pairs `resource_rows` gives: positions of the kinds' tables in
#: clinhub.store.schema.SEARCH_TABLES (token, string, date, reference, quantity)
_TOKEN, _STRING, _DATE, _REFERENCE, _QUANTITY = range(5)


def resource_rows(
    resource_type: str,
    resource_id: str,
    resource: dict,
    stamp: Callable[[datetime], object] = lambda moment: moment,
) -> list[tuple[int, tuple]]:
    """The index rows of one resource as (slot, row) pairs, each row in its table's column order.

    `stamp` turns datetimes into the driver's values. A value a parameter cannot read (malformed data,
    which bulk loads accept) is left out of the index rather than failing the write.
    """
    found: list[tuple[int, tuple]] = []
    for param in STORED.get(resource_type, ()):
        try:
            values = param.read(resource)
        except (TypeError, ValueError, AttributeError, OverflowError):
            continue
        if not values:
            continue
        if len(values) > 1:
            values = list(dict.fromkeys(values))
        name, kind = param.name, param.kind
        if kind == TOKEN:
            for system, value in values:
                row = (
                    resource_type,
                    resource_id,
                    name,
                    system[:TEXT_MAX] if system else None,
                    value[:TEXT_MAX],
                )
                found.append((_TOKEN, row))
        elif kind == REFERENCE:
            for target_type, target_id in values:
                found.append(
                    (_REFERENCE, (resource_type, resource_id, name, target_type[:ID_MAX], target_id))
                )
        elif kind == STRING:
            for value in values:
                found.append(
                    (_STRING, (resource_type, resource_id, name, normalise(value), value[:TEXT_MAX]))
                )
        elif kind == DATE:
            for low, high in values:
                row = (resource_type, resource_id, name, stamp(low), stamp(high), high - low > NARROW)
                found.append((_DATE, row))
        else:
            for number, system, unit in values:
                row = (
                    resource_type,
                    resource_id,
                    name,
                    number,
                    system and system[:TEXT_MAX],
                    unit and unit[:UNIT_MAX],
                )
                found.append((_QUANTITY, row))
    return found
