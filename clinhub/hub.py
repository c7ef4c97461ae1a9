"""The Hub: one object holding the settings, the store and the analytic engine of a running clinhub."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from clinhub.config import Settings, get_settings
from clinhub.engine import AnalyticEngine
from clinhub.platform.auth import LoginLimiter
from clinhub.platform.cache import Cache
from clinhub.platform.perf import instrument
from clinhub.store import create_store_engine, upgrade


class Hub:
    """What the API, the CLI and the SDK share: build one per process and pass it around."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    @cached_property
    def store(self) -> Engine:
        engine = create_store_engine(self.settings.store_url, pool_size=self.settings.db_pool_size)
        instrument(engine)  # the performance advisor's query timings
        return engine

    @cached_property
    def cache(self) -> Cache:
        return Cache(redis_url=self.settings.redis_url)

    @cached_property
    def login_limiter(self) -> LoginLimiter:
        return LoginLimiter(self.settings.login_max_failures, self.settings.login_window_seconds)

    @cached_property
    def audit_queue(self):
        """Audit events of reads, appended in groups off the request path (platform.audit.AuditQueue)."""
        from clinhub.platform.audit import AuditQueue

        return AuditQueue(self.store)

    @cached_property
    def engine(self) -> AnalyticEngine:
        return AnalyticEngine(self.settings.store_url)

    def migrate(self, revision: str = "head") -> str | None:
        """Bring the store to the newest schema (or to `revision`); returns the revision it is at."""
        return upgrade(self.store, revision)

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if "audit_queue" in self.__dict__:
            self.audit_queue.close()  # before the store goes: what was queued is written
        if "engine" in self.__dict__:
            self.engine.close()
        if "cache" in self.__dict__:
            self.cache.close()
        if "store" in self.__dict__:
            self.store.dispose()
