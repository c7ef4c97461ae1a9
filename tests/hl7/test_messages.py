"""The message store on SQLite, PostgreSQL and MariaDB: commit then ACK, duplicates, NAKs, mapping, replay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from clinhub.config import Settings
from clinhub.hl7 import messages, parse
from clinhub.hub import Hub
from clinhub.store.schema import fhir_resource, hl7_message, hl7_message_resource


def adt(control_id: str, *, mrn: str = "MRN1", family: str = "DOE", trigger: str = "A01") -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301101500||ADT^{trigger}^ADT_A01|{control_id}|P|2.5.1",
            f"EVN|{trigger}|20260301101500",
            f"PID|1||{mrn}^^^NORTH^MR||{family}^JANE||19800101|F|||1 Main St^^Springfield^IL^62701",
            "PV1|1|I|W1^101^A||||1234^SMITH^ANN|||||||||||V100|||||||||||||||||||||||||20260301100000",
        ]
    )


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    with Hub(Settings(data_dir=tmp_path, database_url=store_url, _env_file=None)) as hub:
        hub.migrate()
        yield hub


def _now() -> datetime:
    return datetime.now(UTC)


def _rows(hub: Hub) -> list:
    with hub.store.connect() as conn:
        return conn.execute(select(hl7_message).order_by(hl7_message.c.id)).all()


def test_accept_commits_then_acks_and_dedupes(hub: Hub) -> None:
    first = messages.accept(hub.store, [(adt("C1"), _now()), (adt("C2").encode(), _now())])
    assert [a.code for a in first] == ["AA", "AA"] and not any(a.duplicate for a in first)
    reply = parse(first[0].ack)
    assert reply.get("MSA-1") == "AA" and reply.get("MSA-2") == "C1"
    assert reply.get("MSH-3") == "HUB" and reply.get("MSH-5") == "EPIC"  # sender and receiver swapped
    assert reply.get("MSH-10") not in ("", "C1")
    rows = _rows(hub)
    assert [(r.control_id, r.status, r.ack_code, r.message_type, r.trigger_event) for r in rows] == [
        ("C1", "received", "AA", "ADT", "A01"),
        ("C2", "received", "AA", "ADT", "A01"),
    ]
    assert rows[0].raw == adt("C1") and rows[0].sending_application == "EPIC"

    again = messages.accept(hub.store, [(adt("C1"), _now()), (adt("C3"), _now()), (adt("C3"), _now())])
    assert [(a.code, a.duplicate) for a in again] == [("AA", True), ("AA", False), ("AA", True)]
    assert parse(again[0].ack).get("MSA-2") == "C1"
    assert [r.control_id for r in _rows(hub)] == ["C1", "C2", "C3"]


def test_unparseable_and_incomplete_messages_are_kept_and_refused(hub: Hub) -> None:
    results = messages.accept(
        hub.store,
        [
            (b"this is not HL7", _now()),
            ("MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301||ADT^A01||P|2.5.1\rPID|1||X", _now()),
        ],
    )
    assert [r.code for r in results] == ["AR", "AR"]
    refused = parse(results[1].ack)
    assert refused.get("MSA-1") == "AR" and "MSH-10" in refused.encode()
    rows = _rows(hub)
    assert [(r.status, r.ack_code) for r in rows] == [("error", "AR"), ("error", "AR")]
    assert rows[0].raw == "this is not HL7" and rows[0].error.startswith("not accepted:")
    queue = messages.error_queue(hub.store)
    assert queue["total"] == 2 and all(m["error"] for m in queue["messages"])


def test_a_batch_mixing_good_and_unparseable_messages_commits_both(hub: Hub) -> None:
    # the MLLP listener commits whatever arrived together in one batch
    results = messages.accept(hub.store, [(adt("G1"), _now()), (b"garbage", _now()), (adt("G2"), _now())])
    assert [r.code for r in results] == ["AA", "AR", "AA"]
    assert [(r.control_id, r.status) for r in _rows(hub)][0::2] == [("G1", "received"), ("G2", "received")]
    assert _rows(hub)[1].status == "error"


def test_mapping_links_resources_and_updates_the_same_patient(hub: Hub) -> None:
    messages.accept(hub.store, [(adt("M1"), _now())])
    first = messages.process_pending(hub.store)
    messages.accept(hub.store, [(adt("M2", family="SMITH", trigger="A08"), _now())])
    result = messages.process_pending(hub.store)
    assert (first.processed, result.processed, result.errors) == (1, 1, 0) and result.resources >= 1
    assert messages.pending_count(hub.store) == 0
    shown = messages.get_message(hub.store, _rows(hub)[0].id)
    patients = [r for r in shown["resources"] if r.startswith("Patient/")]
    assert shown["status"] == "processed" and len(patients) == 1
    assert shown["parsed"][0]["segment"] == "MSH"
    with hub.store.connect() as conn:
        stored = conn.execute(
            select(fhir_resource.c.resource, fhir_resource.c.version_id).where(
                fhir_resource.c.resource_type == "Patient",
                fhir_resource.c.id == patients[0].split("/")[1],
            )
        ).one()
    resource = stored.resource if isinstance(stored.resource, dict) else orjson.loads(stored.resource)
    assert resource["name"][0]["family"] == "SMITH" and stored.version_id == 2  # the A08 updated it


def _stored(hub: Hub, resource_type: str) -> list[dict]:
    with hub.store.connect() as conn:
        rows = conn.execute(
            select(fhir_resource.c.resource).where(fhir_resource.c.resource_type == resource_type)
        ).all()
    return [r.resource if isinstance(r.resource, dict) else orjson.loads(r.resource) for r in rows]


def pv1_visit(**fields: str) -> str:
    """A PV1 with visit number V100 (PV1-19) and the given fields (PV1-44="2026...")."""
    values = {2: "I", 3: "W1^101^A", 19: "V100^^^NORTH^VN"} | {int(k[1:]): v for k, v in fields.items()}
    return "PV1|1|" + "|".join(values.get(n, "") for n in range(2, max(values) + 1))


def visit_adt(control_id: str, trigger: str, **pv1: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301101500||ADT^{trigger}^ADT_A01|{control_id}|P|2.5.1",
            f"EVN|{trigger}|20260301101500",
            "PID|1||MRN1^^^NORTH^MR||DOE^JANE||19800101|F",
            pv1_visit(**pv1),
        ]
    )


def oru(control_id: str, *, mrn: str = "MRN1") -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|LAB|NORTH|HUB|HOSP|20260302101500||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
            f"PID|1||{mrn}^^^NORTH^MR||DOE^JANE||19800101|F",
            pv1_visit(),
            "OBR|1||F1|CBC^Blood count|||20260302090000",
            "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||||F",
        ]
    )


def test_a40_keeps_what_is_known_of_the_old_patient(hub: Hub) -> None:
    messages.accept(hub.store, [(adt("P1", mrn="777", family="OLDNAME"), _now())])
    messages.process_pending(hub.store)
    merge = "\r".join(
        [
            "MSH|^~\\&|EPIC|NORTH|HUB|HOSP|20260301111500||ADT^A40^ADT_A39|P2|P|2.5.1",
            "EVN|A40|20260301111500",
            "PID|1||MRN1^^^NORTH^MR||DOE^JANE||19800101|F",
            "MRG|777^^^NORTH^MR",
        ]
    )
    messages.accept(hub.store, [(merge, _now())])
    assert messages.process_pending(hub.store).processed == 1
    by_mrn = {p["identifier"][0]["value"]: p for p in _stored(hub, "Patient")}
    old, survivor = by_mrn["777"], by_mrn["MRN1"]
    assert old["active"] is False and old["name"][0]["family"] == "OLDNAME"  # not blanked to a stub
    assert old["birthDate"] == "1980-01-01" and old["address"][0]["city"] == "Springfield"
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]


@pytest.mark.parametrize("one_batch", [False, True], ids=["later", "same-batch"])
def test_a_late_result_does_not_reopen_a_discharged_visit(hub: Hub, one_batch: bool) -> None:
    discharge = [
        (visit_adt("V1", "A01", f44="20260301100000"), _now()),
        (visit_adt("V2", "A03", f44="20260301100000", f45="20260301180000"), _now()),
    ]
    if one_batch:
        messages.accept(hub.store, [*discharge, (oru("V3"), _now())])
        messages.process_pending(hub.store)
    else:
        messages.accept(hub.store, discharge)
        messages.process_pending(hub.store)
        assert [e["status"] for e in _stored(hub, "Encounter")] == ["finished"]
        messages.accept(hub.store, [(oru("V3"), _now())])
        messages.process_pending(hub.store)
    (encounter,) = _stored(hub, "Encounter")
    assert encounter["status"] == "finished" and encounter["period"]["end"].startswith("2026-03-01T18")
    (observation,) = _stored(hub, "Observation")
    assert observation["encounter"]["reference"] == f"Encounter/{encounter['id']}"


def test_a_result_for_an_unknown_visit_creates_it(hub: Hub) -> None:
    messages.accept(hub.store, [(oru("W1"), _now())])
    messages.process_pending(hub.store)
    (encounter,) = _stored(hub, "Encounter")
    assert encounter["status"] == "in-progress" and encounter["identifier"][0]["value"] == "V100"


def test_mapping_failure_goes_to_the_error_queue_and_replay_retries(hub: Hub) -> None:
    broken = "\r".join(
        [
            "MSH|^~\\&|LAB|NORTH|HUB|HOSP|20260301101500||ORU^R01^ORU_R01|R1|P|2.5.1",
            "OBR|1||F1|CBC^Blood count",
            "OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL|||||F",
        ]
    )  # no PID: a result for nobody cannot be mapped
    messages.accept(hub.store, [(broken, _now()), (adt("OK1"), _now())])
    result = messages.process_pending(hub.store)
    assert (result.processed, result.errors) == (1, 1)
    queue = messages.error_queue(hub.store)["messages"]
    assert [m["control_id"] for m in queue] == ["R1"] and queue[0]["error"]

    still = messages.replay(hub.store, messages.MessageFilter(status="error"))
    assert (still.processed, still.errors) == (0, 1)
    again = messages.replay(hub.store, messages.MessageFilter(control_id="OK1"))
    assert (again.processed, again.errors) == (1, 0)
    assert messages.search(hub.store, messages.MessageFilter(control_id="OK1"))["messages"][0]["status"] == (
        "replayed"
    )
    with hub.store.connect() as conn:
        links = conn.execute(select(func.count()).select_from(hl7_message_resource)).scalar_one()
    assert links >= 2  # replaying relinks rather than duplicating
    with pytest.raises(Exception, match="say which messages"):
        messages.replay(hub.store, messages.MessageFilter())


def test_search_filters(hub: Hub) -> None:
    earlier = _now() - timedelta(days=2)
    messages.accept(hub.store, [(adt("S1", mrn="P-77"), earlier), (adt("S2", trigger="A08"), _now())])
    search = messages.search
    assert search(hub.store, messages.MessageFilter(trigger_event="a08"))["total"] == 1
    assert (
        search(hub.store, messages.MessageFilter(patient_identifier="P-77"))["messages"][0]["control_id"]
        == "S1"
    )
    assert search(hub.store, messages.MessageFilter(patient_identifier="P-7"))["total"] == 0
    assert search(hub.store, messages.MessageFilter(since=_now() - timedelta(days=1)))["total"] == 1
    assert search(hub.store, messages.MessageFilter(sender="NORTH", message_type="ADT"))["total"] == 2
    assert search(hub.store, messages.MessageFilter(text="Springfield"))["total"] == 2
    assert "raw" not in search(hub.store, messages.MessageFilter())["messages"][0]
    with pytest.raises(Exception, match="status must be one of"):
        search(hub.store, messages.MessageFilter(status="lost"))


def siu(control_id: str, trigger: str, status: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|SCHED|NORTH|HUB|HOSP|20260301101500||SIU^{trigger}^SIU_{trigger}|{control_id}|P|2.5.1",
            f"SCH|A100^EPIC|F200^SCHED|||||R10.9^Abdominal pain^I10||30|min|||||||||||||{status}",
            "TQ1|||||||20260310093000-0500|20260310100000-0500",
            "PID|1||MRN1^^^NORTH^MR||DOE^JANE||19800101|F",
            "AIL|1||ENDO^Room 3^^NORTH",
            "AIP|1||1234^SMITH^ANN",
        ]
    )


def test_a_cancelled_appointment_updates_the_booked_one(hub: Hub) -> None:
    messages.accept(hub.store, [(siu("S1", "S12", "Booked"), _now())])
    assert messages.process_pending(hub.store).processed == 1
    (booked,) = _stored(hub, "Appointment")
    assert booked["status"] == "booked" and booked["start"] == "2026-03-10T09:30:00-05:00"
    messages.accept(hub.store, [(siu("S2", "S15", "Cancelled"), _now())])
    result = messages.process_pending(hub.store)
    assert (result.processed, result.errors) == (1, 0)
    (appointment,) = _stored(hub, "Appointment")
    assert appointment["id"] == booked["id"] and appointment["status"] == "cancelled"
    assert len(appointment["participant"]) == 3  # the patient, the room and the doctor


def mdm(control_id: str, trigger: str, *content: str) -> str:
    return "\r".join(
        [
            f"MSH|^~\\&|DOCS|NORTH|HUB|HOSP|20260301101500||MDM^{trigger}^MDM_{trigger}|{control_id}|P|2.5.1",
            f"EVN|{trigger}|20260301101500",
            "PID|1||MRN1^^^NORTH^MR||DOE^JANE||19800101|F",
            "TXA|1|DS|TX|20260301100000||||||||DOC-9^NORTH||||AU",
            *content,
        ]
    )


def test_a_document_cancel_without_content_keeps_the_stored_text(hub: Hub) -> None:
    messages.accept(hub.store, [(mdm("D1", "T02", "OBX|1|TX|X^Y^L||the report"), _now())])
    messages.process_pending(hub.store)
    messages.accept(hub.store, [(mdm("D2", "T11"), _now())])
    assert messages.process_pending(hub.store).errors == 0
    (document,) = _stored(hub, "DocumentReference")
    assert document["status"] == "entered-in-error"
    assert document["content"][0]["attachment"]["data"] == "dGhlIHJlcG9ydA=="  # "the report"
