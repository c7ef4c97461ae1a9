"""The pull client against clinhub's own FHIR API on loopback, through a fault-injecting proxy.

The server is a real uvicorn in a thread; the proxy (a small threaded HTTP server in this test) forwards
to it and, on demand, answers 500, 429 with Retry-After, or stalls past the client's timeout. It also
plays a SMART token endpoint that checks the client's signed assertion.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from sqlalchemy import select

from clinhub.errors import Unauthenticated
from clinhub.fhir.client import BearerToken, FhirClient, SmartBackendAuth
from clinhub.fhir.pull import pull
from clinhub.platform import auth
from clinhub.platform.resilience import ServiceUnavailable
from clinhub.store import count_resources, create_store_engine, put_resources, upgrade
from clinhub.store.schema import fhir_pull_state

from .conftest import make_settings, prepare_store, serving

PATIENTS = 30


@dataclass
class Proxy:
    upstream: str
    faults: collections.deque = field(default_factory=collections.deque)
    seen: list[str] = field(default_factory=list)
    public_key: str | None = None
    access_token: str | None = None
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"  # type: ignore[union-attr]


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    upstream = httpx.Client(base_url=proxy.upstream, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            if self.path != "/token":
                self._answer(404)
                return
            try:
                claims = jwt.decode(
                    form["client_assertion"][0],
                    proxy.public_key,
                    algorithms=["RS384"],
                    audience=f"{proxy.url}/token",
                )
            except (KeyError, jwt.InvalidTokenError):
                self._answer(401, b'{"error":"invalid_client"}', {"Content-Type": "application/json"})
                return
            assert claims["iss"] == claims["sub"] == "puller" and form["grant_type"] == ["client_credentials"]
            body = f'{{"access_token":"{proxy.access_token}","token_type":"bearer","expires_in":300}}'
            self._answer(200, body.encode(), {"Content-Type": "application/json"})

        def do_GET(self) -> None:
            proxy.seen.append(self.path)
            fault = proxy.faults.popleft() if proxy.faults else None
            if fault == "500":
                self._answer(500, b'{"resourceType":"OperationOutcome"}')
                return
            if fault == "429":
                self._answer(429, b"", {"Retry-After": "1"})
                return
            if fault == "stall":
                time.sleep(1.5)
            if self.path == "/fhir/.well-known/smart-configuration":
                body = f'{{"token_endpoint":"{proxy.url}/token"}}'.encode()
                self._answer(200, body, {"Content-Type": "application/json"})
                return
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in ("authorization", "accept", "host")
            }
            response = upstream.get(self.path, headers=headers)
            self._answer(
                response.status_code, response.content, {"Content-Type": response.headers["content-type"]}
            )

    return Handler


@dataclass
class Source:
    proxy: Proxy
    key: str
    store: object


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Iterator[Source]:
    """A clinhub with patients and observations, served by uvicorn, behind the proxy."""
    tmp = tmp_path_factory.mktemp("source")
    url = f"sqlite:///{tmp / 'source.db'}"
    store = prepare_store(url)
    resources = []
    for i in range(PATIENTS):
        resources.append({"resourceType": "Patient", "id": f"p{i:02d}", "gender": "female"})
        for j in range(3):
            resources.append(
                {
                    "resourceType": "Observation",
                    "id": f"o{i:02d}-{j}",
                    "status": "final",
                    "code": {"text": "pulse"},
                    "subject": {"reference": f"Patient/p{i:02d}"},
                }
            )
    put_resources(store, resources)
    _, key = auth.create_api_key(store, "engineer", "puller")
    with serving(make_settings(tmp, url)) as upstream:
        proxy = Proxy(upstream)
        proxy.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
        threading.Thread(target=proxy.server.serve_forever, daemon=True).start()
        yield Source(proxy, key, store)
        proxy.server.shutdown()
    store.dispose()


@pytest.fixture
def target(tmp_path: Path):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'target.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def _client(source: Source, **options) -> FhirClient:
    source.proxy.faults.clear()
    options.setdefault("auth", BearerToken(source.key))
    options.setdefault("name", f"test-{uuid.uuid4().hex[:8]}")
    options.setdefault("backoff_initial", 0.05)
    return FhirClient(f"{source.proxy.url}/fhir", **options)


def test_pull_pages_retries_and_never_duplicates(source: Source, target) -> None:
    with _client(source, timeout=1.0, cache_ttl=0) as client:
        source.proxy.faults.extend(["500", "stall", "500"])
        from clinhub.fhir import pull as pull_module

        pull_module.PAGE_SIZE, saved = 20, pull_module.PAGE_SIZE
        try:
            summary = pull(target, client, ["Patient", "Observation"], parallel=2)
        finally:
            pull_module.PAGE_SIZE = saved
    assert summary.ok, summary.as_dict()
    counts = {t.resource_type: t for t in summary.types}
    assert counts["Patient"].pages == 2 and counts["Observation"].pages == 5  # 30 and 90 by 20
    assert count_resources(target) == {"Patient": PATIENTS, "Observation": 3 * PATIENTS}
    assert client.requests >= 7 + 3  # every page, plus a retry for each fault

    with _client(source) as client:
        again = pull(target, client, ["Patient", "Observation"])
    assert again.ok
    assert all(sum(t.stats.created.values()) == 0 for t in again.types)  # no duplicates, nothing new
    assert again.types[0].since is not None  # incremental: from the stored high-water mark
    with target.connect() as conn:
        marks = dict(
            conn.execute(select(fhir_pull_state.c.resource_type, fhir_pull_state.c.high_water)).all()
        )
    assert set(marks) == {"Patient", "Observation"}
    stored = count_resources(target)
    assert stored == {"Patient": PATIENTS, "Observation": 3 * PATIENTS}


def test_incremental_pull_fetches_only_changes(source: Source, target) -> None:
    with _client(source) as client:
        pull(target, client, ["Patient"])
    put_resources(source.store, [{"resourceType": "Patient", "id": "p03", "gender": "male"}])
    with _client(source) as client:
        summary = pull(target, client, ["Patient"])
    item = summary.types[0].as_dict()
    assert item["updated"] == 1 and item["created"] == 0
    with _client(source) as client:
        quiet = pull(target, client, ["Patient"]).types[0].as_dict()
    # only what changed at or after the newest change seen (the mark is inclusive, so p03 comes again)
    assert quiet["fetched"] == 1 and quiet["unchanged"] == 1
    put_resources(source.store, [{"resourceType": "Patient", "id": "p03", "gender": "female"}])


def test_retry_after_is_honoured(source: Source) -> None:
    with _client(source) as client:
        source.proxy.faults.append("429")
        started = time.monotonic()
        bundle = client.get("Patient", {"_count": "1"})
        elapsed = time.monotonic() - started
    assert bundle["resourceType"] == "Bundle"
    assert elapsed >= 1.0


def test_breaker_opens_then_closes(source: Source) -> None:
    with _client(source, attempts=2, fail_max=3, reset_timeout=1.0, cache_ttl=0) as client:
        source.proxy.faults.extend(["500"] * 10)
        with pytest.raises(ServiceUnavailable):
            client.get("Patient")
        with pytest.raises(ServiceUnavailable, match="circuit open"):
            client.get("Patient")
        assert client.outbound.breaker.current_state == "open"
        source.proxy.faults.clear()
        seen = len(source.proxy.seen)
        with pytest.raises(ServiceUnavailable):
            client.get("Patient")  # open: fails at once, the server is spared
        assert len(source.proxy.seen) == seen
        time.sleep(1.1)
        assert client.get("Patient")["resourceType"] == "Bundle"  # the half-open probe succeeds
        assert client.outbound.breaker.current_state == "closed"


def test_ttl_cache_spares_repeated_gets(source: Source) -> None:
    with _client(source, cache_ttl=30) as client:
        seen = len(source.proxy.seen)
        first = client.get("Patient/p01")
        second = client.get("Patient/p01")
    assert first == second and len(source.proxy.seen) == seen + 1


def test_links_to_other_hosts_are_refused(source: Source) -> None:
    with _client(source) as client, pytest.raises(Exception, match="another host"):
        client.get("http://elsewhere.example/fhir/Patient")


def test_smart_backend_services(source: Source) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    source.proxy.public_key = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    source.proxy.access_token = source.key
    with _client(source, auth=SmartBackendAuth("puller", private)) as client:
        assert client.get("Patient", {"_count": "1"})["type"] == "searchset"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with _client(source, auth=SmartBackendAuth("puller", wrong)) as client, pytest.raises(Unauthenticated):
        client.get("Patient")


def test_cli_pull_summarises_and_exits_1_on_failure(source: Source, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from clinhub.cli import app as cli

    database = tmp_path / "cli.db"
    engine = create_store_engine(f"sqlite:///{database}")
    upgrade(engine)
    engine.dispose()
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CLINHUB_DATABASE_URL", f"sqlite:///{database}")
    source.proxy.faults.clear()
    base = f"{source.proxy.url}/fhir"
    result = CliRunner().invoke(
        cli, ["fhir", "pull", "--from", base, "--types", "Patient", "--token", source.key]
    )
    assert result.exit_code == 0, result.output
    assert "Patient" in result.output and str(PATIENTS) in result.output
    refused = CliRunner().invoke(
        cli, ["fhir", "pull", "--from", base, "--types", "Patient", "--token", "chk_x_y"]
    )
    assert refused.exit_code == 1 and "refused our credentials" in refused.output
