"""Bulk NDJSON import at speed: parse in worker processes while this one writes, one transaction a batch.

Parsing (JSON, the search-index rows, the JSON to store) costs about as much as writing, so with
`processes` > 0 a pool parses chunks of the files in parallel and in order while the calling process only
writes. Bad lines are skipped and reported with file and line number; good ones are kept.

On SQLite a bulk import may relax durability while it runs (`durable_each_batch=False`, what `clinhub
fhir import` does): commits skip their fsync (PRAGMA synchronous=NORMAL, still crash-safe: a crash loses
the newest batches, never corrupts) and the import ends with a full WAL checkpoint, which syncs
everything to disk before the import reports success. The other backends keep their settings.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from sqlalchemy import Connection, Engine

from clinhub.errors import InvalidResource, StoreUnavailable
from clinhub.fhir.ndjson import ndjson_paths
from clinhub.store.resources import LoadStats, Prepared, prepare, put_batch, stamp_for

CHUNK_BYTES = 2 * 1024 * 1024
BATCH_SIZE = 10_000
#: below this many bytes a pool costs more to start than it saves
POOL_MIN_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Chunk:
    """A run of whole lines of one file: where it starts, how long it is, its first line's number."""

    path: str
    offset: int
    size: int
    first_line: int


def chunks(path: Path, size: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Split a file into chunks of about `size` bytes at line ends (one pass, counting lines in C)."""
    offset = 0
    line = 1
    with path.open("rb") as handle:
        while True:
            block = handle.read(size)
            if not block:
                return
            if not block.endswith(b"\n"):
                block += handle.readline()
            yield Chunk(str(path), offset, len(block), line)
            offset += len(block)
            line += block.count(b"\n")


def parse_chunk(chunk: Chunk, backend: str) -> tuple[list[Prepared], list[str], int]:
    """Parse one chunk: (prepared resources, rejection messages, lines read)."""
    stamp = stamp_for(backend)
    name = Path(chunk.path).name
    with open(chunk.path, "rb") as handle:
        handle.seek(chunk.offset)
        data = handle.read(chunk.size)
    prepared: list[Prepared] = []
    rejected: list[str] = []
    lines = 0
    for number, line in enumerate(data.split(b"\n"), start=chunk.first_line):
        if not line.strip():
            continue
        lines += 1
        try:
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise InvalidResource("not valid JSON") from None
            if type(resource) is not dict:
                raise InvalidResource("not a JSON object")
            prepared.append(prepare(resource, stamp))
        except InvalidResource as exc:
            rejected.append(f"{name} line {number}: {exc.message}")
    return prepared, rejected, lines


def _parse_in_worker(args: tuple[Chunk, str]) -> tuple[list[Prepared], list[str], int]:
    return parse_chunk(*args)


def _init_worker() -> None:
    # parsing makes no reference cycles; the collector would only walk the growing chunk again and again
    gc.disable()


def _parsed(
    paths: list[Path], backend: str, processes: int
) -> Iterator[tuple[list[Prepared], list[str], int]]:
    work = ((chunk, backend) for path in paths for chunk in chunks(path))
    if processes <= 0:
        yield from map(_parse_in_worker, work)
        return
    context = multiprocessing.get_context("spawn")  # safe under threads (API, job workers), unlike fork
    with context.Pool(processes, initializer=_init_worker) as pool:
        # imap keeps file order, so the last copy of a resource still wins; a few chunks run ahead
        yield from pool.imap(_parse_in_worker, work)


def default_processes() -> int:
    """Parser processes for a large import: one per core beyond the writer's (at most 2), and none when
    the cores are busy already (measured on a shared 2-core machine: a pool that must wait for a core
    loses more to the hand-over than it gains)."""
    cores = os.cpu_count() or 1
    spare = cores - 1 - int(os.getloadavg()[0])
    return max(0, min(2, cores - 1, spare))


def import_ndjson(
    engine: Engine,
    source: Path,
    *,
    progress: Callable[[int], None] | None = None,
    processes: int | None = None,
    batch_size: int = BATCH_SIZE,
    durable_each_batch: bool = True,
) -> LoadStats:
    """Load one NDJSON file or every *.ndjson of a directory (referenced types first) into the store.

    `processes`: parser processes (None: `default_processes()`, none for small inputs; 0: parse here).
    `progress(n)` is called with the number of lines done as batches commit.
    """
    paths = ndjson_paths(source)
    if processes is None:
        small = sum(p.stat().st_size for p in paths) < POOL_MIN_BYTES
        processes = 0 if small else default_processes()
    backend = "mysql" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name
    stats = LoadStats()
    relax = backend == "sqlite" and not durable_each_batch
    with engine.connect() as conn:
        if relax:
            _relax_sqlite(conn)
        try:
            pending: list[Prepared] = []
            lines_pending = 0
            for prepared, rejected, lines in _parsed(paths, backend, processes):
                for reason in rejected:
                    stats.reject(reason)
                pending.extend(prepared)
                lines_pending += lines
                if len(pending) >= batch_size:
                    _write(conn, pending, stats)
                    pending = []
                    if progress:
                        progress(lines_pending)
                    lines_pending = 0
            if pending:
                _write(conn, pending, stats)
            if progress and lines_pending:
                progress(lines_pending)
        finally:
            if relax:
                _restore_sqlite(conn)
    return stats


def _write(conn: Connection, batch: list[Prepared], stats: LoadStats) -> None:
    with conn.begin():
        put_batch(conn, batch, stats)


def _relax_sqlite(conn: Connection) -> None:
    conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
    # a bigger page cache keeps the index b-trees in memory; checkpoints wait for the end
    conn.exec_driver_sql("PRAGMA cache_size=-262144")
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=100000")
    conn.commit()


def _restore_sqlite(conn: Connection) -> None:
    """Make everything the import wrote durable (a full checkpoint syncs the WAL and then the database),
    and give the connection back to the pool with the store's usual settings."""
    conn.rollback()
    conn.exec_driver_sql("PRAGMA synchronous=FULL")
    conn.exec_driver_sql("PRAGMA cache_size=-2000")
    conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")
    busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(FULL)").one()
    conn.commit()
    if busy:
        # readers held the log past the busy timeout: the rows are committed and crash-safe, but not
        # yet synced through a power loss, so the import must not report success
        raise StoreUnavailable(
            "the import is written but could not be synced to disk (store busy); run it again"
        )
