"""Jobs: long work (imports, exports, quality runs, backups) run by workers through a huey queue."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from huey import RedisHuey, SqliteHuey
from huey.consumer import Consumer
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import RedisStorage
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine, insert, select, update
from sqlalchemy import inspect as inspect_schema
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from clinhub.config import Settings
from clinhub.errors import ClinhubError, Conflict, InvalidInput, NotFound, StoreUnavailable
from clinhub.hub import Hub
from clinhub.platform.logging import get_logger
from clinhub.platform.permissions import PERMISSIONS
from clinhub.platform.resilience import ServiceUnavailable, is_transient
from clinhub.store import normalise_url, ping
from clinhub.store.schema import job

log = get_logger("clinhub.jobs")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: how often a running job's worker marks it alive (`heartbeat_at`). One value for every worker of a
#: store, since a worker judges other workers' jobs stale by it and the row does not say who beats how often
#: a running job whose worker missed this many heartbeats in a row is taken to have lost its worker
STALE_AFTER_BEATS = 3
#: how often a worker looks for queued jobs whose task is missing from the queue
ORPHAN_SWEEP_SECONDS = 60.0
#: failures worth another attempt: the store, the queue or an outside service was briefly unreachable
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    ServiceUnavailable,
    ConnectionError,
    TimeoutError,
    OperationalError,
)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

JOBS_SUBMITTED = Counter("clinhub_jobs_submitted_total", "Jobs submitted", ["kind"])
JOBS_SUCCEEDED = Counter("clinhub_jobs_succeeded_total", "Jobs that succeeded", ["kind"])
JOBS_FAILED = Counter("clinhub_jobs_failed_total", "Jobs that failed for good", ["kind"])
JOBS_REQUEUED = Counter(
    "clinhub_jobs_requeued_total",
    "Job attempts queued again (reason: transient failure, or the worker running it was lost)",
    ["kind", "reason"],
)
JOBS_RUNNING = Gauge("clinhub_jobs_running", "Jobs this process is running now", ["kind"])
JOB_DURATION = Histogram(
    "clinhub_job_duration_seconds",
    "Run time of one job attempt by kind and outcome",
    ["kind", "outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


# ------------------------------------------------------------------ job kinds
@dataclass(frozen=True)
class JobKind:
    """A kind of job: the function that does the work and the permission a submitter needs."""

    name: str
    fn: Callable[..., Any]
    permission: str
    retries: int
    retry_delay: float
    description: str

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def parameters(self) -> list[str]:
        return list(inspect.signature(self.fn).parameters)[1:]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "permission": self.permission,
            "parameters": self.parameters(),
            "retries": self.retries,
        }


_KINDS: dict[str, JobKind] = {}

# Modules that register job kinds of their own with @job_kind; imported on first use of the registry,
# so a worker knows every kind without the platform importing the domains at load time.
KIND_MODULES: tuple[str, ...] = (
    "clinhub.platform.backup_jobs",
    "clinhub.views.export",
    "clinhub.fhir.jobs",
    "clinhub.quality.jobs",
)
_loaded = False


def _load_kind_modules() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in KIND_MODULES:
            importlib.import_module(module)


def job_kind(
    name: str, *, permission: str, retries: int = 3, retry_delay: float = 5.0
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx, **params) -> JSON-serialisable result` as the job kind `name`.

    `permission` is what a caller needs to submit it over HTTP. A transient failure is retried up to
    `retries` times, `retry_delay` seconds after the first failure and twice as long after each next one.
    """
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")
    if retries < 0 or retry_delay < 0:
        raise ValueError("retries and retry_delay must not be negative")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _KINDS:
            raise ValueError(f"job kind {name!r} is registered twice")
        summary = (inspect.getdoc(fn) or name).splitlines()[0]
        _KINDS[name] = JobKind(name, fn, permission, retries, retry_delay, summary)
        return fn

    return register


def kinds() -> list[JobKind]:
    """Every registered job kind, by name."""
    _load_kind_modules()
    return [_KINDS[name] for name in sorted(_KINDS)]


def _find_kind(name: str) -> JobKind | None:
    _load_kind_modules()
    return _KINDS.get(name)


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    every_seconds: float
    fn: Callable[[Hub], None]


_PERIODIC: dict[str, PeriodicTask] = {}


