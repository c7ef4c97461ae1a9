"""The two-tier cache: memory TTL+LRU, a real Redis shared between instances, and Redis dying mid-test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid

import pytest

from clinhub.platform.cache import Cache


def test_memory_tier_ttl_and_lru() -> None:
    cache = Cache(maxsize=2, default_ttl=60)
    cache.set("a", 1)
    cache.set("b", {"x": [1, 2]}, ttl=0.05)
    assert cache.get("a") == 1 and cache.get("b") == {"x": [1, 2]}
    time.sleep(0.08)
    assert cache.get("b") is None  # expired
    cache.set("c", 3)
    cache.set("d", 4)  # evicts the least recently used
    assert cache.get("a") is None and cache.get("d") == 4
    stats = cache.stats()
    assert stats["memory"]["hits"] >= 3 and stats["memory"]["misses"] >= 2
    assert stats["redis"]["state"] == "not configured"


def test_invalidate_by_key_and_pattern_and_decorator() -> None:
    cache = Cache()
    calls: list[int] = []

    @cache.cached(ttl=60)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    assert cache.invalidate_pattern(square.cache_key_prefix + ":*") == 2
    assert square(3) == 9 and calls == [3, 4, 3]
    cache.set("patient:1", 1)
    cache.invalidate("patient:1")
    assert cache.get("patient:1", "gone") == "gone"


def test_values_must_be_json() -> None:
    with pytest.raises(TypeError):
        Cache().set("k", object())


def test_redis_tier_is_shared_between_processes(redis_url: str) -> None:
    namespace = f"t{uuid.uuid4().hex[:8]}"
    one, two = (
        Cache(redis_url=redis_url, namespace=namespace),
        Cache(redis_url=redis_url, namespace=namespace),
    )
    try:
        one.set("report", {"score": 97.5}, ttl=30)
        assert two.get("report") == {"score": 97.5}  # from Redis, then kept in two's memory tier
        assert two.stats()["redis"]["hits"] == 1
        time.sleep(0.3)  # let two's invalidation listener subscribe
        one.invalidate("report")
        deadline = time.monotonic() + 3
        while two.get("report") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert two.get("report") is None  # the broadcast dropped two's in-memory copy
        one.set("q:1", 1)
        one.set("q:2", 2)
        assert two.invalidate_pattern("q:*") == 2
        deadline = time.monotonic() + 3
        while one.get("q:1") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert one.get("q:1") is None and one.get("q:2") is None
    finally:
        one.clear()
        one.close()
        two.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(redis_url: str):
    """A Redis server of the test's own, so the test may kill it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not installed")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield process, f"redis://127.0.0.1:{port}/0"
    process.kill()
    process.wait()


def test_redis_outage_degrades_to_memory_without_errors(private_redis, caplog) -> None:
    process, url = private_redis
    cache = Cache(redis_url=url, retry_after=0.2)
    cache.set("k", "v")
    assert cache.stats()["redis"]["state"] == "ok"
    process.kill()
    process.wait()
    cache.set("k2", "v2")  # Redis is gone: no exception, memory still serves
    assert cache.get("k2") == "v2"
    assert cache.get("never-set") is None
    assert cache.stats()["redis"]["state"] == "degraded"
    assert any("Redis tier unavailable" in r.message for r in caplog.records)
    cache.close()
