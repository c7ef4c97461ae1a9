"""The performance advisor on real stores: statement shapes without values, index hints, stats, upkeep."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, text
from typer.testing import CliRunner

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import audit, auth
from clinhub.platform.perf import (
    QueryLog,
    column_uses,
    instrument,
    maintain,
    recommend_pool_size,
    report,
    statement_shape,
)
from clinhub.platform.perf_cli import app as perf_cli
from clinhub.store.schema import affiliation, facility, fhir_resource, provider

SECRET = "SECRET-NAME-123"
PASSWORD = "a long enough password"


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    hub = Hub(Settings(data_dir=tmp_path, database_url=store_url, _env_file=None))
    hub.migrate()
    instrument(hub.store)
    yield hub
    hub.close()


def _load(hub: Hub, providers: int = 7, facilities: int = 3) -> None:
    with hub.store.begin() as conn:
        conn.execute(
            insert(provider),
            [
                {
                    "provider_id": f"P{i}",
                    "full_name": SECRET if i == 0 else f"Doctor {i}",
                    "email": f"doc{i}@example.org",
                    "birth_year": 1960 + i,
                }
                for i in range(providers)
            ],
        )
        conn.execute(
            insert(facility), [{"facility_id": f"F{i}", "name": f"Clinic {i}"} for i in range(facilities)]
        )
        conn.execute(
            insert(affiliation),
            [{"affiliation_id": f"A{i}", "provider_id": f"P{i}", "facility_id": "F0"} for i in range(3)],
        )
        conn.execute(
            insert(fhir_resource),
            [
                {
                    "resource_type": "Patient",
                    "id": f"pt{i}",
                    "version_id": 1,
                    "last_updated": datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=i),
                    "resource": {"resourceType": "Patient", "id": f"pt{i}"},
                }
                for i in range(4)
            ],
        )


def _slow(found: dict, *fragments: str) -> list[dict]:
    return [s for s in found["slow_statements"] if all(f in s["statement"] for f in fragments)]


# ------------------------------------------------------------------ on every backend
def test_report_lists_statement_shapes_with_counts_and_no_values(hub: Hub) -> None:
    _load(hub)
    with hub.store.connect() as conn:
        for _ in range(5):
            conn.execute(select(provider.c.provider_id).where(provider.c.full_name == SECRET)).all()
        # literals written into the SQL text itself must be stripped too
        conn.execute(
            text(f"SELECT count(*) FROM provider WHERE full_name = '{SECRET}' AND birth_year = 1961")
        )
        conn.execute(select(provider.c.email).where(provider.c.provider_id.in_(["P1", "P2"]))).all()
        conn.execute(
            select(provider.c.email).where(provider.c.provider_id.in_(["P1", "P2", "P3", "P4"]))
        ).all()
    found = report(hub, limit=200)
    assert SECRET not in json.dumps(found)
    assert "1961" not in json.dumps(found["slow_statements"])
    [by_name] = _slow(found, "provider.full_name", "SELECT provider.provider_id")
    assert by_name["calls"] == 5 and by_name["operation"] == "select"
    assert by_name["total_ms"] >= by_name["max_ms"] > 0
    assert by_name["mean_ms"] == pytest.approx(by_name["total_ms"] / 5, abs=0.01)
    [inline] = _slow(found, "count(*)", "full_name = ?", "birth_year = ?")
    assert inline["calls"] == 1
    [in_list] = _slow(found, "SELECT provider.email", "IN (")
    assert in_list["calls"] == 2
    assert any(s["operation"] == "insert" for s in found["slow_statements"])
    assert found["query_log"]["capacity"] >= found["query_log"]["statements_kept"] > 0
    assert found["backend"] in ("sqlite", "postgresql", "mysql")


def test_index_suggested_for_unindexed_filter_columns_only(hub: Hub) -> None:
    _load(hub)
    since = datetime(2024, 1, 2, tzinfo=UTC)
    with hub.store.connect() as conn:
        for i in range(12):
            conn.execute(select(provider).where(provider.c.email == f"doc{i}@example.org")).all()
            conn.execute(select(facility.c.facility_id).where(facility.c.name == f"Clinic {i}")).all()
            conn.execute(select(fhir_resource.c.id).where(fhir_resource.c.last_updated >= since)).all()
            conn.execute(
                select(affiliation.c.affiliation_id)
                .join(facility, facility.c.facility_id == affiliation.c.facility_id)
                .where(affiliation.c.provider_id == f"P{i}")
            ).all()
        conn.execute(
            select(provider).where(provider.c.phone == "555")
        ).all()  # once: neither slow nor frequent
    found = report(hub, limit=200)
    suggested = {(s["table"], s["column"]): s for s in found["index_suggestions"]}
    assert ("provider", "email") in suggested
    assert ("facility", "name") in suggested
    assert ("fhir_resource", "last_updated") not in suggested
    assert ("affiliation", "facility_id") not in suggested
    assert ("affiliation", "provider_id") not in suggested
    assert ("facility", "facility_id") not in suggested
    assert ("provider", "phone") not in suggested
    email = suggested[("provider", "email")]
    assert email["used_as"] == ["equality"] and email["calls"] == 12 and email["table_rows"] == 7
    assert "CREATE INDEX" in email["ddl"] and "email" in email["ddl"]
    assert "provider.email" in email["example"] and "example.org" not in json.dumps(found)


def test_table_stats_count_rows(hub: Hub) -> None:
    _load(hub, providers=7, facilities=3)
    found = report(hub, limit=200)
    rows = {t["table"]: t["rows"] for t in found["tables"]}
    assert rows["provider"] == 7 and rows["facility"] == 3 and rows["affiliation"] == 3
    assert rows["fhir_resource"] == 4 and rows["hl7_message"] == 0
    tables = {t["table"]: t for t in found["tables"]}
    if found["backend"] == "postgresql":
        assert {"n_live_tup", "n_dead_tup", "last_autovacuum", "last_analyze"} <= set(tables["provider"])
        assert found["pg_stat_statements"]["available"] is False
        assert found["pg_stat_statements"]["reason"]
    elif found["backend"] == "mysql":
        assert {"estimated_rows", "data_bytes", "index_bytes", "free_bytes"} <= set(tables["provider"])
    else:
        assert found["database"]["page_count"] > 0 and "freelist_count" in found["database"]
    pool = found["pool"]
    assert pool["observed_checkouts"] > 0 and pool["recommended_pool_size"] >= 2 and pool["reason"]
    json.dumps(found)  # the report is plain JSON


def test_maintenance_analyze_and_vacuum(hub: Hub) -> None:
    _load(hub)
    analyzed = maintain(hub, "analyze")
    assert {step["target"] for step in analyzed["steps"]} >= {"provider", "facility", "hl7_message"}
    assert all(step["ok"] for step in analyzed["steps"])
    vacuumed = maintain(hub, "vacuum", ["provider", "facility"])
    assert vacuumed["steps"] and all(step["ok"] for step in vacuumed["steps"])
    if vacuumed["backend"] == "sqlite":
        assert [step["statement"] for step in vacuumed["steps"]] == ["VACUUM"]
    else:
        assert [step["target"] for step in vacuumed["steps"]] == ["provider", "facility"]
    with pytest.raises(InvalidInput, match=r"valid tables: .*provider"):
        maintain(hub, "analyze", ["provider", "patients; DROP TABLE provider"])
    with pytest.raises(InvalidInput, match="analyze, vacuum"):
        maintain(hub, "reindex")
    after = report(hub)
    assert {t["table"]: t["rows"] for t in after["tables"]}["provider"] == 7  # data intact
    # the advisor's own catalogue and maintenance statements stay out of the log it reports on
    assert not any("ANALYZE" in s["statement"].upper() for s in after["slow_statements"])


def test_postgres_without_usable_pg_stat_statements_still_reports(tmp_path: Path, postgres_url: str) -> None:
    hub = Hub(Settings(data_dir=tmp_path, database_url=postgres_url, _env_file=None))
    try:
        hub.migrate()
        with hub.store.begin() as conn:
            available = conn.execute(
                text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_stat_statements'")
            ).scalar_one()
            if not available:
                pytest.skip("this PostgreSQL does not ship pg_stat_statements")
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        server = report(hub)["pg_stat_statements"]
        # without shared_preload_libraries the extension's view raises; the report says so instead
        assert server["available"] or server["reason"]
        if server["available"]:
            assert all(SECRET not in s["statement"] for s in server["statements"])
    finally:
        hub.close()


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("dialect", "sql", "shape"),
    [
        (
            "sqlite",
            "SELECT * FROM t WHERE a = 'x''y' AND b = 42 -- note 'z'\n",
            "SELECT * FROM t WHERE a = ? AND b = ?",
        ),
        (
            "sqlite",
            'SELECT "a b".c FROM "a b" WHERE c IN (1, 2,  3)',
            'SELECT "a b".c FROM "a b" WHERE c IN (?)',
        ),
        ("sqlite", "SELECT t1.x FROM t1 WHERE x > 1.5e3 /* it's */", "SELECT t1.x FROM t1 WHERE x > ?"),
        (
            "sqlite",
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)",
            "INSERT INTO t (a, b) VALUES (?, ?)",
        ),
        ("sqlite", "SELECT 'never closed SECRET", "SELECT ?"),
        (
            "postgresql",
            "SELECT a FROM t WHERE a = E'x\\'SECRET' AND b = $1",
            "SELECT a FROM t WHERE a = ? AND b = ?",
        ),
        ("postgresql", "SELECT $tag$ SECRET $tag$, 'C:\\' ::text", "SELECT ?, ? ::text"),
        (
            "postgresql",
            "SELECT a FROM t WHERE a IN (%(a_1)s::VARCHAR, %(a_2)s::VARCHAR) LIMIT %(param_1)s::INTEGER",
            "SELECT a FROM t WHERE a IN (?::VARCHAR) LIMIT ?::INTEGER",
        ),
        (
            "mariadb",
            "SELECT a FROM `t` WHERE a = \"SECRET\" AND b = 'it\\'s'",
            "SELECT a FROM `t` WHERE a = ? AND b = ?",
        ),
    ],
)
def test_statement_shape_strips_values(dialect: str, sql: str, shape: str) -> None:
    assert statement_shape(sql, dialect) == shape


def test_column_uses_resolve_aliases_joins_and_ranges() -> None:
    uses = column_uses(
        "SELECT f.name FROM facility AS f JOIN affiliation a ON a.facility_id = f.facility_id"
        " WHERE f.name = ? AND ? < a.start_date AND lower(a.provider_id) = ? AND a.active NOT IN (?)"
    )
    assert {(u.table, u.column, u.kind) for u in uses} == {
        ("affiliation", "facility_id", "join"),
        ("facility", "facility_id", "join"),
        ("facility", "name", "equality"),
        ("affiliation", "start_date", "range"),
    }
    derived = column_uses(
        "SELECT anon_1.x FROM (SELECT email AS x FROM provider WHERE phone = ?) AS anon_1 WHERE anon_1.x = ?"
    )
    assert [(u.table, u.column) for u in derived] == [("provider", "phone")]


def test_query_log_keeps_the_heaviest_shapes() -> None:
    log = QueryLog(capacity=3)
    for i in range(10):
        log.add(f"SELECT {i}", "select", seconds=i / 1000)
    log.add("SELECT 9", "select", seconds=0.001)
    kept = log.snapshot()
    assert len(kept) == 3 and kept[0]["statement"] == "SELECT 9" and kept[0]["calls"] == 2
    assert {row["statement"] for row in kept} == {"SELECT 9", "SELECT 8", "SELECT 7"}


def test_pool_size_recommendation() -> None:
    assert recommend_pool_size(0, 0, 5, 15, cpus=2)[0] == 5
    assert recommend_pool_size(1, 40, 5, 15, cpus=8) == (
        5,
        "only 40 checkouts observed so far; keep the current size",
    )
    assert recommend_pool_size(4, 500, 5, 15, cpus=2)[0] == 5  # 4 * 1.25, capped at 2 * 2 + 1
    assert recommend_pool_size(1, 500, 5, 15, cpus=8)[0] == 2
    assert recommend_pool_size(6, 500, 5, 15, cpus=8)[0] == 8
    assert recommend_pool_size(15, 20, 5, 15, cpus=16)[0] == 33  # ran out: room below 2 x CPUs + 1
    size, reason = recommend_pool_size(15, 500, 5, 15, cpus=2)
    assert size == 5 and "faster" in reason


# ------------------------------------------------------------------ SQLite only: hook mechanics, API, CLI
@pytest.fixture
def sqlite_hub(tmp_path: Path, sqlite_url: str) -> Iterator[Hub]:
    hub = Hub(Settings(data_dir=tmp_path, database_url=sqlite_url, secret_key="k" * 40, _env_file=None))
    hub.migrate()
    yield hub
    hub.close()


def _latency_count(operation: str) -> float:
    return (
        REGISTRY.get_sample_value("clinhub_store_query_duration_seconds_count", {"operation": operation}) or 0
    )


def test_instrument_is_idempotent_thread_safe_and_feeds_prometheus(sqlite_hub: Hub) -> None:
    assert instrument(sqlite_hub.store) is instrument(sqlite_hub.store)
    before = _latency_count("select")
    barrier = threading.Barrier(4)

    def worker() -> None:
        with sqlite_hub.store.connect() as conn:
            barrier.wait(timeout=10)  # four connections checked out at once
            for _ in range(25):
                conn.execute(select(provider.c.provider_id).where(provider.c.npi == "1")).all()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = report(sqlite_hub)
    [npi] = _slow(found, "provider.npi = ?")
    assert npi["calls"] == 100
    assert _latency_count("select") - before >= 100
    assert found["pool"]["observed_peak_checked_out"] >= 4
    assert found["pool"]["checked_out"] == 0


def test_http_report_and_audited_maintenance(sqlite_hub: Hub) -> None:
    auth.create_user(sqlite_hub.store, "boss", PASSWORD, "admin")
    with TestClient(create_app(sqlite_hub.settings)) as client:
        token = client.post("/auth/login", json={"username": "boss", "password": PASSWORD}).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        found = client.get("/admin/performance", headers=headers)
        assert found.status_code == 200 and {"slow_statements", "index_suggestions", "pool"} <= set(
            found.json()
        )
        done = client.post(
            "/admin/performance/maintenance",
            json={"action": "vacuum", "tables": ["provider"]},
            headers=headers,
        )
        assert done.status_code == 200 and done.json()["steps"][0]["ok"]
        refused = client.post(
            "/admin/performance/maintenance", json={"action": "analyze", "tables": ["nope"]}, headers=headers
        )
        assert refused.status_code == 400 and "valid tables" in refused.json()["message"]
        assert (
            client.post(
                "/admin/performance/maintenance", json={"action": "drop"}, headers=headers
            ).status_code
            == 422
        )
    total, events = audit.search(sqlite_hub.store, action="perf.maintain")
    assert total == 1 and events[0]["actor"] == "boss" and events[0]["detail"]["action"] == "vacuum"


def test_cli_report_and_maintain(sqlite_hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", sqlite_hub.settings.store_url)
    runner = CliRunner()
    as_json = runner.invoke(perf_cli, ["report", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert {t["table"] for t in json.loads(as_json.stdout)["tables"]} >= {"provider", "fhir_resource"}
    shown = runner.invoke(perf_cli, ["report"], env={"COLUMNS": "200"})
    assert (
        shown.exit_code == 0
        and "missing-index suggestions" in shown.stdout
        and "connection pool" in shown.stdout
    )
    done = runner.invoke(perf_cli, ["maintain", "analyze", "--table", "provider", "--table", "facility"])
    assert done.exit_code == 0 and "ANALYZE provider" in done.stdout
    refused = runner.invoke(perf_cli, ["maintain", "vacuum", "--table", "nope"])
    assert isinstance(refused.exception, InvalidInput)
    total, _ = audit.search(sqlite_hub.store, action="perf.maintain")
    assert total == 1
