"""Backups on SQLite, PostgreSQL and MariaDB: online create under writes, verify, tamper, restore, prune."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.errors import InvalidInput, NotFound
from clinhub.hub import Hub
from clinhub.platform import audit, auth, backup, backup_jobs, jobs
from clinhub.store import backend_name, current_revision, put_resources
from clinhub.store.schema import metadata

PASSWORD = "a long enough password"
# strings that would fool a naive reader of SQL dumps: quotes, escapes, row separators, newlines
TRICKY = "O'Brien (\"Bob\"), ('x');\\ \n),( 'y"


def _patients(prefix: str, count: int) -> list[dict]:
    return [
        {"resourceType": "Patient", "id": f"{prefix}{i}", "name": [{"text": f"{TRICKY} {i}"}]}
        for i in range(count)
    ]


def _counts(hub: Hub) -> dict[str, int]:
    with hub.store.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for name, table in metadata.tables.items()
        }


def _manifest(info: backup.BackupInfo) -> backup.Manifest:
    return backup.Manifest.model_validate_json((Path(info.path) / backup.MANIFEST).read_bytes())


class Feed(threading.Thread):
    """Keeps writing FHIR resources and audit events until stopped, like an interface during a backup."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(daemon=True)
        self.hub = hub
        self.batches = 0
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                batch = [
                    {"resourceType": "Observation", "id": f"w{self.batches}-{i}", "status": "final"}
                    for i in range(5)
                ]
                put_resources(self.hub.store, batch)
                audit.record(self.hub.store, actor="feed", action="fhir.create")
                self.batches += 1
        except BaseException as exc:
            self.error = exc

    def wait_for(self, batches: int) -> None:
        deadline = time.monotonic() + 30
        while self.batches < batches and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.error is None and self.batches >= batches

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        assert self.error is None


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    hub = Hub(Settings(data_dir=tmp_path, database_url=store_url, _env_file=None))
    hub.migrate()
    yield hub
    hub.close()


def _flip_byte(path: Path) -> bytes:
    original = path.read_bytes()
    middle = len(original) // 2
    path.write_bytes(original[:middle] + bytes([original[middle] ^ 0xFF]) + original[middle + 1 :])
    return original


