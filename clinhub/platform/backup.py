"""Backups of the store and analytic files: online create, list, verify by test restore, restore, prune."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from alembic.runtime.migration import MigrationContext
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine, create_engine, delete, func, insert, inspect, select, text, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from clinhub import __version__
from clinhub.errors import ClinhubError, ConfigError, Conflict, InvalidInput, NotFound, StoreUnavailable
from clinhub.hub import Hub
from clinhub.platform import audit
from clinhub.platform.logging import get_logger
from clinhub.store import backend_name, create_store_engine, current_revision, metadata
from clinhub.store.schema import backup as catalog

log = get_logger("clinhub.backup")
MANIFEST = "manifest.json"
BACKUPS = "backups"
#: analytic files in the data dir a backup carries beside the store (DuckDB databases, Parquet extracts)
ANALYTIC_SUFFIXES = (".duckdb", ".duckdb.wal", ".parquet")
_ANALYTIC_FOLDER = "files"
_NAME = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
_NAME_FORMAT = "%Y%m%dT%H%M%SZ"
_SCRATCH = re.compile(r"^clinhub_verify_[0-9a-f]{12}$")
_CHUNK = 1 << 20

Progress = Callable[[str], None]

BACKUPS_TOTAL = Counter("clinhub_backups_total", "Backups taken, by outcome", ["outcome"])
BACKUP_SECONDS = Histogram(
    "clinhub_backup_duration_seconds",
    "Time to take a backup",
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200),
)
LAST_SUCCESS = Gauge(
    "clinhub_backup_last_success_timestamp_seconds",
    "When the newest backup that has not failed verification was taken (Unix time; 0: none yet)",
)
_LAST_SUCCESS_CACHE_SECONDS = 15.0


class BackupError(ClinhubError):
    """A backup tool or step failed (pg_dump, mariadb, the scratch database); the message says which."""


class BackupInvalid(Conflict):
    """A backup whose files do not match its manifest, or whose test restore disagrees with it."""


# ------------------------------------------------------------------ the manifest
class ManifestFile(BaseModel):
    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    """`manifest.json`: what a backup holds, so it can be checked without the store that made it."""

    format: Literal[1] = 1
    name: str
    created_at: datetime
    backend: Literal["sqlite", "postgresql", "mysql"]
    clinhub_version: str
    schema_revision: str | None
    store_file: str
    #: rows per table of clinhub.store.schema, read from the same snapshot the dump was taken from
    tables: dict[str, int]
    files: list[ManifestFile]
    seconds: float


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class BackupInfo:
    """One backup as the catalog (the `backup` table) knows it."""

    id: int
    name: str
    path: str
    created_at: datetime
    size_bytes: int
    sha256: str | None
    status: str
    verified_at: datetime | None
    #: whether the folder was on disk when the catalog was read
    present: bool = True

    @property
    def age(self) -> timedelta:
        return datetime.now(UTC) - self.created_at

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "path": self.path,
            "created_at": _iso(self.created_at),
            "age_seconds": int(self.age.total_seconds()),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "status": self.status,
            "verified_at": _iso(self.verified_at),
            "present": self.present,
        }


@dataclass(frozen=True)
class VerifyResult:
    backup: BackupInfo
    ok: bool
    reason: str | None
    tables: dict[str, int]
    seconds: float

    def as_dict(self) -> dict:
        return {
            "backup": self.backup.as_dict(),
            "ok": self.ok,
            "reason": self.reason,
            "tables": self.tables,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class RestoreResult:
    backup: BackupInfo
    ok: bool
    reason: str | None
    tables: dict[str, int]
    files: int
    seconds: float

    def as_dict(self) -> dict:
        return {
            "backup": self.backup.as_dict(),
            "ok": self.ok,
            "reason": self.reason,
            "tables": self.tables,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class PruneResult:
    removed: list[BackupInfo]
    kept: list[BackupInfo]

    def as_dict(self) -> dict:
        return {
            "removed": [info.as_dict() for info in self.removed],
            "kept": [info.as_dict() for info in self.kept],
        }


# ------------------------------------------------------------------ small helpers
def _quiet(_phase: str) -> None:
    """The progress callback of callers that want none."""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z") if moment else None


def _aware(moment: datetime) -> datetime:
    """Timestamps come back naive from SQLite and MariaDB and aware from PostgreSQL; all are UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def _durable(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk, so a backup that was recorded survives a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copy(source: Path, target: Path) -> tuple[int, str]:
    """Copy a file and return the size and sha256 of what was copied, in one pass."""
    sha = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as reader, target.open("wb") as writer:
        while chunk := reader.read(_CHUNK):
            sha.update(chunk)
            writer.write(chunk)
            size += len(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return size, sha.hexdigest()


def _count_rows(conn: Connection) -> dict[str, int]:
    """Rows per table of the schema, for the tables that exist at the revision the database is at."""
    present = set(inspect(conn).get_table_names())
    return {
        name: conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
        for name in sorted(metadata.tables)
        if name in present
    }


def _revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"{name} is not installed (it is needed to back up and restore this store)")
    return path


def _tool_error(args: list[str], stderr: bytes, secret: str | None) -> BackupError:
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    cause = (errors or lines or ["no message"])[0 if errors else -1]
    if secret:
        cause = cause.replace(secret, "***")
    return BackupError(f"{Path(args[0]).name} failed: {cause[:300]}")


def _run(args: list[str], env: dict[str, str], secret: str | None, stdin: IO[bytes] | None = None) -> None:
    result = subprocess.run(  # noqa: S603 - a fixed tool with arguments built here, never a shell
        args, env=env, stdin=stdin or subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    if result.returncode != 0:
        raise _tool_error(args, result.stderr, secret)


@contextmanager
def _running(args: list[str], env: dict[str, str], secret: str | None) -> Iterator[None]:
    """Run a tool while the block runs; stop it if the block fails, raise if the tool fails."""
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(  # noqa: S603 - a fixed tool with arguments built here, never a shell
            args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            yield
        except BaseException:
            process.kill()
            process.wait()
            raise
        if process.wait() != 0:
            errors.seek(0)
            raise _tool_error(args, errors.read(), secret)


def _ddl(engine: Engine, statement: str) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    except DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise BackupError(f"cannot create or drop the scratch database for a test restore: {first}") from None


def _scratch_name() -> str:
    name = f"clinhub_verify_{uuid.uuid4().hex[:12]}"
    if not _SCRATCH.match(name):  # the name is spliced into DDL (no placeholders there): keep it plain
        raise BackupError("could not make a safe scratch database name")
    return name


# ------------------------------------------------------------------ one class per store backend
class _Store(ABC):
    """How one kind of store is dumped consistently, restored, and given a scratch database."""

    backend: str
    dump_name: str

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @abstractmethod
    def dump(self, target: Path) -> tuple[dict[str, int], str | None]:
        """Write a consistent dump to `target` while writes go on; return its row counts and revision."""

    @abstractmethod
    def restore(self, dump: Path, engine: Engine) -> None:
        """Load `dump` into the database of `engine`, replacing the tables it holds."""

    @abstractmethod
    def scratch(self, workdir: Path) -> Iterator[Engine]:
        """A context manager: an empty database for a test restore, removed afterwards."""


class _SQLiteStore(_Store):
    backend = "sqlite"
    dump_name = "store.sqlite"

    def dump(self, target: Path) -> tuple[dict[str, int], str | None]:
        raw = self.engine.raw_connection()
        try:
            copy = sqlite3.connect(target)
            try:
                # One step (pages=-1): the whole copy is read in one read transaction, a consistent
                # snapshot while writers go on under WAL. A stepwise copy restarts whenever another
                # connection writes, so under steady writes it might never finish.
                raw.driver_connection.backup(copy)
                # The copy inherits WAL mode; a rollback journal keeps it one self-contained file.
                copy.execute("PRAGMA journal_mode=DELETE")
            finally:
                copy.close()
        finally:
            raw.close()
        reader = _sqlite_reader(target)
        try:
            with reader.connect() as conn:
                return _count_rows(conn), _revision(conn)
        finally:
            reader.dispose()

    def restore(self, dump: Path, engine: Engine) -> None:
        source = sqlite3.connect(f"{dump.resolve().as_uri()}?mode=ro", uri=True)
        raw = engine.raw_connection()
        try:
            # the backup API writes through the destination's pager, so connections already open on the
            # store see the restored content at once, and a WAL store stays in WAL mode
            source.backup(raw.driver_connection)
        finally:
            raw.close()
            source.close()

    @contextmanager
    def scratch(self, workdir: Path) -> Iterator[Engine]:
        folder = Path(tempfile.mkdtemp(prefix=".verify-", dir=workdir))
        engine = create_store_engine(f"sqlite:///{folder / 'scratch.db'}")
        try:
            yield engine
        finally:
            engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)


def _sqlite_reader(path: Path) -> Engine:
    """A read-only engine on a SQLite file; the store's own engine would switch it to WAL and add files."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)


class _ServerStore(_Store):
    """A store on a database server: scratch databases are made on the same server."""

    create_database: str
    drop_database: str

    @contextmanager
    def scratch(self, workdir: Path) -> Iterator[Engine]:
        name = _scratch_name()
        admin = create_engine(self.engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            _ddl(admin, self.create_database.format(name=name))
            engine = create_store_engine(
                self.engine.url.set(database=name).render_as_string(hide_password=False)
            )
            try:
                yield engine
            finally:
                engine.dispose()
                _ddl(admin, self.drop_database.format(name=name))
        finally:
            admin.dispose()


class _PostgresStore(_ServerStore):
    backend = "postgresql"
    dump_name = "store.pgdump"
    create_database = 'CREATE DATABASE "{name}"'
    drop_database = 'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'

    @staticmethod
    def _command(tool: str, url: URL) -> tuple[list[str], dict[str, str]]:
        args = [_binary(tool), "--no-password", f"--dbname={url.database}"]
        host = url.host or url.query.get("host")
        if host:
            args.append(f"--host={host}")
        if url.port:
            args.append(f"--port={url.port}")
        if url.username:
            args.append(f"--username={url.username}")
        # the password travels in the environment: a command line is visible to every user in `ps`
        env = dict(os.environ)
        if url.password:
            env["PGPASSWORD"] = url.password
        if url.query.get("sslmode"):
            env["PGSSLMODE"] = str(url.query["sslmode"])
        return args, env

    def dump(self, target: Path) -> tuple[dict[str, int], str | None]:
        args, env = self._command("pg_dump", self.engine.url)
        with (
            self.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            # pg_dump reads the snapshot this transaction exports, and the rows are counted in the same
            # snapshot while it runs, so the manifest describes exactly what was dumped
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            dump_args = [*args, "--format=custom", f"--snapshot={snapshot}", f"--file={target}"]
            with _running(dump_args, env, self.engine.url.password):
                counts, revision = _count_rows(conn), _revision(conn)
        return counts, revision

    def restore(self, dump: Path, engine: Engine) -> None:
        args, env = self._command("pg_restore", engine.url)
        # one transaction: a restore that fails half way leaves the database as it was
        restore_args = [
            *args,
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
        ]
        _run([*restore_args, str(dump)], env, engine.url.password)


class _MariaDBStore(_ServerStore):
    backend = "mysql"
    dump_name = "store.sql"
    create_database = "CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    drop_database = "DROP DATABASE IF EXISTS `{name}`"

    @staticmethod
    def _command(tool: str, url: URL) -> tuple[list[str], dict[str, str]]:
        args = [_binary(tool), "--default-character-set=utf8mb4"]
        socket = url.query.get("unix_socket")
        if socket:
            args += ["--protocol=socket", f"--socket={socket}"]
        else:
            # without --protocol the client takes "localhost" to mean the Unix socket; the store uses TCP
            args += ["--protocol=tcp", f"--host={url.host or '127.0.0.1'}", f"--port={url.port or 3306}"]
        if url.username:
            args.append(f"--user={url.username}")
        # the password travels in the environment: a command line is visible to every user in `ps`
        env = dict(os.environ)
        if url.password:
            env["MYSQL_PWD"] = url.password
        return args, env

    def dump(self, target: Path) -> tuple[dict[str, int], str | None]:
        url = self.engine.url
        args, env = self._command("mariadb-dump", url)
        revision = current_revision(self.engine)
        dump_args = [*args, "--single-transaction", "--routines", "--hex-blob", f"--result-file={target}"]
        _run([*dump_args, "--", str(url.database)], env, url.password)
        # MariaDB cannot share its dump's snapshot with another session, so the rows are counted in
        # the dump itself: exactly what a restore will load
        counts = _count_dump_rows(target)
        return {name: counts[name] for name in sorted(metadata.tables) if name in counts}, revision

    def restore(self, dump: Path, engine: Engine) -> None:
        args, env = self._command("mariadb", engine.url)
        with dump.open("rb") as source:
            _run(
                [*args, "--binary-mode", f"--database={engine.url.database}"],
                env,
                engine.url.password,
                source,
            )


_CREATE_TABLE = re.compile(rb"^CREATE TABLE `([^`]+)`")
_INSERT = re.compile(rb"^INSERT INTO `([^`]+)`")
_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'", re.DOTALL)


def _count_dump_rows(path: Path) -> dict[str, int]:
    """Rows per table in a mariadb-dump file: the tuples of its INSERT statements.

    mariadb-dump escapes newlines inside strings, so a statement's lines hold whole strings; once they are
    cut out, what is left of a row is numbers, NULL and hex literals, and every "(" opens one row.
    Trigger and routine bodies (between `DELIMITER ;;` and `DELIMITER ;`) may hold INSERTs: skipped.
    """
    counts: dict[str, int] = {}
    table: str | None = None
    in_body = False
    with path.open("rb") as handle:
        for line in handle:
            if table is None and line.startswith(b"DELIMITER "):
                in_body = line.strip() != b"DELIMITER ;"
                continue
            if in_body:
                continue
            if table is None:
                created = _CREATE_TABLE.match(line)
                if created:
                    counts.setdefault(created.group(1).decode(), 0)
                    continue
                inserted = _INSERT.match(line)
                if not inserted:
                    continue
                table = inserted.group(1).decode()
                line = line[inserted.end() :]
            bare = _STRING.sub(b"", line)
            counts[table] = counts.get(table, 0) + bare.count(b"(")
            if bare.rstrip().endswith(b";"):
                table = None
    return counts


_STORES: dict[str, type[_Store]] = {
    "sqlite": _SQLiteStore,
    "postgresql": _PostgresStore,
    "mysql": _MariaDBStore,
}


def _store_of(hub: Hub) -> _Store:
    url = make_url(hub.settings.store_url)
    backend = backend_name(hub.settings.store_url)
    if backend not in _STORES:
        raise ConfigError(f"cannot back up a {backend} store (supported: SQLite, PostgreSQL, MariaDB)")
    if backend == "sqlite" and (not url.database or url.database == ":memory:"):
        raise ConfigError("an in-memory SQLite store cannot be backed up; use a file")
    return _STORES[backend](hub.store)


# ------------------------------------------------------------------ the backups folder and catalog
def backups_dir(hub: Hub) -> Path:
    """Where backups live: `backups/` in the data dir."""
    root = (Path(hub.settings.data_dir) / BACKUPS).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _prepare(hub: Hub) -> Path:
    """The backups folder, once the store is known to have the catalog table."""
    try:
        ready = inspect(hub.store).has_table(catalog.name)
    except DBAPIError:
        raise StoreUnavailable("store unreachable") from None
    if not ready:
        raise StoreUnavailable("the store has no schema yet; run `clinhub db upgrade` first")
    return backups_dir(hub)


@contextmanager
def _exclusive(root: Path) -> Iterator[bool]:
    """Try to take the data dir's backup lock for the block; yields whether it was taken."""
    with (root / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        yield held


@contextmanager
def _operation(root: Path) -> Iterator[None]:
    with _exclusive(root) as held:
        if not held:
            raise Conflict("another backup, verify, restore or prune is running on this data dir")
        yield


def _info(row) -> BackupInfo:
    return BackupInfo(
        id=row.id,
        name=Path(row.path).name,
        path=row.path,
        created_at=_aware(row.created_at),
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        status=row.status,
        verified_at=_aware(row.verified_at) if row.verified_at else None,
        present=Path(row.path).is_dir(),
    )


def _catalog(engine: Engine) -> list[BackupInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(catalog).order_by(catalog.c.created_at.desc(), catalog.c.id.desc()))
        return [_info(row) for row in rows]


def _folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _adopt(hub: Hub, root: Path) -> None:
    """Enter into the catalog the backup folders it does not know, e.g. after the store itself was lost.

    Their manifest checksum is taken as found, so an adopted backup is as trustworthy as its folder.
    """
    known = {info.name for info in _catalog(hub.store)}
    for folder in sorted(root.iterdir()):
        manifest = folder / MANIFEST
        if (
            not (folder.is_dir() and _NAME.match(folder.name))
            or folder.name in known
            or not manifest.is_file()
        ):
            continue
        created_at = datetime.strptime(folder.name[:16], _NAME_FORMAT).replace(tzinfo=UTC)
        with hub.store.begin() as conn:
            conn.execute(
                insert(catalog).values(
                    created_at=created_at,
                    path=str(folder),
                    size_bytes=_folder_size(folder),
                    sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
                    status="created",
                )
            )


def _resolve(hub: Hub, backup_id: int | str) -> BackupInfo:
    """A backup by id, or `latest`: the newest one that has not failed verification."""
    backups = _catalog(hub.store)
    if backup_id == "latest":
        usable = [info for info in backups if info.status != "failed"]
        if not usable:
            raise NotFound("there is no backup yet (or every backup failed verification)")
        return usable[0]
    try:
        wanted = int(backup_id)
    except ValueError:
        raise InvalidInput(f"a backup id is a number or 'latest', not {backup_id!r}") from None
    for info in backups:
        if info.id == wanted:
            return info
    raise NotFound(f"no backup {wanted}")


def find_backup(hub: Hub, backup_id: int | str) -> BackupInfo:
    """A backup by id or 'latest'; InvalidInput for a malformed id, NotFound for an unknown one."""
    return _resolve(hub, backup_id)


def _set_status(hub: Hub, info: BackupInfo, status: str) -> BackupInfo:
    verified_at = datetime.now(UTC)
    with hub.store.begin() as conn:
        conn.execute(
            update(catalog).where(catalog.c.id == info.id).values(status=status, verified_at=verified_at)
        )
    return replace(info, status=status, verified_at=verified_at)


def _safe_relative(text_path: str) -> PurePosixPath:
    path = PurePosixPath(text_path)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise BackupInvalid(f"manifest.json names a file outside the backup: {text_path!r}")
    return path


def _check_files(folder: Path, expected_sha256: str | None) -> Manifest:
    """The manifest, once every file's size and sha256 match it; else BackupInvalid naming the first fault."""
    if not folder.is_dir():
        raise BackupInvalid(f"backup folder {folder.name} is missing")
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BackupInvalid("manifest.json is missing")
    payload = manifest_path.read_bytes()
    if expected_sha256 and hashlib.sha256(payload).hexdigest() != expected_sha256:
        raise BackupInvalid("manifest.json differs from the checksum recorded when the backup was made")
    try:
        manifest = Manifest.model_validate_json(payload)
    except ValidationError:
        raise BackupInvalid("manifest.json is not a valid clinhub backup manifest") from None
    listed = {MANIFEST}
    for entry in manifest.files:
        relative = _safe_relative(entry.path)
        listed.add(relative.as_posix())
        path = folder / relative
        if not path.is_file():
            raise BackupInvalid(f"{relative} is missing")
        size, sha256 = _digest(path)
        if size != entry.size:
            raise BackupInvalid(f"{relative} has {size} bytes, the manifest says {entry.size}")
        if sha256 != entry.sha256:
            raise BackupInvalid(f"{relative} does not match its sha256 in the manifest (changed or corrupt)")
    if manifest.store_file not in listed:
        raise BackupInvalid("manifest.json does not list the store dump")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in listed:
            raise BackupInvalid(f"{relative} is not in the manifest")
    return manifest


def _difference(manifest: Manifest, tables: dict[str, int], revision: str | None) -> str | None:
    """Why restored counts and revision disagree with the manifest, or None when they agree."""
    if revision != manifest.schema_revision:
        return f"schema revision {revision} differs from the manifest's {manifest.schema_revision}"
    wrong = [
        f"{name} {tables.get(name, 'missing')} (manifest {expected})"
        for name, expected in manifest.tables.items()
        if tables.get(name) != expected
    ]
    return "row counts differ from the manifest: " + ", ".join(wrong) if wrong else None


# ------------------------------------------------------------------ analytic files
def _analytic_files(hub: Hub, root: Path) -> list[Path]:
    """Analytic files under the data dir, leaving out the backups and the SQLite store itself."""
    data_dir = Path(hub.settings.data_dir).resolve()
    url = make_url(hub.settings.store_url)
    store_file = Path(url.database).resolve() if url.get_backend_name() == "sqlite" and url.database else None
    found: list[Path] = []
    for folder, subfolders, names in os.walk(data_dir):
        here = Path(folder)
        subfolders[:] = sorted(name for name in subfolders if here / name != root)
        for name in sorted(names):
            path = here / name
            if name.endswith(ANALYTIC_SUFFIXES) and path != store_file:
                found.append(path)
    return found


def _analytic_targets(hub: Hub, manifest: Manifest, root: Path) -> list[tuple[PurePosixPath, Path]]:
    """Each analytic file of a backup and where it goes back in the data dir, checked before anything is
    restored, so a forged manifest cannot make a restore write outside the data dir."""
    data_dir = Path(hub.settings.data_dir).resolve()
    targets = []
    for entry in manifest.files:
        relative = _safe_relative(entry.path)
        if relative.parts[0] != _ANALYTIC_FOLDER:
            continue
        target = data_dir.joinpath(*relative.parts[1:]).resolve()
        if data_dir not in target.parents or root in target.parents:
            raise BackupInvalid(f"{relative} would be restored outside the data dir")
        targets.append((relative, target))
    return targets


def _restore_analytic(folder: Path, targets: list[tuple[PurePosixPath, Path]]) -> None:
    for relative, target in targets:
        partial = target.with_name(f".{target.name}.restoring")
        _copy(folder / relative, partial)
        os.replace(partial, target)  # readers see the old file or the new one, never half of it


def _sweep(root: Path) -> None:
    """Remove what an interrupted create or verify left behind; called with the backup lock held."""
    for leftover in root.glob(".partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in root.glob(".verify-*"):
        shutil.rmtree(leftover, ignore_errors=True)


# ------------------------------------------------------------------ the public API
def last_success(hub: Hub) -> datetime | None:
    """When the newest backup that has not failed verification was taken, or None."""
    with hub.store.connect() as conn:
        newest = conn.execute(
            select(func.max(catalog.c.created_at)).where(catalog.c.status != "failed")
        ).scalar()
    return _aware(newest) if newest else None


def watch_last_success(hub: Hub) -> None:
    """Make the last-success gauge read this hub's catalog when scraped (every process that serves
    /metrics sees backups any worker took), at most every few seconds."""
    cached: list[float] = [0.0, -_LAST_SUCCESS_CACHE_SECONDS]

    def read() -> float:
        now = time.monotonic()
        if now - cached[1] >= _LAST_SUCCESS_CACHE_SECONDS:
            try:
                moment = last_success(hub)
                cached[0] = moment.timestamp() if moment else 0.0
            except Exception as exc:  # a scrape must not fail because the store is down; /health says so
                log.warning("last backup unknown", error=type(exc).__name__)
            cached[1] = now
        return cached[0]

    LAST_SUCCESS.set_function(read)


def create_backup(hub: Hub, progress: Progress | None = None) -> BackupInfo:
    """Take an online backup of the store and the analytic files, record it, and return it."""
    try:
        with BACKUP_SECONDS.time():
            info = _create_backup(hub, progress)
    except BaseException:
        BACKUPS_TOTAL.labels("failure").inc()
        raise
    BACKUPS_TOTAL.labels("success").inc()
    return info


def _create_backup(hub: Hub, progress: Progress | None) -> BackupInfo:
    note = progress or _quiet
    store = _store_of(hub)
    root = _prepare(hub)
    with _operation(root):
        _sweep(root)
        started = time.perf_counter()
        created_at = datetime.now(UTC)
        # built in a hidden folder and renamed when complete, so a half-made backup is never listed
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        try:
            note(f"dumping the {store.backend} store")
            tables, revision = store.dump(partial / store.dump_name)
            _durable(partial / store.dump_name)
            size, sha256 = _digest(partial / store.dump_name)
            files = [ManifestFile(path=store.dump_name, size=size, sha256=sha256)]
            note("copying analytic files")
            for source in _analytic_files(hub, root):
                relative = source.relative_to(Path(hub.settings.data_dir).resolve()).as_posix()
                path = f"{_ANALYTIC_FOLDER}/{relative}"
                size, sha256 = _copy(source, partial / path)
                files.append(ManifestFile(path=path, size=size, sha256=sha256))
            note("writing the manifest")
            name = _free_name(root, created_at)
            manifest = Manifest(
                name=name,
                created_at=created_at,
                backend=store.backend,
                clinhub_version=__version__,
                schema_revision=revision,
                store_file=store.dump_name,
                tables=tables,
                files=files,
                seconds=round(time.perf_counter() - started, 3),
            )
            payload = manifest.model_dump_json(indent=2).encode()
            (partial / MANIFEST).write_bytes(payload)
            _durable(partial / MANIFEST)
            folder = root / name
            partial.rename(folder)
            _durable(root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        size_bytes = sum(entry.size for entry in files) + len(payload)
        sha256 = hashlib.sha256(payload).hexdigest()
        with hub.store.begin() as conn:
            backup_id = conn.execute(
                insert(catalog).values(
                    created_at=created_at,
                    path=str(folder),
                    size_bytes=size_bytes,
                    sha256=sha256,
                    status="created",
                )
            ).inserted_primary_key[0]
    return BackupInfo(backup_id, name, str(folder), created_at, size_bytes, sha256, "created", None)


def _free_name(root: Path, created_at: datetime) -> str:
    base = created_at.strftime(_NAME_FORMAT)
    name, serial = base, 1
    while (root / name).exists():
        serial += 1
        name = f"{base}-{serial}"
    return name


def list_backups(hub: Hub) -> list[BackupInfo]:
    """Every backup, newest first; backup folders the catalog does not know yet are entered first."""
    root = _prepare(hub)
    with _exclusive(root) as held:
        if held:  # a running operation may be adding a folder right now: leave adoption to a later call
            _adopt(hub, root)
    return _catalog(hub.store)


def verify_backup(hub: Hub, backup_id: int | str, progress: Progress | None = None) -> VerifyResult:
    """Check every checksum, restore into a scratch database, compare counts and revision; record the outcome.

    A backup that fails is marked `failed` and the result says why; a scratch database that cannot be
    made (no permission, server down) raises instead, since that says nothing about the backup.
    """
    note = progress or _quiet
    root = _prepare(hub)
    with _operation(root):
        _sweep(root)
        _adopt(hub, root)
        info = _resolve(hub, backup_id)
        started = time.perf_counter()
        folder = root / info.name
        tables: dict[str, int] = {}
        try:
            note("checking checksums")
            manifest = _check_files(folder, info.sha256)
            store = _verifier(hub, manifest)
            note("restoring into a scratch database")
            with store.scratch(root) as scratch:
                try:
                    store.restore(folder / manifest.store_file, scratch)
                except BackupError as exc:
                    raise BackupInvalid(f"test restore failed: {exc.message}") from None
                note("counting rows")
                with scratch.connect() as conn:
                    tables, revision = _count_rows(conn), _revision(conn)
            reason = _difference(manifest, tables, revision)
        except BackupInvalid as exc:
            reason = exc.message
        info = _set_status(hub, info, "failed" if reason else "verified")
    return VerifyResult(info, reason is None, reason, tables, time.perf_counter() - started)


def _verifier(hub: Hub, manifest: Manifest) -> _Store:
    """What can test-restore this backup here: SQLite anywhere, a server backup on a server of its kind."""
    if manifest.backend == "sqlite":
        return _SQLiteStore(hub.store)
    configured = backend_name(hub.settings.store_url)
    if configured != manifest.backend:
        raise InvalidInput(
            f"a {manifest.backend} backup is test-restored on a {manifest.backend} server, "
            f"but the configured store is {configured}"
        )
    return _store_of(hub)


def restore_backup(hub: Hub, backup_id: int | str, progress: Progress | None = None) -> RestoreResult:
    """Replace the configured store (and the analytic files) with a backup, then check the row counts.

    Stop the services that write (API, MLLP listener, workers) first: rows written during a restore
    are lost, and they would make the count check fail. The catalog of backups is carried across.
    """
    note = progress or _quiet
    store = _store_of(hub)
    root = _prepare(hub)
    with _operation(root):
        _adopt(hub, root)
        info = _resolve(hub, backup_id)
        started = time.perf_counter()
        folder = root / info.name
        note("checking checksums")
        try:
            manifest = _check_files(folder, info.sha256)
        except BackupInvalid as exc:
            _set_status(hub, info, "failed")
            raise BackupInvalid(
                f"backup {info.id} failed its checks, nothing was restored: {exc.message}"
            ) from None
        if manifest.backend != store.backend:
            raise InvalidInput(
                f"backup {info.id} is of a {manifest.backend} store; this one is {store.backend}"
            )
        targets = _analytic_targets(hub, manifest, root)
        with hub.store.connect() as conn:
            known = [dict(row._mapping) for row in conn.execute(select(catalog))]
        note(f"restoring the {store.backend} store")
        store.restore(folder / manifest.store_file, hub.store)
        # pooled connections may hold statements prepared against the tables just replaced
        hub.store.dispose()
        note("counting rows")
        with hub.store.connect() as conn:
            tables, revision = _count_rows(conn), _revision(conn)
        _put_catalog(hub.store, known)
        note("restoring analytic files")
        _restore_analytic(folder, targets)
        reason = _difference(manifest, tables, revision)
    return RestoreResult(info, reason is None, reason, tables, len(targets), time.perf_counter() - started)


def _put_catalog(engine: Engine, rows: list[dict]) -> None:
    """Put back the catalog as it was before a restore: the restored one predates later backups."""
    with engine.begin() as conn:
        conn.execute(delete(catalog))
        if not rows:
            return
        conn.execute(insert(catalog), rows)
        if conn.dialect.name == "postgresql":
            # explicit ids do not move PostgreSQL's sequence; move it past them for the next backup
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('backup', 'id'), (SELECT max(id) FROM backup))")
            )


def plan_prune(hub: Hub, keep_days: int = 30, keep_min: int = 7) -> PruneResult:
    """What `prune_backups` would remove and keep, without removing anything."""
    return _split(list_backups(hub), keep_days, keep_min)


def _split(backups: list[BackupInfo], keep_days: int, keep_min: int) -> PruneResult:
    if keep_days < 0 or keep_min < 0:
        raise InvalidInput("keep_days and keep_min must not be negative")
    # the newest `keep_min` backups that did not fail verification survive any age limit
    protected = {info.id for info in [info for info in backups if info.status != "failed"][:keep_min]}
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    removed = [info for info in backups if info.id not in protected and info.created_at < cutoff]
    kept = [info for info in backups if info.id in protected or info.created_at >= cutoff]
    return PruneResult(removed, kept)


def prune_backups(hub: Hub, keep_days: int = 30, keep_min: int = 7) -> PruneResult:
    """Remove backups older than `keep_days`, always keeping the newest `keep_min` good ones."""
    root = _prepare(hub)
    with _operation(root):
        _adopt(hub, root)
        plan = _split(_catalog(hub.store), keep_days, keep_min)
        for info in plan.removed:
            if _NAME.match(info.name):  # only folders this module named, inside the backups folder
                shutil.rmtree(root / info.name, ignore_errors=True)
            with hub.store.begin() as conn:
                conn.execute(delete(catalog).where(catalog.c.id == info.id))
    return plan


# ------------------------------------------------------------------ auditing for the API and CLI
@dataclass
class AuditNote:
    """What the audit event of a backup action will say; the block fills it in as it learns."""

    resource_id: str | None = None
    outcome: str = "success"
    detail: dict = field(default_factory=dict)


@contextmanager
def audited(
    hub: Hub, *, actor: str, action: str, resource_id: str | None = None, client_address: str | None = None
) -> Iterator[AuditNote]:
    """Write one audit event when the block ends: its outcome, or `error` with the cause if it raised.

    The event is written after the work, so a restore's event chains onto the restored audit trail.
    """
    note = AuditNote(resource_id=resource_id)
    try:
        yield note
    except Exception as exc:
        cause = exc.message if isinstance(exc, ClinhubError) else type(exc).__name__
        _record(hub, actor, action, note, client_address, "error", {**note.detail, "error": cause})
        raise
    _record(hub, actor, action, note, client_address, note.outcome, note.detail)


def _record(
    hub: Hub, actor: str, action: str, note: AuditNote, client: str | None, outcome: str, detail: dict
) -> None:
    audit.record(
        hub.store,
        actor=actor,
        action=action,
        outcome=outcome,
        resource_type="Backup",
        resource_id=note.resource_id,
        client_address=client,
        detail=detail or None,
    )
