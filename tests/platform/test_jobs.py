"""Jobs through real huey consumers: progress, results, errors, retries, lost workers, Redis, the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Row, select, update
from typer.testing import CliRunner

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.errors import Conflict, InvalidInput, NotFound
from clinhub.hub import Hub
from clinhub.platform import audit, auth, jobs
from clinhub.platform.jobs_cli import app as jobs_cli
from clinhub.store.schema import job

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GATES: dict[str, threading.Event] = {}
PASSWORD = "a long enough password"


# ------------------------------------------------------------------ job kinds for these tests
# Registered on import, in pytest and in the worker subprocesses (`--import test_jobs`).
@jobs.job_kind("test.gated", permission="jobs:read")
def gated(ctx: jobs.JobContext, gate: str) -> dict:
    """Report half done, wait for the test to open the gate, finish."""
    ctx.progress(1, 2)
    if not GATES[gate].wait(30):
        raise TimeoutError("the test never opened the gate")
    return {"gate": gate, "attempt": ctx.attempt}


@jobs.job_kind("test.fail", permission="jobs:read")
def fail(ctx: jobs.JobContext, message: str, ours: bool) -> None:
    """Fail at once, with one of our errors or with a foreign one."""
    raise InvalidInput(message) if ours else ValueError(message)


@jobs.job_kind("test.flaky", permission="jobs:read", retries=3, retry_delay=0.05)
def flaky(ctx: jobs.JobContext, failures: int) -> dict:
    """Lose the connection `failures` times, then succeed."""
    if ctx.attempt <= failures:
        raise ConnectionError("connection reset")
    return {"attempt": ctx.attempt}


@jobs.job_kind("test.slow", permission="jobs:read")
def slow(ctx: jobs.JobContext, marker: str, seconds: float) -> dict:
    """Mark the start, work for `seconds` with progress, mark the end."""
    log = Path(marker)
    with log.open("a") as handle:
        handle.write(f"start {ctx.attempt}\n")
    steps = int(seconds * 10)
    for step in range(steps):
        time.sleep(0.1)
        ctx.progress(step + 1, steps)
    with log.open("a") as handle:
        handle.write(f"done {ctx.attempt}\n")
    return {"attempt": ctx.attempt}


# ------------------------------------------------------------------ helpers
def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def finished(hub: Hub, job_id: str, timeout: float = 20.0) -> dict:
    return wait_for(
        lambda: (row := jobs.get_job(hub, job_id))["status"] in ("succeeded", "failed") and row,
        timeout,
        f"job {job_id} to finish",
    )


def counter(name: str, kind: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"kind": kind, **labels}) or 0.0


def stored(hub: Hub, job_id: str) -> Row:
    """The job's row as the store holds it, bookkeeping columns and all."""
    with hub.store.connect() as conn:
        return conn.execute(select(job).where(job.c.id == job_id)).one()


def set_row(hub: Hub, job_id: str, **values: object) -> None:
    with hub.store.begin() as conn:
        conn.execute(update(job).where(job.c.id == job_id).values(**values))


def age_heartbeat(hub: Hub, job_id: str) -> None:
    """Make a running job's last heartbeat older than any stale limit, as if its worker died long ago."""
    set_row(hub, job_id, heartbeat_at=datetime.now(UTC) - timedelta(days=1))


def make_hub(tmp_path: Path, database_url: str | None = None, redis_url: str | None = None) -> Hub:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url or f"sqlite:///{tmp_path / 'store.db'}",
        redis_url=redis_url,
        secret_key="k" * 40,
        _env_file=None,
    )
    hub = Hub(settings)
    hub.migrate()
    return hub


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    hub = make_hub(tmp_path)
    yield hub
    hub.close()


@pytest.fixture
def worker(hub: Hub) -> Iterator[jobs.Worker]:
    running = jobs.start_inprocess_worker(hub)
    yield running
    running.stop()


def open_gate() -> str:
    name = uuid.uuid4().hex
    GATES[name] = threading.Event()
    return name


