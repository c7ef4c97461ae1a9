"""Shared fixtures: a fresh store on SQLite, PostgreSQL and MariaDB; services required in CI."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clinhub.config import Settings

REQUIRE_SERVICES = os.environ.get("CLINHUB_REQUIRE_SERVICES") == "1"
PG_ADMIN = os.environ.get("CLINHUB_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
MARIA_ADMIN = os.environ.get("CLINHUB_TEST_MARIADB", "mariadb+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("CLINHUB_TEST_REDIS", "redis://127.0.0.1:6379/15")
SHARED = Path(__file__).resolve().parents[2] / "shared"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, with CLINHUB_REQUIRE_SERVICES=1, fail) when a service is not listening."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}, and CLINHUB_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    need_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"clinhub_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    need_service("MariaDB", "127.0.0.1", 3306)
    name = f"clinhub_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(MARIA_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        yield MARIA_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The same test on each store backend, each a fresh, empty database."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def redis_url() -> str:
    need_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=sqlite_url, _env_file=None)
