"""Settings: CLINHUB_* environment, the embedded default store, masking of secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clinhub.config import Settings


def test_default_store_is_a_sqlite_file_in_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CLINHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("CLINHUB_DATA_DIR", str(tmp_path / "d"))
    settings = Settings(_env_file=None)
    assert settings.store_url == f"sqlite:///{(tmp_path / 'd' / 'clinhub.db').resolve()}"


def test_environment_overrides_and_validation(monkeypatch) -> None:
    monkeypatch.setenv("CLINHUB_PORT", "9001")
    monkeypatch.setenv("CLINHUB_LOG_LEVEL", "debug")
    monkeypatch.setenv("CLINHUB_MLLP_PORT", "3575")
    settings = Settings(_env_file=None)
    assert (settings.port, settings.log_level, settings.mllp_port) == (9001, "DEBUG", 3575)
    monkeypatch.setenv("CLINHUB_PORT", "70000")
    with pytest.raises(ValidationError):
        Settings(_env_file=None)


def test_masked_hides_passwords_and_secrets() -> None:
    settings = Settings(
        database_url="postgresql://root:hunter2@db:5432/hub",
        redis_url="redis://:redispw@cache:6379/0",
        secret_key="topsecret",
        _env_file=None,
    )
    shown = settings.masked()
    text = " ".join(shown.values())
    for secret in ("hunter2", "redispw", "topsecret"):
        assert secret not in text
    assert shown["database_url"] == "postgresql://root:***@db:5432/hub"
    assert shown["secret_key"] == "***"
