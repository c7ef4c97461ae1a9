"""Request ids and structured request logs: route templates only, never raw paths or bodies."""

from __future__ import annotations

import structlog
from fastapi.testclient import TestClient

from clinhub.app import create_app
from clinhub.config import Settings


def test_request_id_is_echoed_or_made_and_logged(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client, structlog.testing.capture_logs() as logs:
        given = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
        made = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
        client.get("/admin/users/patient-jane-doe/disable")
    assert given.headers["x-request-id"] == "abc-123"
    assert made.headers["x-request-id"] != "bad id with spaces" and len(made.headers["x-request-id"]) == 32
    requests = [entry for entry in logs if entry["event"] == "request"]
    assert [r["request_id"] for r in requests[:2]] == ["abc-123", made.headers["x-request-id"]]
    assert requests[0]["route"] == "/health/live" and requests[0]["status"] == 200
    assert "jane" not in str(logs)  # the raw path (which may name a patient) is never logged
