"""Benchmark: reading the store from the analytic engine, attached live versus copied into DuckDB.

Runs the same three analytic queries over one synthetic hospital loaded into a SQLite store (and, with
--postgres URL, a PostgreSQL one) four ways, and prints times and ratios:
  attached  DuckDB reads the store's tables in place through its scanner (clinhub's choice)
  copy      DuckDB first copies fhir_resource into a native table, then queries it (copy time shown apart)
  native    the store's own engine runs the equivalent SQL (SQLite json_extract / PostgreSQL jsonb)
Usage: python benchmarks/engine_store_scan.py [--patients 2000] [--repeat 3] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from clinhub.engine import AnalyticEngine
from clinhub.fhir import load_ndjson
from clinhub.store import create_store_engine, upgrade
from clinhub.synth import generate

# name -> (DuckDB SQL over a table with a JSON `resource` column, SQLite SQL, PostgreSQL SQL)
QUERIES = {
    "count by type": (
        "SELECT resource_type, count(*) FROM {t} GROUP BY 1",
        "SELECT resource_type, count(*) FROM fhir_resource GROUP BY 1",
        "SELECT resource_type, count(*) FROM fhir_resource GROUP BY 1",
    ),
    "patients by gender": (
        "SELECT CAST(resource AS JSON)->>'$.gender' g, count(*) FROM {t} "
        "WHERE resource_type='Patient' GROUP BY 1",
        "SELECT json_extract(resource,'$.gender') g, count(*) FROM fhir_resource "
        "WHERE resource_type='Patient' GROUP BY 1",
        "SELECT resource->>'gender' g, count(*) FROM fhir_resource WHERE resource_type='Patient' GROUP BY 1",
    ),
    "mean value per LOINC": (
        "SELECT CAST(resource AS JSON)->>'$.code.coding[0].code' c, "
        "avg(CAST(CAST(resource AS JSON)->>'$.valueQuantity.value' AS DOUBLE)) "
        "FROM {t} WHERE resource_type='Observation' GROUP BY 1",
        "SELECT json_extract(resource,'$.code.coding[0].code') c, "
        "avg(json_extract(resource,'$.valueQuantity.value')) FROM fhir_resource "
        "WHERE resource_type='Observation' GROUP BY 1",
        "SELECT resource#>>'{code,coding,0,code}' c, avg((resource#>>'{valueQuantity,value}')::float) "
        "FROM fhir_resource WHERE resource_type='Observation' GROUP BY 1",
    ),
}


def _time(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def run(url: str, backend: str, repeat: int) -> None:
    native_col = 1 if backend == "sqlite" else 2
    store = create_store_engine(url)
    engine = AnalyticEngine(url)
    table = engine.store_table("fhir_resource")
    start = time.perf_counter()
    engine.snapshot("fhir_copy", f"SELECT * FROM {table}")
    copy_seconds = time.perf_counter() - start
    print(f"\n{backend}: copying fhir_resource into DuckDB took {copy_seconds:.3f} s")
    print(
        f"{'query':<24}{'attached':>10}{'copy':>10}{'native':>10}{'native/attached':>17}"
        f"{'copy+query/attached':>21}"
    )
    for name, sqls in QUERIES.items():
        attached = _time(lambda q=sqls[0]: engine.fetchall(q.format(t=table)), repeat)
        copied = _time(lambda q=sqls[0]: engine.fetchall(q.format(t="fhir_copy")), repeat)

        def native(q=sqls[native_col]) -> None:
            with store.connect() as conn:
                conn.execute(text(q)).all()

        native_s = _time(native, repeat)
        print(
            f"{name:<24}{attached:>10.3f}{copied:>10.3f}{native_s:>10.3f}{native_s / attached:>17.2f}"
            f"{(copy_seconds + copied) / attached:>21.2f}"
        )
    engine.close()
    store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--postgres", help="also run against this (empty) PostgreSQL database URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth"
        generate(out, patients=args.patients, seed=7)
        targets = [(f"sqlite:///{tmp}/store.db", "sqlite")]
        if args.postgres:
            targets.append((args.postgres, "postgresql"))
        for url, backend in targets:
            store = create_store_engine(url)
            upgrade(store)
            stats = load_ndjson(store, out / "fhir")
            store.dispose()
            print(f"{backend}: {stats.total:,} resources from {args.patients:,} patients")
            run(url, backend, args.repeat)


if __name__ == "__main__":
    main()
