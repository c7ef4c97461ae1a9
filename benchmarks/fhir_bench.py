"""Benchmark: the FHIR server. Bulk import speed, then read and search latency and throughput under load.

1. import: `clinhub fhir import`'s path (parser processes, index rows, history) into a fresh SQLite store,
   against a reference floor: the same lines into one plain SQLite table by raw `executemany` (no parse,
   no versions, no index), so the ratio shows what clinhub's extra work costs.
2. serve: `clinhub serve` in a subprocess on loopback; a load generator in a second process (httpx, a
   fixed number of concurrent connections, bounded in time) sends a mix of typical requests: read by id,
   Observations by patient, by code, Patients by identifier, Observations in a date range. Latency P50/P95
   per kind (under that load, and one request at a time) and requests/s.

Usage: python benchmarks/fhir_bench.py [--patients 2000] [--seconds 15] [--concurrency 8] [--work DIR]
The recorded figures (benchmarks/results.md) used --patients 10000 and --patients 100000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from clinhub.errors import ClinhubError
from clinhub.fhir.bulk import import_ndjson
from clinhub.fhir.ndjson import ndjson_paths
from clinhub.platform import auth
from clinhub.store import create_store_engine, upgrade
from clinhub.synth import generate

KINDS = ("read", "by patient", "by code", "by identifier", "by date range")


def synthesise(work: Path, patients: int) -> Path:
    out = work / f"synth-{patients}"
    if not (out / "fhir" / "Patient.ndjson").exists():
        start = time.perf_counter()
        generate(out, patients=patients, seed=42)
        print(f"synthesised {patients:,} patients in {time.perf_counter() - start:.1f} s", flush=True)
    return out / "fhir"


def reference_floor(source: Path, database: Path) -> tuple[int, float]:
    """Raw sqlite3: every line as (type, id, text) into one table with a primary key, one transaction."""
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE r (t TEXT, id TEXT, body TEXT, PRIMARY KEY (t, id))")
    start = time.perf_counter()
    rows = 0
    for path in ndjson_paths(source):
        with path.open("rb") as handle:
            batch = []
            for line in handle:
                # the cheapest honest key extraction: the synthesiser writes resourceType and id first
                head = line[:120].split(b'"', 8)
                batch.append((head[3].decode(), head[7].decode(), line.decode()))
            connection.executemany("INSERT INTO r VALUES (?, ?, ?)", batch)
            rows += len(batch)
    connection.commit()
    connection.execute("PRAGMA wal_checkpoint(FULL)")
    elapsed = time.perf_counter() - start
    connection.close()
    return rows, elapsed


def clinhub_import(source: Path, url: str) -> tuple[int, float]:
    store = create_store_engine(url)
    upgrade(store)
    start = time.perf_counter()
    stats = import_ndjson(store, source, durable_each_batch=False)
    elapsed = time.perf_counter() - start
    store.dispose()
    return stats.total, elapsed


def sample_queries(source: Path, count: int = 2000) -> dict[str, list[str]]:
    """Request paths of each kind, from the data itself (so every search finds something)."""
    rng = random.Random(7)
    patients, mrns, observations = [], [], []
    with (source / "Patient.ndjson").open("rb") as handle:
        for line in handle:
            patient = orjson.loads(line)
            patients.append(patient["id"])
            for identifier in patient.get("identifier", []):
                mrns.append(f"{identifier.get('system', '')}|{identifier['value']}")
    codes: dict[str, int] = {}
    with (source / "Observation.ndjson").open("rb") as handle:
        for number, line in enumerate(handle):
            if number % 50:
                continue
            observation = orjson.loads(line)
            observations.append(observation["id"])
            for coding in observation.get("code", {}).get("coding", []):
                codes[coding["code"]] = codes.get(coding["code"], 0) + 1
    common = sorted(codes, key=codes.get, reverse=True)[:20]
    months = [f"20{y:02d}-{m:02d}" for y in range(20, 26) for m in range(1, 13)]
    queries = {
        "read": [f"/fhir/Observation/{rng.choice(observations)}" for _ in range(count)],
        "by patient": [f"/fhir/Observation?patient={rng.choice(patients)}" for _ in range(count)],
        "by code": [f"/fhir/Observation?code=http://loinc.org|{rng.choice(common)}" for _ in range(count)],
        "by identifier": [f"/fhir/Patient?identifier={rng.choice(mrns)}" for _ in range(count)],
        "by date range": [],
    }
    for _ in range(count):
        month = rng.choice(months)
        year, mon = int(month[:4]), int(month[5:])
        following = f"{year + (mon == 12)}-{mon % 12 + 1:02d}"
        queries["by date range"].append(f"/fhir/Observation?date=ge{month}-01&date=lt{following}-01")
    return queries


async def _load(
    base: str, key: str, queries: dict, seconds: float, concurrency: int, max_requests: int
) -> list:
    results: list[tuple[str, float, int]] = []
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    rng = random.Random(11)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() < deadline and len(results) < max_requests:
                kind = rng.choice(KINDS)
                path = rng.choice(queries[kind])
                start = time.perf_counter()
                response = await client.get(path)
                results.append((kind, time.perf_counter() - start, response.status_code))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def load_process(base: str, key: str, queries: dict, seconds: float, concurrency: int, out) -> None:
    """The load generator, in its own process: bounded by time and by a request count."""
    out.put(asyncio.run(_load(base, key, queries, seconds, concurrency, max_requests=200_000)))


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (
        1000 * statistics.median(ordered),
        1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
    )


def import_figures(source: Path, work: Path, url: str, patients: int) -> None:
    floor_db = work / "floor.db"
    store_path = Path(url.removeprefix("sqlite:///"))
    for path in (floor_db, store_path):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    rows, floor_seconds = reference_floor(source, floor_db)
    total, import_seconds = clinhub_import(source, url)
    print(f"\n== bulk import into SQLite ({total:,} resources, {patients:,} patients)")
    print(f"  reference floor (raw executemany, 1 table) {rows / floor_seconds:>10,.0f} resources/s")
    print(f"  clinhub fhir import                        {total / import_seconds:>10,.0f} resources/s")
    ratio = (total / import_seconds) / (rows / floor_seconds)
    print(f"  ratio clinhub / floor                      {ratio:>10.2f}")


def commit_latency(database: Path, count: int = 40) -> tuple[float, float]:
    """How long one tiny durable commit takes here: the floor under every audited request."""
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        connection.execute("INSERT INTO t VALUES (1)")
        connection.commit()
        samples.append(time.perf_counter() - start)
    connection.close()
    return _percentiles(samples)


def engine_times(url: str, queries: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    """Latency of the search layer itself (clinhub.fhir.search and the searchset builder)."""
    from urllib.parse import parse_qsl, urlsplit

    from clinhub.fhir import repository
    from clinhub.fhir.responses import searchset
    from clinhub.fhir.search import parse_search, run_search

    store = create_store_engine(url)
    found = {}
    for kind in KINDS:
        samples = []
        for path in queries[kind][:220]:
            parts = urlsplit(path)
            segments = parts.path.split("/")[2:]
            start = time.perf_counter()
            with store.connect() as conn:
                if len(segments) == 2:
                    repository.read(conn, segments[0], segments[1])
                else:
                    request = parse_search(segments[0], parse_qsl(parts.query))
                    searchset(run_search(conn, request), request, "http://127.0.0.1/fhir")
            samples.append(time.perf_counter() - start)
        found[kind] = _percentiles(samples[20:])
    store.dispose()
    return found


def serve(url: str, work: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "CLINHUB_DATABASE_URL": url,
        "CLINHUB_DATA_DIR": str(work / "data"),
        "CLINHUB_SECRET_KEY": "b" * 40,
        "CLINHUB_LOG_LEVEL": "WARNING",
        "CLINHUB_MLLP_ENABLED": "false",
        "CLINHUB_INPROCESS_WORKER": "false",
    }
    command = [sys.executable, "-m", "clinhub", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--work", type=Path, default=None, help="Keep synthetic data and stores here.")
    parser.add_argument(
        "--reuse-store", action="store_true", help="Skip the import when --work holds a store from a run."
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    source = synthesise(work, args.patients)

    store_path = work / "clinhub.db"
    url = f"sqlite:///{store_path}"
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if not (args.reuse_store and store_path.exists()):
        import_figures(source, work, url, args.patients)
    p50, p95 = commit_latency(work / "commit.db")
    print(f"\n== a durable commit on this disk (synchronous=FULL, WAL): P50 {p50:.1f} ms, P95 {p95:.1f} ms")
    print("   (every HTTP request below commits one audit event)")

    store = create_store_engine(url)
    with contextlib.suppress(ClinhubError):  # a reused store has the user already
        auth.create_user(store, "bench", "a long enough password", "analyst")
    _, key = auth.create_api_key(store, "bench", "bench")
    with store.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    store.dispose()
    queries = sample_queries(source)
    print("\n== search engine alone: parse, SQL, Bundle bytes; no HTTP, no audit (P50 / P95 ms, 200 each)")
    for kind, (p50, p95) in engine_times(url, queries).items():
        print(f"  {kind:<15} {p50:7.1f} {p95:7.1f}")
    server = serve(url, work, args.port)
    base = f"http://127.0.0.1:{args.port}"
    try:
        sequential: dict[str, list[float]] = {kind: [] for kind in KINDS}
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            for kind in KINDS:
                for path in queries[kind][:5]:
                    client.get(path)  # warm the page cache and the server's imports
                for path in queries[kind][5:105]:
                    start = time.perf_counter()
                    response = client.get(path)
                    sequential[kind].append(time.perf_counter() - start)
                    assert response.status_code == 200, (path, response.status_code)
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        loader = context.Process(
            target=load_process, args=(base, key, queries, args.seconds, args.concurrency, out)
        )
        started = time.perf_counter()
        loader.start()
        results = out.get(timeout=args.seconds + 120)
        loader.join(30)
        elapsed = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    errors = sum(1 for _, _, status in results if status != 200)
    print("\n== over HTTP, one request at a time (P50 / P95 ms, 100 requests each; audit event included)")
    for kind in KINDS:
        p50, p95 = _percentiles(sequential[kind])
        print(f"  {kind:<15} {p50:7.1f} {p95:7.1f}")
    print(f"\n== under load: {args.concurrency} connections for {args.seconds:.0f} s from a second process")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"  {len(results):,} requests, {len(results) / elapsed:,.0f} requests/s, {errors} errors")
    for kind in KINDS:
        samples = [latency for k, latency, _ in results if k == kind]
        if samples:
            p50, p95 = _percentiles(samples)
            print(f"  {kind:<15} {p50:7.1f} {p95:7.1f}   ({len(samples):,} requests)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
