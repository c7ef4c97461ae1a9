"""Settings: every knob clinhub has, read from CLINHUB_* environment variables or a .env file."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from clinhub.errors import ConfigError

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
    db_pool_size: int = Field(
        default=5, ge=1, le=200, description="Store connections kept open (PostgreSQL, MariaDB)."
    )
    redis_url: str | None = Field(default=None, description="Redis for the shared cache tier (optional).")
    host: str = Field(default="127.0.0.1", description="HTTP bind address.")
    port: int = Field(default=8000, ge=1, le=65535, description="HTTP port.")
    mllp_port: int = Field(default=2575, ge=1, le=65535, description="MLLP (HL7 v2) port.")
    mllp_enabled: bool = Field(
        default=False, description="Run the MLLP listener inside `clinhub serve` (or: `clinhub hl7 listen`)."
    )
    inprocess_worker: bool = Field(
        default=True, description="`clinhub serve` also runs jobs; set false when running `clinhub worker`."
    )
    log_level: LogLevel = Field(default="INFO", description="Log level.")
    log_format: Literal["json", "console"] = Field(default="json", description="Log lines as JSON or text.")
    secret_key: SecretStr | None = Field(default=None, description="Signing key for tokens (auth).")
    demo: bool = Field(
        default=False, description="Demo mode: a generated signing key is allowed. Never in production."
    )
    access_token_minutes: int = Field(default=15, ge=1, description="Lifetime of an access token.")
    refresh_token_days: int = Field(default=7, ge=1, description="Lifetime of a refresh token.")
    login_max_failures: int = Field(default=5, ge=1, description="Failed logins per user or IP per window.")
    login_window_seconds: int = Field(default=300, ge=1, description="Window of the login rate limit.")
    job_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="How often a running job marks itself alive; after 3 missed beats it is run again.",
    )
    backup_interval_hours: float = Field(
        default=0,
        ge=0,
        description="Take a backup through the job system this often (0: no scheduled backups).",
    )
    backup_keep_days: int = Field(
        default=30, ge=0, description="Scheduled backups prune those older than this many days..."
    )
    backup_keep_min: int = Field(default=7, ge=0, description="...always keeping this many newest good ones.")
    audit_reads: Literal["async", "sync"] = Field(
        default="async",
        description="Audit events of reads: appended in groups off the request path (async), or committed "
        "before each response (sync). Writes are always audited before their response.",
    )
    mentor_llm_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible chat server for the mentor (e.g. http://127.0.0.1:8080/v1); "
        "unset: templated answers.",
    )
    mentor_llm_model: str = Field(default="local-model", description="Model name sent to the LLM server.")
    mentor_llm_api_key: SecretStr | None = Field(default=None, description="Bearer key for the LLM server.")
    mentor_llm_timeout_seconds: float = Field(default=60.0, gt=0, description="Timeout of one LLM call.")
    mentor_history_turns: int = Field(
        default=10, ge=0, description="Past turns of a conversation sent with a question."
    )

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

    def token_secret(self) -> str:
        """The key that signs tokens: CLINHUB_SECRET_KEY, or in demo mode one generated in the data dir."""
        if self.secret_key is not None:
            value = self.secret_key.get_secret_value()
            if len(value) < 32:
                raise ConfigError("CLINHUB_SECRET_KEY must have at least 32 characters")
            return value
        if not self.demo:
            raise ConfigError(
                "CLINHUB_SECRET_KEY is not set; set it (at least 32 random characters) or use demo mode"
            )
        path = self.data_dir / "demo-secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

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
