"""Benchmark (issue #7): the provider-directory rule set over N provider + affiliation records.

Data: made by DuckDB SQL in seconds (not by clinhub.synth, which is built for realism, not volume):
40% of the records are providers, 60% affiliations (1.5 per provider), one facility per 1,000 providers,
and about 2% of providers carry each kind of defect the rule set looks for (bad NPIs, e-mails, phones,
names, dates, affiliation anomalies, orphans). The tables go to a DuckDB file and, with --sqlite, to a
SQLite store too.

- clinhub (DuckDB file): the rule set's tables attached as `store` from the DuckDB file; the run copies
  them into its own schema and runs all 38 checks concurrently (`run_checks`), as in production.
- clinhub (SQLite store): the same run over a migrated SQLite store through DuckDB's sqlite scanner.
- peers (--peers): equivalent checks in pandera (Polars backend) and cuallee (DuckDB backend), in a venv
  of their own (created on first use with pinned versions) over a Parquet copy of the same tables; each
  implements what it can express (listed in its output), so its count of checks is printed beside it.

Printed: seconds per run (median of --repeat), records per second, and peer time / clinhub time.
Goal (issue #7): 10M records in under 10 s on this 2-core machine; at least 5x the fastest peer.

Usage: python benchmarks/quality_bench.py [--records 1000000] [--repeat 3] [--sqlite] [--peers]
       [--data-dir DIR] [--peers-venv DIR]
"""

# ruff: noqa: E501 - the data-making SQL and the peers' script read better with long lines

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import duckdb

from clinhub.engine import AnalyticEngine
from clinhub.engine.duck import _extension_path
from clinhub.quality import load_ruleset, run_checks

AS_OF = date(2025, 6, 30)
PEERS = {
    "pandera[polars]": "0.35.0",
    "cuallee": "0.15.4",
    "polars": "2.1.0",
    "pyarrow": "26.0.1",
    "numpy": "2.4.6",
}

# The digits of the 9-digit base at positions 1, 3, 5, 7, 9 are doubled by the NPI's Luhn (prefix 80840).
_LUHN_SUM = " + ".join(
    f"((2 * CAST(substr(b, {i}, 1) AS INTEGER)) // 10 + (2 * CAST(substr(b, {i}, 1) AS INTEGER)) % 10)"
    if i % 2
    else f"CAST(substr(b, {i}, 1) AS INTEGER)"
    for i in range(1, 10)
)

_PROVIDERS = f"""
CREATE OR REPLACE TABLE provider AS
WITH base AS (
    SELECT i, '1' || lpad(CAST((i * 7919 + 12345) % 100000000 AS VARCHAR), 8, '0') AS b,
           hash(i) % 1000 AS r, hash(i * 31 + 7) % 1000 AS r2,
           ['Mary','John','Ana','Wei','Omar','Lena','Raj','Kim'][1 + i % 8] AS first_name,
           ['Smith','Garcia','Chen','Okafor','Novak','Haddad','Silva','Ivanova'][1 + (i // 8) % 8] AS last_name,
           CASE WHEN i % 3 = 0 THEN 'Lee' END AS middle_name,
           1955 + i % 40 AS birth_year
    FROM range(1, $providers + 1) t(i)
), npi AS (
    SELECT *, b || CAST((10 - (24 + {_LUHN_SUM}) % 10) % 10 AS VARCHAR) AS good_npi FROM base
)
SELECT
    'P' || lpad(CAST(i AS VARCHAR), 8, '0') AS provider_id,
    CASE WHEN r < 20 THEN NULL
         WHEN r < 40 THEN substr(good_npi, 1, 9)
         WHEN r < 60 THEN substr(good_npi, 1, 9) || CAST((CAST(right(good_npi, 1) AS INTEGER) + 1) % 10 AS VARCHAR)
         WHEN r < 80 THEN '1' || lpad(CAST(((i - 1) * 7919 + 12345) % 100000000 AS VARCHAR), 8, '0') || '0'
         ELSE good_npi END AS npi,
    first_name, middle_name, last_name,
    CASE WHEN r2 < 20 THEN first_name || ' Doe' ELSE concat_ws(' ', first_name, middle_name, last_name) END
        AS full_name,
    CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END AS gender,
    birth_year,
    CASE WHEN r2 BETWEEN 20 AND 39 THEN birth_year + 15 ELSE birth_year + 26 END AS graduation_year,
    'Family Medicine' AS specialty,
    'MD' || lpad(CAST(i % 1000000 AS VARCHAR), 6, '0') AS license_number,
    'MA' AS license_state,
    CASE WHEN r2 BETWEEN 40 AND 59 THEN DATE '2024-01-01' ELSE DATE '2027-01-01' END AS license_expiry,
    CASE WHEN r2 BETWEEN 60 AND 79 THEN NULL
         WHEN r2 BETWEEN 80 AND 99 THEN lower(first_name) || '.' || lower(last_name) || i || 'mercy.org'
         WHEN r2 BETWEEN 100 AND 119 THEN lower(first_name) || i || '@example.com'
         ELSE lower(first_name) || '.' || lower(last_name) || i || '@mercy.org' END AS email,
    CASE WHEN r2 BETWEEN 120 AND 139 THEN '555-' || lpad(CAST(i % 10000 AS VARCHAR), 4, '0')
         ELSE '(617) ' || CAST(200 + (i // 10000) % 700 AS VARCHAR) || '-' || lpad(CAST(i % 10000 AS VARCHAR), 4, '0')
         END AS phone,
    r2 < 970 AS active
FROM npi
"""