def test_online_backup_verify_tamper_restore_prune(hub: Hub, tmp_path: Path) -> None:
    put_resources(hub.store, _patients("p", 3000))
    for action in ("user.create", "auth.login"):
        audit.record(hub.store, actor="admin", action=action)
    parquet = tmp_path / "exports" / "cohort.parquet"
    parquet.parent.mkdir()
    duckdb.sql(f"COPY (SELECT range AS n FROM range(1000)) TO '{parquet}' (FORMAT parquet)")
    parquet_bytes = parquet.read_bytes()

    feed = Feed(hub)
    feed.start()
    feed.wait_for(3)
    before = feed.batches
    info = backup.create_backup(hub)
    during = feed.batches - before
    feed.wait_for(feed.batches + 2)
    feed.stop()
    assert during > 0, "the feed was blocked while the backup ran"

    manifest = _manifest(info)
    tables = manifest.tables
    assert set(tables) == set(metadata.tables)
    assert manifest.backend == backend_name(hub.settings.store_url)
    assert manifest.schema_revision == current_revision(hub.store)
    # one snapshot: every resource the dump holds has its history row, and the feed's writes are partial
    final = _counts(hub)
    assert tables["fhir_resource"] == tables["fhir_resource_history"]
    assert 3000 + 5 * before <= tables["fhir_resource"] < final["fhir_resource"]
    assert tables["audit_event"] < final["audit_event"]
    assert {f.path for f in manifest.files} == {manifest.store_file, "files/exports/cohort.parquet"}
    assert info.status == "created" and info.size_bytes > 0

    verified = backup.verify_backup(hub, info.id)
    assert verified.ok, verified.reason
    assert verified.tables == tables and verified.backup.status == "verified"

    dump = Path(info.path) / manifest.store_file
    original = _flip_byte(dump)
    failed = backup.verify_backup(hub, info.id)
    assert not failed.ok and failed.backup.status == "failed"
    assert (
        failed.reason
        == f"{manifest.store_file} does not match its sha256 in the manifest (changed or corrupt)"
    )
    with pytest.raises(backup.BackupInvalid, match="nothing was restored"):
        backup.restore_backup(hub, info.id)
    assert _counts(hub) == final
    dump.write_bytes(original)

    manifest_path = Path(info.path) / backup.MANIFEST
    manifest_bytes = manifest_path.read_bytes()
    manifest_path.write_bytes(manifest_bytes.replace(b'"provider": 0', b'"provider": 1'))
    forged = backup.verify_backup(hub, info.id)
    assert forged.reason == "manifest.json differs from the checksum recorded when the backup was made"
    manifest_path.write_bytes(manifest_bytes)
    with pytest.raises(NotFound):  # "latest" passes over backups that failed verification
        backup.verify_backup(hub, "latest")
    assert backup.verify_backup(hub, info.id).ok

    put_resources(hub.store, _patients("late", 50))
    audit.record(hub.store, actor="admin", action="user.create")
    parquet.unlink()
    restored = backup.restore_backup(hub, info.id)
    assert restored.ok, restored.reason
    assert restored.files == 1 and parquet.read_bytes() == parquet_bytes
    now = _counts(hub)
    # the catalog of backups is carried across a restore; every other table is as the manifest says
    assert {k: v for k, v in now.items() if k != "backup"} == {
        k: v for k, v in tables.items() if k != "backup"
    }
    assert [b.status for b in backup.list_backups(hub)] == ["verified"]
    assert audit.verify(hub.store).ok

    second = backup.create_backup(hub)
    third = backup.create_backup(hub)
    assert [b.id for b in backup.list_backups(hub)] == [third.id, second.id, info.id]
    assert backup.prune_backups(hub, keep_days=30, keep_min=0).removed == []
    pruned = backup.prune_backups(hub, keep_days=0, keep_min=2)
    assert [b.id for b in pruned.removed] == [info.id]
    assert [b.id for b in backup.list_backups(hub)] == [third.id, second.id]
    assert not Path(info.path).exists()


def test_a_lost_store_comes_back_from_the_backup_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)
    hub = Hub(settings)
    hub.migrate()
    put_resources(hub.store, _patients("p", 20))
    made = backup.create_backup(hub)
    hub.close()
    for path in tmp_path.glob("clinhub.db*"):
        path.unlink()

    hub = Hub(settings)
    try:
        hub.migrate()
        found = backup.list_backups(hub)
        assert [(b.name, b.sha256) for b in found] == [(made.name, made.sha256)]
        assert backup.restore_backup(hub, "latest").ok
        assert _counts(hub)["fhir_resource"] == 20
    finally:
        hub.close()


def test_ids_arguments_and_missing_folders(tmp_path: Path) -> None:
    hub = Hub(Settings(data_dir=tmp_path, _env_file=None))
    try:
        hub.migrate()
        with pytest.raises(NotFound, match="no backup yet"):
            backup.verify_backup(hub, "latest")
        with pytest.raises(InvalidInput, match="a number or 'latest'"):
            backup.verify_backup(hub, "newest")
        with pytest.raises(NotFound, match="no backup 7"):
            backup.restore_backup(hub, 7)
        with pytest.raises(InvalidInput, match="must not be negative"):
            backup.prune_backups(hub, keep_days=-1)
        made = backup.create_backup(hub)
        (Path(made.path) / "stray.txt").write_text("not from clinhub")
        assert backup.verify_backup(hub, made.id).reason == "stray.txt is not in the manifest"
        (Path(made.path) / "stray.txt").unlink()
        for path in Path(made.path).iterdir():
            path.unlink()
        Path(made.path).rmdir()
        assert not backup.list_backups(hub)[0].present
        assert backup.verify_backup(hub, made.id).reason == f"backup folder {made.name} is missing"
    finally:
        hub.close()


