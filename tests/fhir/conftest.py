"""Fixtures for the FHIR tests: the real app over a real store, users with and without write access."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from clinhub.app import create_app
from clinhub.config import Settings
from clinhub.platform import auth
from clinhub.store import create_store_engine, upgrade

PASSWORD = "a long enough password"
SECRET = "s" * 40


@dataclass
class Fhir:
    """A running app: a client with write access (`client`), tokens per role, the store, the settings."""

    client: TestClient
    writer: dict[str, str]
    reader: dict[str, str]
    store: Engine
    settings: Settings

    def url(self, path: str) -> str:
        return f"/fhir/{path.lstrip('/')}"

    def flush_audit(self) -> None:
        """Wait until the reads' audit events (appended off the request path) are in the store."""
        assert self.client.app.state.hub.audit_queue.flush()


def make_settings(tmp: Path, url: str) -> Settings:
    return Settings(data_dir=tmp / "data", database_url=url, secret_key=SECRET, _env_file=None)


def prepare_store(url: str) -> Engine:
    """A migrated store with a user who may write (`engineer`) and one who may only read (`analyst`)."""
    store = create_store_engine(url)
    upgrade(store)
    auth.create_user(store, "engineer", PASSWORD, "integration_engineer")
    auth.create_user(store, "analyst", PASSWORD, "analyst")
    return store


def _keys(store: Engine) -> tuple[dict[str, str], dict[str, str]]:
    _, writer = auth.create_api_key(store, "engineer", "tests")
    _, reader = auth.create_api_key(store, "analyst", "tests")
    return {"Authorization": f"Bearer {writer}"}, {"Authorization": f"Bearer {reader}"}


@dataclass
class Template:
    path: Path
    writer: dict[str, str]
    reader: dict[str, str]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Template:
    """One migrated SQLite store with users and API keys, copied for each test (argon2 and Alembic once)."""
    path = tmp_path_factory.mktemp("template") / "store.db"
    store = prepare_store(f"sqlite:///{path}")
    writer, reader = _keys(store)
    with store.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    return Template(path, writer, reader)


def _serve_app(tmp: Path, url: str, store: Engine, keys, run_worker: bool) -> Iterator[Fhir]:
    settings = make_settings(tmp, url)
    with TestClient(create_app(settings, run_worker=run_worker)) as client:
        yield Fhir(client, keys[0], keys[1], store, settings)
    store.dispose()


def _from_template(tmp: Path, template: Template, run_worker: bool = False) -> Iterator[Fhir]:
    path = tmp / "store.db"
    shutil.copyfile(template.path, path)
    url = f"sqlite:///{path}"
    yield from _serve_app(tmp, url, create_store_engine(url), (template.writer, template.reader), run_worker)


@pytest.fixture
def fhir_on(tmp_path: Path, store_url: str, sqlite_template: Template) -> Iterator[Fhir]:
    """The app on each backend (SQLite, PostgreSQL, MariaDB)."""
    if store_url.startswith("sqlite"):
        yield from _from_template(tmp_path, sqlite_template)
        return
    store = prepare_store(store_url)
    yield from _serve_app(tmp_path, store_url, store, _keys(store), False)


@pytest.fixture
def fhir(tmp_path: Path, sqlite_template: Template) -> Iterator[Fhir]:
    """The app on SQLite."""
    yield from _from_template(tmp_path, sqlite_template)


@pytest.fixture
def fhir_with_worker(tmp_path: Path, sqlite_template: Template) -> Iterator[Fhir]:
    """The app on SQLite with a job worker in the process (for $export)."""
    yield from _from_template(tmp_path, sqlite_template, run_worker=True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """A real uvicorn serving the app on a loopback port (in a thread); yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
