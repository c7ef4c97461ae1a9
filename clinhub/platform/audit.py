"""The audit trail: who did what to which resource, when, from where, with what outcome; hash-chained.

Each event's hash covers its fields and the previous event's hash, so editing, deleting or reordering
any event breaks every hash after it, which `verify()` finds. `prev_hash` is unique in the store, so two
writers racing to append after the same event cannot fork the chain: the loser retries on the new head.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from prometheus_client import Counter
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from clinhub.errors import ClinhubError, InvalidInput
from clinhub.store.schema import audit_event

GENESIS = "0" * 64
OUTCOMES = ("success", "failure", "denied", "error")
AUDIT_EVENTS = Counter("clinhub_audit_events_total", "Audit events written", ["action", "outcome"])
_RETRIES = 20


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
    """Append one event to the chain and return its hash. `detail` must hold no health data."""
    if outcome not in OUTCOMES:
        raise InvalidInput(f"outcome must be one of {', '.join(OUTCOMES)}")
    fields = {
        "actor": actor,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "outcome": outcome,
        "client_address": client_address,
        "detail": detail,
    }
    for _ in range(_RETRIES):
        fields["occurred_at"] = datetime.now(UTC)
        try:
            with engine.begin() as conn:
                head = conn.execute(
                    select(audit_event.c.hash).order_by(audit_event.c.id.desc()).limit(1)
                ).scalar()
                prev = head or GENESIS
                digest = event_hash(prev, fields)
                conn.execute(insert(audit_event).values(**fields, prev_hash=prev, hash=digest))
        except IntegrityError:
            continue  # another writer appended first; chain onto its event
        AUDIT_EVENTS.labels(action, outcome).inc()
        return digest
    raise AuditWriteFailed("could not append to the audit trail (too much contention)")


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
