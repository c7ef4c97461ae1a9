"""Every route, generated from the app's route table: anonymous 401, a role without the permission 403,
a role with it 2xx. A route that declares no permission (and is not a public probe) fails here."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count

import pytest
from fastapi.testclient import TestClient

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.hl7.messages import MessageFilter, accept, search
from clinhub.platform import auth
from clinhub.platform.deps import PUBLIC_PATHS, declared_permission, route_table
from clinhub.platform.jobs import new_job
from clinhub.platform.permissions import PERMISSIONS, ROLES
from clinhub.store import create_store_engine, upgrade
from clinhub.views.export import run_export

PASSWORD = "a long enough password"
_serial = count()


def _stored_message(store) -> str:
    """The id of a freshly accepted HL7 message."""
    control_id = f"MATRIX{next(_serial)}"
    raw = (
        f"MSH|^~\\&|LAB|HOSP|HUB|HOSP|20260101120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r"
        "PID|1||MRN1^^^HOSP^MR||DOE^JANE||19800101|F"
    )
    assert accept(store, [(raw, datetime.now(UTC))])[0].code == "AA"
    found = search(store, MessageFilter(control_id=control_id))["messages"]
    return str(found[0]["id"])


_EXPORTS = "/fhir/ViewDefinition/$viewdefinition-export/"
_EXPORT_PARAMS = {
    "views": [
        {
            "name": "ids",
            "label": "ids",
            "view": {"resource": "Patient", "select": [{"column": [{"name": "id", "path": "id"}]}]},
        }
    ],
    "output_format": "csv",
    "patients": [],
    "since": None,
    "client_tracking_id": None,
}


def _export(store, *, run: bool = False) -> str:
    """A view export recorded for the granted role; with `run`, finished by its job's own function,
    which writes its files where a worker would (this test's data dir is the store's folder)."""
    export_id = new_job(store, "views.export", _EXPORT_PARAMS, "analyst")
    if run:
        data_dir = store.url.database.rsplit("/", 1)[0]
        settings = Settings(data_dir=data_dir, database_url=str(store.url), _env_file=None)
        run_export(settings, export_id, **_EXPORT_PARAMS)
    return export_id


def _new_key(store) -> str:
    key_id, _ = auth.create_api_key(store, "target", f"k{next(_serial)}")
    return f"/admin/keys/{key_id}"


def _fhir_stored(store, resource: dict) -> dict:
    """Store a FHIR resource as it is (FHIR routes' examples)."""
    from clinhub.store import put_resources

    put_resources(store, [resource])
    return resource


def _fhir_finished_export(store) -> str:
    """A succeeded fhir.export job of the granted role, its file in place; returns the file's path."""
    from pathlib import Path

    from clinhub.fhir.export import export
    from clinhub.fhir.jobs import export_dir
    from clinhub.platform.jobs import _set

    job_id = new_job(store, "fhir.export", {"level": "system"}, "integration_engineer")
    _fhir_stored(store, {"resourceType": "Patient", "id": "matrix-patient"})
    result = export(store, export_dir(Path(store.url.database).parent, job_id), types=["Patient"])
    _set(store, job_id, "queued", status="succeeded", result=result.as_dict(), done=True)
    return f"/fhir/$export-file/{job_id}/Patient.ndjson"


_FHIR_PATIENT = {"resourceType": "Patient", "id": "matrix-patient", "gender": "female"}
_MENTOR_ASK = {"text": "hello", "resonance_key": "calm-medium-learning"}


def _conversation(store) -> str:
    """A conversation of the granted role's user (every role may use the mentor: the first but admin)."""
    from clinhub.mentor import conversations

    session, owner = f"mx-{next(_serial)}", next(role for role in ROLES if role != "admin")
    conversations.append(
        store, session, owner, "q", "a", persona="Lua", resonance_key=_MENTOR_ASK["resonance_key"]
    )
    return f"/mentor/v2/conversations/{session}"


#: (method, path template) -> a function of the store giving (url, json body) for a valid request
EXAMPLES: dict[tuple[str, str], Callable] = {
    ("POST", "/admin/users"): lambda s: (
        "/admin/users",
        {"username": f"new{next(_serial)}", "password": PASSWORD, "role": "viewer"},
    ),
    ("POST", "/admin/users/{username}/disable"): lambda s: ("/admin/users/target/disable", None),
    ("POST", "/admin/users/{username}/enable"): lambda s: ("/admin/users/target/enable", None),
    ("PUT", "/admin/users/{username}/role"): lambda s: ("/admin/users/target/role", {"role": "viewer"}),
    ("POST", "/admin/keys"): lambda s: ("/admin/keys", {"username": "target", "name": "feed"}),
    ("DELETE", "/admin/keys/{key_id}"): lambda s: (_new_key(s), None),
    ("GET", "/hl7/messages/{message_id}"): lambda s: ("/hl7/messages/" + _stored_message(s), None),
    ("POST", "/hl7/messages/{message_id}/replay"): lambda s: (
        f"/hl7/messages/{_stored_message(s)}/replay",
        None,
    ),
    ("POST", "/hl7/replay"): lambda s: ("/hl7/replay", {"status": "error"}),
    ("POST", "/cache/invalidate"): lambda s: ("/cache/invalidate", {"pattern": "x:*"}),
    ("POST", "/admin/backups"): lambda s: ("/admin/backups?wait=true", None),
    # "latest" is the backup the POST /admin/backups case above made: it comes first in route order
    ("POST", "/admin/backups/{backup_id}/verify"): lambda s: ("/admin/backups/latest/verify", None),
    ("POST", "/admin/backups/{backup_id}/restore"): lambda s: (
        "/admin/backups/latest/restore",
        {"confirm": True},
    ),
    ("POST", "/admin/backups/prune"): lambda s: ("/admin/backups/prune", {"keep_days": 30, "keep_min": 7}),
    ("POST", "/jobs"): lambda s: ("/jobs", {"kind": "fhir.import", "params": {"path": "/none"}}),
    # a job recorded (not enqueued) for the granted role, which may only see and cancel its own jobs
    ("GET", "/jobs/{job_id}"): lambda s: (
        "/jobs/" + new_job(s, "fhir.import", {"path": "/none"}, "integration_engineer"),
        None,
    ),
    ("POST", "/jobs/{job_id}/cancel"): lambda s: (
        "/jobs/" + new_job(s, "fhir.import", {"path": "/none"}, "integration_engineer") + "/cancel",
        None,
    ),
    ("POST", "/admin/performance/maintenance"): lambda s: (
        "/admin/performance/maintenance",
        {"action": "analyze", "tables": ["provider"]},
    ),
    ("POST", "/fhir/ViewDefinition/$viewdefinition-run"): lambda s: (
        "/fhir/ViewDefinition/$viewdefinition-run",
        {
            "resourceType": "Parameters",
            "parameter": [{"name": "viewReference", "valueReference": {"reference": "patient_demographics"}}],
        },
    ),
    ("GET", "/fhir/ViewDefinition/$viewdefinition-run"): lambda s: (
        "/fhir/ViewDefinition/$viewdefinition-run?viewReference=patient_demographics",
        None,
    ),
    ("POST", "/fhir/ViewDefinition"): lambda s: (
        "/fhir/ViewDefinition",
        {
            "resourceType": "ViewDefinition",
            "resource": "Patient",
            "select": [{"column": [{"name": "id", "path": "id"}]}],
        },
    ),
    # the PUT creates "matrix-view"; the GET and DELETE after it in route order read and delete it
    ("PUT", "/fhir/ViewDefinition/{view_id}"): lambda s: (
        "/fhir/ViewDefinition/matrix-view",
        {
            "resourceType": "ViewDefinition",
            "resource": "Patient",
            "select": [{"column": [{"name": "id", "path": "id"}]}],
        },
    ),
    ("GET", "/fhir/ViewDefinition/{view_id}"): lambda s: ("/fhir/ViewDefinition/matrix-view", None),
    ("DELETE", "/fhir/ViewDefinition/{view_id}"): lambda s: ("/fhir/ViewDefinition/matrix-view", None),
    ("POST", "/fhir/ViewDefinition/$viewdefinition-export"): lambda s: (
        "/fhir/ViewDefinition/$viewdefinition-export",
        {
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "view",
                    "part": [
                        {"name": "viewReference", "valueReference": {"reference": "patient_demographics"}}
                    ],
                }
            ],
        },
    ),
    # an export of the granted role, queued (no worker runs here): its status is 202, DELETE cancels it
    ("GET", "/fhir/ViewDefinition/$viewdefinition-export/{export_id}"): lambda s: (
        _EXPORTS + _export(s),
        None,
    ),
    ("DELETE", "/fhir/ViewDefinition/$viewdefinition-export/{export_id}"): lambda s: (
        _EXPORTS + _export(s),
        None,
    ),
    ("GET", "/fhir/ViewDefinition/$viewdefinition-export/{export_id}/{file_name}"): lambda s: (
        f"{_EXPORTS}{_export(s, run=True)}/ids.csv",
        None,
    ),
    # quality: the POST runs the rule set now (empty directory: checks not applicable); "latest" is that run
    ("POST", "/quality/runs"): lambda s: ("/quality/runs?wait=true", {"ruleset": "directory"}),
    ("GET", "/quality/runs/{run_id}"): lambda s: ("/quality/runs/latest", None),
    ("GET", "/quality/runs/{run_id}/report"): lambda s: ("/quality/runs/latest/report", None),
    ("GET", "/quality/runs/{run_id}/diff"): lambda s: ("/quality/runs/latest/diff", None),
    # FHIR REST API (clinhub/fhir/api.py)
    ("POST", "/fhir"): lambda s: ("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": []}),
    ("GET", "/fhir/Group/{group_id}/$export"): lambda s: (
        "/fhir/Group/"
        + _fhir_stored(s, {"resourceType": "Group", "id": "mx-group", "type": "person", "actual": True})["id"]
        + "/$export",
        None,
    ),
    ("GET", "/fhir/$export-status/{job_id}"): lambda s: (
        "/fhir/$export-status/" + new_job(s, "fhir.export", {"level": "system"}, "integration_engineer"),
        None,
    ),
    ("DELETE", "/fhir/$export-status/{job_id}"): lambda s: (
        "/fhir/$export-status/" + new_job(s, "fhir.export", {"level": "system"}, "integration_engineer"),
        None,
    ),
    ("GET", "/fhir/$export-file/{job_id}/{file_name}"): lambda s: (_fhir_finished_export(s), None),
    ("GET", "/fhir/{resource_type}"): lambda s: ("/fhir/Patient", None),
    ("POST", "/fhir/{resource_type}/_search"): lambda s: ("/fhir/Patient/_search", None),
    ("POST", "/fhir/{resource_type}"): lambda s: ("/fhir/Patient", {"resourceType": "Patient"}),
    ("PUT", "/fhir/{resource_type}"): lambda s: (
        "/fhir/Patient?identifier=urn:matrix|1",
        {"resourceType": "Patient", "identifier": [{"system": "urn:matrix", "value": "1"}]},
    ),
    ("GET", "/fhir/{resource_type}/_history"): lambda s: ("/fhir/Patient/_history", None),
    ("GET", "/fhir/{resource_type}/{resource_id}"): lambda s: (
        "/fhir/Patient/" + _fhir_stored(s, _FHIR_PATIENT)["id"],
        None,
    ),
    ("PUT", "/fhir/{resource_type}/{resource_id}"): lambda s: ("/fhir/Patient/matrix-patient", _FHIR_PATIENT),
    ("DELETE", "/fhir/{resource_type}/{resource_id}"): lambda s: (
        "/fhir/Patient/" + _fhir_stored(s, _FHIR_PATIENT)["id"],
        None,
    ),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history"): lambda s: (
        f"/fhir/Patient/{_fhir_stored(s, _FHIR_PATIENT)['id']}/_history",
        None,
    ),
    ("GET", "/analytics/patient-risk/{patient_id}"): lambda s: (
        "/analytics/patient-risk/"
        + _fhir_stored(s, {"resourceType": "Patient", "id": "mx-risk", "birthDate": "1970-01-01"})["id"],
        None,
    ),
    ("POST", "/mentor/v2/process"): lambda s: ("/mentor/v2/process", _MENTOR_ASK),
    ("POST", "/mentor/v2/chat/multi-persona"): lambda s: ("/mentor/v2/chat/multi-persona", _MENTOR_ASK),
    ("POST", "/mentor/v2/recommend"): lambda s: (
        "/mentor/v2/recommend",
        {"resonance_key": "calm-medium-learning"},
    ),
    ("POST", "/mentor/v2/bulk-process"): lambda s: ("/mentor/v2/bulk-process", {"items": [_MENTOR_ASK]}),
    ("POST", "/mentor/v2/cache/clear"): lambda s: ("/mentor/v2/cache/clear", None),
    ("POST", "/mentor/v2/cache/invalidate"): lambda s: ("/mentor/v2/cache/invalidate?pattern=route:*", None),
    ("POST", "/mentor/v1/chat"): lambda s: ("/mentor/v1/chat", {"text": "How do quality scores work?"}),
    ("GET", "/mentor/v2/personas/{name}"): lambda s: ("/mentor/v2/personas/lua", None),
    ("DELETE", "/mentor/v2/conversations/{session_id}"): lambda s: (_conversation(s), None),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"): lambda s: (
        f"/fhir/Patient/{_fhir_stored(s, _FHIR_PATIENT)['id']}/_history/1",
        None,
    ),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    settings = Settings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'store.db'}", secret_key="k" * 40, _env_file=None
    )
    store = create_store_engine(settings.store_url)
    upgrade(store)
    for role in ROLES:
        auth.create_user(store, role, PASSWORD, role)
    auth.create_user(store, "target", PASSWORD, "viewer")
    app = create_app(settings)
    with TestClient(app) as client:
        tokens = {}
        for role in ROLES:
            response = client.post("/auth/login", json={"username": role, "password": PASSWORD})
            assert response.status_code == 200, response.text
            tokens[role] = {"Authorization": f"Bearer {response.json()['access_token']}"}
        yield app, client, tokens, store
    store.dispose()


