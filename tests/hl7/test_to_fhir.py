"""HL7 v2 -> FHIR R4: each message type, deterministic ids across messages, valid resources (checked with
fhir.resources), the sample corpus and synthetic messages (map or MappingError, never anything else)."""

from __future__ import annotations

import base64
import re

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clinhub.errors import InvalidMessage
from clinhub.hl7 import MappingError, fhir_date, fhir_datetime, fhir_instant, parse, to_fhir
from clinhub.hl7.to_fhir import merge_partial

HEADER = "MSH|^~\\&|EPIC|NORTH|HUB|HOSP|{when}||{kind}|{control}|P|2.5.1"
PID = (
    "PID|1||111^^^NORTH^MR~999-00-1234^^^SSA^SS||Smith^John^Q^Jr^Dr^^L~^Jo^^^^^N||19800131|M|||"
    "1 Main St^Apt 2^Springfield^IL^62701^USA^H~PO Box 9^^Springfield^IL^62702^USA^M||"
    "(217) 555-0100^PRN^PH~^NET^Internet^john@example.org~^PRN^CP^^1^217^5550199"
    "|(217) 555-0200^WPN^PH||M^Married"
)


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from {field number: encoded text}."""
    values = [""] * (max(fields) + 1)
    for number, text in fields.items():
        values[number] = text
    values[0] = name
    return "|".join(values)


def pv1(end: str = "", patient_class: str = "I") -> str:
    return seg(
        "PV1",
        {
            1: "1",
            2: patient_class,
            3: "W1^101^B^NORTH^^^Main^2^Ward one",
            4: "E",
            7: "1234567893^Welby^Marcus^^^Dr^^^NPI",
            8: "555^Referrer^Rita",
            10: "SUR",
            19: "V100^^^NORTH^VN",
            36: "01",
            44: "20260301080000",
            45: end,
        },
    )


def message(kind: str, *segments: str, control: str = "C1", when: str = "20260301101500") -> str:
    return "\r".join([HEADER.format(kind=kind, control=control, when=when), *segments])


def mapped(text: str) -> dict[str, list[dict]]:
    """The resources of a message by type, each validated as FHIR R4(B)."""
    by_type: dict[str, list[dict]] = {}
    for resource in to_fhir(parse(text)):
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        by_type.setdefault(resource["resourceType"], []).append(resource)
    return by_type


def references(resources) -> set[str]:
    found: set[str] = set()
    stack = list(resources)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str):
                found.add(node["reference"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def assert_references_resolve(by_type: dict[str, list[dict]]) -> None:
    everything = [r for rs in by_type.values() for r in rs]
    known = {f"{r['resourceType']}/{r['id']}" for r in everything}
    assert references(everything) <= known


# -- dates ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hl7", "date", "datetime_", "instant"),
    [
        ("", "", "", ""),
        ("2026", "2026", "2026", ""),
        ("202603", "2026-03", "2026-03", ""),
        ("20260301", "2026-03-01", "2026-03-01", ""),
        ("2026030110", "2026-03-01", "2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z"),
        ("202603011015", "2026-03-01", "2026-03-01T10:15:00Z", "2026-03-01T10:15:00Z"),
        ("20260301101530.25", "2026-03-01", "2026-03-01T10:15:30.25Z", "2026-03-01T10:15:30.25Z"),
        ("20260301101530-0500", "2026-03-01", "2026-03-01T10:15:30-05:00", "2026-03-01T10:15:30-05:00"),
        ("20260301+0100", "2026-03-01", "2026-03-01", ""),
        ("20240229", "2024-02-29", "2024-02-29", ""),
    ],
)
def test_hl7_dates_become_fhir_dates(hl7: str, date: str, datetime_: str, instant: str) -> None:
    assert fhir_date(hl7) == date
    assert fhir_datetime(hl7) == datetime_
    assert fhir_instant(hl7) == instant


@pytest.mark.parametrize(
    "bad", ["2026-03-01", "20261301", "20250229", "2026030125", "202603011061", "x", "20260301+2500"]
)
def test_impossible_dates_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"HL7 date|does not exist|out of range"):
        fhir_datetime(bad)


def test_times_without_offset_take_the_senders_offset_from_msh7() -> None:
    text = message("ADT^A04^ADT_A01", PID, pv1(), when="20260301101500+0100")
    encounter = mapped(text)["Encounter"][0]
    assert encounter["period"]["start"] == "2026-03-01T08:00:00+01:00"
    utc = to_fhir(parse(message("ADT^A04^ADT_A01", PID, pv1())), default_timezone="-0500")
    assert next(r for r in utc if r["resourceType"] == "Encounter")["period"]["start"].endswith("-05:00")


# -- ADT ---------------------------------------------------------------------------------------------------


def test_adt_a01_maps_patient_encounter_and_friends() -> None:
    text = message(
        "ADT^A01^ADT_A01",
        "EVN|A01|20260301101500",
        PID,
        pv1(),
        "AL1|1|DA|70618^Penicillin^RXNORM|SV|Hives~Wheezing|20200101",
        "DG1|1||E11.9^Type 2 diabetes mellitus^I10C||20190514|F",
    )
    found = mapped(text)
    patient = found["Patient"][0]
    assert (
        patient["identifier"][0]["value"] == "111"
        and patient["identifier"][0]["assigner"]["display"] == "NORTH"
    )
    assert patient["identifier"][1]["system"] == "http://hl7.org/fhir/sid/us-ssn"
    assert patient["name"][0] == {
        "family": "Smith",
        "given": ["John", "Q"],
        "prefix": ["Dr"],
        "suffix": ["Jr"],
        "use": "official",
    }
    assert patient["name"][1] == {"given": ["Jo"], "use": "nickname"}
    assert (patient["gender"], patient["birthDate"]) == ("male", "1980-01-31")
    assert patient["address"][0]["line"] == ["1 Main St", "Apt 2"] and patient["address"][0]["use"] == "home"
    assert patient["address"][1]["type"] == "postal"
    assert patient["telecom"] == [
        {"system": "phone", "value": "(217) 555-0100", "use": "home"},
        {"system": "email", "value": "john@example.org", "use": "home"},
        {"system": "phone", "value": "+1 2175550199", "use": "mobile"},
        {"system": "phone", "value": "(217) 555-0200", "use": "work"},
    ]
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"

    encounter = found["Encounter"][0]
    assert encounter["status"] == "in-progress" and encounter["class"]["code"] == "IMP"
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert encounter["identifier"][0]["value"] == "V100"
    assert encounter["period"] == {"start": "2026-03-01T08:00:00Z"}
    attending = next(p for p in encounter["participant"] if p["type"][0]["coding"][0]["code"] == "ATND")
    doctor = next(p for p in found["Practitioner"] if attending["individual"]["reference"].endswith(p["id"]))
    assert doctor["identifier"][0] == {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}
    assert doctor["name"][0]["family"] == "Welby"
    assert found["Location"][0]["name"] == "Ward one"
    assert encounter["location"][0]["location"]["reference"] == f"Location/{found['Location'][0]['id']}"
    assert encounter["type"][0]["coding"][0]["code"] == "E"
    assert encounter["serviceType"]["coding"][0]["code"] == "SUR"

    allergy = found["AllergyIntolerance"][0]
    assert allergy["category"] == ["medication"] and allergy["criticality"] == "high"
    assert [m["text"] for m in allergy["reaction"][0]["manifestation"]] == ["Hives", "Wheezing"]
    assert allergy["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    condition = found["Condition"][0]
    assert condition["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10-cm",
        "code": "E11.9",
        "display": "Type 2 diabetes mellitus",
    }
    assert condition["encounter"]["reference"] == f"Encounter/{encounter['id']}"
    assert encounter["diagnosis"] == [{"condition": {"reference": f"Condition/{condition['id']}"}}]
    assert_references_resolve(found)


def test_the_same_patient_and_visit_get_the_same_ids_across_messages() -> None:
    admit = mapped(message("ADT^A01^ADT_A01", PID, pv1(), control="C1"))
    update = mapped(message("ADT^A08^ADT_A01", PID.replace("Smith^John", "Smyth^John"), pv1(), control="C2"))
    discharge = mapped(message("ADT^A03^ADT_A03", PID, pv1(end="20260305120000"), control="C3"))
    assert admit["Patient"][0]["id"] == update["Patient"][0]["id"] == discharge["Patient"][0]["id"]
    assert update["Patient"][0]["name"][0]["family"] == "Smyth"
    assert admit["Encounter"][0]["id"] == update["Encounter"][0]["id"] == discharge["Encounter"][0]["id"]
    assert discharge["Encounter"][0]["status"] == "finished"
    assert discharge["Encounter"][0]["period"]["end"] == "2026-03-05T12:00:00Z"
    other = mapped(message("ADT^A04^ADT_A01", PID.replace("111^^^NORTH", "112^^^NORTH"), pv1()))
    assert other["Patient"][0]["id"] != admit["Patient"][0]["id"]


@pytest.mark.parametrize(
    ("event", "patient_class", "status", "klass"),
    [
        ("A04", "O", "in-progress", "AMB"),
        ("A04", "E", "in-progress", "EMER"),
        ("A05", "P", "planned", "PRENC"),
        ("A11", "I", "cancelled", "IMP"),
        ("A02", "R", "in-progress", "R"),
    ],
)
def test_encounter_status_and_class(event: str, patient_class: str, status: str, klass: str) -> None:
    encounter = mapped(message(f"ADT^{event}", PID, pv1(patient_class=patient_class)))["Encounter"][0]
    assert (encounter["status"], encounter["class"]["code"]) == (status, klass)


def test_person_updates_map_only_the_patient() -> None:
    found = mapped(message("ADT^A31^ADT_A05", PID, "PV1|1|N"))
    assert set(found) == {"Patient"}


def test_a40_merge_links_both_patients_and_retires_the_old_one() -> None:
    found = mapped(message("ADT^A40^ADT_A39", PID, "MRG|777^^^NORTH^MR"))
    survivor, old = found["Patient"]
    assert survivor["active"] is True and old["active"] is False
    assert survivor["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    formerly = mapped(message("ADT^A04", PID.replace("111^^^NORTH", "777^^^NORTH"), pv1()))
    assert formerly["Patient"][0]["id"] == old["id"]


# -- orders and results ------------------------------------------------------------------------------------


ORU = message(
    "ORU^R01^ORU_R01",
    PID,
    pv1(),
    "ORC|RE|P100^EPIC|F200^LAB",
    seg(
        "OBR",
        {
            1: "1",
            2: "P100^EPIC",
            3: "F200^LAB",
            4: "24323-8^Comprehensive metabolic panel^LN",
            7: "20260301090000",
            16: "555^Orderer^Olga",
            22: "20260301100000",
            24: "CH",
            25: "F",
        },
    ),
    "OBX|1|NM|2345-7^Glucose^LN||115|mg/dL^mg/dL^UCUM|70-99|H|||F|||20260301093000",
    "NTE|1||fasting sample",
    "OBX|2|ST|8251-1^Service comment^LN||hemolysed \\T\\ redrawn||||||P",
    "OBX|3|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT||||||C",
    "OBX|4|SN|2160-0^Creatinine^LN||<^0.5|mg/dL^^UCUM|<1.3||||F",
    "OBX|5|NM|777-3^Platelets^LN||>1000|10*3/uL^^UCUM|150-400|HH|||F",
    "OBX|6|TX|11526-1^Pathology study^LN||line one~line two||||||F",
    "OBX|7|DT|11778-8^Delivery date^LN||20260901||||||F",
)


def test_oru_r01_maps_a_report_and_its_observations() -> None:
    found = mapped(ORU)
    report = found["DiagnosticReport"][0]
    observations = {o["code"]["coding"][0]["code"]: o for o in found["Observation"]}
    assert report["status"] == "final" and report["code"]["coding"][0]["code"] == "24323-8"
    assert (
        report["effectiveDateTime"] == "2026-03-01T09:00:00Z" and report["issued"] == "2026-03-01T10:00:00Z"
    )
    assert report["category"][0]["coding"][0]["code"] == "CH"
    assert [i["type"]["coding"][0]["code"] for i in report["identifier"]] == ["FILL", "PLAC"]
    assert [r["reference"] for r in report["result"]] == [
        f"Observation/{o['id']}" for o in found["Observation"]
    ]

    glucose = observations["2345-7"]
    assert glucose["valueQuantity"] == {
        "value": 115,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    assert (
        glucose["referenceRange"][0]["low"]["value"] == 70
        and glucose["referenceRange"][0]["high"]["value"] == 99
    )
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["effectiveDateTime"] == "2026-03-01T09:30:00Z" and glucose["status"] == "final"
    assert glucose["note"] == [{"text": "fasting sample"}]
    assert observations["8251-1"]["valueString"] == "hemolysed & redrawn"
    assert observations["8251-1"]["status"] == "preliminary"
    assert observations["600-7"]["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert observations["600-7"]["status"] == "corrected"
    assert observations["2160-0"]["valueQuantity"]["comparator"] == "<"
    assert observations["2160-0"]["referenceRange"][0]["high"]["value"] == 1.3
    assert observations["777-3"]["valueQuantity"]["comparator"] == ">"
    assert observations["11526-1"]["valueString"] == "line one\nline two"
    assert observations["11778-8"]["valueDateTime"] == "2026-09-01"
    assert_references_resolve(found)


def test_a_resent_result_maps_to_the_same_resources() -> None:
    first = {r["id"] for r in to_fhir(parse(ORU))}
    again = {r["id"] for r in to_fhir(parse(ORU.replace("|C1|P|", "|C2|P|")))}
    assert first == again


def test_orm_and_oml_map_service_requests() -> None:
    orm = mapped(
        message(
            "ORM^O01^ORM_O01",
            PID,
            pv1(),
            seg("ORC", {1: "NW", 2: "P300^EPIC", 7: "^^^^^S", 9: "20260301101500", 12: "555^Orderer^Olga"}),
            seg("OBR", {1: "1", 2: "P300^EPIC", 4: "71045^Chest X-ray^C4", 31: "R51^Cough^I10"}),
        )
    )
    request = orm["ServiceRequest"][0]
    assert request["status"] == "active" and request["intent"] == "order" and request["priority"] == "stat"
    assert request["code"]["coding"][0]["system"] == "http://www.ama-assn.org/go/cpt"
    assert request["authoredOn"] == "2026-03-01T10:15:00Z"
    assert request["requester"]["display"] == "Olga Orderer"
    assert request["reasonCode"][0]["coding"][0]["code"] == "R51"
    cancel = mapped(message("ORM^O01", PID, "ORC|CA|P300^EPIC"))
    assert cancel["ServiceRequest"][0]["id"] == request["id"]
    assert cancel["ServiceRequest"][0]["status"] == "revoked"
    oml = mapped(message("OML^O21^OML_O21", PID, "ORC|NW|P400^EPIC", "OBR|1|P400^EPIC||2345-7^Glucose^LN"))
    assert oml["ServiceRequest"][0]["code"]["coding"][0]["code"] == "2345-7"


def test_rde_maps_a_medication_request() -> None:
    found = mapped(
        message(
            "RDE^O11^RDE_O11",
            PID,
            pv1(),
            seg("ORC", {1: "NW", 2: "RX1^EPIC", 9: "20260301101500", 12: "555^Orderer^Olga"}),
            "RXE||861007^Metformin 500 MG Oral Tablet^RXNORM|1||TAB^tablet^HL70292|||||60|TAB^tablet|3",
            "RXR|PO^Oral^HL70162",
        )
    )
    request = found["MedicationRequest"][0]
    assert request["status"] == "active" and request["intent"] == "order"
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "861007"
    dosage = request["dosageInstruction"][0]
    assert dosage["doseAndRate"][0]["doseQuantity"] == {"value": 1, "unit": "tablet"}
    assert dosage["route"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0162",
        "code": "PO",
        "display": "Oral",
    }
    assert request["dispenseRequest"] == {
        "quantity": {"value": 60, "unit": "tablet"},
        "numberOfRepeatsAllowed": 3,
    }
    assert request["encounter"]["reference"] == f"Encounter/{found['Encounter'][0]['id']}"
    stopped = mapped(message("RDE^O11", PID, "ORC|DC|RX1^EPIC", "RXE||861007^Metformin^RXNORM"))
    assert stopped["MedicationRequest"][0]["id"] == request["id"]
    assert stopped["MedicationRequest"][0]["status"] == "stopped"


# -- scheduling, documents, immunizations ------------------------------------------------------------------


def siu(event: str, *extra: str, status: str = "Booked", control: str = "S1") -> str:
    """An SIU with SCH (placer A100, filler F200), TQ1, PID, PV1 and one AIS/AIL/AIP group."""
    return message(
        f"SIU^{event}^SIU_{event}",
        seg(
            "SCH",
            {
                1: "A100^EPIC",
                2: "F200^SCHED",
                6: "PATREQ^Patient request^L",
                7: "R10.9^Abdominal pain^I10",
                8: "FOLLOWUP^Follow-up visit^HL70277",
                9: "30",
                10: "min",
                25: status,
            },
        ),
        "TQ1|||||||20260310093000-0500|20260310100000-0500",
        "NTE|1||Bring your medication list",
        PID,
        pv1(patient_class="O"),
        "RGS|1",
        "AIS|1||45378^Colonoscopy^C4|20260310093000-0500|||30|min",
        "AIL|1||ENDO^Room 3^^NORTH|||20260310093000-0500|||30|min",
        "AIP|1||1234567893^Welby^Marcus^^^Dr^^^NPI|ATND^Attending^HL70443||20260310093000-0500|||30|min",
        *extra,
        control=control,
    )


def test_siu_s12_maps_an_appointment_with_its_participants() -> None:
    found = mapped(siu("S12"))
    (appointment,) = found["Appointment"]
    assert appointment["status"] == "booked"
    assert [(i["value"], i["type"]["coding"][0]["code"]) for i in appointment["identifier"]] == [
        ("F200", "FILL"),
        ("A100", "PLAC"),
    ]
    assert appointment["start"] == "2026-03-10T09:30:00-05:00"
    assert appointment["end"] == "2026-03-10T10:00:00-05:00" and appointment["minutesDuration"] == 30
    assert appointment["reasonCode"][0]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": "R10.9",
        "display": "Abdominal pain",
    }
    assert appointment["appointmentType"]["coding"][0]["code"] == "FOLLOWUP"
    assert appointment["description"] == "Abdominal pain"
    assert appointment["comment"] == "Bring your medication list"
    assert appointment["serviceType"][0]["coding"][0]["code"] == "45378"
    patient, place, doctor = appointment["participant"]
    assert patient == {"actor": {"reference": f"Patient/{found['Patient'][0]['id']}"}, "status": "accepted"}
    assert place["actor"]["reference"] == f"Location/{found['Location'][-1]['id']}"
    assert found["Location"][-1]["name"] == "NORTH ENDO Room 3"
    assert doctor["type"][0]["coding"][0]["code"] == "ATND" and doctor["status"] == "accepted"
    practitioner = next(p for p in found["Practitioner"] if doctor["actor"]["reference"].endswith(p["id"]))
    assert practitioner["identifier"][0] == {
        "system": "http://hl7.org/fhir/sid/us-npi",
        "value": "1234567893",
    }
    encounter = found["Encounter"][0]
    assert encounter["appointment"] == [{"reference": f"Appointment/{appointment['id']}"}]
    assert_references_resolve(found)
    partial: set = set()
    to_fhir(parse(siu("S12")), partial=partial)
    assert partial == {("Encounter", encounter["id"])}  # an appointment names the visit, it does not run it


@pytest.mark.parametrize(
    ("event", "status", "expected"),
    [
        ("S13", "Booked", "booked"),
        ("S14", "Pending", "pending"),
        ("S14", "Complete", "fulfilled"),
        ("S14", "Started", "checked-in"),
        ("S14", "Noshow", "noshow"),
        ("S15", "Booked", "cancelled"),
        ("S16", "", "cancelled"),
        ("S17", "Booked", "entered-in-error"),
        ("S26", "", "noshow"),
    ],
)
def test_later_siu_events_update_the_same_appointment(event: str, status: str, expected: str) -> None:
    booked = mapped(siu("S12"))["Appointment"][0]
    later = mapped(siu(event, status=status, control="S2"))["Appointment"][0]
    assert later["id"] == booked["id"] and later["status"] == expected
    if expected in ("cancelled", "noshow"):
        assert later["cancelationReason"]["coding"][0]["code"] == "PATREQ"


def test_appointment_times_from_sch11_or_the_resources() -> None:
    timing = "^^^202603100930+0100^202603101015+0100"
    from_sch = mapped(message("SIU^S12", seg("SCH", {1: "A1", 11: timing}), PID))["Appointment"][0]
    assert (from_sch["start"], from_sch["end"]) == ("2026-03-10T09:30:00+01:00", "2026-03-10T10:15:00+01:00")
    assert from_sch["minutesDuration"] == 45
    from_ais = mapped(message("SIU^S12", "SCH|A2", PID, "AIS|1||X^Scan^L|20260310233000|||2|h"))
    appointment = from_ais["Appointment"][0]
    assert (appointment["start"], appointment["end"]) == ("2026-03-10T23:30:00Z", "2026-03-11T01:30:00Z")
    no_end = mapped(message("SIU^S12", "SCH|A3", PID, "AIS|1||X^Scan^L|20260310233000"))["Appointment"][0]
    assert "start" not in no_end and "end" not in no_end  # FHIR: both or neither


ED_DATA = "JVBERi0xLjQKJcfsj6IK"  # the first bytes of a PDF


def mdm(event: str, *content: str, completion: str = "AU", control: str = "M1") -> str:
    return message(
        f"MDM^{event}^MDM_{event}",
        "EVN|" + event + "|20260301101500",
        PID,
        pv1(),
        seg(
            "TXA",
            {
                1: "1",
                2: "DS^Discharge summary",
                3: "TX",
                4: "20260301100000+0100",
                5: "555^Author^Alice",
                6: "20260301093000+0100",
                9: "556^Writer^Walt",
                12: "DOC-9^NORTH",
                13: "DOC-8^NORTH",
                14: "P100^EPIC",
                15: "F200^LAB",
                17: completion,
                18: "R",
                22: "557^Signer^Sam",
                25: "Discharge",
            },
        ),
        *content,
        control=control,
    )


def test_mdm_t02_maps_a_document_reference_with_its_text() -> None:
    text = mdm(
        "T02",
        "OBX|1|TX|18842-5^Discharge summary^LN||Patient admitted \\T\\ treated.~Discharged home.||||||F",
        "OBX|2|FT|18842-5^Discharge summary^LN||Follow-up in\\.br\\two weeks.||||||F",
    )
    found = mapped(text)
    (document,) = found["DocumentReference"]
    assert document["masterIdentifier"] == {"value": "DOC-9", "assigner": {"display": "NORTH"}}
    types = [
        (i["value"], i.get("type", {}).get("coding", [{}])[0].get("code")) for i in document["identifier"]
    ]
    assert types == [("DOC-9", None), ("P100", "PLAC"), ("F200", "FILL")]
    assert document["status"] == "current" and document["docStatus"] == "final"
    assert document["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0270",
        "code": "DS",
        "display": "Discharge summary",
    }
    assert document["date"] == "2026-03-01T09:30:00+01:00" and document["description"] == "Discharge"
    assert document["subject"] == {"reference": f"Patient/{found['Patient'][0]['id']}"}
    assert document["context"]["encounter"] == [{"reference": f"Encounter/{found['Encounter'][0]['id']}"}]
    authors = {a["display"] for a in document["author"]}
    assert authors == {"Alice Author", "Walt Writer"} and document["authenticator"]["display"] == "Sam Signer"
    assert document["securityLabel"][0]["coding"][0]["code"] == "R"
    (content,) = document["content"]
    attachment = content["attachment"]
    assert attachment["contentType"] == "text/plain"
    assert attachment["creation"] == "2026-03-01T09:30:00+01:00"
    assert base64.b64decode(attachment["data"]).decode() == (
        "Patient admitted & treated.\nDischarged home.\nFollow-up in\ntwo weeks."
    )
    assert "relatesTo" not in document
    assert_references_resolve(found)


def test_mdm_encapsulated_data_and_later_events() -> None:
    ed = f"OBX|1|ED|18842-5^Discharge summary^LN||^AP^PDF^Base64^{ED_DATA}||||||F"
    original = mapped(mdm("T02", ed))["DocumentReference"][0]
    (content,) = original["content"]
    assert content["attachment"]["contentType"] == "application/pdf"
    assert content["attachment"]["data"] == ED_DATA
    assert base64.b64decode(content["attachment"]["data"]).startswith(b"%PDF")

    preliminary = mapped(mdm("T04", "OBX|1|TX|X^Y^L||draft", completion="IP"))["DocumentReference"][0]
    assert preliminary["id"] == original["id"] and preliminary["docStatus"] == "preliminary"
    edited = mapped(mdm("T08", "OBX|1|TX|X^Y^L||edited"))["DocumentReference"][0]
    assert edited["id"] == original["id"] and edited["docStatus"] == "amended"
    replacement = mapped(mdm("T10", "OBX|1|TX|X^Y^L||new text"))["DocumentReference"][0]
    assert replacement["id"] == original["id"]
    assert replacement["relatesTo"] == [
        {"code": "replaces", "target": {"identifier": {"value": "DOC-8", "assigner": {"display": "NORTH"}}}}
    ]
    addendum = mapped(mdm("T06", "OBX|1|TX|X^Y^L||addendum"))["DocumentReference"][0]
    assert addendum["relatesTo"][0]["code"] == "appends"

    partial: set = set()
    cancelled = to_fhir(parse(mdm("T11")), partial=partial)
    document = next(r for r in cancelled if r["resourceType"] == "DocumentReference")
    get_fhir_model_class("DocumentReference").model_validate(document)
    assert document["id"] == original["id"] and document["status"] == "entered-in-error"
    assert ("DocumentReference", document["id"]) in partial  # no content: the stored content stays
    merged = merge_partial(document, original)
    assert merged["status"] == "entered-in-error" and merged["content"] == original["content"]


def test_vxu_maps_an_immunization() -> None:
    text = message(
        "VXU^V04^VXU_V04",
        PID,
        seg("ORC", {1: "RE", 2: "P77^EPIC", 3: "IZ-1^REGISTRY", 12: "555^Orderer^Olga"}),
        seg(
            "RXA",
            {
                1: "0",
                2: "1",
                3: "20260301101500",
                5: "03^MMR^CVX",
                6: "0.5",
                7: "mL^milliliter^UCUM",
                9: "00^New immunization record^NIP001",
                10: "1234567893^Welby^Marcus^^^Dr^^^NPI",
                11: "^^^NORTH-CLINIC",
                15: "LOT42",
                16: "20270131",
                17: "MSD^Merck and Co., Inc.^MVX",
                20: "CP",
                21: "A",
            },
        ),
        "RXR|C28161^Intramuscular^NCIT|LA^Left Arm^HL70163",
        "OBX|1|CE|64994-7^Funding eligibility^LN|1|V02^VFC eligible - Medicaid^HL70064||||||F",
        "OBX|2|CE|69764-9^Document type^LN|2|253088698300012711120420^MMR VIS^cdcgs1vis||||||F",
        "OBX|3|DT|29769-7^VIS presented^LN|2|20260301||||||F",
        "OBX|4|NM|8302-2^Body height^LN|3|120|cm^cm^UCUM|||||F",
        "NTE|1||measured before the shot",
    )
    found = mapped(text)
    (immunization,) = found["Immunization"]
    assert immunization["status"] == "completed" and immunization["primarySource"] is True
    assert immunization["vaccineCode"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/cvx",
        "code": "03",
        "display": "MMR",
    }
    assert immunization["occurrenceDateTime"] == "2026-03-01T10:15:00Z"
    assert immunization["doseQuantity"] == {
        "value": 0.5,
        "unit": "milliliter",
        "system": "http://unitsofmeasure.org",
        "code": "mL",
    }
    assert immunization["lotNumber"] == "LOT42" and immunization["expirationDate"] == "2027-01-31"
    organization = found["Organization"][0]
    assert immunization["manufacturer"]["reference"] == f"Organization/{organization['id']}"
    assert organization["identifier"][0] == {"system": "http://hl7.org/fhir/sid/mvx", "value": "MSD"}
    administering = immunization["performer"][0]
    assert administering["function"]["coding"][0]["code"] == "AP"
    assert administering["actor"]["display"] == "Marcus Welby"
    assert immunization["performer"][1]["function"]["coding"][0]["code"] == "OP"
    assert immunization["route"]["coding"][0]["code"] == "C28161"
    assert immunization["site"]["coding"][0]["code"] == "LA"
    assert found["Location"][0]["name"] == "NORTH-CLINIC"
    assert immunization["programEligibility"][0]["coding"][0]["code"] == "V02"
    assert immunization["education"] == [{"documentType": "MMR VIS", "presentationDate": "2026-03-01"}]
    assert [i["value"] for i in immunization["identifier"]] == ["IZ-1", "P77"]
    (height,) = found["Observation"]
    assert height["partOf"] == [{"reference": f"Immunization/{immunization['id']}"}]
    assert height["note"] == [{"text": "measured before the shot"}]
    assert_references_resolve(found)
    again = mapped(text.replace("|C1|P|", "|C2|P|"))["Immunization"][0]
    assert again["id"] == immunization["id"]


def test_vxu_refused_and_historical_doses() -> None:
    refused = mapped(
        message(
            "VXU^V04",
            PID,
            "RXA|0|1|20260301||08^Hep B^CVX|999||||||||||||00^Parental decision^NIP002||RE",
        )
    )["Immunization"][0]
    assert refused["status"] == "not-done" and "doseQuantity" not in refused
    assert refused["statusReason"]["coding"][0]["code"] == "00"
    not_given = mapped(message("VXU^V04", PID, "RXA|0|1|20260301||08^Hep B^CVX|999||||||||||||||NA"))
    reason = not_given["Immunization"][0]["statusReason"]["coding"][0]
    assert reason["code"] == "NA" and reason["system"].endswith("v2-0322")
    historical = mapped(message("VXU^V04", PID, "RXA|0|1|2014||88^Flu^CVX|999|||01^Historical^NIP001"))
    dose = historical["Immunization"][0]
    assert dose["primarySource"] is False and dose["reportOrigin"]["coding"][0]["code"] == "01"
    assert dose["occurrenceDateTime"] == "2014"
    # without an order number the id comes from the patient, the vaccine and the date
    twice = mapped(message("VXU^V04", PID, "RXA|0|1|2014||88^Flu^CVX|999|||01^Historical^NIP001"))
    assert twice["Immunization"][0]["id"] == dose["id"]
    deleted = mapped(message("VXU^V04", PID, "RXA|0|1|2014||88^Flu^CVX|||||||||||||||CP|D"))
    assert deleted["Immunization"][0]["status"] == "entered-in-error"


def test_a_message_without_its_main_segment_names_it() -> None:
    for text, where in (
        (message("SIU^S12", PID), "SCH"),
        (message("MDM^T02", PID), "TXA"),
        (message("VXU^V04", PID), "RXA"),
    ):
        with pytest.raises(MappingError, match=f"{where} segment missing") as caught:
            to_fhir(parse(text))
        assert caught.value.location == where and caught.value.error_code == "100"


# -- what cannot be mapped -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason", "code"),
    [
        (message("BAR^P01", PID), "BAR^P01 is not mapped", "200"),
        (message("SIU^S25", PID), "SIU^S25 is not mapped", "201"),
        (message("SIU^S12", PID, "AIS|1||X^Y^L"), "SCH segment missing", "100"),
        (message("MDM^T02", PID, pv1(), "OBX|1|TX|||text"), "TXA segment missing", "100"),
        (message("VXU^V04", PID, "ORC|RE||F1"), "RXA segment missing", "100"),
        (message("VXU^V04", PID, "RXA|0|1|20260301||^^CVX"), "RXA-5 administered code missing", "101"),
        (message("VXU^V04", PID, "RXA|0|1|||03^MMR^CVX"), "RXA-3 administration date/time missing", "101"),
        (message("SIU^S12", "SCH|A1|B1", PID, "AIL|1||R1|||2026133"), "AIL-6: '2026133'", "102"),
        (
            message("MDM^T02", PID, "TXA|1|PN|TX||||||||D1", "OBX|1|ED|X^Y^L||^AP^PDF^Base64^!!!"),
            "OBX-5.5: the data is not valid base64",
            "102",
        ),
        (message("ADT^A60", PID), "ADT^A60 is not mapped", "201"),
        (message("ADT^A01", "EVN|A01"), "PID segment missing", "100"),
        (message("ADT^A01", "PID|1||^^^NORTH"), "PID-3 patient identifier missing", "101"),
        (message("ADT^A01", PID.replace("19800131", "19801331")), "PID-7: '19801331': month 13", "102"),
        (message("ORU^R01", PID, "OBR|1|||"), "OBR-4 universal service identifier missing", "101"),
        (
            message("ORU^R01", PID, "OBR|1||F1|X^Y^LN", "OBX|1|NM|A^B^LN||1", "OBX|2|NM|||2"),
            "OBX[2]-3",
            "101",
        ),
        (message("RDE^O11", PID, "ORC|NW|1", "RXE||"), "RXE-2 medication code missing", "101"),
        (message("ADT^A40", PID, "MRG|"), "MRG-1 prior patient identifier missing", "101"),
        (message("ADT^A01", PID).replace("20260301101500", "20260301101500+9999"), "time zone offset", "102"),
    ],
)
def test_unmappable_content_raises_mapping_error(text: str, reason: str, code: str) -> None:
    with pytest.raises(MappingError, match=re.escape(reason)) as caught:
        to_fhir(parse(text))
    assert isinstance(caught.value, InvalidMessage)
    assert caught.value.error_code == code and "\n" not in caught.value.message


# -- corpora -------------------------------------------------------------------------------------------


def test_every_synthetic_message_maps_to_valid_linked_resources(synthetic_hl7) -> None:
    kinds: dict[str, int] = {}
    every: dict[str, dict] = {}
    patients: dict[str, set[str]] = {}
    for text in synthetic_hl7:
        msg = parse(text)
        for resource in to_fhir(msg):
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            kinds[resource["resourceType"]] = kinds.get(resource["resourceType"], 0) + 1
            every[f"{resource['resourceType']}/{resource['id']}"] = resource
            if resource["resourceType"] == "Patient":
                patients.setdefault(msg.get("PID-3-1"), set()).add(resource["id"])
    assert {"Patient", "Encounter", "Observation", "DiagnosticReport", "MedicationRequest"} <= set(kinds)
    assert {"Condition", "AllergyIntolerance", "Practitioner", "Location"} <= set(kinds)
    assert all(len(ids) == 1 for ids in patients.values()) and len(patients) == 30
    assert references(every.values()) <= set(every)


def test_samples_map_to_valid_resources_or_a_mapping_error(hl7_samples) -> None:
    outcomes = {"mapped": 0, "refused": 0}
    for name, raw in hl7_samples.items():
        try:
            resources = to_fhir(parse(raw))
        except MappingError as error:
            assert not error.message.startswith("cannot map this message"), (name, error.message)
            outcomes["refused"] += 1
            continue
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        outcomes["mapped"] += 1
    # refused: BAR, DFT, REF, OUL, OMG, RDS, PPR (PC1), ADT events not mapped (SIU_12.hl7 is an ADT^A60)
    # and one ORU whose OBX lacks OBX-3; every SIU, MDM and VXU sample maps
    assert outcomes == {"mapped": 84, "refused": 55}


# -- fuzzing: mangled messages give resources or MappingError, nothing else --------------------------------


_PIECES = st.sampled_from(
    ["", "|", "^", "~", "&", '""', "\\", "x", "20260301", "2026133", "NM", "CWE", "ED", "-1", "Z", "999"]
)
_FUZZED = [
    ORU,
    siu("S12"),
    mdm("T02", f"OBX|1|ED|X^Y^L||^AP^PDF^Base64^{ED_DATA}", "OBX|2|TX|X^Y^L||text"),
    message(
        "VXU^V04",
        PID,
        "ORC|RE|P1|F1",
        "RXA|0|1|20260301||03^MMR^CVX|0.5|mL^mL^UCUM||00^New^NIP001|555^A^B|||||L1|20270101|MSD^Merck^MVX",
        "RXR|C28161^IM^NCIT|LA^Left^HL70163",
        "OBX|1|DT|29769-7^VIS presented^LN|1|20260301||||||F",
    ),
]


@settings(max_examples=160, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_FUZZED),
    st.integers(min_value=0, max_value=10_000),
    st.lists(_PIECES, min_size=1, max_size=6),
)
def test_mangled_messages_never_escape_mapping_error(base: str, position: int, pieces: list[str]) -> None:
    lines = base.split("\r")
    target = 1 + position % (len(lines) - 1)  # keep MSH intact
    fields = lines[target].split("|")
    fields[1 + position % (len(fields) - 1)] = "".join(pieces)
    lines[target] = "|".join(fields)
    try:
        resources = to_fhir(parse("\r".join(lines)))
    except MappingError as error:
        assert not error.message.startswith("cannot map this message"), error.message
        return
    for resource in resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