_FACILITIES = """
CREATE OR REPLACE TABLE facility AS
SELECT 'F' || lpad(CAST(j AS VARCHAR), 6, '0') AS facility_id, 'Facility ' || j AS name,
       '2000000000' AS npi, 'clinic' AS facility_type, j || ' Main St' AS address, 'Boston' AS city,
       'MA' AS state, '02110' AS postal_code, '(617) 555-' || lpad(CAST(j % 10000 AS VARCHAR), 4, '0') AS phone,
       TRUE AS active
FROM range(1, $facilities + 1) t(j)
"""

# Every provider gets one primary active affiliation and every second a secondary one; then anomalies.
_AFFILIATIONS = """
CREATE OR REPLACE TABLE affiliation AS
WITH p AS (SELECT provider_id, CAST(substr(provider_id, 2) AS BIGINT) AS i, hash(provider_id) % 1000 AS r
           FROM provider)
SELECT 'A' || substr(provider_id, 2) || '01' AS affiliation_id, provider_id,
       'F' || lpad(CAST(1 + i % $facilities AS VARCHAR), 6, '0') AS facility_id,
       r >= 20 AS is_primary, DATE '2015-01-01' AS start_date,
       CASE WHEN r BETWEEN 20 AND 39 THEN DATE '2020-01-01' END AS end_date, NOT (r BETWEEN 20 AND 39) AS active
FROM p
UNION ALL
SELECT 'A' || substr(provider_id, 2) || '02', provider_id,
       'F' || lpad(CAST(1 + (i * 7) % $facilities AS VARCHAR), 6, '0'),
       r BETWEEN 40 AND 59, DATE '2018-01-01', NULL, NOT (r BETWEEN 20 AND 39)
FROM p WHERE i % 2 = 0 OR r BETWEEN 40 AND 59
UNION ALL
SELECT 'A' || substr(provider_id, 2) || lpad(CAST(k AS VARCHAR), 2, '0'), provider_id,
       'F' || lpad(CAST(1 + (i + k) % $facilities AS VARCHAR), 6, '0'), FALSE, DATE '2019-01-01', NULL, TRUE
FROM p, range(3, 13) t(k) WHERE r BETWEEN 60 AND 61
UNION ALL
SELECT 'AX' || substr(provider_id, 2), 'PX' || substr(provider_id, 2), 'F000001', TRUE, DATE '2019-01-01',
       NULL, TRUE
FROM p WHERE r BETWEEN 62 AND 71
"""

_ACTIVITIES = """
CREATE OR REPLACE TABLE activity AS
SELECT 'ACT' || lpad(CAST(i AS VARCHAR), 9, '0') AS activity_id, provider_id, NULL::VARCHAR AS facility_id,
       'consult' AS activity_type, DATE '2025-01-01' AS activity_date, 1 AS volume
FROM (SELECT provider_id, row_number() OVER () AS i FROM provider WHERE hash(provider_id) % 100 = 0)
"""