def periodic(name: str, every_seconds: float) -> Callable[[Callable[[Hub], None]], Callable[[Hub], None]]:
    """Register `fn(hub)` to run in every worker's watch thread about every `every_seconds`.

    Keep it short (it decides, and submits a job for the long part). Several workers each run it, so
    it must tolerate that: `new_job(..., job_id=...)` with a deterministic id submits a job only once.
    """

    def register(fn: Callable[[Hub], None]) -> Callable[[Hub], None]:
        _PERIODIC[name] = PeriodicTask(name, every_seconds, fn)
        return fn

    return register


def periodic_tasks() -> list[PeriodicTask]:
    _load_kind_modules()
    return [_PERIODIC[name] for name in sorted(_PERIODIC)]


def heartbeat_seconds(hub: Hub) -> float:
    """How often a running job beats (settings.job_heartbeat_seconds); a job silent for
    STALE_AFTER_BEATS beats is taken for lost and queued again."""
    return hub.settings.job_heartbeat_seconds


def get_kind(name: str) -> JobKind:
    _load_kind_modules()
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise InvalidInput(f"unknown job kind {name!r} (known: {known})") from None


class _Superseded(BaseException):
    """This attempt no longer owns its job: it was taken for a lost worker's and queued again.

    A BaseException, like a cancellation, so a job's own `except Exception` cannot swallow it.
    """


class JobContext:
    """What a job function gets besides its parameters: the hub, its job id, and a progress reporter."""

    def __init__(self, hub: Hub, job_id: str, attempt: int, created_by: str | None = None) -> None:
        self.hub = hub
        self.job_id = job_id
        self.attempt = attempt
        #: who submitted the job (a username), for the audit trail; None for the system
        self.created_by = created_by
        self._percent = 0

    def progress(self, done: float, total: float | None = None) -> None:
        """Record progress: `done` of `total`, or `done` percent when no total is given."""
        if total is not None and total <= 0:
            return
        percent = int(100 * done / total) if total is not None else int(done)
        percent = max(0, min(percent, 100))
        if percent == self._percent:
            return  # a write per row loaded would cost more than the load
        with self.hub.store.begin() as conn:
            owned = conn.execute(
                update(job).where(*_owned(self.job_id, self.attempt)).values(progress=percent)
            ).rowcount
        if not owned:
            raise _Superseded
        self._percent = percent


# ------------------------------------------------------------------ the queue (huey)
class _JsonSerializer(Serializer):
    """Task messages as JSON rather than pickle: whoever can write to Redis must not be able to run code."""

    def _serialize(self, data: Message) -> bytes:
        return orjson.dumps(data._asdict())

    def _deserialize(self, data: bytes) -> Message:
        fields = orjson.loads(data)
        if fields["eta"]:
            fields["eta"] = datetime.fromisoformat(fields["eta"])
        fields["args"] = tuple(fields["args"])
        return Message(**fields)


def queue_name(settings: Settings) -> str:
    """The queue of one store: workers of another store sharing the Redis never see its jobs."""
    url = make_url(normalise_url(settings.store_url))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=str(Path(url.database).resolve()))
    store = url.render_as_string(hide_password=True)
    return "clinhub_" + hashlib.sha256(store.encode()).hexdigest()[:16]


def queue_location(settings: Settings) -> str:
    """Where the queue lives, safe to print: the Redis URL (password masked) or the SQLite file."""
    if settings.redis_url:
        return settings.masked()["redis_url"]
    return str((settings.data_dir / "jobs.db").resolve())


