"""Compiled paths agree with a small in-memory FHIRPath evaluator (a test oracle) on random resources."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clinhub.engine import AnalyticEngine
from clinhub.errors import ViewError
from clinhub.views import run_view

KEYS = ("a", "b", "c")
leaf = st.sampled_from(["x", "y", "z"])
node = st.recursive(
    leaf,
    lambda inner: st.dictionaries(
        st.sampled_from(KEYS), inner | st.lists(inner | st.none(), max_size=3), max_size=3
    ),
    max_leaves=12,
)
resources = st.lists(
    st.dictionaries(st.sampled_from(KEYS), node | st.lists(node | st.none(), max_size=3), max_size=3),
    min_size=1,
    max_size=4,
)
paths = st.lists(st.sampled_from(KEYS), min_size=1, max_size=3).map(".".join)
FUNCTIONS = [
    "",
    ".first()",
    ".last()",
    ".where($this = 'x')",
    ".a.where(exists())",
    ".tail()",
    "[1]",
    "[0].b",
]
SCALARS = {".count()": "integer", ".exists()": "boolean", ".empty()": "boolean", ".join('|')": "string"}
SCALARS |= {" = 'x'": "boolean", " != 'x'": "boolean"}


def items(value: Any) -> list:
    """FHIRPath's view of a JSON value: an array's non-null elements, null as nothing."""
    if value is None:
        return []
    return [v for v in value if v is not None] if isinstance(value, list) else [value]


def evaluate(collection: list, path: str) -> list:
    for name in path.split("."):
        collection = [v for item in collection if isinstance(item, dict) for v in items(item.get(name))]
    return collection


def apply(collection: list, function: str) -> Any:
    result: dict[str, Any] = {
        "": collection,
        ".first()": collection[:1],
        ".last()": collection[-1:],
        ".where($this = 'x')": [v for v in collection if v == "x"],
        ".a.where(exists())": evaluate(collection, "a"),
        ".tail()": collection[1:],
        "[1]": collection[1:2],
        "[0].b": evaluate(collection[:1], "b"),
        ".count()": len(collection),
        ".exists()": bool(collection),
        ".empty()": not collection,
        ".join('|')": "|".join(v for v in collection if isinstance(v, str)) if collection else "",
        # equality of collections: empty if either is empty, else the same items in the same order
        " = 'x'": collection == ["x"] if collection else None,
        " != 'x'": collection != ["x"] if collection else None,
    }
    return result[function]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources, paths, st.sampled_from(FUNCTIONS + list(SCALARS)))
def test_paths_match_the_oracle(resources: list[dict], path: str, function: str) -> None:
    # join() of objects prints JSON in the engine; the oracle only joins strings
    if function == ".join('|')" and any(
        not isinstance(v, str) for r in resources for v in evaluate([r], path)
    ):
        return
    documents = [{"resourceType": "Patient", "id": f"p{i}", **r} for i, r in enumerate(resources)]
    column: dict[str, Any] = {"name": "v", "path": path + function}
    if function in SCALARS:
        column["type"] = SCALARS[function]
    else:
        column["collection"] = True
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id", "type": "id"}, column]}],
    }
    with AnalyticEngine() as engine:
        source = engine.sql(
            "SELECT CAST(unnest(?::VARCHAR[]) AS JSON) AS resource", [[json.dumps(d) for d in documents]]
        )
        found = dict(run_view(engine, view, source).fetchall())
    for document in documents:
        expected = apply(evaluate([document], path), function)
        actual = found[document["id"]]
        if function not in SCALARS:
            actual = [json.loads(v) for v in actual]
        assert actual == expected, (document, path + function)


SINGLE = ["", ".first()", "[1]", "[0].b", ".first().a.first()", "[0].a[1]"]


def single(collection: list, function: str) -> list:
    result = {
        "": collection,
        ".first()": collection[:1],
        "[1]": collection[1:2],
        "[0].b": evaluate(collection[:1], "b"),
        ".first().a.first()": evaluate(collection[:1], "a")[:1],
        "[0].a[1]": evaluate(collection[:1], "a")[1:2],
    }
    return result[function]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources, paths, st.sampled_from(SINGLE), st.booleans())
# shapes a JSON path alone would get wrong: a null first element, an object where an array is indexed,
# an array where a member is read, several items at the end
@example([{"a": [None, "x"]}], "a", ".first()", False)
@example([{"a": [None, "x"]}], "a", "[1]", False)
@example([{"a": {"b": ["x", None]}}], "a.b", "", True)
@example([{"a": {"a": "x"}}], "a", ".first().a.first()", False)
@example([{"a": [{"b": "x"}, {"b": "y"}]}, {"a": [{"b": ["x"]}]}], "a", "[0].b", False)
@example([{"b": {"a": [None, {"a": ["y", "x"]}]}}], "b", "[0].a[1]", False)
def test_single_values_match_the_oracle(
    tmp_path_factory, resources: list[dict], path: str, function: str, compare: bool
) -> None:
    """One-value columns take a JSON path where the data has the usual shapes and the general form
    elsewhere; over NDJSON (the elements read as columns) and over a relation alike, several values
    are an error and anything else the oracle's one item."""
    documents = [{"resourceType": "Patient", "id": f"p{i}", **r} for i, r in enumerate(resources)]
    expression = path + function + (" = 'x'" if compare else "")
    column = {"name": "v", "path": expression, **({"type": "boolean"} if compare else {})}
    view = {
        "resource": "Patient",
        "select": [{"column": [{"name": "id", "path": "id", "type": "id"}, column]}],
    }
    found = {document["id"]: single(evaluate([document], path), function) for document in documents}
    several = any(len(v) > 1 for v in found.values()) and not compare
    ndjson = tmp_path_factory.mktemp("oracle") / "patients.ndjson"
    ndjson.write_text("".join(json.dumps(d) + "\n" for d in documents))
    with AnalyticEngine() as engine:
        relation = engine.sql(
            "SELECT CAST(unnest(?::VARCHAR[]) AS JSON) AS resource", [[json.dumps(d) for d in documents]]
        )
        for source in (relation, ndjson):
            if several:
                with pytest.raises((ViewError, duckdb.Error), match="more than one value"):
                    run_view(engine, view, source).fetchall()
                continue
            rows = dict(run_view(engine, view, source).fetchall())
            for document in documents:
                items = found[document["id"]]
                if compare:
                    expected = items == ["x"] if items else None
                    assert rows[document["id"]] == expected, (document, expression)
                else:
                    # SQL NULL for no item: a JSON null is not an item
                    actual = rows[document["id"]]
                    got = json.loads(actual) if actual is not None else "<none>"
                    assert got == (items[0] if items else "<none>"), (document, expression)
