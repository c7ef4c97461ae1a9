"""The mentor over HTTP: v2 and the legacy v1 chat, with auth, 422s, streaming and bulk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.platform import auth
from clinhub.store import create_store_engine, upgrade

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[TestClient, dict, dict]]:
    tmp: Path = tmp_path_factory.mktemp("mentor-api")
    settings = Settings(
        data_dir=tmp, database_url=f"sqlite:///{tmp / 'store.db'}", secret_key="k" * 40, _env_file=None
    )
    store = create_store_engine(settings.store_url)
    upgrade(store)
    auth.create_user(store, "eng", PASSWORD, "integration_engineer")
    auth.create_user(store, "boss", PASSWORD, "admin")
    with TestClient(create_app(settings)) as client:
        headers = {}
        for name in ("eng", "boss"):
            token = client.post("/auth/login", json={"username": name, "password": PASSWORD}).json()
            headers[name] = {"Authorization": f"Bearer {token['access_token']}"}
        yield client, headers["eng"], headers["boss"]
    store.dispose()


def test_health_is_public_and_the_rest_needs_a_login(api) -> None:
    client, _, _ = api
    assert client.get("/mentor/v2/health").json()["personas"] == 4
    assert client.post("/mentor/v2/process", json={"text": "hi"}).status_code == 401
    assert client.post("/mentor/v1/chat", json={"text": "hi"}).status_code == 401


def test_process_answers_with_routing_facts_and_performance(api) -> None:
    client, eng, _ = api
    response = client.post(
        "/mentor/v2/process",
        json={"text": "How is the HL7 interface doing?", "resonance_key": "analytical-burst-problem_solving"},
        headers=eng,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["routing"]["scores"]) == {"Lua", "Elro", "Riri", "Nana"}
    assert body["persona_used"] == body["routing"]["primary"]
    assert body["answer_source"] == "template" and "no language model" in body["label"]
    assert any(f["source"] == "hl7" for f in body["facts"])
    assert body["performance"]["seconds"] > 0 and body["request_id"]


def test_a_malformed_key_is_a_422_with_the_allowed_values(api) -> None:
    client, eng, _ = api
    response = client.post(
        "/mentor/v2/process", json={"text": "hello", "resonance_key": "happy-flowing-learning"}, headers=eng
    )
    assert response.status_code == 422
    body = response.json()
    assert "tone 'happy'" in str(body) and "collaborative" in str(body)
    wrong_shape = client.post("/mentor/v2/process", json={"text": "hi", "resonance_key": "calm"}, headers=eng)
    assert wrong_shape.status_code == 422 and "tone-pace-intent" in wrong_shape.text


def test_v1_chat_infers_the_key_and_keeps_the_old_shape(api) -> None:
    client, eng, _ = api
    body = client.post(
        "/mentor/v1/chat", json={"text": "Can you explain how FHIR search works?"}, headers=eng
    ).json()
    assert set(body) == {"response", "persona", "resonance_key", "confidence", "timestamp"}
    assert body["persona"] in ("Lua", "Elro", "Riri", "Nana") and body["resonance_key"].count("-") == 2


def test_streaming_sends_meta_deltas_and_done(api) -> None:
    client, eng, _ = api
    with client.stream(
        "POST",
        "/mentor/v2/process",
        json={
            "text": "What should I check first?",
            "resonance_key": "confused-medium-seek_advice",
            "stream": True,
        },
        headers=eng,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [block for block in response.read().decode().split("\n\n") if block]
    kinds = [block.split("\n")[0] for block in events]
    assert kinds[0] == "event: meta" and kinds[-1] == "event: done" and "event: delta" in kinds
    meta = orjson.loads(events[0].split("data: ", 1)[1])
    assert meta["persona_used"] and meta["answer_source"] == "template"


def test_bulk_recommend_personas_and_cache_endpoints(api) -> None:
    client, eng, boss = api
    items = [{"text": f"Question {i} about data quality scores"} for i in range(5)]
    bulk = client.post("/mentor/v2/bulk-process", json={"items": items}, headers=eng).json()
    assert bulk["count"] == 5 and bulk["failed"] == 0
    too_many = client.post("/mentor/v2/bulk-process", json={"items": [{"text": "x"}] * 101}, headers=eng)
    assert too_many.status_code == 422
    recommended = client.post(
        "/mentor/v2/recommend", json={"resonance_key": "collaborative-flowing-planning"}, headers=eng
    ).json()
    assert recommended["persona"] in ("Lua", "Elro", "Riri", "Nana")
    personas = client.get("/mentor/v2/personas", headers=eng).json()["personas"]
    assert [p["name"] for p in personas] == ["Lua", "Elro", "Riri", "Nana"]
    assert client.get("/mentor/v2/personas/elro", headers=eng).json()["name"] == "Elro"
    assert client.get("/mentor/v2/personas/zed", headers=eng).status_code == 404
    assert "memory" in str(client.get("/mentor/v2/cache-stats", headers=eng).json())
    assert client.post("/mentor/v2/cache/clear", headers=eng).status_code == 403  # admins only
    assert client.post("/mentor/v2/cache/clear", headers=boss).status_code == 200
    invalidated = client.post("/mentor/v2/cache/invalidate?pattern=route:*", headers=boss).json()
    assert invalidated["pattern"] == "route:*"
    status = client.get("/mentor/v2/status", headers=eng).json()
    assert status["llm"]["configured"] is False and status["inference"]["embeddings"] is True


def test_conversations_over_http(api) -> None:
    client, eng, boss = api
    for text in ("First question here.", "Second question here."):
        client.post(
            "/mentor/v2/process",
            json={"text": text, "resonance_key": "calm-medium-learning", "context": {"session_id": "http-1"}},
            headers=eng,
        )
    mine = client.get("/mentor/v2/conversations", headers=eng).json()["conversations"]
    assert mine[0]["session_id"] == "http-1" and mine[0]["turns"] == 4
    assert client.get("/mentor/v2/conversations", headers=boss).json()["conversations"] == []
    assert client.delete("/mentor/v2/conversations/http-1", headers=boss).status_code == 404
    assert client.delete("/mentor/v2/conversations/http-1", headers=eng).status_code == 204


def test_alert_rules_name_metrics_the_hub_exports(api) -> None:
    import re

    import yaml

    client, eng, _ = api
    client.post(
        "/mentor/v2/process", json={"text": "hello", "resonance_key": "calm-medium-learning"}, headers=eng
    )
    rules = yaml.safe_load(
        (Path(__file__).parents[2] / "deploy" / "prometheus" / "mentor-rules.yml").read_text()
    )
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(expressions) >= 3
    exported = client.get("/metrics").text
    for name in {re.sub(r"_bucket$", "", m) for e in expressions for m in re.findall(r"clinhub_[a-z_]+", e)}:
        assert f"# TYPE {name} " in exported, name
