"""REST interactions over HTTP: CRUD, versions, conditional forms, bundles, validation, metadata, audit."""

from __future__ import annotations

from sqlalchemy import select

from clinhub.platform import audit
from clinhub.store import count_resources
from clinhub.store.schema import audit_event

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:mrn", "value": "M-1"}],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "gender": "female",
    "birthDate": "1970-01-02",
}


def test_crud_versions_and_history(fhir_on) -> None:
    client, writer, reader = fhir_on.client, fhir_on.writer, fhir_on.reader
    created = client.post(fhir_on.url("Patient"), json=PATIENT, headers=writer)
    assert created.status_code == 201, created.text
    patient = created.json()
    pid = patient["id"]
    assert patient["meta"]["versionId"] == "1"
    assert created.headers["location"].endswith(f"/fhir/Patient/{pid}/_history/1")
    assert created.headers["etag"] == 'W/"1"'

    read = client.get(fhir_on.url(f"Patient/{pid}"), headers=reader)
    assert read.status_code == 200 and read.json() == patient and read.headers["etag"] == 'W/"1"'

    changed = {**patient, "gender": "other"}
    updated = client.put(fhir_on.url(f"Patient/{pid}"), json=changed, headers={**writer, "If-Match": 'W/"1"'})
    assert updated.status_code == 200 and updated.json()["meta"]["versionId"] == "2"
    stale = client.put(fhir_on.url(f"Patient/{pid}"), json=patient, headers={**writer, "If-Match": 'W/"1"'})
    assert stale.status_code == 412 and stale.json()["resourceType"] == "OperationOutcome"
    same = client.put(fhir_on.url(f"Patient/{pid}"), json=changed, headers=writer)
    assert same.status_code == 200 and same.json()["meta"]["versionId"] == "2"  # no change, no version

    old = client.get(fhir_on.url(f"Patient/{pid}/_history/1"), headers=reader)
    assert old.status_code == 200 and old.json()["gender"] == "female"

    assert client.delete(fhir_on.url(f"Patient/{pid}"), headers=writer).status_code == 204
    gone = client.get(fhir_on.url(f"Patient/{pid}"), headers=reader)
    assert gone.status_code == 410 and gone.json()["issue"][0]["code"] == "deleted"
    assert client.delete(fhir_on.url(f"Patient/{pid}"), headers=writer).status_code == 204  # idempotent
    assert client.get(fhir_on.url(f"Patient/{pid}/_history/3"), headers=reader).status_code == 410
    assert client.get(fhir_on.url(f"Patient/{pid}/_history/2"), headers=reader).json()["gender"] == "other"

    history = client.get(fhir_on.url(f"Patient/{pid}/_history"), headers=reader).json()
    assert history["type"] == "history" and history["total"] == 3
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]

    put_new = client.put(
        fhir_on.url("Patient/chosen-id"), json={**PATIENT, "id": "chosen-id"}, headers=writer
    )
    assert put_new.status_code == 201  # update as create
    type_history = client.get(fhir_on.url("Patient/_history?_count=2"), headers=reader).json()
    assert type_history["total"] == 4 and len(type_history["entry"]) == 2
    assert type_history["entry"][0]["resource"]["id"] == "chosen-id"
    assert any(link["relation"] == "next" for link in type_history["link"])
    assert client.get(fhir_on.url("Patient/nobody"), headers=reader).status_code == 404