def run_to_success_with_progress(hub: Hub) -> None:
    gate = open_gate()
    before = counter("clinhub_jobs_succeeded_total", "test.gated")
    job_id = jobs.submit(hub, "test.gated", {"gate": gate}, created_by="ann")
    assert jobs.get_job(hub, job_id)["status"] in ("queued", "running")
    halfway = wait_for(
        lambda: (row := jobs.get_job(hub, job_id))["progress"] == 50 and row, what="progress 50%"
    )
    assert halfway["status"] == "running" and halfway["started_at"] and halfway["heartbeat_at"]
    assert halfway["attempts"] == 1 and halfway["worker"] == jobs.WORKER_ID
    GATES[gate].set()
    done = finished(hub, job_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"gate": gate, "attempt": 1}
    assert done["progress"] == 100 and done["attempts"] == 1 and done["error"] is None
    assert done["created_by"] == "ann" and done["finished_at"] >= done["started_at"]
    assert counter("clinhub_jobs_succeeded_total", "test.gated") == before + 1
    assert jobs.list_jobs(hub, status="succeeded", kind="test.gated")[0]["id"] == job_id
    row = stored(hub, job_id)
    assert row.result == {"gate": gate, "attempt": 1}  # the job's own result and nothing else
    assert (row.attempts, row.worker, row.heartbeat_at) == (1, jobs.WORKER_ID, None)


# ------------------------------------------------------------------ running jobs
def test_job_runs_to_success_with_progress_and_result(tmp_path: Path, store_url: str) -> None:
    hub = make_hub(tmp_path, database_url=store_url)
    running = jobs.start_inprocess_worker(hub)
    try:
        run_to_success_with_progress(hub)
    finally:
        running.stop()
        hub.close()


def test_the_same_queue_through_redis(tmp_path: Path, redis_url: str) -> None:
    hub = make_hub(tmp_path, redis_url=redis_url)
    try:
        gate = open_gate()
        job_id = jobs.submit(hub, "test.gated", {"gate": gate}, created_by="ann")
        queue = jobs.JobQueue(hub)
        try:
            assert queue.waiting_job_ids() == {job_id}  # the task waits in Redis, not in a local file
        finally:
            queue.close()
        assert not (tmp_path / "data" / "jobs.db").exists()
        GATES[gate].set()
        running = jobs.start_inprocess_worker(hub)
        try:
            assert finished(hub, job_id)["result"] == {"gate": gate, "attempt": 1}
            run_to_success_with_progress(hub)
        finally:
            running.stop()
    finally:
        hub.close()


def test_failing_job_stores_a_one_line_error(hub: Hub, worker: jobs.Worker) -> None:
    before = counter("clinhub_jobs_failed_total", "test.fail")
    ours = jobs.submit(hub, "test.fail", {"message": "the file has\nno header", "ours": True})
    foreign = jobs.submit(hub, "test.fail", {"message": "Patient John Smith has no MRN", "ours": False})
    failed = finished(hub, ours)
    assert failed["status"] == "failed" and failed["error"] == "the file has no header"
    assert failed["attempts"] == 1 and failed["result"] is None  # not transient: no retry
    assert stored(hub, ours).result is None
    withheld = finished(hub, foreign)
    assert withheld["status"] == "failed"
    assert "ValueError" in withheld["error"] and "Smith" not in withheld["error"]
    assert "\n" not in withheld["error"] and "Traceback" not in withheld["error"]
    assert counter("clinhub_jobs_failed_total", "test.fail") == before + 2


def test_transient_failure_is_retried_then_succeeds(hub: Hub, worker: jobs.Worker) -> None:
    recovered = finished(hub, jobs.submit(hub, "test.flaky", {"failures": 2}))
    assert recovered["status"] == "succeeded" and recovered["attempts"] == 3
    assert recovered["result"] == {"attempt": 3} and recovered["error"] is None
    exhausted = finished(hub, jobs.submit(hub, "test.flaky", {"failures": 9}))
    assert exhausted["status"] == "failed" and exhausted["attempts"] == 4
    assert exhausted["error"] == "ConnectionError (details withheld: they may quote health data)" + (
        " (gave up after 4 attempts)"
    )


