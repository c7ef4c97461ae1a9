"""A patient's record as FHIR R4 resources, one serialised NDJSON line each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache

import orjson

from clinhub.synth._clinical import Measurement, Patient, Tables, tables
from clinhub.synth._codes import ObservationCode
from clinhub.synth._common import MRN_SYSTEM
from clinhub.synth._directory import Roster

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"

PATIENT_TYPES = (
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
)


def _concept(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _coding(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def fhir_time(moment: datetime) -> str:
    return moment.isoformat() + "Z"


class Templates:
    """The parts of resources that repeat (codes, categories, ranges), built once and shared by reference:
    orjson serialises them straight away, so sharing is safe and saves building them per resource."""

    def __init__(self, t: Tables) -> None:
        codes = t.codes
        self.category = {
            "vital-signs": [_coding(_TERMINOLOGY + "observation-category", "vital-signs", "Vital Signs")],
            "laboratory": [_coding(_TERMINOLOGY + "observation-category", "laboratory", "Laboratory")],
        }
        system = _TERMINOLOGY + "v3-ObservationInterpretation"
        self.interpretation = {
            "H": [_coding(system, "H", "High")],
            "L": [_coding(system, "L", "Low")],
            "N": [_coding(system, "N", "Normal")],
        }
        observation_codes = [*codes.observations.values(), t.bp]
        self.code = {c.loinc: _concept(LOINC, c.loinc, c.display) for c in observation_codes}
        self.range = {c.loinc: self._range(c) for c in observation_codes}
        self.condition = {
            c.key: {
                "coding": [
                    {"system": SNOMED, "code": c.snomed, "display": c.snomed_display},
                    {"system": ICD10CM, "code": c.icd10, "display": c.icd10_display},
                ],
                "text": c.snomed_display,
            }
            for c in codes.conditions
        }
        self.clinical_status = {
            status: _coding(_TERMINOLOGY + "condition-clinical", status, status.capitalize())
            for status in ("active", "resolved")
        }
        self.confirmed = _coding(_TERMINOLOGY + "condition-ver-status", "confirmed", "Confirmed")
        self.diagnosis_category = [
            _coding(_TERMINOLOGY + "condition-category", "encounter-diagnosis", "Encounter Diagnosis")
        ]
        self.medication = {
            m.rxnorm: _concept(RXNORM, m.rxnorm, m.display)
            for meds in codes.medications.values()
            for m in meds
        }
        self.route = {
            "PO": _coding(SNOMED, "26643006", "Oral route"),
            "IH": _coding(SNOMED, "447694001", "Respiratory tract route"),
        }
        self.allergen = {a.snomed: _concept(SNOMED, a.snomed, a.display) for a in codes.allergens}
        self.reaction = {
            a.snomed: [{"manifestation": [_concept(SNOMED, a.reaction_snomed, a.reaction_display)]}]
            for a in codes.allergens
        }
        self.allergy_active = _coding(_TERMINOLOGY + "allergyintolerance-clinical", "active", "Active")
        self.allergy_confirmed = _coding(
            _TERMINOLOGY + "allergyintolerance-verification", "confirmed", "Confirmed"
        )
        act = _TERMINOLOGY + "v3-ActCode"
        self.encounter_class = {
            "AMB": {"system": act, "code": "AMB", "display": "ambulatory"},
            "EMER": {"system": act, "code": "EMER", "display": "emergency"},
            "IMP": {"system": act, "code": "IMP", "display": "inpatient encounter"},
        }
        self.encounter_type = {
            e.snomed: [_concept(SNOMED, e.snomed, e.display)] for e in codes.encounter_types
        }
        self.attender = [_coding(_TERMINOLOGY + "v3-ParticipationType", "ATND", "attender")]
        self.mrn_type = _coding(_TERMINOLOGY + "v2-0203", "MR", "Medical record number")

    @staticmethod
    def _range(code: ObservationCode) -> list[dict] | None:
        bounds = {}
        if code.normal_low is not None:
            bounds["low"] = _quantity(code.normal_low, code.unit)
        if code.normal_high is not None:
            bounds["high"] = _quantity(code.normal_high, code.unit)
        return [bounds] if bounds else None


def _quantity(value: float, unit: str) -> dict:
    number = int(value) if value == int(value) else value
    return {"value": number, "unit": unit, "system": UCUM, "code": unit}


@cache
def templates() -> Templates:
    return Templates(tables())


def _reference(kind: str, resource_id: str) -> dict:
    return {"reference": f"{kind}/{resource_id}"}


def render_patient(patient: Patient, roster: Roster, emit: Callable[[str, bytes], None]) -> None:
    """Serialise every resource of `patient`, calling emit(resource type, line) in a stable order."""
    tm = templates()
    dumps = orjson.dumps
    emit("Patient", dumps(_patient(patient, tm)) + b"\n")
    subject = _reference("Patient", patient.id)
    for visit in patient.visits:
        provider_id, _npi, family, given = roster.providers[visit.provider]
        facility_id, facility_name, _city = roster.facilities[visit.facility]
        encounter = {
            "resourceType": "Encounter",
            "id": visit.id,
            "status": "finished",
            "class": tm.encounter_class[visit.type.cls],
            "type": tm.encounter_type[visit.type.snomed],
            "subject": _reference("Patient", visit.subject),
            "participant": [
                {
                    "type": tm.attender,
                    "individual": {
                        "reference": f"Practitioner/{provider_id}",
                        "display": f"{given} {family}",
                    },
                }
            ],
            "period": {"start": fhir_time(visit.start), "end": fhir_time(visit.end)},
        }
        if visit.problems:
            encounter["diagnosis"] = [
                {"condition": _reference("Condition", p.id), "rank": rank}
                for rank, p in enumerate(visit.problems, start=1)
            ]
        encounter["serviceProvider"] = {"reference": f"Organization/{facility_id}", "display": facility_name}
        emit("Encounter", dumps(encounter) + b"\n")
    for problem in patient.problems:
        condition = {
            "resourceType": "Condition",
            "id": problem.id,
            "clinicalStatus": tm.clinical_status["resolved" if problem.abatement else "active"],
            "verificationStatus": tm.confirmed,
            "category": tm.diagnosis_category,
            "code": tm.condition[problem.code.key],
            "subject": subject,
            "encounter": _reference("Encounter", problem.visit.id),
            "onsetDateTime": fhir_time(problem.onset),
        }
        if problem.abatement:
            condition["abatementDateTime"] = fhir_time(problem.abatement)
        condition["recordedDate"] = fhir_time(problem.recorded)
        emit("Condition", dumps(condition) + b"\n")
    for visit in patient.visits:
        encounter_ref = _reference("Encounter", visit.id)
        for measurement in visit.measurements:
            emit("Observation", dumps(_observation(measurement, encounter_ref, tm)) + b"\n")
    for visit in patient.visits:
        provider_id, _npi, family, given = roster.providers[visit.provider]
        for order in visit.orders:
            medication = order.medication
            request = {
                "resourceType": "MedicationRequest",
                "id": order.id,
                "status": order.status,
                "intent": "order",
                "medicationCodeableConcept": tm.medication[medication.rxnorm],
                "subject": subject,
                "encounter": _reference("Encounter", visit.id),
                "authoredOn": fhir_time(order.authored),
                "requester": {"reference": f"Practitioner/{provider_id}", "display": f"{given} {family}"},
                "reasonReference": [_reference("Condition", order.reason.id)],
                "dosageInstruction": [{"text": medication.sig, "route": tm.route[medication.route]}],
            }
            emit("MedicationRequest", dumps(request) + b"\n")
    for allergy in patient.allergies:
        allergen = allergy.allergen
        resource = {
            "resourceType": "AllergyIntolerance",
            "id": allergy.id,
            "clinicalStatus": tm.allergy_active,
            "verificationStatus": tm.allergy_confirmed,
            "type": "allergy",
            "category": [allergen.category],
            "criticality": allergen.criticality,
            "code": tm.allergen[allergen.snomed],
            "patient": subject,
            "encounter": _reference("Encounter", allergy.visit.id),
            "recordedDate": fhir_time(allergy.recorded),
            "reaction": tm.reaction[allergen.snomed],
        }
        emit("AllergyIntolerance", dumps(resource) + b"\n")


def _patient(patient: Patient, tm: Templates) -> dict:
    given = [patient.given, patient.middle] if patient.middle else [patient.given]
    resource: dict = {
        "resourceType": "Patient",
        "id": patient.id,
        "identifier": [{"use": "usual", "type": tm.mrn_type, "system": MRN_SYSTEM, "value": patient.mrn}],
        "active": True,
        "name": [{"use": "official", "family": patient.family, "given": given}],
        "telecom": [{"system": "phone", "value": patient.phone, "use": "home"}],
    }
    if patient.gender:
        resource["gender"] = patient.gender
    if patient.birth_date_known:
        resource["birthDate"] = patient.birth_date.isoformat()
    if patient.deceased:
        resource["deceasedDateTime"] = fhir_time(patient.deceased)
    city = patient.city
    resource["address"] = [
        {
            "use": "home",
            "line": [patient.line],
            "city": city.name,
            "state": city.state,
            "postalCode": city.postal_code,
            "country": "US",
        }
    ]
    return resource


def _observation(m: Measurement, encounter: dict, tm: Templates) -> dict:
    code = m.code
    resource = {
        "resourceType": "Observation",
        "id": m.id,
        "status": "final",
        "category": tm.category[code.category],
        "code": tm.code[code.loinc],
        "subject": _reference("Patient", m.subject),
        "encounter": encounter,
        "effectiveDateTime": fhir_time(m.time),
    }
    if m.components:
        resource["component"] = [
            _measured({"code": tm.code[c.loinc]}, c, value, flag, tm) for c, value, flag in m.components
        ]
        return resource
    return _measured(resource, code, m.value, m.flag, tm)


def _measured(
    target: dict, code: ObservationCode, value: float | int, flag: str | None, tm: Templates
) -> dict:
    target["valueQuantity"] = {"value": value, "unit": code.unit, "system": UCUM, "code": code.unit}
    if flag:
        target["interpretation"] = tm.interpretation[flag]
    reference_range = tm.range[code.loinc]
    if reference_range:
        target["referenceRange"] = reference_range
    return target
