"""Bulk NDJSON import (bad lines, parser processes, durability), index rebuild, $export round trips."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from clinhub.cli import app as cli
from clinhub.fhir.bulk import chunks, import_ndjson
from clinhub.fhir.search import parse_search, run_search
from clinhub.store import count_resources, create_store_engine, put_resources, upgrade
from clinhub.store.resources import reindex
from clinhub.store.schema import SEARCH_TABLES, fhir_resource
from clinhub.synth._generate import generate


@pytest.fixture(scope="module")
def hospital(tmp_path_factory) -> Path:
    """A small synthetic hospital's FHIR NDJSON (60 patients)."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, patients=60, seed=7, defect_rate=0.0)
    return out / "fhir"


def _store(tmp: Path, name: str = "store.db"):
    engine = create_store_engine(f"sqlite:///{tmp / name}")
    upgrade(engine)
    return engine


def _index_rows(engine) -> int:
    with engine.connect() as conn:
        return sum(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in SEARCH_TABLES)


def _contents(engine) -> dict[tuple[str, str], dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(fhir_resource.c.resource_type, fhir_resource.c.id, fhir_resource.c.resource).where(
                fhir_resource.c.deleted.is_(False)
            )
        )
        return {(t, i): {k: v for k, v in r.items() if k != "meta"} for t, i, r in rows}


def test_bad_lines_are_reported_and_good_ones_kept(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "Patient.ndjson").write_text(
        '{"resourceType":"Patient","id":"a"}\n'
        "not json at all\n"
        "\n"
        '{"resourceType":"Patient"}\n'
        "[1, 2]\n"
        '{"resourceType":"Patient","id":"b","gender":"male"}\n'
    )
    (folder / "Observation.ndjson").write_text(
        '{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/b"}}\n{'
    )
    store = _store(tmp_path)
    stats = import_ndjson(store, folder, processes=0, durable_each_batch=False)
    assert stats.created == {"Patient": 2, "Observation": 1}
    assert stats.rejected == 4
    assert stats.errors == [
        "Patient.ndjson line 2: not valid JSON",
        "Patient.ndjson line 4: Patient has no id, or an id longer than 64 characters",
        "Patient.ndjson line 5: not a JSON object",
        "Observation.ndjson line 2: not valid JSON",
    ]
    with store.connect() as conn:
        found = run_search(conn, parse_search("Observation", [("patient", "b")]))
    assert [i for i, _ in found.matches] == ["o"]
    # durable at the end: the pool's connections are back at synchronous=FULL
    with store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    store.dispose()


def test_chunks_split_at_line_ends_and_number_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(1000)))
    parts = list(chunks(path, size=500))
    assert len(parts) > 10
    assert parts[0].first_line == 1
    data = path.read_bytes()
    assert b"".join(data[c.offset : c.offset + c.size] for c in parts) == data
    for part in parts:
        assert data[part.offset + part.size - 1 : part.offset + part.size] == b"\n"
        assert data[: part.offset].count(b"\n") + 1 == part.first_line


def test_parallel_import_equals_serial_and_reimport_is_unchanged(tmp_path: Path, hospital: Path) -> None:
    serial, parallel = _store(tmp_path, "serial.db"), _store(tmp_path, "parallel.db")
    one = import_ndjson(serial, hospital, processes=0)
    two = import_ndjson(parallel, hospital, processes=2, durable_each_batch=False, batch_size=700)
    assert one.created == two.created and one.total == two.total > 1000
    assert _contents(serial) == _contents(parallel)
    assert _index_rows(serial) == _index_rows(parallel) > one.total
    again = import_ndjson(parallel, hospital, processes=0)
    assert again.unchanged == one.created and not again.created and not again.updated
    serial.dispose()
    parallel.dispose()


def test_reindex_rebuilds_what_was_lost_and_drops_orphans(tmp_path: Path, hospital: Path) -> None:
    store = _store(tmp_path)
    import_ndjson(store, hospital / "Patient.ndjson")
    before = _index_rows(store)
    with store.begin() as conn:
        conn.execute(text("DELETE FROM fhir_search_token"))
        conn.execute(text("INSERT INTO fhir_search_string VALUES ('Patient', 'ghost', 'name', 'x', 'x')"))
    assert _index_rows(store) != before
    assert reindex(store) == count_resources(store)["Patient"]
    assert _index_rows(store) == before
    store.dispose()


def test_put_resources_indexes_and_unindexes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    put_resources(
        store, [{"resourceType": "Patient", "id": "p", "gender": "male", "name": [{"family": "Lee"}]}]
    )
    assert _index_rows(store) == 3  # gender, name, family
    put_resources(store, [{"resourceType": "Patient", "id": "p", "gender": "male"}])
    assert _index_rows(store) == 1
    store.dispose()