def test_cancel_a_queued_job(hub: Hub) -> None:
    job_id = jobs.submit(hub, "test.fail", {"message": "must never run", "ours": True})
    assert jobs.cancel(hub, job_id)["status"] == "cancelled"
    with pytest.raises(Conflict, match="only a queued job"):
        jobs.cancel(hub, job_id)
    with pytest.raises(NotFound):
        jobs.cancel(hub, "no-such-job")
    running = jobs.start_inprocess_worker(hub)
    try:
        after = finished(hub, jobs.submit(hub, "test.flaky", {"failures": 0}))
    finally:
        running.stop()
    assert after["status"] == "succeeded"  # the worker ran the next job, and skipped the cancelled one
    assert jobs.get_job(hub, job_id)["status"] == "cancelled"
    assert jobs.get_job(hub, job_id)["attempts"] == 0


def test_submit_checks_kind_and_parameters(hub: Hub) -> None:
    with pytest.raises(InvalidInput, match=r"unknown job kind 'no\.such'"):
        jobs.submit(hub, "no.such", {})
    with pytest.raises(InvalidInput, match="takes path"):
        jobs.submit(hub, "fhir.import", {})
    with pytest.raises(InvalidInput, match="takes path"):
        jobs.submit(hub, "fhir.import", {"path": "/x", "colour": "red"})
    with pytest.raises(InvalidInput, match="status must be one of"):
        jobs.list_jobs(hub, status="lost")
    assert jobs.list_jobs(hub) == []


def test_recorded_job_is_enqueued_by_the_next_worker(hub: Hub) -> None:
    job_id = jobs.new_job(hub.store, "test.flaky", {"failures": 0}, "ann")
    running = jobs.start_inprocess_worker(hub)
    try:
        assert finished(hub, job_id)["status"] == "succeeded"
    finally:
        running.stop()


def test_fhir_import_job(hub: Hub, worker: jobs.Worker, tmp_path: Path) -> None:
    source = tmp_path / "bulk"
    source.mkdir()
    patients = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(3)]
    lines = [orjson.dumps(p) + b"\n" for p in patients]
    lines.insert(1, b"{not json\n")  # a bad line is skipped and reported; the good ones are kept
    (source / "Patient.ndjson").write_bytes(b"".join(lines))
    done = finished(hub, jobs.submit(hub, "fhir.import", {"path": str(source)}))
    assert done["status"] == "succeeded", done
    assert done["result"] == {
        "created": {"Patient": 3},
        "updated": {},
        "unchanged": {},
        "total": 3,
        "rejected": 1,
        "errors": ["Patient.ndjson line 2: not valid JSON"],
    }
    relative = finished(hub, jobs.submit(hub, "fhir.import", {"path": "bulk"}))
    assert relative["status"] == "failed" and "path must be absolute" in relative["error"]
    missing = finished(hub, jobs.submit(hub, "fhir.import", {"path": str(tmp_path / "none")}))
    assert missing["status"] == "failed" and "no NDJSON files" in missing["error"]