def make_data(folder: Path, records: int) -> dict[str, int]:
    """The four directory tables in folder/directory.duckdb (reused when already made for `records`)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "directory.duckdb"
    stamp = folder / "records.txt"
    if path.exists() and stamp.exists() and stamp.read_text() == str(records):
        with duckdb.connect(str(path), read_only=True) as conn:
            return {t: conn.sql(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES}
    path.unlink(missing_ok=True)
    providers = max(10, int(records * 0.4))
    facilities = max(3, providers // 1000)
    with duckdb.connect(str(path)) as conn:
        for sql in (_PROVIDERS, _FACILITIES, _AFFILIATIONS, _ACTIVITIES):
            conn.execute(sql.replace("$providers", str(providers)).replace("$facilities", str(facilities)))
        counts = {t: conn.sql(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _TABLES}
        for table in _TABLES:
            conn.execute(f"COPY {table} TO '{folder / table}.parquet' (FORMAT parquet)")
    stamp.write_text(str(records))
    return counts


_TABLES = ("provider", "facility", "affiliation", "activity")


#: the rule set's checks that the peers' scripts also implement (the like-for-like comparison)
PEER_SUBSET = (
    "provider.id.primary_key",
    "provider.npi.required",
    "provider.npi.format",
    "provider.last_name.required",
    "provider.gender.value_set",
    "provider.email.required",
    "provider.email.syntax",
    "provider.phone.plausible",
    "provider.license.state",
    "provider.birth_year.plausible",
    "facility.id.primary_key",
    "facility.npi.format",
    "affiliation.id.primary_key",
)


def run_clinhub_duckdb(data: Path, subset: tuple[str, ...] = ()) -> tuple[float, dict]:
    rules = load_ruleset("directory")
    if subset:
        rules = replace(rules, checks=tuple(c for c in rules.checks if c.id in subset))
    with AnalyticEngine() as engine:
        with engine.cursor() as cur:
            cur.execute(f"ATTACH '{data / 'directory.duckdb'}' AS store (READ_ONLY)")
        started = time.perf_counter()
        result = run_checks(engine, rules, as_of=AS_OF)
        seconds = time.perf_counter() - started
    return seconds, result.counts()


def make_sqlite_store(data: Path) -> str:
    """A migrated SQLite store holding the same tables (made once; built aside, then renamed)."""
    from clinhub.store import create_store_engine, upgrade

    path = data / "store.db"
    if not path.exists():
        building = data / "store.building.db"
        building.unlink(missing_ok=True)
        store = create_store_engine(f"sqlite:///{building}")
        upgrade(store)
        store.dispose()
        with duckdb.connect() as conn:
            # the scanner ships in a wheel (no extension downloads here), as the analytic engine loads it
            conn.execute(f"LOAD '{_extension_path('duckdb_extension_sqlite_scanner', 'sqlite_scanner')}'")
            conn.execute(f"ATTACH '{building}' AS s (TYPE sqlite)")
            conn.execute(f"ATTACH '{data / 'directory.duckdb'}' AS d (READ_ONLY)")
            for table in _TABLES:
                conn.execute(f"INSERT INTO s.{table} SELECT * FROM d.{table}")
        building.rename(path)
    return f"sqlite:///{path}"


def run_clinhub_sqlite(url: str) -> tuple[float, dict]:
    rules = load_ruleset("directory")
    with AnalyticEngine(url) as engine:
        started = time.perf_counter()
        result = run_checks(engine, rules, as_of=AS_OF)
        seconds = time.perf_counter() - started
    return seconds, result.counts()


# ------------------------------------------------------------------ peers (run in their own venv)
_PEER_SCRIPT = r"""
import json, sys, time
from pathlib import Path
import polars as pl
data, tool = Path(sys.argv[1]), sys.argv[2]
started = time.perf_counter()
p = pl.read_parquet(data / "provider.parquet"); f = pl.read_parquet(data / "facility.parquet")
a = pl.read_parquet(data / "affiliation.parquet")
EMAIL = r"^[A-Za-z0-9!#$%&*+/=?^_{|}~-]+(\.[A-Za-z0-9!#$%&*+/=?^_{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
PHONE = r"^(\+?1[ .-]?)?\(?[2-9][0-9]{2}\)?[ .-]?[2-9]([02-9][0-9]|1[02-9])[ .-]?[0-9]{4}$"
checks = 0
if tool == "pandera":
    import pandera.polars as pa
    schema = pa.DataFrameSchema({
        "provider_id": pa.Column(str, unique=True, nullable=False),
        "npi": pa.Column(str, [pa.Check.str_matches(r"^[0-9]{10}$")], nullable=False),
        "last_name": pa.Column(str, nullable=False),
        "gender": pa.Column(str, pa.Check.isin(["F", "M", "O", "U"]), nullable=True),
        "email": pa.Column(str, [pa.Check.str_matches(EMAIL)], nullable=False),
        "phone": pa.Column(str, pa.Check.str_matches(PHONE), nullable=True),
        "license_state": pa.Column(str, pa.Check.str_matches(r"^[A-Z]{2}$"), nullable=True),
        "birth_year": pa.Column(int, pa.Check.in_range(1925, 2007), nullable=True),
    })
    try:
        schema.validate(p, lazy=True)
    except pa.errors.SchemaErrors:
        pass
    fschema = pa.DataFrameSchema({"facility_id": pa.Column(str, unique=True),
                                  "npi": pa.Column(str, pa.Check.str_matches(r"^[0-9]{10}$"))})
    try:
        fschema.validate(f, lazy=True)
    except pa.errors.SchemaErrors:
        pass
    ascm = pa.DataFrameSchema({"affiliation_id": pa.Column(str, unique=True)})
    try:
        ascm.validate(a, lazy=True)
    except pa.errors.SchemaErrors:
        pass
    checks = 11
