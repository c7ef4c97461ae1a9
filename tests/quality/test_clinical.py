"""Rule set 2, `clinical`: checks over the SQL on FHIR view library (`view.<name>` tables) find every
clinical defect clinhub.synth injects, pass on clean data, and a view that cannot be built is an error."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput
from clinhub.fhir.bulk import import_ndjson
from clinhub.hub import Hub
from clinhub.platform import auth
from clinhub.quality import Snapshot, failing_rows, load_ruleset, parse_check, run_checks
from clinhub.quality.cli import app as quality_cli
from clinhub.quality.runner import tables_read
from clinhub.quality.service import run_and_save
from clinhub.store import create_store_engine, upgrade
from clinhub.synth import generate
from clinhub.views import compile_definition, library

REFERENCE_DATE = date(2025, 6, 30)  # synth's fixed "today"
PASSWORD = "a long enough password"
CLINICAL_KINDS = {
    "missing_birth_date",
    "missing_gender",
    "duplicate_identifier",
    "deceased_before_birth",
    "encounter_end_before_start",
    "onset_before_birth",
    "implausible_vital",
    "orphan_reference",
}


def _bare(key: str) -> str:
    """`Patient/123` (a view's resource key, a manifest's `related`) -> `123` (a manifest's `id`)."""
    return key.split("/", 1)[1] if "/" in key else key


@pytest.fixture(scope="module")
def defective(tmp_path_factory):
    """A store loaded with a synthetic hospital's FHIR resources at a high defect rate, and its manifest."""
    tmp = tmp_path_factory.mktemp("clinical-defects")
    generate(tmp / "synth", patients=1000, seed=17, defect_rate=0.2)
    url = f"sqlite:///{tmp / 'store.db'}"
    store = create_store_engine(url)
    upgrade(store)
    import_ndjson(store, tmp / "synth" / "fhir", processes=0, durable_each_batch=False)
    store.dispose()
    lines = (tmp / "synth" / "defects.ndjson").read_text().splitlines()
    defects = [d for d in map(json.loads, lines) if d["file"].startswith("fhir/")]
    with AnalyticEngine(url) as engine:
        yield engine, defects


@pytest.fixture(scope="module")
def clean_hub(tmp_path_factory):
    """A hub whose store holds a synthetic hospital without defects."""
    tmp = tmp_path_factory.mktemp("clinical-clean")
    generate(tmp / "synth", patients=500, seed=5, defect_rate=0)
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'store.db'}",
        secret_key="k" * 40,
        _env_file=None,
    )
    with Hub(settings) as hub:
        hub.migrate()
        import_ndjson(hub.store, tmp / "synth" / "fhir", processes=0, durable_each_batch=False)
        yield hub


def _expected(defects: list[dict]) -> dict[str, set[str]]:
    """Defect kind -> ids of the records that carry it; both patients of a shared MRN are findings."""
    expected: dict[str, set[str]] = defaultdict(set)
    for d in defects:
        expected[d["kind"]].add(d["id"])
        if d["kind"] == "duplicate_identifier":
            expected[d["kind"]].add(_bare(d["related"]))
    return expected


def test_every_clinical_defect_kind_has_a_check(defective) -> None:
    _, defects = defective
    meant = {kind for check in load_ruleset("clinical").checks for kind in check.defects}
    assert {d["kind"] for d in defects} == CLINICAL_KINDS
    assert meant >= CLINICAL_KINDS


def test_each_clinical_defect_is_found_by_its_checks(defective) -> None:
    engine, defects = defective
    ruleset = load_ruleset("clinical")
    meant = [check for check in ruleset.checks if check.defects]
    found: dict[str, set[str]] = defaultdict(set)
    with Snapshot(engine) as snapshot:  # each view is built once for all the checks
        snapshot.take(tables_read(meant))
        assert not snapshot.failed
        for check in meant:
            relation = failing_rows(
                engine, check, as_of=REFERENCE_DATE, macros=ruleset.macros, snapshot=snapshot
            )
            keys = {_bare(row[0]) for row in relation.select(check.key[0]).fetchall()}
            for kind in check.defects:
                found[kind] |= keys
    expected = _expected(defects)
    assert set(expected) == CLINICAL_KINDS
    for kind, truth in expected.items():
        hits = found[kind] & truth
        recall, precision = len(hits) / len(truth), len(hits) / max(1, len(found[kind]))
        assert recall >= 0.99 and precision >= 0.99, (
            kind,
            recall,
            precision,
            sorted(truth ^ found[kind])[:5],
        )


def test_failing_rows_over_the_live_store_match_the_snapshot(defective) -> None:
    engine, defects = defective
    check = next(c for c in load_ruleset("clinical").checks if c.id == "patient.gender.required")
    live = {_bare(row[0]) for row in failing_rows(engine, check).select("id").fetchall()}
    assert live == {d["id"] for d in defects if d["kind"] == "missing_gender"}


def test_clean_data_passes_every_check_meant_for_a_defect(clean_hub: Hub) -> None:
    result = run_and_save(clean_hub, "clinical", as_of=REFERENCE_DATE)
    assert result.ruleset == "clinical"
    counts = result.counts()
    assert counts["error"] == 0, [(r.check.id, r.error) for r in result.results if r.status == "error"]
    failing = {r.check.id for r in result.results if r.status == "failed"}
    assert failing == set(), failing
    meant = [r for r in result.results if r.check.defects]
    assert all(r.rows_failed == 0 for r in meant)
    # the checks for other units than synth's (degF, lb, in) have no rows: not applicable, not passed
    not_applicable = {r.check.id for r in result.results if r.status == "not_applicable"}
    assert not_applicable == {
        "observation.body_temperature_f.plausible",
        "observation.body_weight_lb.plausible",
        "observation.body_height_in.plausible",
    }
    assert result.scores.grade == "A"


