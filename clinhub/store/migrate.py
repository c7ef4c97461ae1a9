"""Schema migrations with Alembic: upgrade, current revision, and whether any are pending."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from clinhub.errors import StoreUnavailable

_MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the store is at, or None for an empty store."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:
        raise StoreUnavailable(f"store unreachable ({type(exc).__name__})") from None


def pending(engine: Engine) -> bool:
    """True when the store is not at the newest migration."""
    return current_revision(engine) != head_revision(engine)


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the store to `revision` (default: the newest) and return the revision it is at."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def downgrade(engine: Engine, revision: str) -> str | None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
    return current_revision(engine)