def test_conditional_create_and_update(fhir) -> None:
    client, writer = fhir.client, fhir.writer
    first = client.post(
        fhir.url("Patient"), json=PATIENT, headers={**writer, "If-None-Exist": "identifier=urn:mrn|M-1"}
    )
    again = client.post(
        fhir.url("Patient"), json=PATIENT, headers={**writer, "If-None-Exist": "identifier=urn:mrn|M-1"}
    )
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]

    twin = {**PATIENT, "name": [{"family": "Twin"}]}
    assert client.post(fhir.url("Patient"), json=twin, headers=writer).status_code == 201
    ambiguous = client.post(
        fhir.url("Patient"), json=PATIENT, headers={**writer, "If-None-Exist": "identifier=M-1"}
    )
    assert ambiguous.status_code == 412

    fresh = {**PATIENT, "identifier": [{"system": "urn:mrn", "value": "M-2"}]}
    made = client.put(fhir.url("Patient?identifier=urn:mrn|M-2"), json=fresh, headers=writer)
    assert made.status_code == 201
    changed = client.put(
        fhir.url("Patient?identifier=urn:mrn|M-2"), json={**fresh, "gender": "male"}, headers=writer
    )
    assert changed.status_code == 200 and changed.json()["id"] == made.json()["id"]
    assert changed.json()["meta"]["versionId"] == "2"
    assert client.put(fhir.url("Patient?identifier=M-1"), json=PATIENT, headers=writer).status_code == 412
    minimal = client.post(fhir.url("Patient"), json=PATIENT, headers={**writer, "Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and minimal.headers["location"]


def test_invalid_input_is_an_outcome_naming_the_element(fhir) -> None:
    client, writer = fhir.client, fhir.writer
    bad = {"resourceType": "Observation", "code": {"text": "x"}, "valueQuantity": {"value": "lots"}}
    response = client.post(fhir.url("Observation"), json=bad, headers=writer)
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Observation.valueQuantity.value"]
    no_status = client.post(
        fhir.url("Observation"), json={**bad, "valueQuantity": {"value": 1}}, headers=writer
    )
    assert no_status.status_code == 422
    assert no_status.json()["issue"][0]["expression"] == ["Observation.status"]

    wrong_gender = client.post(
        fhir.url("Patient"), json={"resourceType": "Patient", "gender": "f"}, headers=writer
    )
    assert wrong_gender.status_code == 422 and wrong_gender.json()["issue"][0]["expression"] == [
        "Patient.gender"
    ]
    mismatch = client.post(fhir.url("Observation"), json=PATIENT, headers=writer)
    assert mismatch.status_code == 422 and "not a Observation" in mismatch.json()["issue"][0]["diagnostics"]
    not_json = client.post(
        fhir.url("Patient"), content=b"{nope", headers={**writer, "Content-Type": "application/fhir+json"}
    )
    assert not_json.status_code == 400 and not_json.json()["resourceType"] == "OperationOutcome"
    other_id = client.put(fhir.url("Patient/a"), json={**PATIENT, "id": "b"}, headers=writer)
    assert other_id.status_code == 422
    bad_etag = client.put(
        fhir.url("Patient/a"), json={**PATIENT, "id": "a"}, headers={**writer, "If-Match": "x"}
    )
    assert bad_etag.status_code == 400
    unknown = client.get(fhir.url("Nonsense/1"), headers=fhir.reader)
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
    assert client.get(fhir.url("Patient/bad id!"), headers=fhir.reader).status_code == 400
    assert count_resources(fhir.store) == {}


def test_auth_errors_are_outcomes_and_roles_apply(fhir) -> None:
    anonymous = fhir.client.get(fhir.url("Patient"))
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    assert anonymous.json()["resourceType"] == "OperationOutcome"
    denied = fhir.client.post(fhir.url("Patient"), json=PATIENT, headers=fhir.reader)
    assert denied.status_code == 403 and denied.json()["issue"][0]["code"] == "forbidden"


def test_transaction_resolves_urn_references_and_is_atomic(fhir) -> None:
    client, writer = fhir.client, fhir.writer
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
                "resource": PATIENT,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|M-1"},
            },
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a"},
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "resource": {"resourceType": "Organization", "id": "org-9", "name": "Ward 9"},
                "request": {"method": "PUT", "url": "Organization/org-9"},
            },
        ],
    }
    response = client.post(fhir.url(""), json=bundle, headers=writer)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created", "201 Created"]
    patient_id = result["entry"][0]["resource"]["id"]
    observation = result["entry"][1]["resource"]
    assert observation["subject"]["reference"] == f"Patient/{patient_id}"
    found = client.get(fhir.url(f"Observation?patient={patient_id}"), headers=fhir.reader).json()
    assert found["total"] == 1

    again = client.post(fhir.url(""), json=bundle, headers=writer).json()  # the patient now exists
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    before = count_resources(fhir.store)

    broken = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {**PATIENT, "identifier": []}, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "DELETE", "url": "Organization/org-9"}},
            {
                "resource": {"resourceType": "Patient", "id": "p-x", "gender": "female"},
                "request": {"method": "PUT", "url": "Patient/p-x", "ifMatch": 'W/"7"'},
            },
        ],
    }
    failed = client.post(fhir.url(""), json=broken, headers=writer)
    assert failed.status_code == 412 and "entry 2" in failed.json()["issue"][0]["diagnostics"]
    assert count_resources(fhir.store) == before  # the POST and the DELETE were rolled back
    assert client.get(fhir.url("Organization/org-9"), headers=fhir.reader).status_code == 200

    invalid = {
        **broken,
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": 3},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    assert client.post(fhir.url(""), json=invalid, headers=writer).status_code == 422
    dangling = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**PATIENT, "managingOrganization": {"reference": "urn:uuid:nowhere"}},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    assert client.post(fhir.url(""), json=dangling, headers=writer).status_code == 422
    assert count_resources(fhir.store) == before


