"""ViewDefinition validation: what is wrong and where, before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from clinhub.errors import ViewError
from clinhub.views import parse_view
from clinhub.views.fhirpath import Identifier


def view(**changes: Any) -> dict:
    base: dict[str, Any] = {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id", "type": "id"}]}],
    }
    return base | changes


def columns(*names: str) -> list[dict]:
    return [{"name": name, "path": "id"} for name in names]


def test_a_valid_view_becomes_a_model() -> None:
    model = parse_view(
        view(
            name="patients",
            constant=[{"name": "use", "valueCode": "official"}, {"name": "n", "valueInteger": 2}],
            where=[{"path": "active"}],
            select=[
                {"column": columns("id")},
                {
                    "forEachOrNull": "name",
                    "column": [{"name": "family", "path": "family", "collection": True}],
                },
                {"repeat": ["item", "answer.item"], "column": columns("link")},
                {"unionAll": [{"column": columns("a", "b")}, {"forEach": "x", "column": columns("a", "b")}]},
            ],
        )
    )
    assert model.resource == "Patient" and model.name == "patients"
    assert model.constants["use"].type == "code" and model.constants["n"].value == 2
    assert model.where[0].expression == Identifier("active")
    assert [c.name for c in model.columns()] == ["id", "family", "link", "a", "b"]
    assert model.select[1].or_null and model.select[1].columns[0].collection
    assert len(model.select[2].repeat) == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "/resource: required"),
        (view(resource="patient"), "/resource: required, a FHIR resource type"),
        (view(resourceType="Patient"), "/resourceType: expected 'ViewDefinition'"),
        (view(select=[]), "/select: required, a non-empty list"),
        (view(select={"column": []}), "/select: must be a list"),
        (view(select=[{"column": []}]), "/select/0: a select needs at least one column"),
        (view(select=[{"forEach": 1, "column": columns("a")}]), "/select/0/forEach: must be a FHIRPath"),
        (view(select=[{"forEach": "@@", "column": columns("a")}]), "/select/0/forEach: invalid date/time"),
        (view(select=[{"forEach": "a", "repeat": ["b"], "column": columns("a")}]), "only one of forEach"),
        (view(select=[{"repeat": [], "column": columns("a")}]), "/select/0/repeat: must be a non-empty"),
        (view(select=[{"colum": columns("a")}]), "/select/0: unknown element 'colum'"),
        (view(select=[{"column": [{"name": "1d", "path": "id"}]}]), "/select/0/column/0/name: required"),
        (view(select=[{"column": [{"name": "a-b", "path": "id"}]}]), "/select/0/column/0/name"),
        (view(select=[{"column": [{"name": "a"}]}]), "/select/0/column/0/path: required"),
        (view(select=[{"column": [{"name": "a", "path": "a", "collection": "yes"}]}]), "collection: must be"),
        (
            view(select=[{"column": [{"name": "a", "path": "a b"}]}]),
            "/select/0/column/0/path: unexpected token",
        ),
        (view(select=[{"column": columns("a")}, {"column": columns("a")}]), "column 'a' is already defined"),
        (
            view(select=[{"unionAll": [{"column": columns("a", "b")}, {"column": columns("a", "c")}]}]),
            "/select/0/unionAll/1: columns ['a', 'c'] differ",
        ),
        (
            view(select=[{"unionAll": [{"column": columns("a", "b")}, {"column": columns("b", "a")}]}]),
            "same names in the same order",
        ),
        (view(constant=[{"name": "c"}]), "/constant/0: constant 'c' needs exactly one value[x], found 0"),
        (
            view(constant=[{"name": "c", "valueFoo": 1}]),
            "/constant/0/valueFoo: not a supported constant type",
        ),
        (
            view(constant=[{"name": "c", "valueInteger": "1"}]),
            "/constant/0/valueInteger: '1' is not a valid integer",
        ),
        (
            view(constant=[{"name": "c", "valueBoolean": 1}]),
            "/constant/0/valueBoolean: 1 is not a valid boolean",
        ),
        (
            view(constant=[{"name": "c", "valueString": "a"}, {"name": "c", "valueString": "b"}]),
            "/constant/1/name: constant 'c' is defined twice",
        ),
        (view(where=[{"path": "%missing = 1"}]), "/where/0/path: %missing is not a constant of this view"),
        (view(where=[{"expression": "a"}]), "/where/0: must be an object with a 'path'"),
    ],
)
def test_invalid_views_say_what_and_where(data: Any, message: str) -> None:
    with pytest.raises(ViewError) as info:
        parse_view(data)
    assert message in info.value.message


def test_environment_variables_need_no_constant() -> None:
    parse_view(
        view(select=[{"column": [{"name": "i", "path": "%rowIndex"}, {"name": "r", "path": "%resource.id"}]}])
    )
