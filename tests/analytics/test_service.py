"""Analytics over HTTP and in the terminal: the endpoints, their cache, errors, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from clinhub.analytics.cli import app as analytics_cli
from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.fhir import load_ndjson
from clinhub.hl7 import messages
from clinhub.platform import auth
from clinhub.store import create_store_engine, put_resources, upgrade
from clinhub.synth import generate

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[TestClient, dict, Settings]]:
    tmp: Path = tmp_path_factory.mktemp("analytics-api")
    generate(tmp / "out", patients=120, seed=5)
    settings = Settings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'store.db'}", secret_key="k" * 40, _env_file=None
    )
    store = create_store_engine(settings.store_url)
    upgrade(store)
    load_ndjson(store, tmp / "out" / "fhir")
    raw = (tmp / "out" / "hl7" / "messages.hl7").read_text().split("\n")
    start = datetime(2025, 3, 1, tzinfo=UTC)
    messages.accept(
        store, [(m, start + timedelta(minutes=20 * i)) for i, m in enumerate(raw[:60]) if m.strip()]
    )
    auth.create_user(store, "ana", PASSWORD, "analyst")
    auth.create_user(store, "res", PASSWORD, "researcher")
    with TestClient(create_app(settings)) as client:
        headers = {}
        for name in ("ana", "res"):
            token = client.post("/auth/login", json={"username": name, "password": PASSWORD}).json()
            headers[name] = {"Authorization": f"Bearer {token['access_token']}"}
        yield client, headers, settings, store
    store.dispose()


def test_endpoints_answer_with_the_hubs_figures(served) -> None:
    client, headers, _, _ = served
    ana = headers["ana"]
    stats = client.get("/analytics/patient-statistics?as_of=2025-06-20", headers=ana).json()
    assert stats["total"] == 120 and sum(b["count"] for b in stats["age_bands"]) == 120
    msgs = client.get("/analytics/message-analytics", headers=ana).json()
    assert msgs["total"] == 60 and msgs["pending"] + msgs["processed"] + msgs["errors"] == 60
    clinical = client.get("/analytics/clinical-insights?top=3", headers=ana).json()
    assert clinical["diagnoses"] and all(d["patients"] >= 1 for d in clinical["diagnoses"])
    risk = client.get("/analytics/risk-distribution", headers=ana).json()
    assert sum(risk["levels"].values()) == 120
    kpis = client.get("/analytics/kpis", headers=ana).json()
    assert kpis["patients"] == 120 and kpis["messages"] == 60
    dashboard = client.get("/analytics/dashboard", headers=ana).json()
    assert dashboard["kpis"] == kpis and dashboard["risk"]["levels"] == risk["levels"]
    forecast = client.get("/analytics/forecast/patient-volume?horizon=14", headers=ana).json()
    assert len(forecast["holt_winters"]) == 14 and len(forecast["naive"]) == 14
    anomalies = client.get("/analytics/anomalies?metric=message_count", headers=ana).json()
    assert anomalies["metric"] == "message_count" and anomalies["hours"] >= 19


def test_results_are_cached_until_fresh_is_asked(served) -> None:
    client, headers, _, store = served
    ana = headers["ana"]
    before = client.get("/analytics/patient-statistics", headers=ana).json()["total"]
    put_resources(store, [{"resourceType": "Patient", "id": "late-arrival", "gender": "female"}])
    assert client.get("/analytics/patient-statistics", headers=ana).json()["total"] == before  # cached
    fresh = client.get("/analytics/patient-statistics?fresh=true", headers=ana).json()["total"]
    assert fresh == before + 1


def test_errors_and_permissions(served) -> None:
    client, headers, _, _ = served
    ana = headers["ana"]
    assert client.get("/analytics/patient-risk/nobody", headers=ana).status_code == 404
    bad = client.get("/analytics/anomalies?metric=mood", headers=ana)
    assert bad.status_code == 400 and "message_count" in bad.text
    assert client.get("/analytics/forecast/patient-volume?horizon=0", headers=ana).status_code == 422
    assert client.get("/analytics/kpis", headers=headers["res"]).status_code == 403  # researchers: no
    assert client.get("/analytics/kpis").status_code == 401


def test_one_patients_risk_explained(served) -> None:
    client, headers, _, store = served
    put_resources(store, [{"resourceType": "Patient", "id": "risk-1", "birthDate": "1950-01-01"}])
    found = client.get("/analytics/patient-risk/risk-1?as_of=2025-01-01", headers=headers["ana"]).json()
    assert found["parts"]["age"]["value"] == 75 and found["parts"]["diagnoses"]["value"] == 0
    assert found["score"] == pytest.approx(0.3 * 75) and found["level"] == "low"


def test_the_cli_prints_tables_and_json(served, monkeypatch) -> None:
    _, _, settings, _ = served
    monkeypatch.setenv("CLINHUB_DATABASE_URL", settings.store_url)
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    shown = runner.invoke(analytics_cli, ["patients", "--as-of", "2025-06-20"])
    assert shown.exit_code == 0, shown.output
    assert "Age bands" in shown.output and "total" in shown.output
    as_json = runner.invoke(analytics_cli, ["dashboard", "--json"])
    assert as_json.exit_code == 0 and '"patients":' in as_json.output
    for command in (["messages"], ["clinical", "--top", "3"], ["risk"], ["anomalies"], ["forecast"]):
        result = runner.invoke(analytics_cli, command)
        assert result.exit_code == 0, (command, result.output)
    bad = runner.invoke(analytics_cli, ["patients", "--as-of", "June"])
    assert bad.exit_code != 0 and "not a date" in str(bad.exception)
