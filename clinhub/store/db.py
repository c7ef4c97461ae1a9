"""Connecting to the store: one SQLAlchemy engine per URL, with the settings each backend needs."""

from __future__ import annotations

from pathlib import Path

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from clinhub.errors import ConfigError, StoreUnavailable

# URLs users type map to the drivers we ship: psycopg 3 for PostgreSQL, PyMySQL for MariaDB/MySQL.
_DRIVER_ALIASES = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def normalise_url(url: str) -> str:
    """Return `url` with the driver clinhub ships for its backend, so `postgresql://...` just works."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"database URL is not valid: {exc}") from None
    driver = _DRIVER_ALIASES.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def backend_name(url: str) -> str:
    """'sqlite', 'postgresql' or 'mysql' (MariaDB included) for a store URL."""
    name = make_url(url).get_backend_name()
    return "mysql" if name == "mariadb" else name


def _json_dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def create_store_engine(url: str, *, pool_size: int = 5) -> Engine:
    """A SQLAlchemy engine for the store at `url`; SQLite files get WAL and full fsync."""
    url = normalise_url(url)
    parsed = make_url(url)
    kwargs: dict = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads, "future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=10, pool_pre_ping=True, pool_recycle=1800)
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5}
        else:
            kwargs["connect_args"] = {"connect_timeout": 5, "charset": "utf8mb4"}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(f"cannot use database URL: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets DuckDB and readers scan while the hub writes; synchronous=FULL keeps a commit durable
    # through power loss, which "ACK only after commit" relies on.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def ping(engine: Engine) -> None:
    """Raise StoreUnavailable unless the store answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise StoreUnavailable(f"store unreachable ({type(exc).__name__})") from None