class JobQueue:
    """The huey queue of one hub's store; its one task runs a job by id in this hub."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        settings = hub.settings
        common = {"results": False, "serializer": _JsonSerializer(), "utc": True}
        if settings.redis_url:
            self.huey = RedisHuey(queue_name(settings), url=settings.redis_url, **common)
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.huey = SqliteHuey(
                queue_name(settings), filename=str(settings.data_dir / "jobs.db"), fsync=True, **common
            )
        self._task = self.huey.task(name="run_job")(self._run)

    def enqueue(self, job_id: str, delay: float | None = None) -> None:
        if delay:
            self._task.schedule(args=(job_id,), delay=delay)
        else:
            self._task(job_id)

    def waiting_job_ids(self) -> set[str]:
        """Job ids that have a task waiting in the queue or scheduled for a retry."""
        tasks = [*self.huey.pending(), *self.huey.scheduled()]
        return {task.args[0] for task in tasks if task.args}

    def close(self) -> None:
        storage = self.huey.storage
        if isinstance(storage, RedisStorage):
            storage.pool.disconnect()
        else:
            storage.close()

    def _run(self, job_id: str) -> None:
        try:
            _run_job(self, job_id)
        except Exception as exc:
            # the job's own errors are recorded in its row; this is the bookkeeping failing (store down).
            # A job left running stops beating and is queued again once stale; one left queued without
            # its task is put back on the queue by the next orphan sweep.
            log.error("job bookkeeping failed", job_id=job_id, error=type(exc).__name__)


# ------------------------------------------------------------------ submitting and reading jobs
def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _owned(job_id: str, attempt: int) -> tuple:
    """The condition under which an attempt still owns its job: still running, under the same claim.

    Every claim counts one more attempt, so `attempts` tells this claim from any earlier or later one,
    including a later one by this same worker process.
    """
    return (
        job.c.id == job_id,
        job.c.status == "running",
        job.c.attempts == attempt,
        job.c.worker == WORKER_ID,
    )


def _one_line(exc: BaseException) -> str:
    """A cause safe to store: our own errors' messages; for any other exception only its type, since
    its text may quote the data (a patient's name in a KeyError) and its traceback stays in no row."""
    if isinstance(exc, ClinhubError):
        text = " ".join(exc.message.split())
        return text[:500]
    return f"{type(exc).__name__} (details withheld: they may quote health data)"


def new_job(
    store: Engine, kind: str, params: dict | None, created_by: str | None, *, job_id: str | None = None
) -> str:
    """Record a queued job after checking its kind and parameters; returns its id. `submit` also
    enqueues it; a job only recorded is enqueued by the next worker that starts.

    With `job_id`, a job of that id that already exists raises Conflict: callers that may race (periodic
    tasks in several workers) use it to submit a job once."""
    registered = get_kind(kind)
    params = params or {}
    try:
        inspect.signature(registered.fn).bind(None, **params)
    except TypeError as exc:
        wanted = ", ".join(registered.parameters()) or "no parameters"
        raise InvalidInput(f"job kind {kind!r} takes {wanted}: {exc}") from None
    try:
        orjson.dumps(params)
    except TypeError:
        raise InvalidInput("job parameters must be JSON values") from None
    job_id = job_id or str(uuid.uuid4())
    try:
        with store.begin() as conn:
            conn.execute(
                insert(job).values(
                    id=job_id,
                    kind=kind,
                    status="queued",
                    params=params,
                    progress=0,
                    created_by=created_by,
                    created_at=_now(),
                )
            )
    except IntegrityError:
        raise Conflict(f"job {job_id} exists already") from None
    JOBS_SUBMITTED.labels(kind).inc()
    return job_id


def submit(hub: Hub, kind: str, params: dict | None = None, created_by: str | None = None) -> str:
    """Record a job and put it on the queue; returns its id. A worker runs it."""
    job_id = new_job(hub.store, kind, params, created_by)
    submit_recorded(hub, job_id)
    return job_id


def submit_recorded(hub: Hub, job_id: str) -> None:
    """Put a job `new_job` recorded on the queue; if the queue is unreachable the job fails, saying so."""
    try:
        queue = JobQueue(hub)
        try:
            queue.enqueue(job_id)
        finally:
            queue.close()
    except Exception as exc:
        log.error("job queue unreachable", job_id=job_id, error=type(exc).__name__)
        _set(hub.store, job_id, "queued", status="failed", error="the job queue was unreachable", done=True)
        raise ServiceUnavailable(f"the job queue at {queue_location(hub.settings)} is unreachable") from None


def _as_dict(row) -> dict:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "params": row.params or {},
        "progress": row.progress,
        "result": row.result,
        "error": row.error,
        "attempts": row.attempts,
        "worker": row.worker,
        "heartbeat_at": _iso(row.heartbeat_at),
        "created_by": row.created_by,
        "created_at": _iso(row.created_at),
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
    }


def get_job(hub: Hub, job_id: str) -> dict:
    with hub.store.connect() as conn:
        row = conn.execute(select(job).where(job.c.id == job_id)).first()
    if row is None:
        raise NotFound(f"no job {job_id}")
    return _as_dict(row)