def _cases(app) -> list[tuple[str, str, object]]:
    return [
        (method, entry.path, entry.route)
        for entry in route_table(app)
        for method in sorted(entry.methods)
        if entry.path not in PUBLIC_PATHS
    ]


def test_every_non_public_route_declares_a_known_permission(world) -> None:
    entries = [e for e in route_table(world[0]) if e.path not in PUBLIC_PATHS]
    assert len(entries) >= 10
    undeclared = [e.path for e in entries if declared_permission(e.route) is None]
    assert undeclared == []
    assert all(declared_permission(e.route) in PERMISSIONS for e in entries)


def test_role_matrix(world) -> None:
    app, client, tokens, store = world
    cases = _cases(app)
    assert len(cases) >= 10
    for method, path, route in cases:
        permission = declared_permission(route)
        example = EXAMPLES.get((method, path))
        if example is None:
            assert "{" not in path and method == "GET", f"add an example request for {method} {path}"
            example = lambda s, p=path: (p, None)  # noqa: E731
        url, body = example(store)
        anonymous = client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        assert anonymous.headers.get("www-authenticate") == "Bearer"
        holders = PERMISSIONS[permission]
        allowed = (
            next(role for role in ROLES if role in holders and role != "admin")
            if len(holders) > 1
            else "admin"
        )
        for role in ROLES:
            if role in holders:
                continue
            denied = client.request(method, url, json=body, headers=tokens[role])
            assert denied.status_code == 403, (method, path, role, denied.status_code)
        url, body = example(store)
        granted = client.request(method, url, json=body, headers=tokens[allowed])
        assert 200 <= granted.status_code < 300, (method, path, allowed, granted.status_code, granted.text)


def test_public_probes_need_no_credentials(world) -> None:
    client = world[1]
    for path in ("/health/live", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200


def test_api_key_works_as_bearer_and_header(world) -> None:
    client, store = world[1], world[3]
    _, key = auth.create_api_key(store, "analyst", "script")
    assert client.get("/auth/me", headers={"Authorization": f"Bearer {key}"}).json()["role"] == "analyst"
    assert client.get("/auth/me", headers={"X-API-Key": key}).json()["via"] == "api_key"
    assert client.get("/auth/me", headers={"X-API-Key": key + "x"}).status_code == 401
