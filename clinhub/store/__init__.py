"""The store: SQLAlchemy engine, schema, migrations and bulk writers over SQLite, PostgreSQL or MariaDB."""

from clinhub.store.db import backend_name, create_store_engine, normalise_url, ping
from clinhub.store.directory import count_directory, load_directory
from clinhub.store.migrate import current_revision, downgrade, head_revision, pending, upgrade
from clinhub.store.resources import LoadStats, count_resources, put_resources
from clinhub.store.schema import metadata

__all__ = [
    "LoadStats",
    "backend_name",
    "count_directory",
    "count_resources",
    "create_store_engine",
    "current_revision",
    "downgrade",
    "head_revision",
    "load_directory",
    "metadata",
    "normalise_url",
    "pending",
    "ping",
    "put_resources",
    "upgrade",
]
