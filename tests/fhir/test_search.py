"""Every search parameter and modifier the server declares, over HTTP, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from sqlalchemy import text

from clinhub.fhir.index import PARAMS
from clinhub.store import put_resources

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _patient(pid: str, **fields) -> dict:
    return {"resourceType": "Patient", "id": pid, **fields}


def _observation(oid: str, subject: str, code: str, **fields) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{subject}"},
        **fields,
    }


def _vital(code: str) -> list[dict]:
    system = "http://terminology.hl7.org/CodeSystem/observation-category"
    return [{"coding": [{"system": system, "code": code}]}]


DATA = [
    _patient(
        "p1",
        name=[{"family": "Müller", "given": ["Anna"]}],
        birthDate="1980-05-06",
        gender="female",
        identifier=[{"system": "urn:mrn", "value": "100"}],
    ),
    _patient(
        "p2",
        name=[{"family": "Miller", "given": ["Bob", "Ray"]}],
        birthDate="1990",
        gender="male",
        identifier=[{"system": "urn:mrn", "value": "200"}, {"system": "urn:other", "value": "100"}],
    ),
    _patient("p3", name=[{"family": "Smith", "text": "Jo Smith"}], gender="unknown"),
    _observation(
        "o1",
        "p1",
        "8867-4",
        category=_vital("vital-signs"),
        effectiveDateTime="2024-01-15T10:00:00Z",
        valueQuantity={"value": 72, "unit": "/min", "system": UCUM, "code": "/min"},
    ),
    _observation(
        "o2",
        "p1",
        "2339-0",
        category=_vital("laboratory"),
        identifier=[{"system": "urn:lab", "value": "L-1"}],
        effectivePeriod={"start": "2024-01-01", "end": "2024-03-01"},
        valueQuantity={"value": 5.4, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"},
    ),
    _observation(
        "o3",
        "p2",
        "8867-4",
        category=_vital("vital-signs"),
        effectiveDateTime="2023-06-01T00:00:00+02:00",
        valueQuantity={"value": 100, "unit": "/min", "system": UCUM, "code": "/min"},
    ),
    {
        "resourceType": "Observation",
        "id": "o4",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "X1"}]},
        "subject": {"reference": "Patient/p2"},
    },
    {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2024-01-15T09:30:00Z", "end": "2024-01-15T10:30:00Z"},
    },
    {
        "resourceType": "Encounter",
        "id": "e2",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": "Patient/p2"},
        "period": {"start": "2024-02-01T08:00:00Z"},
    },
    {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "59621000"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"},
            ]
        },
        "subject": {"reference": "Patient/p1"},
        "onsetDateTime": "2017-05-03T00:00:00Z",
    },
    {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "310798"}]
        },
        "subject": {"reference": "Patient/p2"},
    },
    {"resourceType": "AllergyIntolerance", "id": "a1", "patient": {"reference": "Patient/p1"}},
    {
        "resourceType": "Practitioner",
        "id": "pr1",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1044109639"}],
        "name": [{"family": "Chavez", "given": ["Anthony"], "prefix": ["Dr."]}],
    },
    {
        "resourceType": "Organization",
        "id": "org1",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "2044109637"}],
        "name": "Los Angeles Regional Medical Center",
        "alias": ["LARMC"],
    },
    {
        "resourceType": "PractitionerRole",
        "id": "r1",
        "practitioner": {"reference": "Practitioner/pr1"},
        "organization": {"reference": "Organization/org1"},
    },
]

#: (query, expected ids): at least one case for every parameter, modifier and prefix the server declares
CASES = [
    # Patient
    ("Patient?identifier=100", {"p1", "p2"}),
    ("Patient?identifier=urn:mrn|100", {"p1"}),
    ("Patient?identifier=urn:mrn|", {"p1", "p2"}),
    ("Patient?identifier=|100", set()),
    ("Patient?identifier:missing=true", {"p3"}),
    ("Patient?name=mul", {"p1"}),
    ("Patient?name=MÜL", {"p1"}),
    ("Patient?name=jo", {"p3"}),
    ("Patient?name:exact=Müller", {"p1"}),
    ("Patient?name:exact=müller", set()),
    ("Patient?name:contains=ille", {"p2"}),
    ("Patient?family=mi", {"p2"}),
    ("Patient?family=smith,miller", {"p2", "p3"}),
    ("Patient?given=ray", {"p2"}),
    ("Patient?given=anna&family=mul", {"p1"}),
    ("Patient?birthdate=1980-05-06", {"p1"}),
    ("Patient?birthdate=1980", {"p1"}),
    ("Patient?birthdate=1990-07", set()),
    ("Patient?birthdate=ge1990-07-01", {"p2"}),
    ("Patient?birthdate=lt1985", {"p1"}),
    ("Patient?birthdate=le1980-05-06", {"p1"}),
    ("Patient?birthdate=gt1980-05-06", {"p2"}),
    ("Patient?birthdate=ne1980-05-06", {"p2"}),
    ("Patient?birthdate=sa1985", {"p2"}),
    ("Patient?birthdate=eb1985", {"p1"}),
    ("Patient?birthdate:missing=true", {"p3"}),
    ("Patient?gender=male", {"p2"}),
    ("Patient?gender=http://hl7.org/fhir/administrative-gender|female", {"p1"}),
    ("Patient?gender:not=male", {"p1", "p3"}),
    ("Patient?gender=male,unknown", {"p2", "p3"}),
    ("Patient?_id=p1,p3", {"p1", "p3"}),
    ("Patient?_id:not=p1", {"p2", "p3"}),
    ("Patient?_lastUpdated=ge2020-01-01", {"p1", "p2", "p3"}),
    ("Patient?_lastUpdated=lt2020-01-01", set()),
    ("Patient?_lastUpdated=ne2020-01-01", {"p1", "p2", "p3"}),
    # Encounter
    ("Encounter?patient=p1", {"e1"}),
    ("Encounter?patient=Patient/p2", {"e2"}),
    ("Encounter?subject=Patient/p2", {"e2"}),
    ("Encounter?date=2024-01-15", {"e1"}),
    ("Encounter?date=ge2025-01-01", {"e2"}),
    ("Encounter?date=ge2024-01-15T10:00:00Z&date=le2024-01-15T10:00:00Z", {"e1"}),
    ("Encounter?status=finished", {"e1"}),
    ("Encounter?class=IMP", {"e2"}),
    ("Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB", {"e1"}),
    # Observation
    ("Observation?patient=p1", {"o1", "o2"}),
    ("Observation?patient=http://elsewhere.example/fhir/Patient/p2", {"o3", "o4"}),
    ("Observation?patient:missing=true", set()),
    ("Observation?code=8867-4", {"o1", "o3"}),
    ("Observation?code=http://loinc.org|8867-4&patient=p2", {"o3"}),
    ("Observation?code=http://snomed.info/sct|8867-4", set()),
    ("Observation?code:not=8867-4", {"o2", "o4"}),
    ("Observation?category=laboratory", {"o2"}),
    ("Observation?category=vital-signs,laboratory&patient=p1", {"o1", "o2"}),
    ("Observation?date=2024-01", {"o1"}),
    ("Observation?date=ge2024-01-01&date=lt2024-02-01", {"o1", "o2"}),
    ("Observation?date=2023-05-31", {"o3"}),
    ("Observation?date=gt2024-02-15", {"o2"}),
    ("Observation?date=sa2023-12-31", {"o1", "o2"}),
    ("Observation?date=eb2024-01-01", {"o3"}),
    ("Observation?date:missing=true", {"o4"}),
    ("Observation?value-quantity=72", {"o1"}),
    ("Observation?value-quantity=5.4", {"o2"}),
    ("Observation?value-quantity=5", {"o2"}),
    ("Observation?value-quantity=gt70", {"o1", "o3"}),
    ("Observation?value-quantity=le72", {"o1", "o2"}),
    ("Observation?value-quantity=ge100|http://unitsofmeasure.org|/min", {"o3"}),
    ("Observation?value-quantity=lt200||mmol/L", {"o2"}),
    ("Observation?value-quantity=ne72", {"o2", "o3"}),
    ("Observation?value-quantity=ap95", {"o3"}),
    ("Observation?value-quantity:missing=true", {"o4"}),
    # Condition
    ("Condition?patient=p1", {"c1"}),
    ("Condition?code=I10", {"c1"}),
    ("Condition?code=http://snomed.info/sct|59621000", {"c1"}),
    ("Condition?clinical-status=active", {"c1"}),
    ("Condition?onset-date=2017", {"c1"}),
    ("Condition?onset-date=lt2017-05-03", set()),
    # MedicationRequest
    ("MedicationRequest?patient=p2", {"m1"}),
    ("MedicationRequest?status=active", {"m1"}),
    ("MedicationRequest?code=310798", {"m1"}),
    # AllergyIntolerance
    ("AllergyIntolerance?patient=p1", {"a1"}),
    ("AllergyIntolerance?patient=p2", set()),
    # Practitioner, Organization, PractitionerRole
    ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1044109639", {"pr1"}),
    ("Practitioner?name=dr", {"pr1"}),
    ("Practitioner?name=chav", {"pr1"}),
    ("Organization?identifier=2044109637", {"org1"}),
    ("Organization?name=los angeles", {"org1"}),
    ("Organization?name=larmc", {"org1"}),
    ("Organization?name:contains=regional", {"org1"}),
    ("PractitionerRole?practitioner=pr1", {"r1"}),
    ("PractitionerRole?organization=Organization/org1", {"r1"}),
    ("PractitionerRole?practitioner:missing=false", {"r1"}),
    # identifier and subject where the resource has them
    ("Observation?identifier=urn:lab|L-1", {"o2"}),
    ("Observation?subject=Patient/p1", {"o1", "o2"}),
    ("Condition?subject=p1", {"c1"}),
    ("MedicationRequest?subject=Patient/p2", {"m1"}),
    *((f"{t}?identifier=nothing-has-this", set()) for t in ("Encounter", "Condition", "MedicationRequest")),
    *((f"{t}?identifier=nothing-has-this", set()) for t in ("AllergyIntolerance", "PractitionerRole")),
]


def _ids(fhir, query: str) -> set[str]:
    response = fhir.client.get(fhir.url(query), headers=fhir.reader)
    assert response.status_code == 200, (query, response.text)
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["type"] == "searchset"
    return {
        entry["resource"]["id"] for entry in bundle.get("entry", []) if entry["search"]["mode"] == "match"
    }


def test_every_parameter_modifier_and_prefix(fhir_on) -> None:
    put_resources(fhir_on.store, DATA)
    failures = [(query, found, want) for query, want in CASES if (found := _ids(fhir_on, query)) != want]
    assert failures == []


def test_cases_cover_every_declared_parameter() -> None:
    covered = {
        (query.split("?")[0], part.split("=")[0].split(":")[0])
        for query, _ in CASES
        for part in query.split("?")[1].split("&")
    }
    declared = {(resource_type, name) for resource_type, params in PARAMS.items() for name in params}
    assert declared - covered == set()


def test_update_and_delete_keep_the_index_in_step(fhir) -> None:
    put_resources(fhir.store, DATA)
    changed = {**DATA[0], "gender": "other"}
    assert fhir.client.put(fhir.url("Patient/p1"), json=changed, headers=fhir.writer).status_code == 200
    assert _ids(fhir, "Patient?gender=female") == set()
    assert _ids(fhir, "Patient?gender=other") == {"p1"}
    assert fhir.client.delete(fhir.url("Observation/o1"), headers=fhir.writer).status_code == 204
    assert _ids(fhir, "Observation?code=8867-4") == {"o3"}
    with fhir.store.connect() as conn:
        left = conn.execute(text("SELECT count(*) FROM fhir_search_token WHERE resource_id = 'o1'")).scalar()
    assert left == 0


def test_paging_is_stable_and_links_follow(fhir) -> None:
    patients = [_patient(f"pg{i:03d}", gender="female" if i % 2 else "male") for i in range(45)]
    put_resources(fhir.store, patients)
    seen: list[str] = []
    url = fhir.url("Patient?gender=female&_count=10")
    pages = 0
    while url:
        bundle = fhir.client.get(url, headers=fhir.reader).json()
        seen.extend(entry["resource"]["id"] for entry in bundle.get("entry", []))
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        url = links.get("next")
        pages += 1
    assert pages == 3
    assert seen == sorted(f"pg{i:03d}" for i in range(45) if i % 2)
    counted = fhir.client.get(fhir.url("Patient?gender=female&_summary=count"), headers=fhir.reader).json()
    assert counted["total"] == 22 and "entry" not in counted
    exact = fhir.client.get(fhir.url("Patient?_count=5&_total=accurate"), headers=fhir.reader).json()
    assert exact["total"] == 45 and len(exact["entry"]) == 5


def test_sort_and_include(fhir) -> None:
    put_resources(fhir.store, DATA)
    by_birth = fhir.client.get(fhir.url("Patient?_sort=-birthdate"), headers=fhir.reader).json()
    assert [e["resource"]["id"] for e in by_birth["entry"]] == ["p2", "p1", "p3"]  # no value sorts last
    by_family = fhir.client.get(fhir.url("Patient?_sort=family,_id"), headers=fhir.reader).json()
    assert [e["resource"]["id"] for e in by_family["entry"]] == ["p2", "p1", "p3"]
    bundle = fhir.client.get(
        fhir.url("Observation?code=8867-4&_include=Observation:patient"), headers=fhir.reader
    ).json()
    modes = {
        (e["resource"]["resourceType"], e["resource"]["id"], e["search"]["mode"]) for e in bundle["entry"]
    }
    assert modes == {
        ("Observation", "o1", "match"),
        ("Observation", "o3", "match"),
        ("Patient", "p1", "include"),
        ("Patient", "p2", "include"),
    }
    roles = fhir.client.get(
        fhir.url(
            "PractitionerRole?_include=PractitionerRole:practitioner&_include=PractitionerRole:organization"
        ),
        headers=fhir.reader,
    ).json()
    assert {e["resource"]["id"] for e in roles["entry"]} == {"r1", "pr1", "org1"}


def test_unknown_parameters_are_ignored_unless_strict(fhir) -> None:
    put_resources(fhir.store, DATA)
    response = fhir.client.get(fhir.url("Patient?gender=male&nonsense=1"), headers=fhir.reader)
    assert response.status_code == 200
    bundle = response.json()
    assert {e["resource"]["id"] for e in bundle["entry"]} == {"p2"}
    assert bundle["link"][0]["url"].endswith("/fhir/Patient?gender=male")  # what was used
    condition = fhir.client.put(
        fhir.url("Patient?nonsense=1"), json={"resourceType": "Patient"}, headers=fhir.writer
    )
    assert condition.status_code == 400  # conditional criteria are always strict


BAD = [
    ("Patient?nonsense=1", "unknown search parameter 'nonsense'"),
    ("Patient?birthdate=yesterday", "not a FHIR date"),
    ("Patient?gender:exact=male", "does not take :exact"),
    ("Patient?_count=5000", "_count must be between"),
    ("Patient?_sort=gender,telecom", "cannot sort Patient by 'telecom'"),
    ("Patient?_include=Patient:organization", "no reference parameter"),
    ("Observation?value-quantity=abc", "not a number"),
    ("Observation?patient=Practitioner/x", "finds Patient resources"),
    ("Patient?_summary=true", "_summary supports only"),
    ("Patient?identifier:missing=maybe", "must be true or false"),
]


def test_bad_search_is_a_400_outcome(fhir) -> None:
    strict = {**fhir.reader, "Prefer": "handling=strict"}
    for query, fragment in BAD:
        response = fhir.client.get(fhir.url(query), headers=strict)
        assert response.status_code == 400, query
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert fragment in body["issue"][0]["diagnostics"], query