def test_mariadb_dump_rows_are_counted_past_strings_and_trigger_bodies(tmp_path: Path) -> None:
    dump = tmp_path / "store.sql"
    dump.write_bytes(
        b"CREATE TABLE `job` (\n  `id` varchar(36) NOT NULL\n);\n"
        b"CREATE TABLE `provider` (\n  `provider_id` varchar(32)\n);\n"
        b"INSERT INTO `provider` VALUES ('a (1)','it\\'s),(x'),(NULL,0x2829),('\\\\','\\n;');\n"
        b"DELIMITER ;;\n"
        b"INSERT INTO `provider` VALUES ('from a trigger body');;\n"
        b"DELIMITER ;\n"
        b"INSERT INTO `provider` VALUES\n('b'),\n('c;');\n"
    )
    assert backup._count_dump_rows(dump) == {"job": 0, "provider": 5}


def test_passwords_travel_in_the_environment_not_the_command_line() -> None:
    for store, url, variable in (
        (backup._PostgresStore, "postgresql+psycopg://clin:s3cret@db.example:5433/hub", "PGPASSWORD"),
        (backup._MariaDBStore, "mariadb+pymysql://clin:s3cret@db.example:3307/hub", "MYSQL_PWD"),
    ):
        args, env = store._command("true", make_url(url))
        assert not any("s3cret" in arg for arg in args)
        assert env[variable] == "s3cret"
        assert "--port=5433" in args or "--port=3307" in args


