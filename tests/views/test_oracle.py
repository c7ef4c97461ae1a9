"""Compiled paths agree with a small in-memory FHIRPath evaluator (a test oracle) on random resources."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinhub.engine import AnalyticEngine
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
    st.dictionaries(st.sampled_from(KEYS), node | st.lists(node, max_size=3), max_size=3),
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