def _check(**fields) -> dict:
    base = {
        "id": "t",
        "category": "completeness",
        "subcategory": "atemporal",
        "dimension": "completeness",
        "severity": "HIGH",
        "key": "id",
    }
    return {**base, **fields}


def test_a_view_that_cannot_be_built_is_an_error_and_the_run_goes_on(defective) -> None:
    engine, _ = defective
    checks = [
        parse_check(_check(id="unknown.view", table="view.no_such_view", type="required", column="id")),
        parse_check(
            _check(
                id="unknown.view.referenced",
                table="view.patient_demographics",
                type="foreign_key",
                columns=["id"],
                references="view.no_such_view",
                referenced_columns=["id"],
            )
        ),
        parse_check(_check(id="gender", table="view.patient_demographics", type="required", column="gender")),
    ]
    result = run_checks(engine, checks, as_of=REFERENCE_DATE)
    for check_id in ("unknown.view", "unknown.view.referenced"):
        failed = result.result(check_id)
        assert failed.status == "error"
        assert failed.error.startswith("view.no_such_view cannot be built: no library view"), failed.error
    assert result.result("gender").status == "failed" and result.result("gender").rows_failed > 0
    # the run's copies are gone
    schemas = engine.fetchall("SELECT schema_name FROM duckdb_schemas() WHERE schema_name LIKE 'quality_%'")
    assert schemas == []


def test_a_view_over_a_store_that_cannot_be_read_is_an_error() -> None:
    with AnalyticEngine() as engine:  # no store attached: the view has no resources to read
        engine.sql("CREATE TABLE person AS SELECT 'p1' AS id, NULL AS gender")
        checks = [
            parse_check(
                _check(id="view", table="view.patient_demographics", type="required", column="gender")
            ),
            parse_check(_check(id="table", table="person", type="required", column="gender")),
        ]
        result = run_checks(engine, checks, as_of=REFERENCE_DATE)
    assert result.result("view").status == "error"
    assert result.result("view").error.startswith("view.patient_demographics cannot be built:")
    assert result.result("table").status == "failed"


def test_temporal_order_compares_fhir_text_as_instants() -> None:
    with AnalyticEngine() as engine:
        engine.sql(
            """CREATE TABLE visit AS SELECT * FROM (VALUES
                 ('v1', '2024-01-01T10:00:00+02:00', '2024-01-01T09:00:00Z'),
                 ('v2', '2024-01-01T10:00:00Z', '2024-01-01T09:00:00Z'),
                 ('v3', '1990', '1989-05-01'),
                 ('v4', '2024-01-01', '2024-01-01T00:00:00Z')) AS t(id, period_start, period_end)"""
        )
        fields = {
            "table": "visit",
            "category": "plausibility",
            "subcategory": "temporal",
            "dimension": "accuracy",
            "type": "temporal_order",
            "earlier": "period_start",
            "later": "period_end",
        }
        as_text = parse_check(_check(**fields))
        as_instant = parse_check(_check(**fields, compare_as="timestamp"))
        text_ids = sorted(r[0] for r in failing_rows(engine, as_text).fetchall())
        instant_ids = sorted(r[0] for r in failing_rows(engine, as_instant).fetchall())
    assert text_ids == ["v1", "v2", "v3"]  # text order: an offset and a partial date compare wrongly
    assert instant_ids == ["v2"]  # v1 starts 08:00Z; a partial date (v3) is not an instant
    with pytest.raises(InvalidInput, match="compare_as"):
        parse_check(_check(**fields, compare_as="day"))
    with pytest.raises(InvalidInput, match=r"view\.name"):
        parse_check(_check(**{**fields, "table": "views.visit"}))


def test_cli_and_api_list_the_clinical_checks(clean_hub: Hub) -> None:
    runner = CliRunner()
    listed = runner.invoke(quality_cli, ["checks", "--ruleset", "clinical", "--json"])
    assert listed.exit_code == 0, listed.output
    checks = json.loads(listed.stdout)
    ids = {c["id"] for c in checks}
    assert {"patient.mrn.unique", "observation.heart_rate.plausible", "condition.onset.after_birth"} <= ids
    assert all(c["table"].startswith("view.") for c in checks)
    table = runner.invoke(quality_cli, ["checks", "--ruleset", "clinical"])
    assert table.exit_code == 0 and "clinical" in table.stdout
    auth.create_user(clean_hub.store, "steward", PASSWORD, "data_steward")
    with TestClient(create_app(clean_hub.settings)) as client:
        token = client.post("/auth/login", json={"username": "steward", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        answer = client.get("/quality/checks", params={"ruleset": "clinical"}, headers=headers)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["ruleset"] == "clinical" and {"clinical", "directory"} <= set(body["rulesets"])
        assert {c["id"] for c in body["checks"]} == ids


def test_every_column_the_rule_set_names_is_in_its_view() -> None:
    """A column missing from a library view would only show as an error at run time."""
    columns = {
        view["name"]: {c.name for c in compile_definition(library.get_view(view["name"])).columns}
        for view in library.list_views()
    }
    for check in load_ruleset("clinical").checks:
        view = check.table.removeprefix("view.")
        named = [check.params.get(p) for p in ("column", "earlier", "later", "foreign_key")]
        named += check.params.get("columns", []) + list(check.key)
        for name in named:
            if name and name != "as_of":
                assert name in columns[view], (check.id, name)
