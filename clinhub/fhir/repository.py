"""The FHIR interactions on the store: read, vread, create, update, delete, history, conditional forms.

Every function takes a Connection, so the REST API runs one interaction per transaction and a transaction
Bundle runs all its entries in one. Writes go through clinhub.store.resources, which keeps history and the
search index in the same transaction.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from sqlalchemy import Connection, Text, and_, cast, func, select

from clinhub.errors import ClinhubError, Conflict, InvalidInput, InvalidResource, NotFound
from clinhub.fhir.search import parse_search, run_search
from clinhub.store.resources import current, delete_resource, write_resource
from clinhub.store.schema import fhir_resource_history

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ETAG = re.compile(r'(?:W/)?"?(\d+)"?')


class Gone(ClinhubError):
    """The resource existed and was deleted (HTTP 410)."""

    http_status = 410
    code = "deleted"


class PreconditionFailed(ClinhubError):
    """If-Match did not match, or a conditional interaction matched more than one resource (HTTP 412)."""

    http_status = 412
    code = "conflict"


def check_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidInput(f"not a FHIR id: {value!r} (1 to 64 letters, digits, '-' or '.')")
    return value


def parse_etag(value: str | None) -> int | None:
    """The version in an `If-Match` header (`W/"3"`), or None when absent."""
    if value is None:
        return None
    found = _ETAG.fullmatch(value.strip())
    if not found:
        raise InvalidInput(f'If-Match must be a version tag such as W/"3", got {value!r}')
    return int(found.group(1))


def new_id() -> str:
    return str(uuid.uuid4())


def read(conn: Connection, resource_type: str, resource_id: str) -> dict:
    found = current(conn, resource_type, check_id(resource_id))
    if found is None:
        raise NotFound(f"no {resource_type}/{resource_id}")
    if found.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted (version {found.version})")
    return found.resource


def vread(conn: Connection, resource_type: str, resource_id: str, version: str) -> dict:
    if not version.isdigit():
        raise InvalidInput(f"version must be a whole number, got {version!r}")
    h = fhir_resource_history
    row = conn.execute(
        select(h.c.deleted, cast(h.c.resource, Text)).where(
            h.c.resource_type == resource_type,
            h.c.id == check_id(resource_id),
            h.c.version_id == int(version),
        )
    ).first()
    if row is None:
        raise NotFound(f"no version {version} of {resource_type}/{resource_id}")
    if row[0]:
        raise Gone(f"version {version} of {resource_type}/{resource_id} is its deletion")
    return orjson.loads(row[1])


def _matching(conn: Connection, resource_type: str, criteria: str) -> list[str]:
    """Ids of the (at most two) resources a conditional interaction's search criteria match."""
    from urllib.parse import parse_qsl

    query = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not query:
        raise InvalidInput("conditional interaction without search criteria")
    request = parse_search(resource_type, [*query, ("_count", "2")])
    return [resource_id for resource_id, _ in run_search(conn, request).matches]


@dataclass
class WriteResult:
    resource: dict
    #: 'created', 'updated', 'unchanged' or 'exists' (a conditional create that found its match)
    outcome: str

    @property
    def status(self) -> int:
        return 201 if self.outcome == "created" else 200


def create_match(conn: Connection, resource_type: str, criteria: str) -> str | None:
    """The id of the one resource a conditional create's criteria match, None for none, 412 for more."""
    found = _matching(conn, resource_type, criteria)
    if len(found) > 1:
        raise PreconditionFailed(f"If-None-Exist matches more than one {resource_type}")
    return found[0] if found else None


def current_resource(conn: Connection, resource_type: str, resource_id: str) -> dict | None:
    """The current version, or None when absent or deleted."""
    found = current(conn, resource_type, resource_id)
    return None if found is None or found.deleted else found.resource


def create(conn: Connection, resource: dict, *, if_none_exist: str | None = None) -> WriteResult:
    """Create with a server-assigned id; with `if_none_exist` (search criteria) return the one match
    instead, or fail with 412 when several match."""
    resource_type = resource["resourceType"]
    if if_none_exist is not None:
        found = create_match(conn, resource_type, if_none_exist)
        if found is not None:
            return WriteResult(read(conn, resource_type, found), "exists")
    stored, outcome = write_resource(conn, {**resource, "id": new_id()})
    return WriteResult(stored, outcome)


def update(
    conn: Connection, resource_type: str, resource_id: str, resource: dict, *, if_match: int | None = None
) -> WriteResult:
    """Create or replace `resource_type/resource_id` (update as create is allowed)."""
    check_id(resource_id)
    body_id = resource.get("id")
    if body_id is None:
        raise InvalidResource(f"the body has no id; it must be {resource_id!r}")
    if body_id != resource_id:
        raise InvalidResource(f"the body's id {body_id!r} differs from the URL's {resource_id!r}")
    try:
        stored, outcome = write_resource(conn, resource, if_match=if_match)
    except Conflict as exc:
        if exc.detail.get("precondition"):
            raise PreconditionFailed(exc.message) from None
        raise
    return WriteResult(stored, outcome)


def conditional_update(
    conn: Connection, resource_type: str, criteria: str, resource: dict, *, if_match: int | None = None
) -> WriteResult:
    """Update the one resource the criteria match, create it when none does, 412 when several do."""
    found = _matching(conn, resource_type, criteria)
    if len(found) > 1:
        raise PreconditionFailed(f"the criteria match more than one {resource_type}")
    body_id = resource.get("id")
    if found:
        if body_id is not None and body_id != found[0]:
            raise InvalidResource(f"the body's id {body_id!r} differs from the matching {found[0]!r}")
        return update(conn, resource_type, found[0], {**resource, "id": found[0]}, if_match=if_match)
    resource_id = body_id if isinstance(body_id, str) else new_id()
    return update(conn, resource_type, resource_id, {**resource, "id": resource_id}, if_match=if_match)


def delete(
    conn: Connection, resource_type: str, resource_id: str, *, if_match: int | None = None
) -> int | None:
    """Delete (a new version marked deleted); None when there was nothing to delete (still a success)."""
    try:
        return delete_resource(conn, resource_type, check_id(resource_id), if_match=if_match)
    except Conflict as exc:
        if exc.detail.get("precondition"):
            raise PreconditionFailed(exc.message) from None
        raise


@dataclass
class Version:
    resource_type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    text: str


def _moment(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def history(
    conn: Connection,
    resource_type: str,
    resource_id: str | None,
    *,
    since: datetime | None = None,
    count: int = 50,
    offset: int = 0,
) -> tuple[list[Version], bool, int]:
    """Versions newest first (of one resource, or of every resource of a type): (page, more, total)."""
    h = fhir_resource_history
    where = [h.c.resource_type == resource_type]
    if resource_id is not None:
        where.append(h.c.id == check_id(resource_id))
    if since is not None:
        where.append(h.c.last_updated >= since)
    total = conn.execute(select(func.count()).select_from(h).where(and_(*where))).scalar_one()
    if resource_id is not None and total == 0 and current(conn, resource_type, resource_id) is None:
        raise NotFound(f"no {resource_type}/{resource_id}")
    rows = conn.execute(
        select(h.c.id, h.c.version_id, h.c.last_updated, h.c.deleted, cast(h.c.resource, Text))
        .where(*where)
        .order_by(h.c.last_updated.desc(), h.c.id, h.c.version_id.desc())
        .limit(count + 1)
        .offset(offset)
    ).all()
    versions = [
        Version(resource_type, row[0], row[1], _moment(row[2]), bool(row[3]), row[4]) for row in rows[:count]
    ]
    return versions, len(rows) > count, total
