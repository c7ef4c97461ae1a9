"""Stored runs, trend and diff; the report; `clinhub quality`; the /quality API and the quality.run job."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.hub import Hub
from clinhub.platform import audit, auth, jobs
from clinhub.quality import history
from clinhub.quality.cli import app as quality_cli
from clinhub.quality.report import render_html
from clinhub.quality.service import run_and_save
from clinhub.store.directory import load_directory
from clinhub.synth import generate

AS_OF = "2025-06-30"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def directory(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quality-dir")
    generate(out, patients=300, seed=3, defect_rate=0.3)
    return out / "directory"


@pytest.fixture
def hub(tmp_path: Path, directory: Path):
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'store.db'}",
        secret_key="k" * 40,
        _env_file=None,
    )
    with Hub(settings) as hub:
        hub.migrate()
        load_directory(hub.store, directory)
        yield hub


def test_runs_are_stored_with_trend_and_diff(hub: Hub) -> None:
    first = run_and_save(hub, as_of=date(2025, 6, 30), actor="steward")
    email_checks = ("provider.email.required", "provider.email.syntax", "provider.email.test_domain")
    failing_emails = {c for c in email_checks if first.result(c).status == "failed"}
    assert failing_emails
    with hub.store.begin() as conn:  # the steward fixes every email and breaks one last name
        conn.execute(text("UPDATE provider SET email = lower(provider_id) || '@mercy.org'"))
        conn.execute(text("UPDATE provider SET last_name = NULL WHERE provider_id = 'P000001'"))
    second = run_and_save(hub, as_of=date(2025, 6, 30), actor="steward")
    runs = history.list_runs(hub.store)
    assert [r["id"] for r in runs] == [second.run_id, first.run_id]
    stored = history.get_run(hub.store, second.run_id)
    assert stored["grade"] == second.scores.grade and len(stored["results"]) == len(second.results)
    assert stored["results"][0]["status"] == "failed"  # failing checks first
    trend = history.trend(hub.store, "directory")
    assert [t["id"] for t in trend] == [first.run_id, second.run_id]
    changes = history.diff(hub.store, first.run_id, second.run_id)
    new = {c["check_id"] for c in changes["new"]}
    fixed = {c["check_id"] for c in changes["fixed"]}
    assert "provider.last_name.required" in new
    assert failing_emails <= fixed
    html = render_html(stored, trend)
    assert html.startswith("<!doctype html>") and "<svg" in html and "provider.last_name.required" in html
    assert "<script" not in html and "<link" not in html  # self-contained
    events = audit.search(hub.store, action="quality.run")[1]
    assert {e["resource_id"] for e in events} == {first.run_id, second.run_id}


def test_cli_run_checks_history(hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(hub.settings.data_dir))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", hub.settings.store_url)
    runner = CliRunner()
    report, out = tmp_path / "report.html", tmp_path / "run.json"
    ran = runner.invoke(quality_cli, ["run", "--report", str(report), "--json", str(out), "--as-of", AS_OF])
    assert ran.exit_code == 0, ran.output
    assert "grade" in ran.stdout
    run = json.loads(out.read_text())
    assert run["scores"]["grade"] in "ABCDF" and run["counts"]["error"] == 0
    assert "<svg" in report.read_text() or "trend appears" in report.read_text()
    assert runner.invoke(quality_cli, ["checks"]).exit_code == 0
    listed = json.loads(runner.invoke(quality_cli, ["checks", "--json"]).stdout)
    assert "provider.npi.check_digit" in {c["id"] for c in listed}
    past = runner.invoke(quality_cli, ["history", "--json"])
    assert [r["id"] for r in json.loads(past.stdout)] == [run["run_id"]]
    exported = tmp_path / "bad_npi.csv"
    done = runner.invoke(
        quality_cli, ["export", "provider.npi.format", "--out", str(exported), "--as-of", AS_OF]
    )
    assert done.exit_code == 0, done.output
    assert exported.read_text().startswith("provider_id,")
    bad = runner.invoke(quality_cli, ["run", "--ruleset", "nope"])
    assert bad.exit_code != 0 and "no rule set 'nope'" in str(bad.exception)


def test_api_runs_a_job_and_serves_results(hub: Hub) -> None:
    auth.create_user(hub.store, "steward", PASSWORD, "data_steward")
    app = create_app(hub.settings)
    with TestClient(app) as client:
        token = client.post("/auth/login", json={"username": "steward", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        started = client.post("/quality/runs", json={"ruleset": "directory", "as_of": AS_OF}, headers=headers)
        assert started.status_code == 202, started.text
        job_id = started.json()["job_id"]
        worker = jobs.start_inprocess_worker(hub)
        try:
            deadline = time.monotonic() + 30
            while jobs.get_job(hub, job_id)["status"] in ("queued", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            worker.stop()
        job = jobs.get_job(hub, job_id)
        assert job["status"] == "succeeded", job
        run_id = job["result"]["run_id"]
        detail = client.get(f"/quality/runs/{run_id}", headers=headers).json()
        assert detail["created_by"] == "steward" and detail["as_of"] == AS_OF
        assert client.get("/quality/runs/latest/report", headers=headers).text.startswith("<!doctype html>")
        assert client.get("/quality/history", headers=headers).json()["trend"][0]["id"] == run_id
        assert client.get("/quality/runs/nope", headers=headers).status_code == 404
        bad = client.post("/quality/runs", json={"ruleset": "/etc/passwd"}, headers=headers)
        assert bad.status_code == 404
        checks = client.get("/quality/checks", headers=headers).json()
        assert len(checks["checks"]) > 20
    assert audit.search(hub.store, action="quality.run.submit")[1][0]["resource_id"] == job_id


def test_run_and_history_on_each_store_backend(store_url: str, directory: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=store_url, _env_file=None)
    with Hub(settings) as hub:
        hub.migrate()
        load_directory(hub.store, directory)
        result = run_and_save(hub, as_of=date(2025, 6, 30))
        assert result.counts()["error"] == 0 and result.counts()["failed"] > 0
        stored = history.get_run(hub.store, "latest")
        assert stored["id"] == result.run_id and stored["scores"]["grade"] == result.scores.grade
        failing = next(r for r in stored["results"] if r["status"] == "failed")
        assert failing["sample"] and failing["rows_failed"] > 0
