"""Materialised views over a real store: incremental refresh by lastUpdated, deletions, rebuilds, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from sqlalchemy import and_, update
from typer.testing import CliRunner

from clinhub.config import Settings
from clinhub.engine import AnalyticEngine
from clinhub.errors import Conflict, InvalidInput, NotFound
from clinhub.hub import Hub
from clinhub.store.resources import put_resources
from clinhub.store.schema import fhir_resource
from clinhub.views import materialize, run_view
from clinhub.views.cli import app

LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
NAMES = {
    "resourceType": "ViewDefinition",
    "name": "patient_names",
    "resource": "Patient",
    "select": [
        {"column": [{"name": "id", "path": "id", "type": "id"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family", "type": "string"}]},
    ],
}


def patient(pid: str, *families: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "name": [{"family": f} for f in families]}


def make_hub(tmp_path: Path, store_url: str) -> Hub:
    settings = Settings(data_dir=tmp_path / "data", database_url=store_url, _env_file=None)
    hub = Hub(settings)
    hub.migrate()
    return hub


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    hub = make_hub(tmp_path, store_url)
    yield hub
    hub.close()


def stamp(hub: Hub, when: datetime, resource_id: str | None = None) -> None:
    """Set last_updated of one stored resource, or of all, as if written at `when`."""
    query = update(fhir_resource).values(last_updated=when)
    if resource_id is not None:
        query = query.where(fhir_resource.c.id == resource_id)
    with hub.store.begin() as conn:
        conn.execute(query)


def delete(hub: Hub, resource_type: str, resource_id: str) -> None:
    """What a FHIR delete does to the current row: a new version, flagged deleted, stamped now."""
    key = and_(fhir_resource.c.resource_type == resource_type, fhir_resource.c.id == resource_id)
    with hub.store.begin() as conn:
        conn.execute(
            update(fhir_resource)
            .where(key)
            .values(deleted=True, version_id=fhir_resource.c.version_id + 1, last_updated=datetime.now(UTC))
        )


def table_rows(engine: AnalyticEngine, table: str, columns: str = "id, family") -> list[tuple]:
    return sorted(engine.fetchall(f"SELECT {columns} FROM {table}"), key=str)


def view_rows(hub: Hub, view: dict) -> list[tuple]:
    with AnalyticEngine(hub.settings.store_url) as engine:
        return sorted(run_view(engine, view, "store").fetchall(), key=str)


def test_incremental_refresh_follows_updates_and_deletions(hub: Hub) -> None:
    put_resources(
        hub.store,
        [patient("p1", "Smith", "Jones"), patient("p2", "Brown"), patient("p3", "Lee"), patient("p5", "Ng")],
    )
    put_resources(hub.store, [{"resourceType": "Observation", "id": "o1", "status": "final"}])
    # loaded long before the first refresh, p5 last. A refresh looks again at the last minute before its
    # watermark (a writer stamps before it commits), which here holds p5 alone
    stamp(hub, LONG_AGO)
    stamp(hub, LONG_AGO + timedelta(days=1), "p5")
    with materialize.open_analytics(hub.settings) as engine:
        first = materialize.refresh(engine, NAMES, "names")
        assert (first.mode, first.reason, first.rows) == ("full", "a new table", 5)
        again = materialize.refresh(engine, NAMES, "names")
        assert (again.mode, again.resources, again.rows) == ("incremental", 1, 5)

        put_resources(hub.store, [patient("p1", "Changed"), patient("p4", "New", "Newer")])
        delete(hub, "Patient", "p2")
        done = materialize.refresh(engine, NAMES, "names")
        # p1, p2 and p4 were written since the watermark (p5 is in the minute before it); p3 is untouched
        assert (done.mode, done.resources, done.deleted) == ("incremental", 4, 1)
        assert table_rows(engine, "names") == [
            ("p1", "Changed"),
            ("p3", "Lee"),
            ("p4", "New"),
            ("p4", "Newer"),
            ("p5", "Ng"),
        ]
        assert table_rows(engine, "names") == view_rows(hub, NAMES)  # the same as running the view now
        assert done.rows == 5
        # the hidden key column finds a resource's rows; nothing else of the resource type is there
        keys = {key for (key,) in engine.fetchall("SELECT DISTINCT _resource_key FROM names")}
        assert keys == {"Patient/p1", "Patient/p3", "Patient/p4", "Patient/p5"}

        (entry,) = materialize.materialized(engine)
        assert (entry.table, entry.view, entry.resource, entry.source) == (
            "names",
            "patient_names",
            "Patient",
            "store",
        )
        assert entry.key_column == "_resource_key" and entry.rows == 5 and entry.mode == "incremental"
        assert entry.watermark > LONG_AGO.replace(tzinfo=None)

        changed = json.loads(json.dumps(NAMES))
        changed["select"][0]["column"].append({"name": "key", "path": "getResourceKey()", "type": "string"})
        rebuilt = materialize.refresh(engine, changed, "names")
        assert (rebuilt.mode, rebuilt.reason, rebuilt.rows) == ("full", "the view changed", 5)
        # the view has a key column of its own now: the hidden one is gone, and refreshes use `key`
        assert [row[0] for row in engine.fetchall("DESCRIBE names")] == ["id", "key", "family"]
        assert materialize.materialized(engine)[0].key_column == "key"
        put_resources(hub.store, [patient("p3", "Lee", "Li")])
        after = materialize.refresh(engine, changed, "names")
        assert after.mode == "incremental" and after.rows == 6
        assert table_rows(engine, "names", "id, key, family") == view_rows(hub, changed)


def test_files_rebuild_names_are_checked_and_tables_can_be_dropped(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    data = tmp_path / "patients.ndjson"
    data.write_text(
        json.dumps(patient("f1", "File")) + "\n" + json.dumps(patient("f2", "Two", "Deux")) + "\n"
    )
    try:
        with materialize.open_analytics(hub.settings) as engine:
            for _ in range(2):  # a file has no lastUpdated to follow: every refresh rebuilds
                done = materialize.refresh(engine, NAMES, "from_file", data)
                assert done.mode == "full" and done.rows == 3
            assert done.reason == "a file source has no lastUpdated to follow"
            assert materialize.materialized(engine)[0].source == str(data.resolve())

            put_resources(hub.store, [patient("s1", "Store")])
            switched = materialize.refresh(engine, NAMES, "from_file")
            assert switched.mode == "full" and switched.reason.startswith("the source changed")
            assert table_rows(engine, "from_file") == [("s1", "Store")]
            forced = materialize.rebuild(engine, NAMES, "from_file")
            assert (forced.mode, forced.rows) == ("full", 1)

            for bad in ("1table", "drop table x; --", "_clinhub_materialized", "a" * 64):
                with pytest.raises(InvalidInput, match="not a table name"):
                    materialize.refresh(engine, NAMES, bad)
            engine.sql("CREATE TABLE mine (x INTEGER)")
            with pytest.raises(Conflict, match="is not a materialised view"):
                materialize.refresh(engine, NAMES, "mine")
            assert engine.fetchall("SELECT count(*) FROM mine") == [(0,)]

            materialize.drop(engine, "from_file")
            assert materialize.materialized(engine) == []
            with pytest.raises(NotFound):
                materialize.drop(engine, "from_file")
        # other domains read the file with DuckDB alone
        with duckdb.connect(str(materialize.analytics_path(hub.settings)), read_only=True) as conn:
            assert conn.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'from_file'"
            ).fetchone() == (0,)
    finally:
        hub.close()


def test_cli_materialize_and_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = make_hub(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    put_resources(hub.store, [patient("c1", "Cli"), patient("c2", "Two")])
    hub.close()
    view = tmp_path / "view.json"
    view.write_text(json.dumps(NAMES))
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'store.db'}")
    runner = CliRunner()
    result = runner.invoke(app, ["materialize", str(view)])
    assert result.exit_code == 0, result.output
    assert "patient_names: 2 rows; full rebuild: a new table" in result.output
    result = runner.invoke(app, ["materialize", str(view), "--name", "names2", "--full"])
    assert result.exit_code == 0 and "names2: 2 rows; full rebuild" in result.output
    result = runner.invoke(app, ["materialize", str(view)])
    assert "incremental: 2 resources recomputed (0 deleted)" in result.output
    listed = runner.invoke(app, ["materialized", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(e["table"], e["rows"], e["mode"]) for e in json.loads(listed.output)] == [
        ("names2", 2, "full"),
        ("patient_names", 2, "incremental"),
    ]
    bad = runner.invoke(app, ["materialize", str(view), "--name", "no-dashes"])
    assert isinstance(bad.exception, InvalidInput)