def test_batch_reports_each_entry(fhir) -> None:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": PATIENT, "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "GET", "url": "Patient/missing"}},
            {
                "resource": {"resourceType": "Patient", "gender": "nope"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient?identifier=urn:mrn|M-1"}},
        ],
    }
    response = fhir.client.post(fhir.url(""), json=batch, headers=fhir.writer)
    assert response.status_code == 200
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "404", "422", "200 OK"]
    assert response.json()["entry"][3]["resource"]["total"] == 1
    assert count_resources(fhir.store) == {"Patient": 1}


def test_metadata_is_truthful(fhir) -> None:
    assert fhir.client.get(fhir.url("metadata")).status_code == 401
    statement = fhir.client.get(fhir.url("metadata"), headers=fhir.reader).json()
    assert statement["resourceType"] == "CapabilityStatement" and statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    resources = {entry["type"]: entry for entry in rest["resource"]}
    assert "ViewDefinition" not in resources and "MedicinalProduct" not in resources
    observation = {p["name"] for p in resources["Observation"]["searchParam"]}
    assert observation == {"identifier", "subject", "patient", "code", "category", "date", "value-quantity"}
    assert resources["Patient"]["conditionalDelete"] == "not-supported"
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch"}
    # every declared parameter answers
    for resource_type in ("Patient", "Observation", "PractitionerRole"):
        for param in resources[resource_type]["searchParam"]:
            response = fhir.client.get(
                fhir.url(f"{resource_type}?{param['name']}:missing=true"), headers=fhir.reader
            )
            assert response.status_code == 200, (resource_type, param["name"], response.text)


def test_view_definition_routes_are_not_shadowed(fhir) -> None:
    views = fhir.client.get(fhir.url("ViewDefinition"), headers=fhir.writer)
    assert views.status_code == 403  # the views router's permission (views:run), not ours
    listed = fhir.client.get(fhir.url("ViewDefinition"), headers=fhir.reader)
    assert listed.status_code == 200 and listed.json()["type"] == "searchset"
    assert fhir.client.get(fhir.url("ViewDefinition/x/_history"), headers=fhir.reader).status_code == 404


def test_every_interaction_is_audited(fhir) -> None:
    client = fhir.client
    pid = client.post(fhir.url("Patient"), json=PATIENT, headers=fhir.writer).json()["id"]
    client.get(fhir.url(f"Patient/{pid}"), headers=fhir.reader)
    client.get(fhir.url("Patient?family=doe"), headers=fhir.reader)
    client.get(fhir.url("Patient/missing"), headers=fhir.reader)
    fhir.flush_audit()
    with fhir.store.connect() as conn:
        rows = conn.execute(
            select(
                audit_event.c.action, audit_event.c.resource_id, audit_event.c.outcome, audit_event.c.detail
            )
            .where(audit_event.c.action.like("fhir.%"))
            .order_by(audit_event.c.id)
        ).all()
    assert [(r.action, r.outcome) for r in rows] == [
        ("fhir.create", "success"),
        ("fhir.read", "success"),
        ("fhir.search", "success"),
        ("fhir.read", "failure"),
    ]
    assert rows[1].resource_id == pid
    assert rows[2].detail == {"params": ["family"]}  # names, never values
    assert audit.verify(fhir.store).ok
