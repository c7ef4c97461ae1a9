"""The store on SQLite, PostgreSQL and MariaDB: migrations, FHIR versions and history, directory, HL7 rows."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from clinhub.errors import ConfigError, InvalidInput, InvalidResource, StoreUnavailable
from clinhub.store import (
    count_directory,
    count_resources,
    create_store_engine,
    current_revision,
    downgrade,
    head_revision,
    load_directory,
    metadata,
    pending,
    ping,
    put_resources,
    upgrade,
)
from clinhub.store.schema import fhir_resource, fhir_resource_history, hl7_message, provider


@pytest.fixture
def store(store_url: str):
    engine = create_store_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_fresh_store_has_pending_migrations_then_none(store_url: str) -> None:
    engine = create_store_engine(store_url)
    assert current_revision(engine) is None
    assert pending(engine)
    assert upgrade(engine) == head_revision(engine)
    assert not pending(engine)
    tables = set(inspect(engine).get_table_names())
    assert {
        "hl7_message",
        "fhir_resource",
        "fhir_resource_history",
        "provider",
        "facility",
        "affiliation",
        "activity",
        "app_user",
        "api_key",
        "audit_event",
        "job",
        "backup",
    } <= tables
    engine.dispose()


def test_migrations_match_the_schema_and_downgrade_cleanly(store) -> None:
    with store.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    assert downgrade(store, "base") is None
    assert "fhir_resource" not in inspect(store).get_table_names()
    upgrade(store)
    assert not pending(store)


def test_put_resources_versions_and_history(store) -> None:
    patients = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(2500)]
    stats = put_resources(store, patients, batch_size=1000)
    assert stats.created == {"Patient": 2500}
    again = put_resources(store, patients)
    assert again.unchanged == {"Patient": 2500} and not again.created and not again.updated
    changed = {**patients[7], "gender": "male", "meta": {"versionId": "99"}}
    assert put_resources(store, [changed]).updated == {"Patient": 1}
    with store.connect() as conn:
        row = conn.execute(select(fhir_resource).where(fhir_resource.c.id == "p7")).one()
        versions = conn.execute(
            select(fhir_resource_history.c.version_id, fhir_resource_history.c.resource)
            .where(fhir_resource_history.c.id == "p7")
            .order_by(fhir_resource_history.c.version_id)
        ).all()
    assert row.version_id == 2
    assert row.resource["gender"] == "male"
    assert row.resource["meta"]["versionId"] == "2"  # the server owns meta, not the client
    assert [v.version_id for v in versions] == [1, 2]
    assert versions[0].resource["gender"] == "female"
    assert count_resources(store) == {"Patient": 2500}


def test_large_resource_round_trips(store) -> None:
    big = {"resourceType": "Binary", "id": "big", "data": "A" * 2_000_000}
    put_resources(store, [big])
    with store.connect() as conn:
        stored = conn.execute(
            select(fhir_resource.c.resource).where(fhir_resource.c.id == "big")
        ).scalar_one()
    assert len(stored["data"]) == 2_000_000


@pytest.mark.parametrize(
    "resource",
    [{"id": "x"}, {"resourceType": "Patient"}, {"resourceType": "Patient", "id": "x" * 65}],
)
def test_put_resources_rejects_resources_without_type_or_id(store, resource: dict) -> None:
    with pytest.raises(InvalidResource):
        put_resources(store, [resource])
    assert count_resources(store) == {}


def test_hl7_control_id_unique_per_sender(store) -> None:
    row = {
        "received_at": datetime.now(UTC),
        "sending_application": "EPIC",
        "sending_facility": "H1",
        "control_id": "MSG0001",
        "message_type": "ADT",
        "trigger_event": "A01",
        "version": "2.5.1",
        "raw": "MSH|^~\\&|EPIC|H1\r" + "Z" * 100_000,
    }
    with store.begin() as conn:
        conn.execute(hl7_message.insert(), row)
        conn.execute(hl7_message.insert(), {**row, "sending_facility": "H2"})  # other sender: fine
    with pytest.raises(IntegrityError), store.begin() as conn:
        conn.execute(hl7_message.insert(), row)
    with store.connect() as conn:
        raws = conn.execute(select(hl7_message.c.raw)).scalars().all()
        assert conn.execute(select(func.count()).select_from(hl7_message)).scalar_one() == 2
    assert all(len(raw) > 100_000 for raw in raws)


def _write_directory(folder: Path, providers: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "providers.csv").write_text(providers)
    (folder / "facilities.csv").write_text("facility_id,name,active\nF1,General,true\n")
    (folder / "affiliations.csv").write_text(
        "affiliation_id,provider_id,facility_id,is_primary,start_date,end_date,active\n"
        "A1,P1,F1,true,2020-01-01,,true\nA2,P9,F1,false,2020-01-01,2021-01-01,false\n"
    )
    (folder / "activities.csv").write_text(
        "activity_id,provider_id,facility_id,activity_type,activity_date,volume\nX1,P1,F1,encounter,2024-05-01,12\n"
    )


def test_load_directory_replaces_and_converts_types(store, tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    _write_directory(
        folder,
        "provider_id,npi,first_name,last_name,birth_year,license_expiry,active\n"
        "P1,1234567893,Ann,Lee,1970,2027-03-31,true\nP2,,Bo,Kim,,,false\n",
    )
    assert load_directory(store, folder) == {"provider": 2, "facility": 1, "affiliation": 2, "activity": 1}
    assert load_directory(store, folder)["provider"] == 2  # a reload replaces, never duplicates
    assert count_directory(store)["provider"] == 2
    with store.connect() as conn:
        p1 = conn.execute(select(provider).where(provider.c.provider_id == "P1")).one()
        p2 = conn.execute(select(provider).where(provider.c.provider_id == "P2")).one()
    assert p1.birth_year == 1970 and p1.license_expiry == date(2027, 3, 31) and p1.active is True
    assert p2.npi is None and p2.active is False


def test_load_directory_bad_value_names_file_line_and_column(store, tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    _write_directory(folder, "provider_id,birth_year\nP1,1970\nP2,nineteen\n")
    with pytest.raises(InvalidInput, match=r"providers.csv line 3: bad value for birth_year"):
        load_directory(store, folder)
    assert count_directory(store)["provider"] == 0  # nothing half-loaded


def test_unreachable_store_is_reported_without_secrets() -> None:
    engine = create_store_engine("postgresql://root:s3cret@127.0.0.1:1/test")
    with pytest.raises(StoreUnavailable) as info:
        ping(engine)
    assert "s3cret" not in str(info.value)
    with pytest.raises(StoreUnavailable):
        current_revision(engine)


def test_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        create_store_engine("nonsense://")


def test_search_index_follows_writes_deletes_and_reindex(store) -> None:
    from clinhub.store.resources import delete_resource, reindex, write_resource
    from clinhub.store.schema import SEARCH_TABLES, fhir_search_date, fhir_search_token

    def rows(table) -> list[tuple]:
        with store.connect() as conn:
            found = conn.execute(select(table).where(table.c.resource_id == "p1"))
            return sorted((tuple(r)[2:] for r in found), key=repr)

    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "gender": "female",
        "birthDate": "1980-05-06",
        "identifier": [{"system": "urn:mrn", "value": "1"}, {"value": "2"}],
    }
    put_resources(store, [patient])
    assert rows(fhir_search_token) == [
        ("gender", "http://hl7.org/fhir/administrative-gender", "female"),
        ("identifier", "urn:mrn", "1"),
        ("identifier", None, "2"),
    ]
    [(param, low, high, wide)] = rows(fhir_search_date)
    assert (param, wide) == ("birthdate", False)
    assert (low.year, low.month, low.day, low.hour) == (1980, 5, 6, 0)
    assert (high.day, high.hour, high.minute, high.microsecond) == (6, 23, 59, 999999)

    with store.begin() as conn:
        write_resource(conn, {**patient, "gender": "male", "identifier": []})
    assert rows(fhir_search_token) == [("gender", "http://hl7.org/fhir/administrative-gender", "male")]
    with store.begin() as conn:
        assert delete_resource(conn, "Patient", "p1") == 3
    assert all(rows(table) == [] for table in SEARCH_TABLES)

    put_resources(store, [{**patient, "id": "p2"}])
    with store.begin() as conn:
        conn.execute(fhir_search_token.delete())
    assert reindex(store) == 1
    with store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(fhir_search_token)).scalar_one() == 3
