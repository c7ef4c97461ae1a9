"""The view engine over HTTP: $viewdefinition-run in every format, filters, errors, stored views."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.fhir import load_ndjson
from clinhub.platform import audit, auth
from clinhub.platform.deps import route_table
from clinhub.store import create_store_engine, upgrade
from clinhub.store.schema import fhir_resource_history
from clinhub.synth import generate
from clinhub.views import library, run_view
from clinhub.views.api import router

PASSWORD = "a long enough password"
RUN = "/fhir/ViewDefinition/$viewdefinition-run"
FAMILY_VIEW = {
    "resourceType": "ViewDefinition",
    "name": "families",
    "resource": "Patient",
    "select": [
        {"column": [{"name": "id", "path": "id", "type": "id"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family", "type": "string"}]},
    ],
}


def parameters(*items: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(items)}


def reference(name: str) -> dict:
    return {"name": "viewReference", "valueReference": {"reference": name}}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("views-api")
    generate(tmp / "out", patients=30, seed=1)
    settings = Settings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'store.db'}", secret_key="k" * 40, _env_file=None
    )
    store = create_store_engine(settings.store_url)
    upgrade(store)
    load_ndjson(store, tmp / "out" / "fhir")
    for role in ("analyst", "integration_engineer", "viewer"):
        auth.create_user(store, role, PASSWORD, role)
    app = create_app(settings)
    if not any(entry.path == RUN for entry in route_table(app)):
        app.include_router(router)
    with TestClient(app) as client:
        tokens = {}
        for role in ("analyst", "integration_engineer", "viewer"):
            response = client.post("/auth/login", json={"username": role, "password": PASSWORD})
            tokens[role] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        yield client, tokens, store, tmp / "out" / "fhir"
    store.dispose()


def expected_rows(fhir: Path, name: str, where: str = "true") -> int:
    with AnalyticEngine() as engine:
        return len(run_view(engine, library.get_view(name), fhir).filter(where).fetchall())


def assert_outcome(response, status: int, code: str, text: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == code and text in issue["diagnostics"]


def test_library_lists_the_shipped_views(world) -> None:
    client, tokens, _, _ = world
    response = client.get("/views/library", headers=tokens["analyst"])
    assert response.status_code == 200
    assert [v["name"] for v in response.json()] == [v["name"] for v in library.list_views()]


def test_run_a_library_view_as_csv_with_and_without_header(world) -> None:
    client, tokens, _, _ = world
    response = client.post(RUN, json=parameters(reference("patient_demographics")), headers=tokens["analyst"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 30 and all(row["id"].startswith("Patient/") for row in rows)
    body = parameters(reference("patient_demographics"), {"name": "header", "valueBoolean": False})
    headless = client.post(RUN, json=body, headers=tokens["analyst"])
    assert headless.text.splitlines() == response.text.splitlines()[1:]


def test_run_ndjson_with_limit_and_json_from_the_query_format(world) -> None:
    client, tokens, _, _ = world
    body = parameters(
        reference("observations"),
        {"name": "_format", "valueCode": "ndjson"},
        {"name": "_limit", "valueInteger": 5},
    )
    response = client.post(RUN, json=body, headers=tokens["analyst"])
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 5 and all(line["id"].startswith("Observation/") for line in lines)
    as_json = client.post(RUN + "?_format=json", json=body, headers=tokens["analyst"])
    assert as_json.headers["content-type"] == "application/json" and len(as_json.json()) == 5


def test_run_parquet(world, tmp_path: Path) -> None:
    client, tokens, _, fhir = world
    body = parameters(reference("observations"), {"name": "_format", "valueString": "parquet"})
    response = client.post(RUN, json=body, headers=tokens["analyst"])
    assert (
        response.status_code == 200 and response.headers["content-type"] == "application/vnd.apache.parquet"
    )
    target = tmp_path / "rows.parquet"
    target.write_bytes(response.content)
    count, codes = duckdb.sql(f"SELECT count(*), count(loinc_code) FROM read_parquet('{target}')").fetchone()
    assert count == codes == expected_rows(fhir, "observations")


def test_run_an_inline_view_and_a_get_by_reference(world) -> None:
    client, tokens, _, _ = world
    inline = client.post(
        RUN,
        json=parameters(
            {"name": "viewResource", "resource": FAMILY_VIEW}, {"name": "_format", "valueCode": "csv"}
        ),
        headers=tokens["analyst"],
    )
    assert inline.status_code == 200 and inline.text.splitlines()[0] == "id,family"
    got = client.get(
        RUN,
        params={"viewReference": "encounters", "_format": "ndjson", "_limit": 3},
        headers=tokens["analyst"],
    )
    assert got.status_code == 200 and len(got.text.splitlines()) == 3


def test_patient_filter_keeps_one_patients_rows(world) -> None:
    client, tokens, _, fhir = world
    with AnalyticEngine() as engine:
        patient = run_view(engine, library.get_view("observations"), fhir).fetchone()[1]
    body = parameters(
        reference("observations"),
        {"name": "patient", "valueReference": {"reference": patient}},
        {"name": "_format", "valueCode": "ndjson"},
    )
    rows = [
        json.loads(line) for line in client.post(RUN, json=body, headers=tokens["analyst"]).text.splitlines()
    ]
    assert len(rows) == expected_rows(fhir, "observations", f"patient_id = '{patient}'") > 0
    assert {row["patient_id"] for row in rows} == {patient}
    own = client.get(
        RUN,
        params={"viewReference": "patient_demographics", "_format": "ndjson", "patient": patient},
        headers=tokens["analyst"],
    )
    assert [json.loads(line)["id"] for line in own.text.splitlines()] == [patient]
    allergies = parameters(
        reference("allergies"), {"name": "patient", "valueReference": {"reference": patient}}
    )
    listed = list(
        csv.DictReader(io.StringIO(client.post(RUN, json=allergies, headers=tokens["analyst"]).text))
    )
    assert {row["patient_id"] for row in listed} <= {patient}


def test_since_filters_on_last_updated(world) -> None:
    client, tokens, _, _ = world
    later = client.get(
        RUN,
        params={"viewReference": "conditions", "_since": "2999-01-01T00:00:00Z"},
        headers=tokens["analyst"],
    )
    assert later.status_code == 200 and later.text.splitlines()[1:] == []
    earlier = client.get(
        RUN,
        params={"viewReference": "conditions", "_since": "2000-01-01T00:00:00Z"},
        headers=tokens["analyst"],
    )
    assert len(earlier.text.splitlines()) == 1 + 81


def test_errors_are_operation_outcomes(world) -> None:
    client, tokens, _, _ = world
    analyst = tokens["analyst"]
    broken = {**FAMILY_VIEW, "select": [{"column": [{"name": "x", "path": "name.where("}]}]}
    assert_outcome(
        client.post(RUN, json=parameters({"name": "viewResource", "resource": broken}), headers=analyst),
        422,
        "invalid",
        "/select/0/column/0",
    )
    assert_outcome(client.post(RUN, json=parameters(), headers=analyst), 400, "invalid", "viewResource")
    assert_outcome(client.post(RUN, content=b"{", headers=analyst), 400, "invalid", "not valid JSON")
    assert_outcome(
        client.post(
            RUN,
            json=parameters(reference("encounters"), {"name": "_format", "valueCode": "xml"}),
            headers=analyst,
        ),
        400,
        "invalid",
        "unknown _format",
    )
    assert_outcome(
        client.get(RUN, params={"viewReference": "ViewDefinition/absent"}, headers=analyst),
        404,
        "not-found",
        "ViewDefinition/absent",
    )
    assert_outcome(
        client.get(RUN, params={"viewReference": "encounters", "_since": "yesterday"}, headers=analyst),
        400,
        "invalid",
        "_since",
    )
    assert (
        client.post(RUN, json=parameters(reference("encounters")), headers=tokens["viewer"]).status_code
        == 403
    )


def test_a_run_is_audited_with_the_view_and_limit_but_no_row_values(world) -> None:
    client, tokens, store, _ = world
    body = parameters(
        reference("patient_demographics"),
        {"name": "_limit", "valueInteger": 2},
        {"name": "_format", "valueCode": "ndjson"},
    )
    rows = client.post(RUN, json=body, headers=tokens["analyst"]).text.splitlines()
    _, events = audit.search(store, action="view.run", actor="analyst", limit=1)
    event = events[0]
    assert event["outcome"] == "success" and event["resource_type"] == "ViewDefinition"
    assert event["detail"] == {
        "view": "patient_demographics",
        "limit": 2,
        "format": "ndjson",
        "patient": None,
    }
    family = json.loads(rows[0])["family"]
    assert family not in json.dumps(event, default=str)


def test_stored_view_definitions_crud(world) -> None:
    client, tokens, store, _ = world
    writer, reader = tokens["integration_engineer"], tokens["analyst"]
    created = client.post("/fhir/ViewDefinition", json=FAMILY_VIEW, headers=writer)
    assert created.status_code == 201, created.text
    view_id = created.json()["id"]
    assert created.headers["location"] == f"/fhir/ViewDefinition/{view_id}/_history/1"
    assert client.post("/fhir/ViewDefinition", json=FAMILY_VIEW, headers=reader).status_code == 403
    assert client.get(f"/fhir/ViewDefinition/{view_id}", headers=reader).json()["name"] == "families"
    found = client.get("/fhir/ViewDefinition", params={"name": "families"}, headers=reader).json()
    assert found["type"] == "searchset" and [e["resource"]["id"] for e in found["entry"]] == [view_id]
    assert client.get("/fhir/ViewDefinition", params={"name": "other"}, headers=reader).json()["total"] == 0

    renamed = {**FAMILY_VIEW, "id": view_id, "name": "family_names"}
    updated = client.put(f"/fhir/ViewDefinition/{view_id}", json=renamed, headers=writer)
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    ran = client.get(RUN, params={"viewReference": f"ViewDefinition/{view_id}"}, headers=reader)
    assert ran.status_code == 200 and ran.text.splitlines()[0] == "id,family"

    invalid = {**FAMILY_VIEW, "resource": 7}
    assert_outcome(
        client.put(f"/fhir/ViewDefinition/{view_id}", json=invalid, headers=writer),
        422,
        "invalid",
        "/resource",
    )
    assert_outcome(
        client.post("/fhir/ViewDefinition", json={"resourceType": "Patient"}, headers=writer),
        400,
        "invalid",
        "ViewDefinition",
    )
    mismatch = client.put(f"/fhir/ViewDefinition/{view_id}", json={**renamed, "id": "other"}, headers=writer)
    assert_outcome(mismatch, 400, "invalid", "differs")

    assert client.delete(f"/fhir/ViewDefinition/{view_id}", headers=writer).status_code == 204
    assert_outcome(client.get(f"/fhir/ViewDefinition/{view_id}", headers=reader), 404, "not-found", view_id)
    assert_outcome(
        client.delete(f"/fhir/ViewDefinition/{view_id}", headers=writer), 404, "not-found", view_id
    )
    with store.connect() as conn:
        history = conn.execute(
            select(fhir_resource_history.c.version_id, fhir_resource_history.c.deleted)
            .where(fhir_resource_history.c.id == view_id)
            .order_by(fhir_resource_history.c.version_id)
        ).all()
    assert [tuple(row) for row in history] == [(1, False), (2, False), (3, True)]
    _, events = audit.search(store, resource_id=view_id, limit=10)
    assert [e["action"] for e in events] == ["view.delete", "view.update", "view.create"]

    put_new = client.put("/fhir/ViewDefinition/my-view", json=FAMILY_VIEW, headers=writer)
    assert put_new.status_code == 201 and put_new.json()["id"] == "my-view"