# ------------------------------------------------------------------ a worker killed mid-job
def _worker_process(tmp_path: Path, redis_url: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    env.update(
        CLINHUB_DATA_DIR=str(tmp_path / "data"),
        CLINHUB_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
        CLINHUB_LOG_FORMAT="console",
        PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]),
    )
    if redis_url:
        env["CLINHUB_REDIS_URL"] = redis_url
    args = ["worker", "--workers", "1", "--import", "test_jobs"]
    return subprocess.Popen(
        [sys.executable, "-m", "clinhub.platform.jobs_cli", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["sqlite", "redis"])
def test_job_survives_a_worker_kill(tmp_path: Path, queue: str, request: pytest.FixtureRequest) -> None:
    redis_url = request.getfixturevalue("redis_url") if queue == "redis" else None
    hub = make_hub(tmp_path, redis_url=redis_url)
    marker = tmp_path / "marker.log"
    first = _worker_process(tmp_path, redis_url)
    second = None
    try:
        job_id = jobs.submit(hub, "test.slow", {"marker": str(marker), "seconds": 2.0}, created_by="ann")
        wait_for(lambda: marker.exists() and "start 1" in marker.read_text(), what="the first attempt")
        assert jobs.get_job(hub, job_id)["status"] == "running"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # spares the test the three missed heartbeats (30 s) after which the next worker takes the job
        age_heartbeat(hub, job_id)
        second = _worker_process(tmp_path, redis_url)
        done = finished(hub, job_id, timeout=40)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2 and done["result"] == {"attempt": 2}
        assert marker.read_text().splitlines() == ["start 1", "start 2", "done 2"]
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0, second.stdout.read()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        hub.close()


def test_watch_requeues_the_job_of_a_lost_worker(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.settings, "job_heartbeat_seconds", 0.5)  # stale after 1.5 s

    def lost(attempts: int) -> str:
        """A job as a worker that died in attempt `attempts` leaves it: running, beating until just now."""
        job_id = jobs.new_job(hub.store, "test.flaky", {"failures": 0}, "ann")
        now = datetime.now(UTC)
        set_row(
            hub,
            job_id,
            status="running",
            attempts=attempts,
            worker="gone:1",
            started_at=now,
            heartbeat_at=now,
        )
        return job_id

    retried, exhausted = lost(1), lost(4)
    before = counter("clinhub_jobs_requeued_total", "test.flaky", reason="worker_lost")
    running = jobs.start_inprocess_worker(hub)
    try:
        assert jobs.get_job(hub, retried)["status"] == "running"  # not stale yet when the worker started
        done, gave_up = finished(hub, retried), finished(hub, exhausted)
    finally:
        running.stop()
    assert done["status"] == "succeeded" and done["result"] == {"attempt": 2}
    assert done["attempts"] == 2 and done["worker"] == jobs.WORKER_ID and done["error"] is None
    assert gave_up["status"] == "failed" and gave_up["attempts"] == 4
    assert gave_up["error"] == "the worker running attempt 4 stopped; no attempts left"
    assert gave_up["worker"] is None and gave_up["heartbeat_at"] is None and gave_up["result"] is None
    assert counter("clinhub_jobs_requeued_total", "test.flaky", reason="worker_lost") == before + 1


def test_only_the_attempt_that_owns_a_job_records_it(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    # no beats and no watch while the test runs: only the test declares the first attempt lost
    monkeypatch.setattr(hub.settings, "job_heartbeat_seconds", 3600.0)
    gate = open_gate()
    before = counter("clinhub_jobs_succeeded_total", "test.gated")
    running = jobs.start_inprocess_worker(hub)  # two threads: one per attempt
    queue = jobs.JobQueue(hub)
    try:
        job_id = jobs.submit(hub, "test.gated", {"gate": gate}, created_by="ann")
        wait_for(lambda: jobs.get_job(hub, job_id)["progress"] == 50, what="the first attempt")
        assert jobs.requeue_stale(queue) == 0  # its heartbeat (the claim's) is recent
        age_heartbeat(hub, job_id)
        assert jobs.requeue_stale(queue) == 1
        second = wait_for(
            lambda: (row := jobs.get_job(hub, job_id))["attempts"] == 2 and row["progress"] == 50 and row,
            what="the second attempt",
        )
        assert second["status"] == "running" and second["worker"] == jobs.WORKER_ID
        GATES[gate].set()  # both attempts finish; only the second still owns the job
        done = finished(hub, job_id)
    finally:
        queue.close()
        running.stop()  # waits for the first attempt too
    assert done["status"] == "succeeded" and done["result"] == {"gate": gate, "attempt": 2}
    assert jobs.get_job(hub, job_id) == done
    assert counter("clinhub_jobs_succeeded_total", "test.gated") == before + 1


# ------------------------------------------------------------------ HTTP API and CLI
@pytest.fixture
def client(hub: Hub) -> Iterator[TestClient]:
    for name, role in (("ann", "integration_engineer"), ("bob", "analyst"), ("root", "admin")):
        auth.create_user(hub.store, name, PASSWORD, role)
    with TestClient(create_app(hub.settings)) as test_client:
        yield test_client


def login(client: TestClient, username: str) -> dict:
    response = client.post("/auth/login", json={"username": username, "password": PASSWORD})
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_api_roles(hub: Hub, client: TestClient, tmp_path: Path) -> None:
    ann, bob, root = login(client, "ann"), login(client, "bob"), login(client, "root")
    body = {"kind": "fhir.import", "params": {"path": str(tmp_path / "bulk")}}
    submitted = client.post("/jobs", json=body, headers=ann)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.json()["created_by"] == "ann"
    denied = client.post("/jobs", json=body, headers=bob)  # an analyst may not write health data
    assert denied.status_code == 403 and "health_data:write" in denied.json()["message"]
    assert client.post("/jobs", json={"kind": "no.such"}, headers=ann).status_code == 400
    assert client.get(f"/jobs/{job_id}", headers=ann).json()["kind"] == "fhir.import"
    assert client.get(f"/jobs/{job_id}", headers=bob).status_code == 404  # not even its existence
    assert client.get(f"/jobs/{job_id}", headers=root).status_code == 200
    assert client.get("/jobs/no-such-job", headers=ann).status_code == 404
    assert [job["id"] for job in client.get("/jobs", headers=ann).json()] == [job_id]
    assert client.get("/jobs", headers=bob).json() == []
    assert job_id in [job["id"] for job in client.get("/jobs", headers=root).json()]
    assert "fhir.import" in [kind["name"] for kind in client.get("/jobs/kinds", headers=bob).json()]
    # a job only recorded stays queued whether or not a worker runs in the app
    queued = jobs.new_job(hub.store, "fhir.import", {"path": "/none"}, "ann")
    assert client.post(f"/jobs/{queued}/cancel", headers=bob).status_code == 404
    cancelled = client.post(f"/jobs/{queued}/cancel", headers=ann)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{queued}/cancel", headers=ann).status_code == 409
    actions = {event["action"]: event for event in audit.search(hub.store, actor="ann")[1]}
    assert actions["job.submit"]["resource_id"] == job_id
    assert actions["job.submit"]["detail"] == {"kind": "fhir.import"}
    assert actions["job.cancel"]["resource_id"] == queued
    assert audit.search(hub.store, actor="bob", action="access.denied")[0] == 1


def test_cli_submit_list_show_cancel(hub: Hub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in (("DATA_DIR", hub.settings.data_dir), ("DATABASE_URL", hub.settings.store_url)):
        monkeypatch.setenv(f"CLINHUB_{name}", str(value))
    runner = CliRunner()
    kinds = runner.invoke(jobs_cli, ["kinds"])
    assert kinds.exit_code == 0 and "fhir.import" in kinds.stdout
    submitted = runner.invoke(jobs_cli, ["submit", "test.flaky", "--param", "failures=2"])
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert jobs.get_job(hub, job_id)["params"] == {"failures": 2}  # JSON values stay numbers
    assert job_id in runner.invoke(jobs_cli, ["list", "--status", "queued"]).stdout
    assert orjson.loads(runner.invoke(jobs_cli, ["show", job_id]).stdout)["status"] == "queued"
    assert runner.invoke(jobs_cli, ["cancel", job_id]).exit_code == 0
    assert jobs.get_job(hub, job_id)["status"] == "cancelled"
    bad = runner.invoke(jobs_cli, ["submit", "test.flaky", "--param", "failures"])
    assert isinstance(bad.exception, InvalidInput)
