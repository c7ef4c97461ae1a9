"""The audit trail: who did what to which resource, when, from where, with what outcome; hash-chained.

Each event's hash covers its fields and the previous event's hash, so editing, deleting or reordering
any event breaks every hash after it, which `verify()` finds. `prev_hash` is unique in the store, so two
writers racing to append after the same event cannot fork the chain: the loser retries on the new head.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from clinhub.errors import ClinhubError, InvalidInput
from clinhub.platform.logging import get_logger
from clinhub.store.schema import audit_event

GENESIS = "0" * 64
OUTCOMES = ("success", "failure", "denied", "error")
AUDIT_EVENTS = Counter("clinhub_audit_events_total", "Audit events written", ["action", "outcome"])
AUDIT_PENDING = Gauge("clinhub_audit_pending", "Audit events submitted and not yet committed")
_RETRIES = 20
log = get_logger(__name__)


class AuditWriteFailed(ClinhubError):
    code = "exception"


def _utc_naive(moment: datetime) -> datetime:
    """Timestamps as every backend gives them back: UTC, without tzinfo, microseconds kept."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def event_hash(prev_hash: str, fields: dict) -> str:
    canonical = {
        **fields,
        "occurred_at": _utc_naive(fields["occurred_at"]).isoformat(timespec="microseconds"),
    }
    payload = orjson.dumps([prev_hash, canonical], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def _fields(
    actor: str,
    action: str,
    outcome: str,
    resource_type: str | None,
    resource_id: str | None,
    client_address: str | None,
    detail: dict | None,
) -> dict:
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    return {
        "actor": actor,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": outcome,
        "client_address": client_address,
        "detail": detail,
    }


def append_many(engine: Engine, events: list[dict], *, stamp: bool = False) -> list[str]:
    """Append `events` (fields as `record` takes them, each with its `occurred_at` unless `stamp`) to the
    chain in one transaction, in order; returns their hashes."""
    for _ in range(_RETRIES):
        if stamp:
            now = datetime.now(UTC)
            for fields in events:
                fields["occurred_at"] = now
        try:
            with engine.begin() as conn:
                head = conn.execute(
                    select(audit_event.c.hash).order_by(audit_event.c.id.desc()).limit(1)
                ).scalar()
                prev = head or GENESIS
                rows, digests = [], []
                for fields in events:
                    digest = event_hash(prev, fields)
                    rows.append({**fields, "prev_hash": prev, "hash": digest})
                    digests.append(digest)
                    prev = digest
                conn.execute(insert(audit_event), rows)
        except IntegrityError:
            continue  # another writer appended first; chain onto its event
        for fields in events:
            AUDIT_EVENTS.labels(fields["action"], fields["outcome"]).inc()
        return digests
    raise AuditWriteFailed("could not append to the audit trail (too much contention)")


def record(
    engine: Engine,
    *,
    actor: str,
    action: str,
    outcome: str = "success",
    resource_type: str | None = None,
    resource_id: str | None = None,
    client_address: str | None = None,
    detail: dict | None = None,
) -> str:
    """Append one event to the chain, committed before this returns, and return its hash. `detail` must
    hold no health data."""
    fields = _fields(actor, action, outcome, resource_type, resource_id, client_address, detail)
    return append_many(engine, [fields], stamp=True)[0]


class AuditQueue:
    """Audit events appended in groups by one background thread: for reads, whose response need not
    wait for their event's commit. Each event keeps the time it was submitted; whatever queued up while
    the previous group committed goes in the next transaction, so under load many requests share one
    commit instead of queueing for the store's one writer. `flush()` waits until everything submitted
    is in the store; `close()` flushes and stops. A store outage keeps the events queued and retried
    (`clinhub_audit_pending` shows how many), never dropped.
    """

    def __init__(self, engine: Engine, *, max_batch: int = 1000, retry_seconds: float = 1.0) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self._pending: list[dict] = []
        self._cond = threading.Condition()
        self._submitted = self._written = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="audit-queue", daemon=True)
        self._thread.start()

    def submit(
        self,
        *,
        actor: str,
        action: str,
        outcome: str = "success",
        resource_type: str | None = None,
        resource_id: str | None = None,
        client_address: str | None = None,
        detail: dict | None = None,
    ) -> None:
        fields = _fields(actor, action, outcome, resource_type, resource_id, client_address, detail)
        fields["occurred_at"] = datetime.now(UTC)
        with self._cond:
            if self._closed:  # after shutdown began: write it now rather than lose it
                append_many(self.engine, [fields])
                return
            self._pending.append(fields)
            self._submitted += 1
            AUDIT_PENDING.inc()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending and self._closed:
                    return
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
            while True:
                try:
                    append_many(self.engine, batch)
                    break
                except Exception as exc:  # the store is down or busy: keep the events, try again
                    log.error("audit_append_failed", events=len(batch), error=type(exc).__name__)
                    time.sleep(self.retry_seconds)
            with self._cond:
                self._written += len(batch)
                AUDIT_PENDING.dec(len(batch))
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every event submitted so far is committed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    broken_at: int | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "broken_at": self.broken_at, "reason": self.reason}