elif tool == "cuallee":
    import duckdb
    from cuallee import Check, CheckLevel
    conn = duckdb.connect()
    conn.register("provider", p.to_arrow()); conn.register("facility", f.to_arrow())
    conn.register("affiliation", a.to_arrow())
    c = Check(CheckLevel.WARNING, "provider")
    c.table_name = "provider"
    c.is_complete("provider_id").is_unique("provider_id").is_complete("npi").is_unique("npi")
    c.has_pattern("npi", r"^[0-9]{10}$").is_complete("last_name").is_contained_in("gender", ("F", "M", "O", "U"))
    c.is_complete("email").has_pattern("email", EMAIL).is_unique("email").has_pattern("phone", PHONE)
    c.is_unique("phone").has_pattern("license_state", r"^[A-Z]{2}$").is_between("birth_year", (1925, 2007))
    c.validate(conn)
    fc = Check(CheckLevel.WARNING, "facility"); fc.table_name = "facility"
    fc.is_complete("facility_id").is_unique("facility_id").is_complete("npi").has_pattern("npi", r"^[0-9]{10}$")
    fc.validate(conn)
    ac = Check(CheckLevel.WARNING, "affiliation"); ac.table_name = "affiliation"
    ac.is_complete("affiliation_id").is_unique("affiliation_id")
    ac.validate(conn)
    checks = 20
print(json.dumps({"seconds": time.perf_counter() - started, "checks": checks}))
"""


def peers_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pins = [f"{name}=={version}" for name, version in PEERS.items()]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins, "duckdb==1.5.5"], check=True)
    return python


def run_peer(python: Path, data: Path, tool: str) -> tuple[float, int]:
    script = data / "peer.py"
    script.write_text(_PEER_SCRIPT)
    out = subprocess.run(
        [str(python), str(script), str(data), tool], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"{tool} failed: {out.stderr.strip().splitlines()[-1:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return found["seconds"], found["checks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default="1000000", help="Comma-separated record counts.")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true", help="Also run over a SQLite store.")
    parser.add_argument("--peers", action="store_true", help="Also run pandera and cuallee.")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "clinhub-quality-bench"
    )
    parser.add_argument(
        "--peers-venv", type=Path, default=Path(tempfile.gettempdir()) / "clinhub-quality-peers"
    )
    args = parser.parse_args()
    print(f"cpus: {os.cpu_count()}, duckdb {duckdb.__version__}")
    for records in (int(r) for r in args.records.split(",")):
        data = args.data_dir / str(records)
        started = time.perf_counter()
        counts = make_data(data, records)
        total = counts["provider"] + counts["affiliation"]
        print(f"\n{records:,} records requested: {counts} (made in {time.perf_counter() - started:.1f} s)")
        times = []
        for _ in range(args.repeat):
            seconds, statuses = run_clinhub_duckdb(data)
            times.append(seconds)
        clinhub = statistics.median(times)
        print(
            f"clinhub (DuckDB file): {clinhub:.2f} s, {total / clinhub:,.0f} provider+affiliation records/s, "
            f"38 checks {statuses}"
        )
        if args.sqlite:
            url = make_sqlite_store(data)
            runs = [run_clinhub_sqlite(url) for _ in range(args.repeat)]
            seconds = statistics.median(r[0] for r in runs)
            print(
                f"clinhub (SQLite store): {seconds:.2f} s ({seconds / clinhub:.1f}x the DuckDB file), {runs[0][1]}"
            )
        if args.peers:
            subset = statistics.median(run_clinhub_duckdb(data, PEER_SUBSET)[0] for _ in range(args.repeat))
            print(f"clinhub, the {len(PEER_SUBSET)} checks the peers implement: {subset:.2f} s")
            python = peers_python(args.peers_venv)
            for tool in ("pandera", "cuallee"):
                try:
                    runs = [run_peer(python, data, tool) for _ in range(args.repeat)]
                except RuntimeError as exc:
                    print(f"{tool}: {exc}")
                    continue
                seconds = statistics.median(r[0] for r in runs)
                print(
                    f"{tool}: {seconds:.2f} s for {runs[0][1]} checks; peer / clinhub: "
                    f"{seconds / clinhub:.2f} (whole rule set), {seconds / subset:.2f} (same checks)"
                )


if __name__ == "__main__":
    main()
