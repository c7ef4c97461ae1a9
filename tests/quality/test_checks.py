"""Each check type on hand-built DuckDB tables; statuses; bad input is a one-line InvalidInput."""

from __future__ import annotations

from datetime import date

import pytest

from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput
from clinhub.quality import failing_rows, parse_check, parse_ruleset, run_checks
from clinhub.quality.checks import Macro

AS_OF = date(2025, 6, 30)


@pytest.fixture(scope="module")
def engine():
    with AnalyticEngine() as engine, engine.cursor() as cur:
        cur.execute(
            """
            CREATE TABLE person (id VARCHAR, name VARCHAR, first VARCHAR, last VARCHAR, gender VARCHAR,
                birth DATE, death DATE, age VARCHAR, email VARCHAR, code VARCHAR, active BOOLEAN);
            INSERT INTO person VALUES
              ('p1', 'Ann Lee', 'Ann', 'Lee', 'F', DATE '1980-01-01', NULL, '45', 'ann@x.org', '8867-4',
               TRUE),
              ('p2', 'Bob Ray', 'Bob', 'Ray', 'M', DATE '1990-05-01', DATE '1989-01-01', '35', 'bob@x', '123',
               TRUE),
              ('p3', 'Cy Roe',  'Cy', 'Poe', 'X', DATE '2000-01-01', NULL, 'old', NULL, NULL, FALSE),
              ('p3', NULL, 'Di', 'Fay', NULL, NULL, NULL, NULL, 'ANN@x.org ', '8480-6', TRUE),
              (NULL, 'Ed Go', 'Ed', 'Go', 'M', DATE '1970-01-01', NULL, '55', '', '2-1', TRUE);
            CREATE TABLE visit (visit_id VARCHAR, person_id VARCHAR, start_date DATE, end_date DATE);
            INSERT INTO visit VALUES ('v1', 'p1', DATE '2024-01-01', DATE '2024-01-03'),
              ('v2', 'p1', DATE '2024-02-01', DATE '2024-01-03'), ('v3', 'p9', DATE '2024-01-01', NULL),
              ('v4', 'p2', DATE '2026-01-01', DATE '2026-01-01');
            CREATE TABLE empty_table (id VARCHAR);
            """
        )
        yield engine


def _check(**fields) -> dict:
    base = {
        "id": "t",
        "table": "person",
        "category": "conformance",
        "subcategory": "value",
        "dimension": "validity",
        "severity": "HIGH",
        "key": "id",
    }
    return {**base, **fields}


def _failing(engine, macros=(), **fields) -> list:
    check = parse_check(_check(**fields))
    result = run_checks(engine, [check], as_of=AS_OF, macros=macros, snapshot=False).results[0]
    assert result.status in ("passed", "failed"), result.error
    rows = failing_rows(engine, check, as_of=AS_OF, macros=macros).fetchall()
    assert len(rows) == result.rows_failed
    return rows


def _ids(engine, key: int = 0, **fields) -> list:
    return sorted(str(row[key]) for row in _failing(engine, **fields))


CASES = [
    ({"type": "required", "column": "email"}, ["None", "p3"]),
    (
        {"type": "null_percent", "column": "gender", "category": "completeness", "subcategory": "atemporal"},
        ["p3"],
    ),
    ({"type": "data_type", "column": "age", "data_type": "INTEGER"}, ["p3"]),
    ({"type": "regex", "column": "email", "pattern": r"[^@ ]+@[^@ ]+\.[a-z]+"}, ["p2", "p3"]),
    ({"type": "regex", "column": "email", "pattern": "(?i)@x\\.org", "mode": "must_not_match"}, ["p1", "p3"]),
    ({"type": "value_set", "column": "gender", "values": ["F", "M"]}, ["p3"]),
    ({"type": "primary_key", "columns": ["id"]}, ["None", "p3", "p3"]),
    ({"type": "unique", "columns": ["email"], "normalise": "lower_trim"}, ["p1", "p3"]),
    ({"type": "code_system", "column": "code", "system": "loinc"}, ["p2"]),
    ({"type": "temporal_order", "earlier": "birth", "later": "death"}, ["p2"]),
    ({"type": "temporal_order", "earlier": "birth", "later": "as_of", "strict": True}, []),
    ({"type": "cross_field", "condition": "name = first || ' ' || last"}, ["p3", "p3"]),
    ({"type": "custom_sql", "sql": "SELECT * FROM person WHERE NOT active"}, ["p3"]),
    ({"type": "cross_field", "condition": "birth < {as_of}", "where": "active"}, ["p3"]),
]


@pytest.mark.parametrize(("fields", "expected"), CASES)
def test_check_types_find_exactly_the_failing_rows(engine, fields, expected) -> None:
    assert _ids(engine, **fields) == expected


def test_value_range_and_foreign_key_and_records_per_person(engine) -> None:
    rows = _failing(
        engine,
        type="foreign_key",
        table="visit",
        key="visit_id",
        columns=["person_id"],
        references="person",
        referenced_columns=["id"],
    )
    assert [r[0] for r in rows] == ["v3"]
    rows = _failing(
        engine,
        type="records_per_person",
        table="visit",
        key="id",
        person_table="person",
        person_key="id",
        person_where="active",
        foreign_key="person_id",
        min=1,
        max=1,
    )
    assert sorted((str(r[0]), r[1]) for r in rows) == [("None", 0), ("p1", 2), ("p3", 0)]
    rows = _failing(
        engine, type="temporal_order", table="visit", key="visit_id", earlier="start_date", later="as_of"
    )
    assert [r[0] for r in rows] == ["v4"]


