"""The HL7 v2 message store: accept (commit, then acknowledge), map to FHIR, search, error queue, replay.

Accepting and mapping are two steps, as in a store-and-forward interface engine. `accept` commits the
raw messages of a group in one transaction and only then returns their acknowledgements, so an AA
always means "stored durably"; a repeated control id from the same sender is not stored twice and
gets its first acknowledgement code again. `process_pending` maps stored messages to FHIR afterwards;
a message whose mapping fails is kept with status `error` and its reason (the error queue), and
`replay` maps it again after a fix. Nothing is dropped: even a message that does not parse is stored
(status `error`, acknowledged AR) so it can be looked at and replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram
from sqlalchemy import Engine, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from clinhub.engine import AnalyticEngine
from clinhub.errors import ClinhubError, InvalidInput, NotFound
from clinhub.hl7.message import Message, ParseError, ack_text, local_now, nak_for_unparseable, parse
from clinhub.platform.logging import get_logger
from clinhub.store.resources import current_many, put_resources
from clinhub.store.schema import hl7_message, hl7_message_resource

log = get_logger("clinhub.hl7")

STATUSES = ("received", "processed", "error", "replayed")

RECEIVED = Counter("clinhub_hl7_messages_received_total", "HL7 messages received", ["type", "trigger"])
ACKS = Counter("clinhub_hl7_acks_total", "HL7 acknowledgements sent, by code", ["code"])
DUPLICATES = Counter("clinhub_hl7_duplicates_total", "HL7 messages received again (same sender, control id)")
PROCESSED = Counter(
    "clinhub_hl7_messages_processed_total", "HL7 messages mapped to FHIR", ["type", "trigger"]
)
ERRORS = Counter("clinhub_hl7_message_errors_total", "HL7 messages that failed", ["type", "trigger", "stage"])
COMMIT_SECONDS = Histogram(
    "clinhub_hl7_commit_seconds",
    "Time to commit one group of received HL7 messages",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@dataclass
class Accepted:
    """What became of one received message: the acknowledgement to send and where the message is."""

    ack: str
    code: str
    duplicate: bool = False
    control_id: str = ""


@dataclass
class _Incoming:
    raw: str
    received_at: datetime
    message: Message | None
    error: ClinhubError | None
    row: dict = field(default_factory=dict)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _incoming(data: bytes | str, received_at: datetime, channel: str) -> _Incoming:
    try:
        message = parse(data)
        if not message.control_id:
            raise ParseError("MSH-10 message control id missing", error_code="101", location="MSH-10")
        raw = message.encode()
    except ParseError as exc:
        raw = _text(data)
        return _Incoming(
            raw,
            received_at,
            None,
            exc,
            {
                "received_at": received_at,
                "channel": channel,
                # every row of a batch has the same keys: one multi-row insert takes them all
                "sending_application": "",
                "sending_facility": "",
                "receiving_application": "",
                "receiving_facility": "",
                "message_type": "",
                "trigger_event": "",
                "control_id": f"unparsed-{uuid.uuid4()}",
                "version": "",
                "raw": raw,
                "status": "error",
                "error": f"not accepted: {exc.message}",
                "ack_code": "AR",
            },
        )
    return _Incoming(
        raw,
        received_at,
        message,
        None,
        {
            "received_at": received_at,
            "channel": channel,
            "sending_application": message.sending_application[:180],
            "sending_facility": message.sending_facility[:180],
            "receiving_application": message.receiving_application[:180],
            "receiving_facility": message.receiving_facility[:180],
            "message_type": message.message_type[:16],
            "trigger_event": message.trigger_event[:16],
            "control_id": message.control_id[:199],
            "version": message.version[:16],
            "raw": raw,
            "status": "received",
            "error": None,
            "ack_code": "AA",
        },
    )


def _key(row: dict) -> tuple[str, str, str]:
    return (row.get("sending_application", ""), row.get("sending_facility", ""), row["control_id"])


def accept(
    engine: Engine, received: Sequence[tuple[bytes | str, datetime]], channel: str = "default"
) -> list[Accepted]:
    """Store a group of received messages in one transaction and return their acknowledgements, in order.

    Call it from one thread per store at a time (the MLLP server's committer does); a duplicate that
    another process stores at the same moment is caught by the unique key and answered as a duplicate.
    """
    items = [_incoming(data, at, channel) for data, at in received]
    with COMMIT_SECONDS.time():
        try:
            first_codes = _store(engine, items)
        except IntegrityError:
            first_codes = _store(engine, items)  # someone else stored one of them just now: look again
    results: list[Accepted] = []
    now = local_now()
    for item in items:
        if item.message is None:
            reason = item.error or InvalidInput("message could not be parsed")
            results.append(Accepted(nak_for_unparseable(item.raw, reason), "AR"))
            ACKS.labels("AR").inc()
            ERRORS.labels("", "", "parse").inc()
            continue
        key = _key(item.row)
        code, duplicate = first_codes[id(item)]
        RECEIVED.labels(item.row["message_type"], item.row["trigger_event"]).inc()
        if duplicate:
            DUPLICATES.inc()
        results.append(Accepted(ack_text(item.message, code, now=now), code, duplicate, key[2]))
        ACKS.labels(code).inc()
    return results


def _store(engine: Engine, items: list[_Incoming]) -> dict[int, tuple[str, bool]]:
    """Insert the new messages of `items`; returns id(item) -> (ack code, duplicate) for parsed ones."""
    parsed = [item for item in items if item.message is not None]
    keys = list({_key(item.row) for item in parsed})
    codes: dict[int, tuple[str, bool]] = {}
    with engine.begin() as conn:
        known: dict[tuple[str, str, str], str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = conn.execute(
                select(
                    hl7_message.c.sending_application,
                    hl7_message.c.sending_facility,
                    hl7_message.c.control_id,
                    hl7_message.c.ack_code,
                ).where(
                    tuple_(
                        hl7_message.c.sending_application,
                        hl7_message.c.sending_facility,
                        hl7_message.c.control_id,
                    ).in_(chunk)
                )
            )
            for app, facility, control_id, code in rows:
                known[(app, facility, control_id)] = code or "AA"
        new_rows = []
        for item in items:
            if item.message is None:
                new_rows.append(item.row)
                continue
            key = _key(item.row)
            if key in known:
                codes[id(item)] = (known[key], True)
                continue
            known[key] = "AA"
            codes[id(item)] = ("AA", False)
            new_rows.append(item.row)
        if new_rows:
            conn.execute(insert(hl7_message), new_rows)
    return codes


# ------------------------------------------------------------------ mapping to FHIR
@dataclass
class ProcessResult:
    processed: int = 0
    errors: int = 0
    resources: int = 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ClinhubError):
        return " ".join(exc.message.split())[:1000]
    # another exception's text may quote the message (health data); its type says enough to look
    return f"mapping failed: {type(exc).__name__}"


def _lay_over_known(engine: Engine, mapped: list[tuple[list[dict], set[tuple[str, str]]]]) -> list[dict]:
    """The resources of each message in order (its resources and the keys of those it knows only in
    part), each partial one laid over the version known before it: an earlier message's in this batch,
    else the store's."""
    from clinhub.hl7.to_fhir import merge_partial

    wanted: dict[str, set[str]] = {}
    for _, partial in mapped:
        for resource_type, resource_id in partial:
            wanted.setdefault(resource_type, set()).add(resource_id)
    known: dict[tuple[str, str], dict] = {}
    if wanted:
        with engine.connect() as conn:
            for resource_type, ids in wanted.items():
                for rid, stored in current_many(conn, resource_type, sorted(ids)).items():
                    known[(resource_type, rid)] = stored
    out = []
    for resources, partial in mapped:
        for resource in resources:
            key = (resource["resourceType"], resource["id"])
            if key in partial and key in known:
                resource = merge_partial(resource, known[key])
            if wanted:
                known[key] = resource
            out.append(resource)
    return out


def _map_rows(engine: Engine, rows: Sequence, done_status: str) -> ProcessResult:
    from clinhub.hl7.to_fhir import to_fhir  # the mapping is the heaviest import; accepting needs none

    result = ProcessResult()
    mapped: list[tuple[int, str, str, list[dict]]] = []
    failed: list[tuple[int, str, str, str]] = []
    partials: list[set[tuple[str, str]]] = []
    for row in rows:
        partial: set[tuple[str, str]] = set()
        try:
            resources = to_fhir(parse(row.raw), partial=partial)
        except Exception as exc:
            failed.append((row.id, row.message_type, row.trigger_event, _reason(exc)))
            continue
        mapped.append((row.id, row.message_type, row.trigger_event, resources))
        partials.append(partial)
    try:
        by_message = [(m[3], partial) for m, partial in zip(mapped, partials, strict=True)]
        put_resources(engine, _lay_over_known(engine, by_message))
    except Exception:
        if len(mapped) == 1:
            row_id, message_type, trigger, _ = mapped[0]
            failed.append((row_id, message_type, trigger, "the resources it maps to could not be stored"))
            mapped = []
        else:  # find the message at fault: map one by one
            for row in rows:
                if any(row.id == m[0] for m in mapped):
                    single = _map_rows(engine, [row], done_status)
                    result.processed += single.processed
                    result.errors += single.errors
                    result.resources += single.resources
            mapped = []
    now = datetime.now(UTC)
    with engine.begin() as conn:
        touched = [m[0] for m in mapped] + [f[0] for f in failed]
        if touched:
            conn.execute(delete(hl7_message_resource).where(hl7_message_resource.c.message_id.in_(touched)))
        links = [
            {"message_id": row_id, "resource_type": r["resourceType"], "resource_id": r["id"]}
            for row_id, _, _, resources in mapped
            for r in {(r["resourceType"], r["id"]): r for r in resources}.values()
        ]
        if links:
            conn.execute(insert(hl7_message_resource), links)
        if mapped:
            conn.execute(
                update(hl7_message)
                .where(hl7_message.c.id.in_([m[0] for m in mapped]))
                .values(status=done_status, error=None, processed_at=now)
            )
        for row_id, _, _, reason in failed:
            conn.execute(
                update(hl7_message)
                .where(hl7_message.c.id == row_id)
                .values(status="error", error=reason, processed_at=now)
            )
    for _, message_type, trigger, resources in mapped:
        PROCESSED.labels(message_type, trigger).inc()
        result.resources += len(resources)
    for _, message_type, trigger, _ in failed:
        ERRORS.labels(message_type, trigger, "mapping").inc()
    result.processed += len(mapped)
    result.errors += len(failed)
    return result


_ROW = (hl7_message.c.id, hl7_message.c.raw, hl7_message.c.message_type, hl7_message.c.trigger_event)


def process_pending(engine: Engine, limit: int = 1000) -> ProcessResult:
    """Map up to `limit` received messages to FHIR, oldest first; run by one processor per store."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(*_ROW).where(hl7_message.c.status == "received").order_by(hl7_message.c.id).limit(limit)
        ).all()
    if not rows:
        return ProcessResult()
    return _map_rows(engine, rows, "processed")


def pending_count(engine: Engine) -> int:
    """Messages stored but not mapped yet (the mapping backlog)."""
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(hl7_message).where(hl7_message.c.status == "received")
        ).scalar_one()


# ------------------------------------------------------------------ operations
@dataclass
class MessageFilter:
    """Search criteria for stored messages; every one is optional."""

    message_type: str | None = None
    trigger_event: str | None = None
    status: str | None = None
    sender: str | None = None
    control_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    patient_identifier: str | None = None
    text: str | None = None
    ids: list[int] | None = None

    def conditions(self) -> list:
        found = []
        if self.status is not None and self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, not {self.status!r}")
        if self.message_type:
            found.append(hl7_message.c.message_type == self.message_type.upper())
        if self.trigger_event:
            found.append(hl7_message.c.trigger_event == self.trigger_event.upper())
        if self.status:
            found.append(hl7_message.c.status == self.status)
        if self.sender:
            found.append(
                or_(
                    hl7_message.c.sending_application == self.sender,
                    hl7_message.c.sending_facility == self.sender,
                )
            )
        if self.control_id:
            found.append(hl7_message.c.control_id == self.control_id)
        if self.since:
            found.append(hl7_message.c.received_at >= self.since)
        if self.until:
            found.append(hl7_message.c.received_at < self.until)
        if self.text:
            found.append(hl7_message.c.raw.contains(self.text, autoescape=True))
        if self.patient_identifier:
            # PID-3 sits in the raw text between field separators; the exact check follows on parse
            found.append(hl7_message.c.raw.contains(self.patient_identifier, autoescape=True))
        if self.ids is not None:
            found.append(hl7_message.c.id.in_(self.ids))
        return found


def _has_patient(raw: str, identifier: str) -> bool:
    try:
        message = parse(raw)
    except ParseError:
        return False
    for pid in message.all("PID"):
        for rep in range(1, pid.count(3) + 1):
            if pid.value(3, rep, 1) == identifier:
                return True
    return False


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _summary(row) -> dict:
    return {
        "id": row.id,
        "received_at": _iso(row.received_at),
        "channel": row.channel,
        "sending_application": row.sending_application,
        "sending_facility": row.sending_facility,
        "receiving_application": row.receiving_application,
        "receiving_facility": row.receiving_facility,
        "message_type": row.message_type,
        "trigger_event": row.trigger_event,
        "control_id": row.control_id,
        "version": row.version,
        "status": row.status,
        "error": row.error,
        "ack_code": row.ack_code,
        "processed_at": _iso(row.processed_at),
    }


def search(engine: Engine, criteria: MessageFilter, *, limit: int = 100, offset: int = 0) -> dict:
    """Stored messages matching `criteria`, newest first, without their raw text; and the total."""
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidInput("limit must be 1..1000 and offset not negative")
    conditions = criteria.conditions()
    columns = [c for c in hl7_message.c if c.name != "raw"]
    with engine.connect() as conn:
        if criteria.patient_identifier:
            # the containment test narrows in SQL; the PID-3 check needs the parsed message
            rows = conn.execute(
                select(*columns, hl7_message.c.raw).where(*conditions).order_by(hl7_message.c.id.desc())
            ).all()
            rows = [row for row in rows if _has_patient(row.raw, criteria.patient_identifier)]
            total = len(rows)
            rows = rows[offset : offset + limit]
        else:
            total = conn.execute(
                select(func.count()).select_from(hl7_message).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                select(*columns)
                .where(*conditions)
                .order_by(hl7_message.c.id.desc())
                .limit(limit)
                .offset(offset)
            ).all()
    return {"total": total, "messages": [_summary(row) for row in rows]}


def _tree(message: Message) -> list[dict]:
    tree = []
    for segment in message.segments:
        fields = segment.fields
        tree.append({"segment": segment.name, "fields": {str(i): v for i, v in enumerate(fields) if i and v}})
    return tree


def get_message(engine: Engine, message_id: int) -> dict:
    """One stored message: its summary, raw text, parsed tree and the FHIR resources it produced."""
    with engine.connect() as conn:
        row = conn.execute(select(hl7_message).where(hl7_message.c.id == message_id)).first()
        if row is None:
            raise NotFound(f"no HL7 message {message_id}")
        links = conn.execute(
            select(hl7_message_resource.c.resource_type, hl7_message_resource.c.resource_id)
            .where(hl7_message_resource.c.message_id == message_id)
            .order_by(hl7_message_resource.c.resource_type, hl7_message_resource.c.resource_id)
        ).all()
    body = _summary(row)
    body["raw"] = row.raw
    try:
        body["parsed"] = _tree(parse(row.raw))
    except ParseError as exc:
        body["parsed"] = None
        body["parse_error"] = exc.message
    body["resources"] = [f"{t}/{i}" for t, i in links]
    return body


def replay(engine: Engine, criteria: MessageFilter, *, limit: int = 10_000) -> ProcessResult:
    """Map the matching messages to FHIR again (after a mapping fix); the status becomes `replayed`,
    or `error` with the new reason. MessageFilter(status="error") replays the error queue."""
    conditions = criteria.conditions()
    if not conditions:
        raise InvalidInput("say which messages to replay (ids, a status, a type...), not all of them")
    total = ProcessResult()
    last_id = 0
    while total.processed + total.errors < limit:
        with engine.connect() as conn:
            rows = conn.execute(
                select(*_ROW)
                .where(*conditions, hl7_message.c.id > last_id)
                .order_by(hl7_message.c.id)
                .limit(min(500, limit - total.processed - total.errors))
            ).all()
        if not rows:
            break
        if criteria.patient_identifier:
            rows = [row for row in rows if _has_patient(row.raw, criteria.patient_identifier)]
        last_id = max(row.id for row in rows) if rows else last_id
        if not rows:
            break
        part = _map_rows(engine, rows, "replayed")
        total.processed += part.processed
        total.errors += part.errors
        total.resources += part.resources
    return total


def error_queue(engine: Engine, *, limit: int = 100, offset: int = 0) -> dict:
    """Messages that failed (status `error`), newest first, with their reasons."""
    return search(engine, MessageFilter(status="error"), limit=limit, offset=offset)


def counts(engine: Engine) -> dict[str, int]:
    """Stored messages per status."""
    with engine.connect() as conn:
        rows = conn.execute(select(hl7_message.c.status, func.count()).group_by(hl7_message.c.status))
        return {status: n for status, n in rows}


def error_types(engine: Engine, *, limit: int = 5) -> list[dict]:
    """Messages in the error queue per message type and trigger, most first (no message content)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(hl7_message.c.message_type, hl7_message.c.trigger_event, func.count().label("n"))
            .where(hl7_message.c.status == "error")
            .group_by(hl7_message.c.message_type, hl7_message.c.trigger_event)
            .order_by(func.count().desc())
            .limit(limit)
        ).all()
    return [{"type": f"{r.message_type}^{r.trigger_event}".rstrip("^"), "messages": r.n} for r in rows]


#: the message store's columns other domains may read (analytics): never `raw`, never `error` text
FACT_COLUMNS = (
    "id",
    "received_at",
    "processed_at",
    "channel",
    "sending_application",
    "sending_facility",
    "message_type",
    "trigger_event",
    "status",
    "ack_code",
)


def facts_sql(engine: AnalyticEngine) -> str:
    """SQL (DuckDB, over the attached store) of one row per stored message with FACT_COLUMNS: what other
    domains query for volumes, latency and error rates, without the messages' content."""
    columns = ", ".join(FACT_COLUMNS)
    return f"SELECT {columns} FROM {engine.store_table('hl7_message')}"  # noqa: S608 (our own names)
