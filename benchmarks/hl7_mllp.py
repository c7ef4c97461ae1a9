"""HL7 v2 over MLLP end to end: synthetic messages sent to `clinhub hl7 listen` (a separate process),
every ACK checked, then the time until every message is stored and mapped to FHIR.

Part (b) of `benchmarks/hl7_bench.py` (`--part mllp`); runnable alone:

    python benchmarks/hl7_mllp.py --messages 100000 [--postgres postgresql://root@127.0.0.1:5432/test]

Each configuration (connections x messages in flight per connection) starts a fresh store and a
fresh listener. Window 1 is the original mode of HL7 (wait for each ACK before the next message);
a larger window keeps several messages in flight on a connection, which lets the listener commit
them together. Messages per second are ACKed (durably stored) messages per second, from the first
byte sent to the last ACK; "mapped" is when the last of them has become FHIR resources.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).parent))
from backup_rpo_rto import server_database

from clinhub.config import Settings
from clinhub.hl7 import messages
from clinhub.hl7.mllp import read_messages, send_messages
from clinhub.hub import Hub
from clinhub.store.schema import hl7_message
from clinhub.synth import generate

GOAL = 3000  # durably stored messages per second on SQLite, 2 cores
CONFIGS = ((1, 1), (1, 50), (8, 1), (8, 50))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listener(data_dir: Path, url: str, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLINHUB_")}
    env.update(
        {"CLINHUB_DATA_DIR": str(data_dir), "CLINHUB_DATABASE_URL": url, "CLINHUB_LOG_LEVEL": "WARNING"}
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "clinhub", "hl7", "listen", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the listener did not start")


def run(label: str, url: str, data_dir: Path, bodies: list[bytes], connections: int, window: int) -> dict:
    settings = Settings(data_dir=data_dir, database_url=url, _env_file=None)
    with Hub(settings) as hub:
        hub.migrate()
    port = _free_port()
    process = _listener(data_dir, url, port)
    try:
        result = asyncio.run(
            send_messages("127.0.0.1", port, bodies, concurrency=connections, window=window, timeout=120)
        )
        sent_at = time.perf_counter()
        with Hub(settings) as hub:
            while messages.pending_count(hub.store) > 0:
                time.sleep(0.5)
            mapped_seconds = result.seconds + time.perf_counter() - sent_at
            with hub.store.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(hl7_message)).scalar_one()
            by_status = messages.counts(hub.store)
    finally:
        process.terminate()
        process.wait(30)
    row = {
        "store": label,
        "connections": connections,
        "window": window,
        "messages": len(bodies),
        "acked_aa": result.codes.get("AA", 0),
        "other_codes": {k: v for k, v in result.codes.items() if k != "AA"},
        "no_answer": result.failed,
        "stored": stored,
        "by_status": by_status,
        "rate": result.rate,
        "p50_ms": result.percentile(0.5) * 1000,
        "p99_ms": result.percentile(0.99) * 1000,
        "mapped_rate": len(bodies) / mapped_seconds,
    }
    print(
        f"{label} {connections} conn x window {window}: {row['rate']:,.0f} msg/s stored+ACKed, "
        f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, mapped {row['mapped_rate']:,.0f} msg/s; "
        f"AA {row['acked_aa']:,}/{len(bodies):,}, stored {stored:,}, {by_status}",
        flush=True,
    )
    return row


def report(rows: list[dict]) -> str:
    lines = [
        "| store | connections | in flight per connection | messages | all AA | stored | msg/s (ACKed) | "
        "ACK p50 ms | ACK p99 ms | msg/s (stored and mapped) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        all_aa = "yes" if r["acked_aa"] == r["messages"] and not r["no_answer"] else "NO"
        lines.append(
            f"| {r['store']} | {r['connections']} | {r['window']} | {r['messages']:,} | {all_aa} | "
            f"{r['stored']:,} | {r['rate']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['mapped_rate']:,.0f} |"
        )
    best = max((r["rate"] for r in rows if r["store"] == "sqlite"), default=0)
    verdict = "met" if best >= GOAL else "not met"
    lines += ["", f"Goal: {GOAL:,} durably stored messages/s on SQLite; best here {best:,.0f} ({verdict})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="Messages per configuration.")
    parser.add_argument("--postgres", help="PostgreSQL URL of a server to create a scratch database on")
    parser.add_argument(
        "--configs", default=",".join(f"{c}x{w}" for c, w in CONFIGS), help="connections x window, ..."
    )
    args = parser.parse_args(argv)
    configs = [tuple(int(n) for n in item.split("x")) for item in args.configs.split(",")]
    with tempfile.TemporaryDirectory(prefix="clinhub-bench-mllp-") as tmp:
        root = Path(tmp)
        patients = max(20, args.messages // 7 + 50)  # about 7 messages a patient
        generate(root / "synth", patients=patients, seed=7)
        bodies = read_messages(root / "synth" / "hl7" / "messages.hl7")[: args.messages]
        print(f"{len(bodies):,} synthetic messages from {patients:,} patients", flush=True)
        rows = []
        for n, (connections, window) in enumerate(configs):
            data_dir = root / f"sqlite-{n}"
            url = f"sqlite:///{data_dir / 'clinhub.db'}"
            rows.append(run("sqlite", url, data_dir, bodies, connections, window))
        if args.postgres:
            for n, (connections, window) in enumerate(configs):
                with server_database(args.postgres, "postgresql") as url:
                    rows.append(run("postgresql", url, root / f"pg-{n}", bodies, connections, window))
    return report(rows)


if __name__ == "__main__":
    print()
    print(main())
