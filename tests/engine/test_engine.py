"""The analytic engine reads the live store on every backend, and NDJSON and Parquet files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from clinhub.engine import AnalyticEngine
from clinhub.errors import NotFound, StoreUnavailable
from clinhub.store import create_store_engine, put_resources, upgrade


def _patients(n: int, gender: str = "female") -> list[dict]:
    return [
        {"resourceType": "Patient", "id": f"p{i}", "gender": gender, "birthDate": "1980-01-02"}
        for i in range(n)
    ]


def test_engine_sees_committed_store_data_live(store_url: str) -> None:
    store = create_store_engine(store_url)
    upgrade(store)
    put_resources(store, _patients(300))
    with AnalyticEngine(store_url) as engine:
        counts = engine.resources("Patient").aggregate("resource->>'$.gender' AS g, count(*) AS n").fetchall()
        assert counts == [("female", 300)]
        # a write after the engine attached is visible to the next query, with no copy to refresh
        put_resources(
            store,
            [
                {
                    "resourceType": "Observation",
                    "id": "o1",
                    "status": "final",
                    "subject": {"reference": "Patient/p1"},
                }
            ],
        )
        table = engine.store_table("fhir_resource")
        rows = engine.fetchall(
            f"SELECT o.id, p.id FROM {table} o JOIN {table} p "
            "ON CAST(o.resource AS JSON)->>'$.subject.reference' = 'Patient/' || p.id "
            "WHERE o.resource_type = ? AND p.resource_type = ?",
            ["Observation", "Patient"],
        )
        assert rows == [("o1", "p1")]
    store.dispose()


def test_engine_attach_failure_hides_the_password() -> None:
    engine = AnalyticEngine("postgresql://root:s3cret@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable) as info:
        engine.resources()
    assert "s3cret" not in info.value.message
    engine.close()


def test_ndjson_file_and_directory(tmp_path: Path) -> None:
    folder = tmp_path / "fhir"
    folder.mkdir()
    (folder / "Patient.ndjson").write_bytes(b"\n".join(orjson.dumps(p) for p in _patients(5)) + b"\n")
    (folder / "Observation.ndjson").write_bytes(
        orjson.dumps({"resourceType": "Observation", "id": "o1", "valueQuantity": {"value": 7.5}}) + b"\n"
    )
    with AnalyticEngine() as engine:
        by_type = (
            engine.ndjson(folder)
            .aggregate("resource->>'$.resourceType' AS t, count(*) AS n", "t")
            .order("t")
            .fetchall()
        )
        assert by_type == [("Observation", 1), ("Patient", 5)]
        value = (
            engine.ndjson(folder / "Observation.ndjson")
            .project("CAST(resource->>'$.valueQuantity.value' AS DOUBLE)")
            .fetchone()
        )
        assert value == (7.5,)
        with pytest.raises(NotFound):
            engine.ndjson(tmp_path / "missing.ndjson")


def test_parquet(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    with AnalyticEngine() as engine:
        engine.fetchall(f"COPY (SELECT range AS n FROM range(10)) TO '{target}' (FORMAT parquet)")
        assert engine.parquet(target).aggregate("sum(n)").fetchone() == (45,)