def test_value_range_bounds(engine) -> None:
    check = parse_check(_check(type="value_range", table="visit", key="visit_id", column="start_date", min=1))
    # comparing a date with a number is a binder error: reported, not raised
    assert run_checks(engine, [check], as_of=AS_OF).results[0].status == "error"
    engine.sql("CREATE OR REPLACE TABLE n AS SELECT * FROM range(10) t(v)")
    numeric = parse_check(_check(type="value_range", table="n", key="v", column="v", min=2, max=7))
    result = run_checks(engine, [numeric], as_of=AS_OF).results[0]
    assert (result.status, result.rows_checked, result.rows_failed) == ("failed", 10, 4)


def test_threshold_decides_passed_or_failed(engine) -> None:
    lenient = parse_check(_check(type="required", column="email", threshold=40))
    strict = parse_check(_check(id="u", type="required", column="email", threshold=39.9))
    run = run_checks(engine, [lenient, strict], as_of=AS_OF)
    assert [r.status for r in run.results] == ["passed", "failed"]
    assert run.results[0].percent_failed == pytest.approx(40.0)
    assert run.results[1].sample and run.results[1].sample[0]["id"] in (None, "p3")


def test_not_applicable_and_errors_do_not_stop_the_run(engine) -> None:
    checks = [
        parse_check(_check(id="empty", table="empty_table", type="required", column="id")),
        parse_check(_check(id="optional", type="required", column="nickname", optional=True)),
        parse_check(_check(id="missing", type="required", column="nickname")),
        parse_check(_check(id="badsql", type="cross_field", condition="name === 1")),
        parse_check(_check(id="notable", table="no_such_table", type="required", column="id")),
        parse_check(_check(id="ok", type="value_set", column="gender", values=["F", "M", "X"])),
    ]
    run = run_checks(engine, checks, as_of=AS_OF)
    status = {r.check.id: r.status for r in run.results}
    assert status == {
        "empty": "not_applicable",
        "optional": "not_applicable",
        "missing": "error",
        "badsql": "error",
        "notable": "error",
        "ok": "passed",
    }
    errors = [r.error for r in run.results if r.status == "error"]
    assert all(e and "\n" not in e for e in errors)
    assert "nickname" in errors[0]
    assert run.counts() == {"passed": 1, "failed": 0, "not_applicable": 2, "error": 3}
    assert run.scores.percent_passed == 100.0


def test_error_causes_do_not_quote_data(engine) -> None:
    check = parse_check(_check(type="cross_field", condition="CAST(first AS INTEGER) > 0"))
    result = run_checks(engine, [check], as_of=AS_OF).results[0]
    assert result.status == "error" and "Conversion" in result.error
    assert "Ann" not in result.error and "'…'" in result.error


def test_macros_are_defined_for_the_run(engine) -> None:
    macro = Macro("is_even_len", ("s",), "length(s) % 2 = 0")
    assert _ids(
        engine, macros=[macro], type="cross_field", condition="is_even_len(first)", where="first <> 'Di'"
    ) == ["p1", "p2"]


def test_scores_weight_dimensions_and_grade(engine) -> None:
    checks = [
        parse_check(_check(id="a", type="required", column="email", dimension="completeness")),
        parse_check(
            _check(
                id="b",
                type="value_set",
                column="gender",
                values=["F", "M"],
                dimension="accuracy",
                category="plausibility",
                subcategory="atemporal",
            )
        ),
    ]
    scores = run_checks(engine, checks, as_of=AS_OF).scores
    assert scores.dimensions["completeness"] == 60.0 and scores.dimensions["accuracy"] == 80.0
    assert scores.overall == pytest.approx((0.25 * 60 + 0.25 * 80) / 0.5)
    assert scores.grade == "D" and scores.percent_passed == 0.0
    assert scores.categories == {"conformance": 0.0, "completeness": None, "plausibility": 0.0}


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("checks: [", "not valid YAML"),
        ("checks: 3", "expected a mapping with a list of checks"),
        ("checks: [{id: a, type: nope, table: t}]", "unknown type 'nope'"),
        (
            "checks: [{id: a, type: required, table: 't; DROP', column: x, category: conformance, "
            "subcategory: value, dimension: validity, severity: LOW}]",
            "not a valid table name",
        ),
        (
            "checks: [{id: a, type: required, table: t, column: 'x y', category: conformance, "
            "subcategory: value, dimension: validity, severity: LOW}]",
            "not a valid identifier",
        ),
        (
            "checks: [{id: a, type: required, table: t, column: x, category: conformance, "
            "subcategory: value, dimension: beauty, severity: LOW}]",
            "expected one of",
        ),
        (
            "checks: [{id: a, type: cross_field, table: t, condition: '1=1; DROP TABLE t', "
            "category: conformance, subcategory: value, dimension: validity, severity: LOW}]",
            "one statement",
        ),
        (
            "checks: [{id: a, type: required, table: t, category: conformance, "
            "subcategory: value, dimension: validity, severity: LOW}]",
            "required needs column",
        ),
        (
            "checks: [{id: a, type: regex, table: t, column: x, pattern: '(', category: conformance, "
            "subcategory: value, dimension: validity, severity: LOW}]",
            "bad regular expression",
        ),
    ],
)
def test_bad_rule_sets_are_one_line_errors(text, cause) -> None:
    with pytest.raises(InvalidInput, match=cause) as caught:
        parse_ruleset(text)
    assert "\n" not in caught.value.message


def test_values_are_quoted_literals(engine) -> None:
    # a value holding quotes stays one literal: it neither breaks the query nor widens the set
    hostile = "X') OR ('1'='1"
    assert _ids(engine, type="value_set", column="gender", values=["F", "M", hostile]) == ["p3"]
    assert _ids(engine, type="value_set", column="gender", values=["F", "M", "X"]) == []
