"""The hub's cache: one interface over two tiers, in-process (TTL + LRU) and Redis (shared, optional).

Reads try the in-process tier, then Redis; a Redis hit is copied into the in-process tier. Writes and
invalidations go to both, and invalidations are broadcast on a Redis channel so other processes drop
their in-process copies too. Redis is a helper, never a dependency: when it fails the cache logs one
warning, counts the error, keeps serving from the in-process tier and tries Redis again after a pause.
Values must be JSON-serialisable (they cross process boundaries as JSON, never as pickles).
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
import redis
from cachetools import TLRUCache
from prometheus_client import Counter, Gauge

log = logging.getLogger("clinhub.cache")

CACHE_REQUESTS = Counter(
    "clinhub_cache_requests_total", "Cache lookups by tier and result", ["tier", "result"]
)
REDIS_ERRORS = Counter("clinhub_cache_redis_errors_total", "Redis operations that failed")
REDIS_UP = Gauge("clinhub_cache_redis_up", "1 while the Redis tier answers, 0 while degraded")

_MISSING = object()
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0

    def as_dict(self) -> dict:
        total = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / total, 4) if total else 0,
        }


@dataclass
class _Entry:
    value: Any
    expires_at: float


@dataclass
class _Counters:
    memory: TierStats = field(default_factory=TierStats)
    redis: TierStats = field(default_factory=TierStats)


class Cache:
    """A two-tier cache. `namespace` keeps clinhub's keys apart from anything else in the same Redis."""

    def __init__(
        self,
        *,
        maxsize: int = 10_000,
        default_ttl: float = 300.0,
        redis_url: str | None = None,
        namespace: str = "clinhub",
        retry_after: float = 5.0,
    ) -> None:
        self.default_ttl = default_ttl
        self.namespace = namespace
        self._prefix = f"{namespace}:cache:"
        self._channel = f"{namespace}:cache:invalidate"
        self._memory: TLRUCache = TLRUCache(
            maxsize=maxsize, ttu=lambda _k, entry, now: entry.expires_at, timer=time.monotonic
        )
        self._lock = threading.RLock()
        self._stats = _Counters()
        self._retry_after = retry_after
        self._redis: redis.Redis | None = None
        self._redis_down_until = 0.0
        self._listener: threading.Thread | None = None
        self._pubsub = None
        if redis_url:
            self._redis = redis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
            self._start_listener()

    # ------------------------------------------------------------------ redis plumbing
    def _redis_call(self, operation: Callable[[redis.Redis], Any]) -> Any:
        """Run `operation` on Redis, or return _MISSING while Redis is absent or degraded."""
        if self._redis is None or time.monotonic() < self._redis_down_until:
            return _MISSING
        try:
            result = operation(self._redis)
        except redis.RedisError as exc:
            REDIS_ERRORS.inc()
            REDIS_UP.set(0)
            if self._redis_down_until == 0.0:
                log.warning("cache: Redis tier unavailable (%s); serving from memory", type(exc).__name__)
            self._redis_down_until = time.monotonic() + self._retry_after
            return _MISSING
        if self._redis_down_until:
            log.warning("cache: Redis tier is back")
        self._redis_down_until = 0.0
        REDIS_UP.set(1)
        return result

    def _start_listener(self) -> None:
        def listen() -> None:
            while True:
                try:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._channel)
                    self._pubsub = pubsub
                    for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._drop_local(orjson.loads(message["data"]))
                except (redis.RedisError, ValueError, AttributeError):
                    time.sleep(self._retry_after)

        self._listener = threading.Thread(target=listen, name="cache-invalidation", daemon=True)
        self._listener.start()

    def _drop_local(self, message: dict) -> None:
        with self._lock:
            if "key" in message:
                self._memory.pop(message["key"], None)
            elif "pattern" in message:
                for key in [
                    k for k in list(self._memory.keys()) if fnmatch.fnmatchcase(k, message["pattern"])
                ]:
                    self._memory.pop(key, None)

    # ------------------------------------------------------------------ interface
    def get(self, key: str, default: Any = None) -> Any:
        now = time.monotonic()
        with self._lock:
            entry = self._memory.get(key)
        if entry is not None and entry.expires_at > now:
            self._stats.memory.hits += 1
            CACHE_REQUESTS.labels("memory", "hit").inc()
            return entry.value
        self._stats.memory.misses += 1
        CACHE_REQUESTS.labels("memory", "miss").inc()
        if self._redis is None:
            return default
        raw = self._redis_call(lambda r: r.get(self._prefix + key))
        if raw is _MISSING:
            return default
        if raw is None:
            self._stats.redis.misses += 1
            CACHE_REQUESTS.labels("redis", "miss").inc()
            return default
        self._stats.redis.hits += 1
        CACHE_REQUESTS.labels("redis", "hit").inc()
        stored = orjson.loads(raw)
        ttl = self._redis_call(lambda r: r.pttl(self._prefix + key))
        remaining = ttl / 1000 if isinstance(ttl, int) and ttl > 0 else self.default_ttl
        with self._lock:
            self._memory[key] = _Entry(stored, time.monotonic() + remaining)
        return stored

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        ttl = self.default_ttl if ttl is None else ttl
        payload = orjson.dumps(value)  # fail early, in both tiers alike, on values JSON cannot carry
        with self._lock:
            self._memory[key] = _Entry(value, time.monotonic() + ttl)
        self._redis_call(lambda r: r.set(self._prefix + key, payload, px=max(1, int(ttl * 1000))))

    def invalidate(self, key: str) -> None:
        with self._lock:
            self._memory.pop(key, None)
        self._redis_call(lambda r: r.delete(self._prefix + key))
        self._redis_call(lambda r: r.publish(self._channel, orjson.dumps({"key": key})))

    def invalidate_pattern(self, pattern: str) -> int:
        """Drop every key matching a glob pattern (`*`, `?`, `[..]`) in both tiers; returns the count."""
        with self._lock:
            doomed = [k for k in list(self._memory.keys()) if fnmatch.fnmatchcase(k, pattern)]
            for key in doomed:
                self._memory.pop(key, None)
        removed = set(doomed)

        def scan_and_delete(r: redis.Redis) -> list[str]:
            names = [
                name.decode()[len(self._prefix) :] for name in r.scan_iter(self._prefix + pattern, count=500)
            ]
            if names:
                r.delete(*(self._prefix + name for name in names))
            return names

        remote = self._redis_call(scan_and_delete)
        if remote is not _MISSING:
            removed.update(remote)
        self._redis_call(lambda r: r.publish(self._channel, orjson.dumps({"pattern": pattern})))
        return len(removed)

    def clear(self) -> int:
        return self.invalidate_pattern("*")

    def cached(self, ttl: float | None = None, key: Callable[..., str] | None = None) -> Callable[[F], F]:
        """Decorate a function so its results are cached under `name:args` (or `key(*args, **kwargs)`)."""

        def decorate(func: F) -> F:
            name = f"{func.__module__}.{func.__qualname__}"

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                cache_key = key(*args, **kwargs) if key else _default_key(name, args, kwargs)
                found = self.get(cache_key, _MISSING)
                if found is not _MISSING:
                    return found
                value = func(*args, **kwargs)
                self.set(cache_key, value, ttl)
                return value

            wrapper.cache_key_prefix = name  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate

    def stats(self) -> dict:
        with self._lock:
            size = len(self._memory)
        redis_state = "not configured"
        if self._redis is not None:
            redis_state = "degraded" if time.monotonic() < self._redis_down_until else "ok"
        return {
            "memory": {**self._stats.memory.as_dict(), "size": size, "maxsize": int(self._memory.maxsize)},
            "redis": {**self._stats.redis.as_dict(), "state": redis_state},
        }

    def close(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(redis.RedisError):
                self._pubsub.close()
        if self._redis is not None:
            self._redis.close()


def _default_key(name: str, args: tuple, kwargs: dict) -> str:
    return f"{name}:{orjson.dumps([args, kwargs], option=orjson.OPT_SORT_KEYS).decode()}"
