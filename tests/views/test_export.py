"""$viewdefinition-export end to end: HTTP kick-off, a real job worker, polling, downloads, cancelling."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import auth, jobs
from clinhub.store.resources import put_resources
from clinhub.store.schema import audit_event
from clinhub.views import library, run_view
from clinhub.views.cli import app as views_cli
from clinhub.views.export import ExportCancelled, ExportView, export_views

PASSWORD = "a long enough password"
EXPORT = "/fhir/ViewDefinition/$viewdefinition-export"
GENDERS = {
    "resourceType": "ViewDefinition",
    "name": "genders",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id", "type": "id"},
                {"name": "gender", "path": "gender", "type": "code"},
            ]
        }
    ],
}
RESOURCES = [
    {"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "Smith"}]},
    {"resourceType": "Patient", "id": "p2", "gender": "male", "name": [{"family": "Jones"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "other"},
    *(
        {
            "resourceType": "Observation",
            "id": f"o{n}",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/p{1 + n % 2}"},
            "valueQuantity": {"value": 60 + n, "unit": "/min"},
        }
        for n in range(5)
    ),
]


def parameters(*items: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(items)}


def view_part(reference: str | None = None, resource: dict | None = None, name: str | None = None) -> dict:
    parts = [{"name": "name", "valueString": name}] if name else []
    if reference:
        parts.append({"name": "viewReference", "valueReference": {"reference": reference}})
    if resource:
        parts.append({"name": "viewResource", "resource": resource})
    return {"name": "view", "part": parts}


def values(body: dict, name: str) -> list:
    """The values of the top-level parameters called `name`."""
    found = []
    for parameter in body["parameter"]:
        if parameter["name"] == name:
            found.append(
                next(v for k, v in parameter.items() if k.startswith("value"))
                if "part" not in parameter
                else parameter["part"]
            )
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict, Hub]]:
    tmp = tmp_path_factory.mktemp("views-export")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=f"sqlite:///{tmp / 'store.db'}",
        secret_key="k" * 40,
        _env_file=None,
    )
    hub = Hub(settings)
    hub.migrate()
    put_resources(hub.store, RESOURCES)
    for user, role in (("ann", "analyst"), ("bob", "analyst"), ("vic", "viewer")):
        auth.create_user(hub.store, user, PASSWORD, role)
    with TestClient(create_app(settings)) as client:
        tokens = {}
        for user in ("ann", "bob", "vic"):
            response = client.post("/auth/login", json={"username": user, "password": PASSWORD})
            tokens[user] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        yield client, tokens, hub
    hub.close()


@pytest.fixture
def worker(world) -> Iterator[jobs.Worker]:
    running = jobs.start_inprocess_worker(world[2])
    yield running
    running.stop()


def kick_off(client: TestClient, headers: dict, *items: dict) -> str:
    response = client.post(EXPORT, json=parameters(*items), headers={**headers, "Prefer": "respond-async"})
    assert response.status_code == 202, response.text
    location = response.headers["content-location"]
    body = response.json()
    assert values(body, "status") == ["accepted"] and values(body, "location") == [location]
    assert location.endswith(f"{EXPORT}/{values(body, 'exportId')[0]}")
    return location


def poll(client: TestClient, headers: dict, location: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = client.get(location, headers=headers)
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        body = response.json()
        assert values(body, "status")[0] in ("accepted", "in-progress"), body
        assert response.headers["x-progress"].endswith("%") and response.headers["retry-after"]
        time.sleep(0.1)
    raise AssertionError("the export did not finish in 30 s")


def outputs(body: dict) -> dict[str, tuple[str, int]]:
    found = {}
    for parts in values(body, "output"):
        named = {part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in parts}
        found[named["name"]] = (named["location"], named["rows"])
    return found


def expected(hub: Hub, view: dict) -> list[dict]:
    with AnalyticEngine(hub.settings.store_url) as engine:
        relation = run_view(engine, view, "store")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def test_export_runs_on_a_worker_and_its_files_download(world, worker) -> None:
    client, tokens, hub = world
    location = kick_off(
        client,
        tokens["ann"],
        view_part(reference="observations"),
        view_part(resource=GENDERS, name="sexes"),
        {"name": "clientTrackingId", "valueString": "monthly-1"},
        {"name": "_format", "valueCode": "csv"},
    )
    done = poll(client, tokens["ann"], location)
    assert values(done, "status") == ["completed"] and values(done, "clientTrackingId") == ["monthly-1"]
    assert values(done, "_format") == ["csv"] and values(done, "exportDuration")[0] >= 0
    files = outputs(done)
    assert sorted(files) == ["observations", "sexes"]
    assert files["observations"][1] == 5 and files["sexes"][1] == 3

    sexes = client.get(files["sexes"][0], headers=tokens["ann"])
    assert sexes.status_code == 200 and sexes.headers["content-type"].startswith("text/csv")
    assert 'filename="sexes.csv"' in sexes.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(sexes.text)))
    assert sorted((r["id"], r["gender"]) for r in rows) == [("p1", "female"), ("p2", "male"), ("p3", "other")]
    observations = client.get(files["observations"][0], headers=tokens["ann"])
    rows = list(csv.DictReader(io.StringIO(observations.text)))
    wanted = expected(hub, library.get_view("observations"))
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in wanted)
    assert sorted(r["value"] for r in rows) == sorted(str(r["value"]) for r in wanted)

    # the export is its starter's: another analyst is told it does not exist, a viewer may not run views
    assert client.get(location, headers=tokens["bob"]).status_code == 404
    assert client.get(files["sexes"][0], headers=tokens["bob"]).status_code == 404
    assert client.get(location, headers=tokens["vic"]).status_code == 403
    assert client.get(location + "/manifest.json", headers=tokens["ann"]).status_code == 404
    with hub.store.connect() as conn:
        actions = [row.action for row in conn.execute(select(audit_event).order_by(audit_event.c.id))]
    assert "view.export" in actions and actions.count("view.export.download") == 2


def test_patient_and_since_filters_and_parquet(world, worker, tmp_path: Path) -> None:
    client, tokens, _ = world
    location = kick_off(
        client,
        tokens["ann"],
        view_part(reference="observations", name="p1_observations"),
        {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
        {"name": "_since", "valueInstant": "2020-01-01T00:00:00Z"},
        {"name": "_format", "valueCode": "parquet"},
    )
    files = outputs(poll(client, tokens["ann"], location))
    url, rows = files["p1_observations"]
    assert rows == 3  # o0, o2 and o4 refer to p1
    download = client.get(url, headers=tokens["ann"])
    assert download.headers["content-type"] == "application/vnd.apache.parquet"
    target = tmp_path / "rows.parquet"
    target.write_bytes(download.content)
    found = duckdb.sql(f"SELECT DISTINCT patient_id FROM read_parquet('{target}')").fetchall()
    assert found == [("Patient/p1",)]
    # nothing was written after the far future
    late = kick_off(
        client,
        tokens["ann"],
        view_part(resource=GENDERS),
        {"name": "_since", "valueInstant": "2999-01-01T00:00:00Z"},
    )
    assert outputs(poll(client, tokens["ann"], late))["genders"][1] == 0


def test_cancel_a_queued_export_and_delete_a_finished_one(world) -> None:
    client, tokens, hub = world
    queued = kick_off(client, tokens["ann"], view_part(resource=GENDERS))
    export_id = queued.rsplit("/", 1)[1]
    assert client.delete(queued, headers=tokens["bob"]).status_code == 404  # not bob's
    cancelled = client.delete(queued, headers=tokens["ann"])
    assert cancelled.status_code == 202 and values(cancelled.json(), "status") == ["cancelled"]
    assert jobs.get_job(hub, export_id)["status"] == "cancelled"
    gone = client.get(queued, headers=tokens["ann"])
    assert gone.status_code == 404 and "cancelled" in gone.json()["issue"][0]["diagnostics"]

    running = jobs.start_inprocess_worker(hub)
    try:
        finished = kick_off(client, tokens["ann"], view_part(resource=GENDERS))
        url = outputs(poll(client, tokens["ann"], finished))["genders"][0]
    finally:
        running.stop()
    assert jobs.get_job(hub, export_id)["status"] == "cancelled"  # the worker skipped it
    assert client.delete(finished, headers=tokens["ann"]).status_code == 202
    assert client.get(finished, headers=tokens["ann"]).status_code == 404
    assert client.get(url, headers=tokens["ann"]).status_code == 404
    folder = hub.settings.data_dir / "exports" / finished.rsplit("/", 1)[1]
    assert not folder.exists()


def test_a_running_export_stops_between_views(tmp_path: Path) -> None:
    data = tmp_path / "patients.ndjson"
    data.write_text("".join(json.dumps(r) + "\n" for r in RESOURCES))
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # cancelled while the first view was written

    items = [ExportView("a", "a", GENDERS), ExportView("b", "b", GENDERS)]
    with AnalyticEngine() as engine, pytest.raises(ExportCancelled, match="cancelled"):
        export_views(engine, items, tmp_path / "out", "csv", data, stop=stop)
    assert (tmp_path / "out" / "a.csv").exists() and not (tmp_path / "out" / "b.csv").exists()
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("body", "status", "code", "text"),
    [
        ({"resourceType": "Bundle"}, 400, "invalid", "must be a FHIR Parameters resource"),
        (parameters(), 400, "invalid", "give at least one 'view' parameter"),
        (parameters({"name": "view"}), 400, "invalid", "needs parts"),
        (parameters(view_part()), 400, "invalid", "exactly one of viewReference and viewResource"),
        (parameters(view_part(reference="nope")), 404, "not-found", "no ViewDefinition/nope"),
        (
            parameters(view_part(resource={"resourceType": "ViewDefinition", "resource": "Patient"})),
            422,
            "invalid",
            "/select: required",
        ),
        (
            parameters(view_part(resource=GENDERS), view_part(resource=GENDERS)),
            400,
            "invalid",
            "two views export as 'genders'",
        ),
        (parameters(view_part(resource=GENDERS, name="../etc")), 400, "invalid", "output name '../etc'"),
        (
            parameters(view_part(resource=GENDERS), {"name": "_format", "valueCode": "xml"}),
            400,
            "invalid",
            "unknown _format 'xml'",
        ),
        (
            parameters(
                view_part(resource=GENDERS), {"name": "group", "valueReference": {"reference": "Group/g"}}
            ),
            400,
            "not-supported",
            "'group' parameter is not supported",
        ),
        (
            parameters(
                view_part(resource=GENDERS),
                {"name": "patient", "valueReference": {"reference": "Patient/p9"}},
            ),
            404,
            "not-found",
            "Patient/p9 not found",
        ),
        (
            parameters(view_part(resource=GENDERS), {"name": "_since", "valueInstant": "yesterday"}),
            400,
            "invalid",
            "_since must be an instant",
        ),
        (
            parameters(view_part(resource=GENDERS), {"name": "colour"}),
            400,
            "invalid",
            "unsupported parameter",
        ),
    ],
)
def test_bad_requests_are_operation_outcomes(world, body, status, code, text) -> None:
    client, tokens, _ = world
    response = client.post(EXPORT, json=body, headers=tokens["ann"])
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issue["code"] == code and text in issue["diagnostics"], issue


def test_not_json_and_unknown_exports(world) -> None:
    client, tokens, _ = world
    response = client.post(EXPORT, content=b"{oops", headers=tokens["ann"])
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"{EXPORT}/no-such-export", headers=tokens["ann"]).status_code == 404
    assert (
        client.post(EXPORT, json=parameters(view_part(resource=GENDERS)), headers=tokens["vic"]).status_code
        == 403
    )


def test_cli_export(world, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, hub = world
    view = tmp_path / "genders.json"
    view.write_text(json.dumps(GENDERS))
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", hub.settings.store_url)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        views_cli, ["export", str(view), "observations", "--out", str(out), "--format", "ndjson"]
    )
    assert result.exit_code == 0, result.output
    assert "genders.ndjson: 3 rows" in result.output.replace("\n", "")
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(o["name"], o["rows"]) for o in manifest["output"]] == [("genders", 3), ("observations", 5)]
    lines = (out / "observations.ndjson").read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["patient_id"].startswith("Patient/") for line in lines)
    bad = CliRunner().invoke(views_cli, ["export", str(view), "--out", str(out), "--format", "xml"])
    assert isinstance(bad.exception, InvalidInput)