def list_jobs(
    hub: Hub,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    created_by: str | None = None,
) -> list[dict]:
    """Jobs matching every given filter, newest first."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    conditions = []
    for column, value in (("status", status), ("kind", kind), ("created_by", created_by)):
        if value is not None:
            conditions.append(job.c[column] == value)
    query = select(job).where(*conditions).order_by(job.c.created_at.desc(), job.c.id).limit(limit)
    with hub.store.connect() as conn:
        return [_as_dict(row) for row in conn.execute(query)]


def cancel(hub: Hub, job_id: str) -> dict:
    """Cancel a queued job (its queued task finds it cancelled and does nothing)."""
    if not _set(hub.store, job_id, "queued", status="cancelled", done=True):
        current = get_job(hub, job_id)["status"]
        raise Conflict(f"job {job_id} is {current}; only a queued job can be cancelled")
    return get_job(hub, job_id)


def _set(store: Engine, job_id: str, expected: str, *, done: bool = False, **values: Any) -> bool:
    """Change a job only if its status is still `expected`; True when this call changed it."""
    if done:
        values["finished_at"] = _now()
    with store.begin() as conn:
        result = conn.execute(
            update(job).where(job.c.id == job_id, job.c.status == expected).values(**values)
        )
    return result.rowcount == 1


# ------------------------------------------------------------------ running a job (in a worker)
@dataclass(frozen=True)
class _Claim:
    job_id: str
    kind: str
    params: dict
    attempt: int
    created_by: str | None = None


def _claim(store: Engine, job_id: str) -> _Claim | None:
    """Mark a queued job running for this worker; None when it is not queued (cancelled, done, or a
    duplicate task of a job another worker took)."""
    with store.connect() as conn:
        row = conn.execute(
            select(job.c.kind, job.c.status, job.c.params, job.c.attempts, job.c.created_by).where(
                job.c.id == job_id
            )
        ).first()
    if row is None or row.status != "queued":
        return None
    attempt = row.attempts + 1
    now = _now()
    with store.begin() as conn:
        # status alone is not enough: between the read and this write another worker may have claimed
        # the job, lost it and had it queued again. Every claim counts an attempt, so an unchanged count
        # means no claim came in between
        taken = conn.execute(
            update(job)
            .where(job.c.id == job_id, job.c.status == "queued", job.c.attempts == row.attempts)
            .values(
                status="running",
                attempts=attempt,
                worker=WORKER_ID,
                started_at=now,
                heartbeat_at=now,
                progress=0,
            )
        ).rowcount
    if not taken:
        return None
    return _Claim(job_id, row.kind, row.params or {}, attempt, row.created_by)


class _Heartbeat:
    """Marks a running job alive every few seconds, so a worker can tell a lost job from a slow one."""

    def __init__(self, store: Engine, claim: _Claim, interval: float) -> None:
        self._store = store
        self._claim = claim
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{claim.job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        claim = self._claim
        while not self._stop.wait(self._interval):
            try:
                with self._store.begin() as conn:
                    owned = conn.execute(
                        update(job).where(*_owned(claim.job_id, claim.attempt)).values(heartbeat_at=_now())
                    ).rowcount
            except Exception as exc:
                log.warning("job heartbeat failed", job_id=claim.job_id, error=type(exc).__name__)
                continue
            if not owned:
                return


def _run_job(queue: JobQueue, job_id: str) -> None:
    store = queue.hub.store
    claim = _claim(store, job_id)
    if claim is None:
        return
    kind = _find_kind(claim.kind)
    if kind is None:
        _finish(store, claim, "failed", error=f"this worker does not know job kind {claim.kind!r}")
        JOBS_FAILED.labels(claim.kind).inc()
        return
    log.info("job started", job_id=job_id, kind=kind.name, attempt=claim.attempt)
    ctx = JobContext(queue.hub, job_id, claim.attempt, claim.created_by)
    started = time.monotonic()
    JOBS_RUNNING.labels(kind.name).inc()
    try:
        with _Heartbeat(store, claim, heartbeat_seconds(queue.hub)):
            value = kind.fn(ctx, **claim.params)
            orjson.dumps(value)  # fail here, as this job, rather than when the row is written
    except _Superseded:
        log.warning("job taken over after a missed heartbeat", job_id=job_id, kind=kind.name)
        return
    except Exception as exc:
        JOB_DURATION.labels(kind.name, "failed").observe(time.monotonic() - started)
        _failed(queue, kind, claim, exc)
        return
    finally:
        JOBS_RUNNING.labels(kind.name).dec()
    JOB_DURATION.labels(kind.name, "succeeded").observe(time.monotonic() - started)
    if _finish(store, claim, "succeeded", progress=100, error=None, result=value):
        JOBS_SUCCEEDED.labels(kind.name).inc()
        log.info("job succeeded", job_id=job_id, kind=kind.name, attempt=claim.attempt)


def _finish(store: Engine, claim: _Claim, status: str, **values: Any) -> bool:
    """Record how the attempt ended, if it still owns its job; `worker` stays, naming who ran it last."""
    with store.begin() as conn:
        result = conn.execute(
            update(job)
            .where(*_owned(claim.job_id, claim.attempt))
            .values(status=status, heartbeat_at=None, finished_at=_now(), **values)
        )
    return result.rowcount == 1


def _failed(queue: JobQueue, kind: JobKind, claim: _Claim, exc: Exception) -> None:
    cause = _one_line(exc)
    transient = isinstance(exc, TRANSIENT_ERRORS) or is_transient(exc)
    log.warning("job attempt failed", job_id=claim.job_id, kind=kind.name, error=type(exc).__name__)
    if transient and claim.attempt < kind.max_attempts:
        delay = kind.retry_delay * 2 ** (claim.attempt - 1)
        with queue.hub.store.begin() as conn:
            requeued = conn.execute(
                update(job)
                .where(*_owned(claim.job_id, claim.attempt))
                .values(
                    status="queued",
                    heartbeat_at=None,
                    worker=None,
                    error=f"attempt {claim.attempt} failed: {cause}; retrying",
                )
            ).rowcount
        if requeued:
            queue.enqueue(claim.job_id, delay=delay)
            JOBS_REQUEUED.labels(kind.name, "transient").inc()
        return
    if transient and claim.attempt > 1:
        cause = f"{cause} (gave up after {claim.attempt} attempts)"
    if _finish(queue.hub.store, claim, "failed", error=cause):
        JOBS_FAILED.labels(kind.name).inc()


# ------------------------------------------------------------------ recovering jobs of lost workers
def requeue_stale(queue: JobQueue) -> int:
    """Queue again every running job whose worker stopped beating; returns how many it queued.

    A job that has used all its attempts this way (a job that kills its worker each time) fails.
    """
    now = _now()
    stale = (
        job.c.status == "running",
        job.c.heartbeat_at < now - timedelta(seconds=STALE_AFTER_BEATS * heartbeat_seconds(queue.hub)),
    )
    with queue.hub.store.connect() as conn:
        rows = conn.execute(select(job.c.id, job.c.kind, job.c.attempts).where(*stale)).all()
    requeued = 0
    for row in rows:
        kind = _find_kind(row.kind)
        attempts = row.attempts
        lost = f"the worker running attempt {attempts} stopped"
        if kind is None or attempts >= kind.max_attempts:
            values = {"status": "failed", "finished_at": now, "error": f"{lost}; no attempts left"}
        else:
            values = {"status": "queued", "error": f"{lost}; queued again"}
        with queue.hub.store.begin() as conn:
            # the same attempt, still silent: a beat written since the select keeps the job where it is
            moved = conn.execute(
                update(job)
                .where(job.c.id == row.id, job.c.attempts == attempts, *stale)
                .values(heartbeat_at=None, worker=None, **values)
            ).rowcount
        if not moved:
            continue  # another worker recovered it first, or it beat or finished after all
        if values["status"] == "failed":
            JOBS_FAILED.labels(row.kind).inc()
            continue
        queue.enqueue(row.id)
        JOBS_REQUEUED.labels(row.kind, "worker_lost").inc()
        requeued += 1
        log.warning("job of a lost worker queued again", job_id=row.id, kind=row.kind, attempt=attempts)
    return requeued


def enqueue_orphans(queue: JobQueue) -> int:
    """Put on the queue every queued job that has no task there (recorded while the queue was lost or
    unreachable); a duplicate task is harmless, since only one attempt can claim a job."""
    with queue.hub.store.connect() as conn:
        queued = conn.execute(select(job.c.id).where(job.c.status == "queued")).scalars().all()
    if not queued:
        return 0
    waiting = queue.waiting_job_ids()
    orphans = [job_id for job_id in queued if job_id not in waiting]
    for job_id in orphans:
        queue.enqueue(job_id)
    return len(orphans)


class _Consumer(Consumer):
    def _set_signal_handlers(self) -> None:
        """Leave signals alone: `clinhub worker` and `clinhub serve` (uvicorn) own them."""


class Worker:
    """A huey consumer (threads) running this hub's jobs, plus the watch that recovers lost jobs."""

    def __init__(
        self,
        hub: Hub,
        *,
        workers: int = 2,
        shutdown_timeout: float | None = 30.0,
    ) -> None:
        if workers < 1:
            raise InvalidInput("a worker needs at least one thread")
        self.queue = JobQueue(hub)
        self.workers = workers
        self._consumer = _Consumer(
            self.queue.huey,
            workers=workers,
            periodic=False,
            initial_delay=0.1,
            max_delay=1.0,  # an idle SQLite queue is polled at least once a second
            shutdown_timeout=shutdown_timeout,
        )
        self._stopping = threading.Event()
        self._next_run: dict[str, float] = {}
        self._watch = threading.Thread(target=self._watch_loop, name="clinhub-job-watch", daemon=True)

    def start(self) -> Worker:
        """Recover what earlier workers left behind, then start taking jobs."""
        store = self.queue.hub.store
        ping(store)
        if not inspect_schema(store).has_table(job.name):
            raise StoreUnavailable("the store has no job table; run 'clinhub db upgrade'")
        recovered = requeue_stale(self.queue) + enqueue_orphans(self.queue)
        self._consumer.start()
        self._watch.start()
        log.info("job worker started", threads=self.workers, recovered=recovered)
        return self

    def stop(self) -> None:
        """Stop taking jobs and wait (up to the shutdown timeout) for running ones; a job still running
        after that is queued again by the next worker once its heartbeat is stale."""
        self._stopping.set()
        self._consumer.stop(graceful=True)
        if self._watch.is_alive():
            self._watch.join()
        self.queue.close()
        log.info("job worker stopped")

    def _watch_loop(self) -> None:
        next_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
        hub = self.queue.hub
        while not self._stopping.wait(heartbeat_seconds(hub)):
            try:
                requeue_stale(self.queue)
                if time.monotonic() >= next_sweep:
                    enqueue_orphans(self.queue)
                    next_sweep = time.monotonic() + ORPHAN_SWEEP_SECONDS
                self._consumer.check_worker_health()
            except Exception as exc:
                log.warning("job watch failed", error=type(exc).__name__)
            self._run_periodic()

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for task in periodic_tasks():
            if now < self._next_run.get(task.name, 0.0):
                continue
            self._next_run[task.name] = now + task.every_seconds
            try:
                task.fn(self.queue.hub)
            except Exception as exc:
                log.warning("periodic task failed", task=task.name, error=type(exc).__name__)


def start_inprocess_worker(hub: Hub, *, workers: int = 2) -> Worker:
    """Run jobs in this process's threads (what `clinhub serve` does for the embedded default);
    call `.stop()` on the result at shutdown."""
    return Worker(hub, workers=workers).start()


# ------------------------------------------------------------------ built-in job kinds
def _count_lines(source: Path) -> int:
    paths = sorted(source.glob("*.ndjson")) if source.is_dir() else [source]
    total = 0
    for path in paths:
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                total += chunk.count(b"\n")
    return total


@job_kind("fhir.import", permission="health_data:write")
def fhir_import(ctx: JobContext, path: str) -> dict:
    """Load an NDJSON file, or every *.ndjson file of a directory, into the FHIR store."""
    # platform sits below fhir; the import waits until a job runs so the layers stay acyclic at load
    from clinhub.fhir import load_ndjson

    source = Path(path)
    if not source.is_absolute():
        raise InvalidInput("path must be absolute: the worker may run in another directory")
    total = _count_lines(source)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        ctx.progress(done, total)

    return load_ndjson(ctx.hub.store, source, progress=advance).as_dict()
