"""Views compiled to one DuckDB query and run over NDJSON, Parquet and the store; FHIRPath semantics."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput, ViewError
from clinhub.store import create_store_engine, put_resources, upgrade
from clinhub.views import compile_definition, compile_view, run_view, stream_view, write_view

PATIENTS = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "active": True,
        "gender": "female",
        "birthDate": "1980-05",
        "multipleBirthInteger": 2,
        "name": [
            {"use": "official", "family": "Smith", "given": ["Ann", "Marie"]},
            {"use": "maiden", "family": "Jones", "given": ["Ann"]},
        ],
        "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "ann@example.org"}],
        "extension": [{"url": "http://example.org/eye", "valueCode": "blue"}],
        "managingOrganization": {"reference": "Organization/o1"},
    },
    {"resourceType": "Patient", "id": "p2", "active": False, "gender": "male", "deceasedBoolean": True},
]
OTHERS = [
    {
        "resourceType": "Observation",
        "id": "o1",
        "code": {"text": "weight"},
        "valueQuantity": {"value": 70.50},
    },
    {
        "resourceType": "QuestionnaireResponse",
        "id": "q1",
        "item": [
            {"linkId": "1", "item": [{"linkId": "1.1", "answer": [{"item": [{"linkId": "1.1.1"}]}]}]},
            {"linkId": "2"},
        ],
    },
]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text("".join(json.dumps(r) + "\n" for r in PATIENTS))
    (folder / "Other.ndjson").write_text("".join(json.dumps(r) + "\n" for r in OTHERS))
    return folder


@pytest.fixture
def engine() -> AnalyticEngine:
    with AnalyticEngine() as engine:
        yield engine


def view(*select: dict, resource: str = "Patient", **extra: Any) -> dict:
    return {"resourceType": "ViewDefinition", "resource": resource, "select": list(select), **extra}


def col(name: str, path: str, type_: str | None = "string", **extra: Any) -> dict:
    return {"name": name, "path": path, **({"type": type_} if type_ else {}), **extra}


def rows(engine: AnalyticEngine, definition: dict, source: Any) -> list[dict]:
    relation = run_view(engine, definition, source)
    return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def test_a_view_over_ndjson_keeps_its_resource_type_and_column_types(
    engine: AnalyticEngine, data: Path
) -> None:
    definition = view(
        {
            "column": [
                col("id", "id", "id"),
                col("active", "active", "boolean"),
                col("births", "multipleBirth.ofType(integer)", "integer"),
                col("given", "name.given", collection=True),
                col("name", "name.first()", None),
            ]
        }
    )
    relation = run_view(engine, definition, data)
    assert relation.columns == ["id", "active", "births", "given", "name"]
    assert [str(t) for t in relation.types] == ["VARCHAR", "BOOLEAN", "INTEGER", "VARCHAR[]", "JSON"]
    result = sorted(relation.fetchall())
    assert result[0][:4] == ("p1", True, 2, ["Ann", "Marie", "Ann"])
    assert json.loads(result[0][4])["family"] == "Smith"
    assert result[1] == ("p2", False, None, [], None)


def test_foreach_ornull_rowindex_and_nested_selects(engine: AnalyticEngine, data: Path) -> None:
    definition = view(
        {"column": [col("id", "id")]},
        {
            "forEachOrNull": "name",
            "column": [col("n", "%rowIndex", "integer"), col("family", "family")],
            "select": [
                {"forEach": "given", "column": [col("given", "$this"), col("g", "%rowIndex", "integer")]}
            ],
        },
    )
    assert rows(engine, definition, data) == [
        {"id": "p1", "n": 0, "family": "Smith", "given": "Ann", "g": 0},
        {"id": "p1", "n": 0, "family": "Smith", "given": "Marie", "g": 1},
        {"id": "p1", "n": 1, "family": "Jones", "given": "Ann", "g": 0},
    ]
    or_null = view(
        {"column": [col("id", "id")]}, {"forEachOrNull": "name", "column": [col("n", "%rowIndex", "integer")]}
    )
    assert {"id": "p2", "n": 0} in rows(engine, or_null, data)


def test_union_all_and_repeat(engine: AnalyticEngine, data: Path) -> None:
    contacts = view(
        {"column": [col("id", "id")]},
        {
            "unionAll": [
                {"forEach": "telecom", "column": [col("kind", "system"), col("value", "value")]},
                {"forEach": "name", "column": [col("kind", "'name'"), col("value", "family")]},
            ]
        },
        where=[{"path": "active"}],
    )
    assert [(r["kind"], r["value"]) for r in rows(engine, contacts, data)] == [
        ("phone", "555"),
        ("email", "ann@example.org"),
        ("name", "Smith"),
        ("name", "Jones"),
    ]
    items = view(
        {"column": [col("id", "id")]},
        {
            "repeat": ["item", "answer.item"],
            "column": [col("link", "linkId"), col("i", "%rowIndex", "integer")],
        },
        resource="QuestionnaireResponse",
    )
    assert [(r["link"], r["i"]) for r in rows(engine, items, data)] == [
        ("1", 0),
        ("1.1", 1),
        ("1.1.1", 2),
        ("2", 3),
    ]


def test_repeat_nested_in_foreach_and_in_repeat(engine: AnalyticEngine, data: Path) -> None:
    under_foreach = view(
        {
            "forEach": "item",
            "column": [col("group", "linkId")],
            "select": [{"repeat": ["item", "answer.item"], "column": [col("link", "linkId")]}],
        },
        resource="QuestionnaireResponse",
    )
    assert [(r["group"], r["link"]) for r in rows(engine, under_foreach, data)] == [
        ("1", "1.1"),
        ("1", "1.1.1"),
    ]
    under_repeat = view(
        {
            "repeat": ["item"],
            "column": [col("outer", "linkId")],
            "select": [
                {
                    "repeat": ["answer.item"],
                    "column": [col("inner", "linkId"), col("i", "%rowIndex", "integer")],
                }
            ],
        },
        resource="QuestionnaireResponse",
    )
    assert [tuple(r.values()) for r in rows(engine, under_repeat, data)] == [("1.1", "1.1.1", 0)]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name.where(use = 'official').family", "Smith"),
        ("name.given.join(' ')", "Ann Marie Ann"),
        ("name.given.distinct().count().toString()", "2"),
        ("name.given.last()", "Ann"),
        ("name.given.tail().first()", "Marie"),
        ("name.given.skip(1).take(1).single()", "Marie"),
        ("name[1].family", "Jones"),
        ("name.select(family).join(',')", "Smith,Jones"),
        ("name.given.where($index = 1).single()", "Marie"),
        ("telecom.where(system = 'email').value.upper()", "ANN@EXAMPLE.ORG"),
        ("extension('http://example.org/eye').value.ofType(code)", "blue"),
        ("managingOrganization.getReferenceKey(Organization)", "Organization/o1"),
        ("getResourceKey()", "Patient/p1"),
        ("birthDate.lowBoundary()", "1980-05-01"),
        ("birthDate.highBoundary()", "1980-05-31"),
        ("iif(active, 'yes', 'no')", "yes"),
        ("gender.substring(1, 3) & '|' & gender.substring(4)", "ema|le"),
        ("gender.replace('fe', '') + '!'", "male!"),
        ("(2 + 3 * 4 - 1).toString()", "13"),
        ("(7 div 2).toString() & (7 mod 2).toString() & (7 / 2).toString()", "313.5"),
        ("(multipleBirth.ofType(integer) * 10).toString()", "20"),
        ("%resource.id", "p1"),
        ("Patient.gender", "female"),
        ("name.family | name.family", None),  # two values: a collection, not one string
    ],
)
def test_fhirpath_functions(engine: AnalyticEngine, data: Path, path: str, expected: str | None) -> None:
    definition = view({"column": [col("v", path, collection=True)]}, where=[{"path": "id = 'p1'"}])
    (row,) = rows(engine, definition, data)
    if expected is None:
        assert sorted(row["v"]) == ["Jones", "Smith"]
    else:
        assert row["v"] == [expected]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("name.exists() and name.empty().not()", [True, False]),
        ("gender = 'male' or deceased.ofType(boolean)", [None, True]),  # false or {} is {}
        ("gender = 'female' xor active", [False, False]),
        ("gender = 'male' implies deceased.ofType(boolean).exists()", [True, True]),
        ("deceased.exists()", [False, False]),  # without a FHIR model a choice element needs ofType()
        ("gender ~ 'FEMALE'", [True, False]),
        ("gender !~ 'FEMALE'", [False, True]),
        ("'Ann' in name.given", [True, False]),
        ("name.given contains 'Marie'", [True, False]),
        ("name.given.all(length() = 3)", [False, True]),
        ("telecom.system.allTrue()", [True, True]),
        ("name.given.select(startsWith('A')).anyTrue()", [True, False]),
        ("birthDate > @1979", [True, None]),
        ("multipleBirth.ofType(integer) >= 2", [True, None]),
        ("name.family = 'Smith'", [False, None]),  # two family names are not the one value 'Smith'
    ],
)
def test_boolean_logic_is_three_valued(engine: AnalyticEngine, data: Path, path: str, expected: list) -> None:
    definition = view({"column": [col("id", "id"), col("v", path, "boolean")]})
    assert [r["v"] for r in sorted(rows(engine, definition, data), key=lambda r: r["id"])] == expected


def test_errors_the_data_causes_surface_as_view_errors(
    engine: AnalyticEngine, data: Path, tmp_path: Path
) -> None:
    many = view({"column": [col("given", "name.given")]})
    with pytest.raises(duckdb.InvalidInputException, match="returned more than one value; set collection"):
        run_view(engine, many, data).fetchall()
    with pytest.raises(
        ViewError, match=re.escape("column 'given' (path 'name.given') returned more than one")
    ):
        write_view(engine, many, data, tmp_path / "out.csv")
    not_boolean = view({"column": [col("id", "id")]}, where=[{"path": "name.family.first()"}])
    with pytest.raises(ViewError, match=re.escape("where path 'name.family.first()' must return a boolean")):
        write_view(engine, not_boolean, data, tmp_path / "out.csv")


def test_a_where_path_is_never_evaluated_on_other_resource_types(engine: AnalyticEngine, data: Path) -> None:
    # code.text is a string: on the Observation it would be a non-boolean where result, an error
    definition = view({"column": [col("id", "id")]}, where=[{"path": "code.text"}])
    assert rows(engine, definition, data) == []


@pytest.mark.parametrize(
    ("select", "message"),
    [
        (
            [{"column": [col("v", "name.foo()")]}],
            "/select/0/column/0/path: unknown or unsupported FHIRPath function foo()",
        ),
        ([{"column": [col("v", "name.where()")]}], "where() takes 1 argument(s), got 0"),
        ([{"column": [col("v", "5 'mg'")]}], "quantity literals"),
        ([{"column": [col("v", "@2020-01-01 + 1")]}], "date and time arithmetic is not supported"),
        ([{"column": [col("v", "name['a']")]}], "an index must be an integer"),
        ([{"column": [col("v", "$total")]}], "$total is not available here"),
        (
            [{"unionAll": [{"column": [col("v", "id", "string")]}, {"column": [col("v", "id", "boolean")]}]}],
            "column 'v' is boolean here but string in the first branch",
        ),
    ],
)
def test_compile_errors_name_the_element(select: list, message: str) -> None:
    with pytest.raises(ViewError) as info:
        compile_view(view(*select))
    assert message in info.value.message


def test_compiled_sql_reads_a_named_relation(engine: AnalyticEngine) -> None:
    sql = compile_view(view({"column": [col("id", "id")]}), source="my_resources")
    assert "FROM my_resources AS src" in sql
    engine.sql("CREATE TABLE my_resources AS SELECT CAST(? AS JSON) AS resource", [json.dumps(PATIENTS[0])])
    assert engine.fetchall(sql) == [("p1",)]
    compiled = compile_definition(
        view({"column": [col("id", "id"), col("g", "name.given", collection=True)]})
    )
    assert [(c.name, c.type, c.collection) for c in compiled.columns] == [
        ("id", "string", False),
        ("g", "string", True),
    ]
    with pytest.raises(ViewError, match="unknown SQL dialect 'oracle'"):
        compile_view(view({"column": [col("id", "id")]}), dialect="oracle")


def test_write_formats_stream_through_copy(engine: AnalyticEngine, data: Path, tmp_path: Path) -> None:
    definition = view({"column": [col("id", "id"), col("given", "name.given", collection=True)]})
    write_view(engine, definition, data, tmp_path / "v.csv", "csv")
    assert next(csv.reader((tmp_path / "v.csv").open())) == ["id", "given"]
    write_view(engine, definition, data, tmp_path / "v.ndjson", "ndjson", limit=1)
    lines = (tmp_path / "v.ndjson").read_text().splitlines()
    assert len(lines) == 1 and set(json.loads(lines[0])) == {"id", "given"}
    write_view(engine, definition, data, tmp_path / "v.json", "json")
    assert sorted(r["id"] for r in json.loads((tmp_path / "v.json").read_text())) == ["p1", "p2"]
    write_view(engine, definition, data, tmp_path / "v.parquet", "parquet")
    assert engine.fetchall(f"SELECT count(*) FROM '{tmp_path / 'v.parquet'}'") == [(2,)]
    buffer = io.BytesIO()
    stream_view(engine, definition, data, buffer, "csv")
    assert buffer.getvalue().decode().splitlines()[0] == "id,given"
    with pytest.raises(InvalidInput, match="unknown output format"):
        write_view(engine, definition, data, tmp_path / "v.xml", "xml")
    with pytest.raises(InvalidInput, match="parquet output needs a file"):
        stream_view(engine, definition, data, buffer, "parquet")


def test_a_view_over_parquet(engine: AnalyticEngine, data: Path, tmp_path: Path) -> None:
    target = tmp_path / "resources.parquet"
    resources = f"SELECT json AS resource FROM read_json_objects('{data}/*.ndjson')"
    engine.sql(f"COPY ({resources}) TO '{target}' (FORMAT parquet)")
    assert sorted(rows(engine, view({"column": [col("id", "id")]}), target), key=str) == [
        {"id": "p1"},
        {"id": "p2"},
    ]


def test_a_view_over_the_store(sqlite_url: str) -> None:
    store = create_store_engine(sqlite_url)
    upgrade(store)
    put_resources(store, PATIENTS + OTHERS)
    with AnalyticEngine(sqlite_url) as engine:
        definition = view({"column": [col("id", "id"), col("gender", "gender", "code")]})
        assert sorted(r["gender"] for r in rows(engine, definition, "store")) == ["female", "male"]
    store.dispose()
