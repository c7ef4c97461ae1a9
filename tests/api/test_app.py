"""The HTTP API's own endpoints: health, liveness, readiness, metrics, OpenAPI, and the error shape."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.errors import NotFound
from clinhub.store import create_store_engine, upgrade


@pytest.fixture
def client(settings: Settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_live_always_answers(client: TestClient) -> None:
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_ready_is_503_until_migrated_then_200(client: TestClient, settings: Settings) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["store"]["migrations_pending"] is True
    engine = create_store_engine(settings.store_url)
    upgrade(engine)
    engine.dispose()
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["store"]["revision"] == response.json()["store"]["head"]


def test_health_reports_each_part(client: TestClient, settings: Settings) -> None:
    engine = create_store_engine(settings.store_url)
    upgrade(engine)
    engine.dispose()
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["store"]["backend"] == "sqlite"
    assert body["engine"]["ok"] and body["engine"]["duckdb"]
    assert body["cache"]["tiers"] == ["memory"]


def test_store_down_makes_ready_and_health_503(tmp_path) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url="postgresql://root:pw@127.0.0.1:1/test", _env_file=None
    )
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["store"]["ok"] is False
        assert "pw" not in ready.text
        assert client.get("/health").status_code == 503
        assert client.get("/health/live").status_code == 200


def test_health_with_redis_tier(settings: Settings, redis_url: str) -> None:
    with TestClient(create_app(settings.model_copy(update={"redis_url": redis_url}))) as client:
        assert client.get("/health").json()["cache"]["tiers"] == ["memory", "redis"]
    down = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(down)) as client:
        cache = client.get("/health").json()["cache"]
        assert cache["ok"] and cache["tiers"] == ["memory"] and "unreachable" in cache["redis"]


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/health/live")
    client.get("/no/such/page")
    text = client.get("/metrics").text
    assert 'clinhub_http_requests_total{method="GET",route="/health/live",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "clinhub_http_request_duration_seconds_bucket" in text


def test_openapi_lists_the_health_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/health/live", "/health/ready", "/metrics"} <= set(paths)
    assert client.get("/docs").status_code == 200


def test_clinhub_errors_become_json_with_their_status(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom/not-found")
    def not_found() -> None:
        raise NotFound("no such thing")

    @app.get("/boom/crash")
    def crash() -> None:
        raise RuntimeError("patient Jane Doe broke it")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom/not-found")
        assert response.status_code == 404
        assert response.json() == {"error": "not-found", "message": "no such thing"}
        response = client.get("/boom/crash")
        assert response.status_code == 500
        assert "Jane" not in response.text
