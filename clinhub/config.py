"""Settings: every knob clinhub has, read from CLINHUB_* environment variables or a .env file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """The effective configuration of one clinhub process."""

    model_config = SettingsConfigDict(env_prefix="CLINHUB_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("clinhub-data"), description="Where the embedded store, exports and backups live."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default: a SQLite file in the data dir.",
    )
    redis_url: str | None = Field(default=None, description="Redis for the shared cache tier (optional).")
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    mllp_port: int = Field(default=2575, ge=1, le=65535, description="MLLP (HL7 v2) port.")
    log_level: LogLevel = Field(default="INFO", description="Log level.")
    secret_key: SecretStr | None = Field(default=None, description="Signing key for tokens (auth).")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @cached_property
    def store_url(self) -> str:
        """The database URL in force: the configured one, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'clinhub.db').resolve()}"

    def masked(self) -> dict[str, str]:
        """Effective settings as strings, with passwords and secrets replaced by '***'."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name == "database_url":
                value = self.store_url
            shown[name] = _mask(name, value)
        return shown


def _mask(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return "***"
    if name.endswith("_url"):
        return _mask_url(str(value))
    return str(value)


def _mask_url(url: str) -> str:
    try:
        parsed = make_url(url)
    except Exception:  # a URL we cannot parse may still hold a secret; show nothing of it
        return "***"
    if parsed.password:
        return parsed.render_as_string(hide_password=True)
    return url


def get_settings() -> Settings:
    """Read the settings afresh from the environment."""
    return Settings()
