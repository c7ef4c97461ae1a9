"""The view library: every view validates and runs over synthetic NDJSON and over the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import NotFound
from clinhub.fhir import load_ndjson
from clinhub.hub import Hub
from clinhub.synth import generate
from clinhub.views import compile_definition, library, parse_view, run_view
from clinhub.views.cli import app as cli

#: library view -> the resource type whose every resource gives exactly one row
ONE_ROW_PER = {
    "patient_demographics": "Patient",
    "encounters": "Encounter",
    "conditions": "Condition",
    "observations": "Observation",
    "medication_requests": "MedicationRequest",
    "allergies": "AllergyIntolerance",
    "practitioners": "Practitioner",
    "organizations": "Organization",
    "practitioner_roles": "PractitionerRole",
}

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], Hub]:
    tmp = tmp_path_factory.mktemp("library")
    result = generate(tmp / "out", patients=30, seed=1)
    counts = {
        name.removeprefix("fhir/").removesuffix(".ndjson"): n
        for name, n in result.counts.items()
        if name.startswith("fhir/")
    }
    hub = Hub(Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'store.db'}", _env_file=None))
    hub.migrate()
    load_ndjson(hub.store, tmp / "out" / "fhir")
    yield tmp / "out" / "fhir", counts, hub
    hub.close()


def test_the_library_lists_every_view_sorted() -> None:
    views = library.list_views()
    assert [v["name"] for v in views] == sorted(ONE_ROW_PER)
    assert all(v["resource"] == ONE_ROW_PER[v["name"]] and v["description"] for v in views)


@pytest.mark.parametrize("name", sorted(ONE_ROW_PER))
def test_every_view_validates(name: str) -> None:
    view = library.get_view(name)
    assert parse_view(view).resource == ONE_ROW_PER[name]
    compiled = compile_definition(view)
    assert compiled.columns[0].name == "id"


def test_get_view_returns_a_copy_and_names_unknown_views() -> None:
    library.get_view("observations")["select"].clear()
    assert library.get_view("observations")["select"]
    with pytest.raises(NotFound, match="no library view 'nope'"):
        library.get_view("nope")


@pytest.mark.parametrize("name", sorted(ONE_ROW_PER))
def test_every_view_runs_over_ndjson_and_the_store_with_one_row_per_resource(synthetic, name) -> None:
    fhir, counts, hub = synthetic
    view = library.get_view(name)
    expected = counts[ONE_ROW_PER[name]]
    assert expected > 0
    with AnalyticEngine() as files:
        from_files = run_view(files, view, fhir).fetchall()
    with AnalyticEngine(hub.settings.store_url) as engine:
        from_store = run_view(engine, view, "store").fetchall()
    assert len(from_files) == len(from_store) == expected
    prefix = ONE_ROW_PER[name] + "/"
    ids = [row[0] for row in from_store]
    assert len(set(ids)) == expected and all(i.startswith(prefix) for i in ids)
    # the store stamps meta.lastUpdated, the generated files carry none
    columns = [c.name for c in compile_definition(view).columns]
    stamped = columns.index("last_updated")
    assert all(row[stamped] for row in from_store) and not any(row[stamped] for row in from_files)


def test_columns_carry_the_values_later_domains_need(synthetic) -> None:
    fhir, _, _ = synthetic
    with AnalyticEngine() as engine:
        observations = run_view(engine, library.get_view("observations"), fhir)
        patients = run_view(engine, library.get_view("patient_demographics"), fhir)
        checks = observations.query(
            "o",
            """SELECT
                 bool_and(starts_with(patient_id, 'Patient/')),
                 bool_and(loinc_code IS NOT NULL),
                 list_sort(list_distinct(list(category))),
                 -- quantity results have a value and unit; blood pressure panels carry components
                 bool_and(CASE WHEN loinc_code = '85354-9' THEN systolic IS NOT NULL AND diastolic IS NOT NULL
                               ELSE value IS NOT NULL AND unit IS NOT NULL END),
                 bool_and(category <> 'laboratory' OR reference_low <= reference_high)
               FROM o""",
        ).fetchone()
        assert checks == (True, True, ["laboratory", "vital-signs"], True, True)
        # the generator plants a few orphan references, so most (not all) keys join to a patient
        known = {row[0] for row in patients.project("id").fetchall()}
        keys = [row[0] for row in observations.project("patient_id").fetchall()]
        assert sum(key in known for key in keys) > 0.9 * len(keys)
        assert patients.filter("gender IS NULL OR birth_date IS NULL").fetchall() == []


def test_the_command_line_lists_the_library_and_runs_a_view_by_name(synthetic, tmp_path: Path) -> None:
    fhir, counts, _ = synthetic
    listed = runner.invoke(cli, ["library"])
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in ONE_ROW_PER)
    out = tmp_path / "patients.csv"
    ran = runner.invoke(cli, ["run", "patient_demographics", "--source", str(fhir), "--out", str(out)])
    assert ran.exit_code == 0, ran.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("id,mrn,family") and len(lines) == 1 + counts["Patient"]
    missing = runner.invoke(cli, ["run", "no_such_view", "--source", str(fhir)])
    assert isinstance(missing.exception, NotFound)
