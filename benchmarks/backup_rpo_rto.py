"""Benchmark: backup time (bounds the RPO) and restore + verify time (the RTO) of a synthetic hospital.

Generates N patients with clinhub.synth, loads their FHIR resources into a SQLite store (and, with
--postgres URL or --mariadb URL, into a fresh database on that server), then times, per backend:
  backup   create_backup while a feed keeps writing (the RPO is at most the backup interval plus this)
  verify   checksums, a test restore into a scratch database, row counts compared with the manifest
  restore  restore_backup into the store, counts checked (the RTO; add verify when you verify first)
and prints times, sizes, the feed's writes during the backup, and ratios to the targets the HL7
integration platform claimed (RPO 60 min, RTO 30 min).
Usage: python benchmarks/backup_rpo_rto.py [--patients 100000] [--seed 42] [--postgres URL] [--mariadb URL]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from clinhub.config import Settings
from clinhub.fhir import load_ndjson
from clinhub.hub import Hub
from clinhub.platform import backup
from clinhub.store import metadata, normalise_url, put_resources
from clinhub.synth import generate

CLAIMED_RPO_MINUTES = 60
CLAIMED_RTO_MINUTES = 30


class Feed(threading.Thread):
    """An interface that keeps writing small batches of Observations while the backup runs."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(daemon=True)
        self.hub = hub
        self.written = 0
        self.halt = threading.Event()

    def run(self) -> None:
        batch_no = 0
        while not self.halt.is_set():
            batch = [
                {"resourceType": "Observation", "id": f"feed-{batch_no}-{i}", "status": "final"}
                for i in range(10)
            ]
            put_resources(self.hub.store, batch)
            self.written += len(batch)
            batch_no += 1


@contextmanager
def server_database(url: str, backend: str) -> Iterator[str]:
    """A fresh database on the server at `url`, dropped afterwards."""
    name = f"clinhub_bench_{uuid.uuid4().hex[:10]}"
    url = normalise_url(url)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = f'"{name}"' if backend == "postgresql" else f"`{name}`"
    with admin.connect() as conn:
        conn.execute(
            text(f"CREATE DATABASE {quoted}" + ("" if backend == "postgresql" else " CHARACTER SET utf8mb4"))
        )
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        drop = f"DROP DATABASE IF EXISTS {quoted}" + (" WITH (FORCE)" if backend == "postgresql" else "")
        with admin.connect() as conn:
            conn.execute(text(drop))
        admin.dispose()


def store_size(hub: Hub, backend: str) -> int:
    if backend == "sqlite":
        database = Path(make_url(hub.settings.store_url).database)
        return sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
    with hub.store.connect() as conn:
        if backend == "postgresql":
            return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())
        # InnoDB's sizes in information_schema are estimates until the tables are analysed
        quote = hub.store.dialect.identifier_preparer.quote
        conn.execute(text("ANALYZE TABLE " + ", ".join(quote(name) for name in metadata.tables)))
        query = (
            "SELECT sum(data_length + index_length) FROM information_schema.tables "
            "WHERE table_schema = database()"
        )
        return int(conn.execute(text(query)).scalar_one())


def mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def run(label: str, backend: str, url: str, fhir_dir: Path, data_dir: Path) -> dict:
    hub = Hub(Settings(data_dir=data_dir, database_url=url, _env_file=None))
    try:
        hub.migrate()
        start = time.perf_counter()
        stats = load_ndjson(hub.store, fhir_dir)
        load_seconds = time.perf_counter() - start
        print(f"{label}: loaded {stats.total:,} resources in {load_seconds:.1f} s", flush=True)

        feed = Feed(hub)
        feed.start()
        time.sleep(0.5)  # let the feed get going, so the backup really runs under writes
        written_before = feed.written
        start = time.perf_counter()
        info = backup.create_backup(hub)
        backup_seconds = time.perf_counter() - start
        written_during = feed.written - written_before
        feed.halt.set()
        feed.join()
        manifest = backup.Manifest.model_validate_json((Path(info.path) / backup.MANIFEST).read_bytes())

        start = time.perf_counter()
        verified = backup.verify_backup(hub, info.id)
        verify_seconds = time.perf_counter() - start
        if not verified.ok:
            raise SystemExit(f"{label}: verification failed: {verified.reason}")

        start = time.perf_counter()
        restored = backup.restore_backup(hub, info.id)
        restore_seconds = time.perf_counter() - start
        if not restored.ok:
            raise SystemExit(f"{label}: restore did not match the manifest: {restored.reason}")
        return {
            "label": label,
            "rows": sum(manifest.tables.values()),
            "store": store_size(hub, backend),
            "backup_size": info.size_bytes,
            "load": load_seconds,
            "backup": backup_seconds,
            "feed": written_during,
            "verify": verify_seconds,
            "restore": restore_seconds,
        }
    finally:
        hub.close()
        shutil.rmtree(data_dir, ignore_errors=True)  # a 100k-patient store is many GB; free it for the next


def report(results: list[dict], patients: int) -> None:
    print(f"\nbackup and restore of {patients:,} synthetic patients")
    print(
        f"{'store':<12}{'rows':>12}{'store size':>13}{'backup size':>13}{'backup s':>10}"
        f"{'feed writes':>13}{'verify s':>10}{'restore s':>11}{'RTO s':>9}{'RTO/claim':>11}"
    )
    for r in results:
        rto = r["restore"] + r["verify"]
        print(
            f"{r['label']:<12}{r['rows']:>12,}{mb(r['store']):>13}{mb(r['backup_size']):>13}"
            f"{r['backup']:>10.1f}{r['feed']:>13,}{r['verify']:>10.1f}{r['restore']:>11.1f}{rto:>9.1f}"
            f"{rto / (CLAIMED_RTO_MINUTES * 60):>11.2%}"
        )
    print(
        "\nfeed writes: resources another thread committed while the backup ran (it is online).\n"
        "RPO: a backup holds the store as of its start and is usable from its end, so with a backup every\n"
        "T minutes the worst loss is T + backup time. RTO: verify (test restore) + restore.\n"
        f"To meet the claimed RPO of {CLAIMED_RPO_MINUTES} min, back up at least every:"
    )
    for r in results:
        interval = CLAIMED_RPO_MINUTES - r["backup"] / 60
        share = r["backup"] / (CLAIMED_RPO_MINUTES * 60)
        print(f"  {r['label']:<12}{interval:.1f} min (backup time / RPO = {share:.2%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--postgres", help="PostgreSQL URL of a server to create a scratch database on")
    parser.add_argument("--mariadb", help="MariaDB URL of a server to create a scratch database on")
    parser.add_argument("--no-sqlite", action="store_true", help="Only the server stores given.")
    parser.add_argument(
        "--synth-dir", type=Path, help="Keep the synthetic hospital here and reuse it when it is there."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clinhub-bench-backup-") as tmp:
        root = Path(tmp)
        synth_dir = args.synth_dir or root / "synth"
        if not (synth_dir / "manifest.json").is_file():
            start = time.perf_counter()
            generate(synth_dir, patients=args.patients, seed=args.seed)
            print(f"generated {args.patients:,} patients in {time.perf_counter() - start:.1f} s", flush=True)
        fhir_dir = synth_dir / "fhir"
        results = []
        if not args.no_sqlite:
            sqlite_url = f"sqlite:///{root / 'sqlite' / 'clinhub.db'}"
            results.append(run("sqlite", "sqlite", sqlite_url, fhir_dir, root / "sqlite"))
            print(results[-1], flush=True)
        for label, backend, url in (
            ("postgresql", "postgresql", args.postgres),
            ("mariadb", "mysql", args.mariadb),
        ):
            if url:
                with server_database(url, backend) as database:
                    results.append(run(label, backend, database, fhir_dir, root / label))
                print(results[-1], flush=True)
        report(results, args.patients)


if __name__ == "__main__":
    main()
