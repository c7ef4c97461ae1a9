"""Health of the parts the hub depends on: store (reachable, migrated), analytic engine, cache tier."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy import Engine

from clinhub import __version__
from clinhub.engine import AnalyticEngine
from clinhub.errors import ClinhubError
from clinhub.platform.resilience import breaker_states
from clinhub.store import backend_name, current_revision, head_revision, ping


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: dict

    def as_dict(self) -> dict:
        return {"ok": self.ok, **self.detail}


def check_store(engine: Engine) -> Check:
    backend = backend_name(engine.url.render_as_string())
    try:
        ping(engine)
        current, head = current_revision(engine), head_revision(engine)
    except ClinhubError as exc:
        return Check(False, {"backend": backend, "error": exc.message})
    ok = current == head
    detail = {"backend": backend, "revision": current, "head": head, "migrations_pending": not ok}
    return Check(ok, detail)


def check_engine(engine: AnalyticEngine) -> Check:
    try:
        engine.fetchall("SELECT 1")
    except ClinhubError as exc:
        return Check(False, {"error": exc.message})
    return Check(True, {"duckdb": engine.version()})


def check_cache(redis_url: str | None) -> Check:
    if not redis_url:
        return Check(True, {"tiers": ["memory"]})
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
    except redis.RedisError as exc:
        # Redis is the optional second tier: its loss degrades the cache, it does not fail health
        return Check(True, {"tiers": ["memory"], "redis": f"unreachable ({type(exc).__name__})"})
    return Check(True, {"tiers": ["memory", "redis"], "redis": "ok"})


def report(store: Engine, engine: AnalyticEngine, redis_url: str | None) -> dict:
    checks = {"store": check_store(store), "engine": check_engine(engine), "cache": check_cache(redis_url)}
    healthy = all(c.ok for c in checks.values())
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        **{name: c.as_dict() for name, c in checks.items()},
        # outside services' breakers: an open one degrades a feature, not the hub, so it is shown, not failed
        "circuit_breakers": breaker_states(),
    }