def test_api_creates_verifies_and_audits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k" * 40, _env_file=None)
    hub = Hub(settings)
    hub.migrate()
    auth.create_user(hub.store, "root", PASSWORD, "admin")
    hub.close()
    with TestClient(create_app(settings)) as client:
        token = client.post("/auth/login", json={"username": "root", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        created = client.post("/admin/backups", params={"wait": "true"}, headers=headers)
        assert created.status_code == 201, created.text
        backup_id = created.json()["id"]
        verified = client.post(
            f"/admin/backups/{backup_id}/verify", params={"wait": "true"}, headers=headers
        ).json()
        assert verified["ok"] and verified["backup"]["status"] == "verified"
        refused = client.post(f"/admin/backups/{backup_id}/restore", headers=headers, json={"confirm": False})
        assert refused.status_code == 400 and "confirm" in refused.json()["message"]
        listed = client.get("/admin/backups", headers=headers).json()
        assert [b["id"] for b in listed] == [backup_id] and listed[0]["age_seconds"] >= 0
        missing = client.post("/admin/backups/99/verify", params={"wait": "true"}, headers=headers)
        assert missing.status_code == 404
        events = client.get("/audit", params={"resource_type": "Backup"}, headers=headers).json()["events"]
        assert [(e["action"], e["outcome"]) for e in events] == [
            ("backup.verify", "error"),
            ("backup.list", "success"),
            ("backup.verify", "success"),
            ("backup.create", "success"),
        ]


def test_cli_create_list_verify(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    env.update({"CLINHUB_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"})

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "clinhub", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("db", "upgrade").returncode == 0
    created = run("backup", "create")
    assert created.returncode == 0, created.stderr
    assert "backup 1 created" in created.stdout
    listing = run("backup", "list")
    assert listing.returncode == 0 and "created" in listing.stdout
    assert "ago; no scheduled backups" in listing.stdout
    queued = run("backup", "create", "--job")
    assert queued.returncode == 0 and "backup job" in queued.stdout, queued.stderr
    job_id = queued.stdout.split()[2]
    shown = run("jobs", "show", job_id)
    assert shown.returncode == 0 and "backup.create" in shown.stdout and "queued" in shown.stdout
    name = next(p.name for p in (tmp_path / "data" / "backups").iterdir() if not p.name.startswith("."))
    assert name in listing.stdout
    verified = run("backup", "verify", "1")
    assert verified.returncode == 0, verified.stderr
    assert "backup 1 verified" in verified.stdout
    refused = run("backup", "restore", "1")
    assert refused.returncode == 2 and "rerun with --yes" in refused.stderr
    (tmp_path / "data" / "backups" / name / "store.sqlite").write_bytes(b"not a database")
    broken = run("backup", "verify", "latest")
    assert broken.returncode == 1 and "FAILED verification" in broken.stdout


def _wait_job(client: TestClient, headers: dict, url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(url, headers=headers).json()
        if state["status"] in ("succeeded", "failed", "cancelled"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {url} did not finish in {timeout} s")


def _metric(client: TestClient, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_api_backup_and_verify_run_as_jobs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key="k" * 40, _env_file=None)
    hub = Hub(settings)
    hub.migrate()
    auth.create_user(hub.store, "root", PASSWORD, "admin")
    put_resources(hub.store, _patients("p", 20))
    hub.close()
    with TestClient(create_app(settings, run_worker=True)) as client:
        token = client.post("/auth/login", json={"username": "root", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert _metric(client, "clinhub_backup_last_success_timestamp_seconds") == 0.0
        accepted = client.post("/admin/backups", headers=headers)
        assert accepted.status_code == 202, accepted.text
        assert accepted.headers["Location"] == accepted.json()["status_url"]
        done = _wait_job(client, headers, accepted.headers["Location"])
        assert done["status"] == "succeeded", done
        backup_id = done["result"]["id"]
        assert done["result"]["status"] == "created" and done["created_by"] == "root"

        assert client.post("/admin/backups/nope/verify", headers=headers).status_code == 400
        assert client.post("/admin/backups/99/verify", headers=headers).status_code == 404
        verify = client.post(f"/admin/backups/{backup_id}/verify", headers=headers)
        assert verify.status_code == 202
        checked = _wait_job(client, headers, verify.headers["Location"])
        assert checked["status"] == "succeeded" and checked["result"]["ok"] is True, checked

        listed = client.get("/admin/backups", headers=headers).json()
        assert [(b["id"], b["status"]) for b in listed] == [(backup_id, "verified")]
        taken = datetime.fromisoformat(listed[0]["created_at"].replace("Z", "+00:00")).timestamp()
        # the gauge caches for a few seconds; a fresh app reads the catalog again
    with TestClient(create_app(settings)) as client:
        assert _metric(client, "clinhub_backup_last_success_timestamp_seconds") == pytest.approx(taken, abs=1)
        events = client.get("/audit", params={"resource_type": "Backup"}, headers=headers).json()["events"]
        assert {(e["action"], e["actor"], e["outcome"]) for e in events} >= {
            ("backup.create", "root", "success"),
            ("backup.verify", "root", "success"),
        }


def test_scheduled_backups_are_submitted_once_per_interval(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, backup_interval_hours=24, backup_keep_min=1, _env_file=None)
    with Hub(settings) as hub:
        hub.migrate()
        put_resources(hub.store, _patients("s", 5))
        first = backup_jobs.schedule(hub)
        assert first is not None and first.startswith("scheduled-backup-")
        assert backup_jobs.schedule(hub) is None  # the same slot: submitted once, however many workers ask
        worker = jobs.start_inprocess_worker(hub)
        try:
            deadline = time.monotonic() + 60
            while jobs.get_job(hub, first)["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, "scheduled backup did not finish"
                time.sleep(0.2)
        finally:
            worker.stop()
        state = jobs.get_job(hub, first)
        assert state["status"] == "succeeded" and state["result"]["pruned"] == []
        assert backup.last_success(hub) is not None
        assert backup_jobs.due(hub) is None  # a backup younger than the interval: nothing due
        later = datetime.now(UTC) + timedelta(hours=25)
        assert backup_jobs.due(hub, now=later) not in (None, first)

    off = Settings(data_dir=tmp_path / "off", _env_file=None)
    with Hub(off) as hub:
        hub.migrate()
        assert backup_jobs.due(hub) is None and backup_jobs.schedule(hub) is None
