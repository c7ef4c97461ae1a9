"""Retry and circuit breaker against a real local HTTP server that fails on demand."""

from __future__ import annotations

import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clinhub.platform.resilience import ResilientHTTP, ServiceUnavailable, breaker_states


class FlakyServer:
    """Answers 200, or 503 while `failing` is set; counts the requests it saw."""

    def __init__(self) -> None:
        self.failing = False
        self.fail_next = 0
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                if self.path == "/missing":
                    status = 404
                elif outer.failing or outer.fail_next > 0:
                    outer.fail_next = max(0, outer.fail_next - 1)
                    status = 503
                else:
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server():
    flaky = FlakyServer()
    yield flaky
    flaky.close()


def _client(server: FlakyServer, **options) -> ResilientHTTP:
    return ResilientHTTP(
        f"test-{uuid.uuid4().hex[:6]}", server.url, backoff_initial=0.01, backoff_max=0.02, **options
    )


def test_transient_failures_are_retried(server: FlakyServer) -> None:
    client = _client(server, attempts=3)
    server.fail_next = 2
    assert client.get("/").status_code == 200
    assert server.hits == 3
    client.close()


def test_non_transient_errors_are_not_retried_and_do_not_trip(server: FlakyServer) -> None:
    client = _client(server, attempts=3, fail_max=2)
    for _ in range(4):
        assert client.get("/missing").status_code == 404
    assert server.hits == 4
    assert client.outbound.state()["state"] == "closed"
    client.close()


def test_breaker_opens_fails_fast_then_half_open_probe_closes_it(server: FlakyServer) -> None:
    client = _client(server, attempts=1, fail_max=3, reset_timeout=0.3)
    server.failing = True
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            client.get("/")
    assert client.outbound.state()["state"] == "open"
    seen = server.hits
    with pytest.raises(ServiceUnavailable, match="circuit open"):
        client.get("/")
    assert server.hits == seen  # open: the server was not called at all
    assert breaker_states()[client.outbound.name]["state"] == "open"
    server.failing = False
    time.sleep(0.35)
    assert client.get("/").status_code == 200  # the half-open probe succeeds and closes the breaker
    assert client.outbound.state()["state"] == "closed"
    client.close()


def test_unreachable_server_is_service_unavailable() -> None:
    client = ResilientHTTP(
        f"dead-{uuid.uuid4().hex[:6]}",
        "http://127.0.0.1:1",
        attempts=2,
        backoff_initial=0.01,
        backoff_max=0.02,
        timeout=1,
    )
    with pytest.raises(ServiceUnavailable, match="failed after 2 attempts"):
        client.get("/")
    client.close()
