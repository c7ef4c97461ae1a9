"""The server driven by a well-known FHIR client library (fhirpy), over a real socket."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clinhub.platform import auth

from .conftest import make_settings, prepare_store, serving

fhirpy = pytest.importorskip("fhirpy", reason="fhirpy is a test-only dependency (pip install fhirpy)")


@pytest.fixture
def client(tmp_path: Path) -> Iterator:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = prepare_store(url)
    _, key = auth.create_api_key(store, "engineer", "fhirpy")
    with serving(make_settings(tmp_path, url)) as base:
        yield fhirpy.SyncFHIRClient(f"{base}/fhir", authorization=f"Bearer {key}")
    store.dispose()


def test_fhirpy_crud_search_paging_and_references(client) -> None:
    patient = client.resource(
        "Patient",
        identifier=[{"system": "urn:mrn", "value": "F-1"}],
        name=[{"family": "Fhirpy", "given": ["Ada"]}],
        gender="female",
        birthDate="1985-02-03",
    )
    patient.save()
    assert patient["id"] and patient["meta"]["versionId"] == "1"

    for index in range(25):
        client.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject=patient.to_reference(),
            effectiveDateTime=f"2024-03-{index + 1:02d}T08:00:00Z",
            valueQuantity={"value": 60 + index, "system": "http://unitsofmeasure.org", "code": "/min"},
        ).save()

    found = client.resources("Patient").search(family="fhirpy", birthdate__ge="1980").fetch()
    assert [p["id"] for p in found] == [patient["id"]]
    observations = client.resources("Observation").search(patient=patient["id"])
    assert observations.count() == 25
    assert len(observations.limit(10).fetch_all()) == 25  # follows next links
    march = observations.search(date__ge="2024-03-10", date__lt="2024-03-15").fetch_all()
    assert len(march) == 5
    high = observations.search(**{"value-quantity": "gt80"}).fetch_all()
    assert len(high) == 4

    fetched = client.reference("Patient", patient["id"]).to_resource()
    fetched["gender"] = "other"
    fetched.save()
    assert client.resources("Patient").search(_id=patient["id"]).get()["meta"]["versionId"] == "2"
    with_patient = (
        client.resources("Observation").search(patient=patient["id"]).include("Observation", "patient")
    )
    bundle = with_patient.limit(1).fetch_raw()
    assert {e["search"]["mode"]: e["resource"]["resourceType"] for e in bundle["entry"]} == {
        "match": "Observation",
        "include": "Patient",
    }
    fetched.delete()
    with pytest.raises(fhirpy.base.exceptions.ResourceNotFound):
        client.reference("Patient", patient["id"]).to_resource()