def test_cli_import_reports_bad_lines(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "Patient.ndjson"
    source.write_text('{"resourceType":"Patient","id":"a"}\n{oops\n')
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    upgrade_store = create_store_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    upgrade(upgrade_store)
    upgrade_store.dispose()
    result = CliRunner().invoke(cli, ["fhir", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "imported 1 resources" in result.output
    assert "Patient.ndjson line 2: not valid JSON" in result.output
    reindexed = CliRunner().invoke(cli, ["fhir", "reindex"])
    assert reindexed.exit_code == 0 and "indexed 1 resources" in reindexed.output


def _wait_for(client, url: str, headers: dict, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = client.get(url, headers=headers)
        if response.status_code != 202:
            return response
        assert response.headers["x-progress"]
        time.sleep(0.2)
    raise AssertionError("the export did not finish")


def test_export_round_trip_into_an_empty_hub(fhir_with_worker, hospital: Path, tmp_path: Path) -> None:
    fhir = fhir_with_worker
    import_ndjson(fhir.store, hospital)
    client = fhir.client
    kick = client.get(fhir.url("$export"), headers={**fhir.reader, "Prefer": "respond-async"})
    assert kick.status_code == 202, kick.text
    status_url = kick.headers["content-location"]
    done = _wait_for(client, status_url, fhir.reader)
    assert done.status_code == 200, done.text
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True and manifest["transactionTime"]
    folder = tmp_path / "exported"
    folder.mkdir()
    for item in manifest["output"]:
        response = client.get(item["url"], headers=fhir.reader)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        assert len(response.content.splitlines()) == item["count"]
        (folder / f"{item['type']}.ndjson").write_bytes(response.content)
    assert client.get(manifest["output"][0]["url"]).status_code == 401

    empty = _store(tmp_path, "empty.db")
    import_ndjson(empty, folder)
    assert _contents(empty) == _contents(fhir.store)
    empty.dispose()

    assert client.delete(status_url, headers=fhir.reader).status_code == 202
    assert client.get(manifest["output"][0]["url"], headers=fhir.reader).status_code == 404


def test_patient_and_group_export_with_type_and_since(fhir_with_worker, hospital: Path) -> None:
    fhir = fhir_with_worker
    import_ndjson(fhir.store, hospital)
    patients = [
        orjson.loads(line)["id"] for line in (hospital / "Patient.ndjson").read_bytes().splitlines()[:2]
    ]
    group = {
        "resourceType": "Group",
        "id": "cohort",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{p}"}} for p in patients],
    }
    put_resources(fhir.store, [group])
    headers = {**fhir.reader, "Prefer": "respond-async"}

    def manifest(url: str) -> dict:
        kick = fhir.client.get(fhir.url(url), headers=headers)
        assert kick.status_code == 202, kick.text
        return _wait_for(fhir.client, kick.headers["content-location"], fhir.reader).json()

    whole = {item["type"]: item["count"] for item in manifest("Patient/$export")["output"]}
    assert "Practitioner" not in whole and whole["Patient"] == 60
    cohort = {
        item["type"]: item["count"]
        for item in manifest("Group/cohort/$export?_type=Patient,Encounter")["output"]
    }
    assert cohort["Patient"] == 2 and set(cohort) <= {"Patient", "Encounter"}
    with fhir.store.connect() as conn:
        encounters = conn.execute(
            text(
                "SELECT count(*) FROM fhir_search_reference WHERE resource_type = 'Encounter' "
                "AND param = 'subject' AND target_id IN (:a, :b)"
            ),
            {"a": patients[0], "b": patients[1]},
        ).scalar()
    assert cohort.get("Encounter", 0) == encounters
    later = manifest("$export?_since=2999-01-01T00:00:00Z")
    assert later["output"] == []
    bad = fhir.client.get(fhir.url("$export?_type=Nonsense"), headers=headers)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert fhir.client.get(fhir.url("Group/none/$export"), headers=headers).status_code == 404


def test_cli_export_writes_one_file_per_type(tmp_path: Path, hospital: Path, monkeypatch) -> None:
    database = tmp_path / "cli.db"
    store = _store(tmp_path, "cli.db")
    import_ndjson(store, hospital)
    store.dispose()
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", f"sqlite:///{database}")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["fhir", "export", str(out), "--level", "patient", "--type", "Patient,Condition"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["Condition.ndjson", "Patient.ndjson"]
    assert len((out / "Patient.ndjson").read_bytes().splitlines()) == 60


def test_index_rows_fit_their_tables() -> None:
    from clinhub.fhir.index import STORED, resource_rows

    observation = {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:x", "value": "1"}],
        "subject": {"reference": "Patient/p"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "effectivePeriod": {"start": "2024-01-01"},
        "valueQuantity": {"value": 3, "code": "mg"},
    }
    patient = {"resourceType": "Patient", "name": [{"family": "Ng"}]}
    rows = resource_rows("Observation", "o", observation) + resource_rows("Patient", "p", patient)
    kinds = {s.name: s.kind for stored in STORED.values() for s in stored}
    assert len(rows) == 8
    for slot, row in rows:
        table = SEARCH_TABLES[slot]
        assert len(row) == len(table.columns)
        assert table.name == f"fhir_search_{kinds[row[2]]}"