def verify(engine: Engine) -> Verification:
    """Walk the chain in order and recompute every hash; report the first event that does not fit."""
    prev = GENESIS
    checked = 0
    columns = [c for c in audit_event.c if c.name not in ("id", "prev_hash", "hash")]
    with engine.connect() as conn:
        rows = conn.execution_options(yield_per=2000).execute(select(audit_event).order_by(audit_event.c.id))
        for row in rows:
            checked += 1
            if row.prev_hash != prev:
                return Verification(
                    False, checked, row.id, "previous-hash link broken (event removed or moved)"
                )
            fields = {str(c.name): getattr(row, c.name) for c in columns}
            if event_hash(prev, fields) != row.hash:
                return Verification(False, checked, row.id, "event content does not match its hash")
            prev = row.hash
    return Verification(True, checked)


def search(
    engine: Engine,
    *,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict]]:
    """Events matching every given filter, newest first; returns (total matching, page)."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    conditions = []
    for column, value in (
        ("actor", actor),
        ("action", action),
        ("resource_type", resource_type),
        ("resource_id", resource_id),
        ("outcome", outcome),
    ):
        if value is not None:
            conditions.append(audit_event.c[column] == value)
    if since is not None:
        conditions.append(audit_event.c.occurred_at >= _utc_naive(since))
    if until is not None:
        conditions.append(audit_event.c.occurred_at < _utc_naive(until))
    query = (
        select(audit_event).where(*conditions).order_by(audit_event.c.id.desc()).limit(limit).offset(offset)
    )
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(audit_event).where(*conditions)).scalar_one()
        rows = [_as_dict(row) for row in conn.execute(query)]
    return total, rows


def _as_dict(row) -> dict:
    data = dict(row._mapping)
    data["occurred_at"] = _utc_naive(data["occurred_at"]).isoformat(timespec="microseconds") + "Z"
    return data


_FHIR_ACTION = {"create": "C", "read": "R", "search": "R", "update": "U", "delete": "D"}
_FHIR_OUTCOME = {"success": "0", "failure": "4", "denied": "4", "error": "8"}


def to_fhir(event: dict) -> dict:
    """One audit event (as `search` returns it) as a FHIR R4 AuditEvent resource."""
    verb = event["action"].rsplit(".", 1)[-1]
    resource = {
        "resourceType": "AuditEvent",
        "id": str(event["id"]),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [{"system": "urn:clinhub:audit-action", "code": event["action"]}],
        "action": _FHIR_ACTION.get(verb, "E"),
        "recorded": event["occurred_at"],
        "outcome": _FHIR_OUTCOME[event["outcome"]],
        "agent": [{"who": {"display": event["actor"]}, "requestor": True}],
        "source": {"observer": {"display": "clinhub"}},
        "extension": [{"url": "urn:clinhub:audit-hash", "valueString": event["hash"]}],
    }
    if event.get("client_address"):
        resource["agent"][0]["network"] = {"address": event["client_address"], "type": "2"}
    if event.get("resource_type"):
        reference = event["resource_type"] + (f"/{event['resource_id']}" if event.get("resource_id") else "")
        resource["entity"] = [{"what": {"reference": reference}}]
    return resource
