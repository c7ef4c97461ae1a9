"""Transaction and batch Bundles.

A transaction runs every entry in one database transaction: all succeed or none is kept. Entries run in
the order the specification sets (DELETE, POST, PUT, GET), their responses keep the request order, and
`urn:uuid:` references between entries are replaced by the ids the server assigns (or a conditional
create finds) before anything is written. A batch runs each entry on its own and reports each outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy import Connection, Engine

from clinhub.errors import ClinhubError, InvalidInput, InvalidResource
from clinhub.fhir import repository
from clinhub.fhir.responses import etag, outcome_of
from clinhub.fhir.search import parse_search, run_search
from clinhub.fhir.validation import is_resource_type, validate

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
MAX_ENTRIES = 10_000


class EntryFailed(ClinhubError):
    """An entry of a transaction failed; the whole transaction was rolled back."""

    def __init__(self, index: int, cause: ClinhubError) -> None:
        super().__init__(f"entry {index}: {cause.message}", detail=cause.detail)
        self.http_status = cause.http_status
        self.code = cause.code
        self.index = index


@dataclass
class Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    version: str | None
    query: str | None
    resource: dict | None
    full_url: str | None
    if_match: int | None
    if_none_exist: str | None


def _url_parts(url: str) -> tuple[str, str | None, str | None, str | None]:
    """(type, id, version, query) of an entry's request URL, relative or absolute."""
    split = urlsplit(url)
    segments = [s for s in split.path.split("/") if s]
    for start, segment in enumerate(segments):
        if is_resource_type(segment):
            segments = segments[start:]
            break
    else:
        raise InvalidInput(f"request.url {url!r} names no resource type")
    resource_type = segments[0]
    resource_id = segments[1] if len(segments) > 1 else None
    version = None
    if len(segments) == 4 and segments[2] == "_history":
        version = segments[3]
    elif len(segments) > 2:
        raise InvalidInput(f"request.url {url!r} is not a supported interaction")
    return resource_type, resource_id, version, split.query or None


def parse_entries(bundle: Any) -> tuple[str, list[Entry]]:
    """The bundle's type ('transaction' or 'batch') and its entries, checked."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InvalidInput("the body must be a Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise InvalidInput("Bundle.type must be transaction or batch")
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list) or len(raw_entries) > MAX_ENTRIES:
        raise InvalidInput(f"Bundle.entry must be a list of at most {MAX_ENTRIES} entries")
    entries = []
    for index, raw in enumerate(raw_entries):
        request = raw.get("request") if isinstance(raw, dict) else None
        if not isinstance(request, dict):
            raise InvalidInput(f"Bundle.entry[{index}].request is missing")
        method, url = request.get("method"), request.get("url")
        if method not in _ORDER or not isinstance(url, str):
            raise InvalidInput(
                f"Bundle.entry[{index}].request needs a method (GET, POST, PUT, DELETE) and a url"
            )
        resource_type, resource_id, version, query = _url_parts(url)
        resource = raw.get("resource")
        if method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                raise InvalidResource(f"Bundle.entry[{index}] needs a resource for {method}")
            if resource.get("resourceType") != resource_type:
                raise InvalidResource(f"Bundle.entry[{index}].resource is not a {resource_type}")
        if_match = request.get("ifMatch")
        entries.append(
            Entry(
                index,
                method,
                resource_type,
                resource_id,
                version,
                query,
                resource if isinstance(resource, dict) else None,
                raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None,
                repository.parse_etag(if_match) if isinstance(if_match, str) else None,
                request.get("ifNoneExist") if isinstance(request.get("ifNoneExist"), str) else None,
            )
        )
    return kind, entries


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    """`value` with every reference to a key of `ids` replaced by its value."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item.startswith("urn:"):
                if item not in ids:
                    raise InvalidResource(f"reference {item!r} names no entry of this transaction")
                found[key] = ids[item]
            else:
                found[key] = _rewrite(item, ids)
        return found
    if isinstance(value, list):
        return [_rewrite(item, ids) for item in value]
    return value


@dataclass
class Response:
    status: int
    resource: Any = None
    location: str | None = None
    etag: str | None = None
    outcome: dict | None = None

    def entry(self) -> dict:
        response: dict[str, Any] = {"status": _STATUS_TEXT.get(self.status, str(self.status))}
        if self.location:
            response["location"] = self.location
        if self.etag:
            response["etag"] = self.etag
        if self.outcome:
            response["outcome"] = self.outcome
        entry: dict[str, Any] = {"response": response}
        if self.resource is not None:
            entry["resource"] = self.resource
        return entry


def _location(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


def _run(conn: Connection, entry: Entry, base: str) -> Response:
    if entry.method == "DELETE":
        if entry.resource_id is None:
            raise InvalidInput("DELETE needs Type/id (conditional delete is not supported)")
        repository.delete(conn, entry.resource_type, entry.resource_id, if_match=entry.if_match)
        return Response(204)
    if entry.method == "POST":
        result = repository.create(conn, entry.resource, if_none_exist=entry.if_none_exist)  # type: ignore[arg-type]
        return Response(result.status, result.resource, _location(result.resource), etag(result.resource))
    if entry.method == "PUT":
        if entry.resource_id is None:
            if not entry.query:
                raise InvalidInput("PUT needs Type/id or Type?criteria")
            result = repository.conditional_update(
                conn,
                entry.resource_type,
                entry.query,
                entry.resource,
                if_match=entry.if_match,  # type: ignore[arg-type]
            )
        else:
            result = repository.update(
                conn,
                entry.resource_type,
                entry.resource_id,
                entry.resource,
                if_match=entry.if_match,  # type: ignore[arg-type]
            )
        return Response(result.status, result.resource, _location(result.resource), etag(result.resource))
    if entry.resource_id is None:
        request = parse_search(entry.resource_type, parse_qsl(entry.query or "", keep_blank_values=True))
        found = run_search(conn, request)
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [
                {"fullUrl": f"{base}/{entry.resource_type}/{i}", "resource": orjson.loads(t)}
                for i, t in found.matches
            ],
        }
        if found.total is not None:
            bundle["total"] = found.total
        return Response(200, bundle)
    if entry.version is not None:
        resource = repository.vread(conn, entry.resource_type, entry.resource_id, entry.version)
    else:
        resource = repository.read(conn, entry.resource_type, entry.resource_id)
    return Response(200, resource, etag=etag(resource))


def _prepare_transaction(conn: Connection, entries: list[Entry]) -> None:
    """Assign ids to POSTed entries (or find their conditional match) and resolve urn: references."""
    ids: dict[str, str] = {}
    for entry in entries:
        if entry.method == "POST":
            if entry.if_none_exist is not None:
                found = repository.create_match(conn, entry.resource_type, entry.if_none_exist)
                if found is not None:
                    entry.resource_id = found
            new_id = entry.resource_id or repository.new_id()
            entry.resource_id = new_id
            if entry.full_url:
                ids[entry.full_url] = f"{entry.resource_type}/{new_id}"
        elif entry.method == "PUT" and entry.full_url and entry.resource_id:
            ids[entry.full_url] = f"{entry.resource_type}/{entry.resource_id}"
    for entry in entries:
        if entry.resource is not None:
            entry.resource = _rewrite(entry.resource, ids)


def _run_transaction_entry(conn: Connection, entry: Entry, base: str) -> Response:
    if entry.method != "POST":
        return _run(conn, entry, base)
    # ids were fixed before references were rewritten: create with that id, or return the match
    assert entry.resource_id is not None
    existing = repository.current_resource(conn, entry.resource_type, entry.resource_id)
    if existing is not None:
        return Response(200, existing, _location(existing), etag(existing))
    result = repository.update(
        conn, entry.resource_type, entry.resource_id, {**entry.resource, "id": entry.resource_id}
    )  # type: ignore[dict-item]
    return Response(201, result.resource, _location(result.resource), etag(result.resource))


def run_transaction(engine: Engine, entries: list[Entry], base: str) -> list[Response]:
    """All entries in one transaction; the first failure rolls everything back (EntryFailed)."""
    for entry in entries:
        if entry.resource is not None:
            _validate_entry(entry)
    responses: dict[int, Response] = {}
    with engine.begin() as conn:
        _prepare_transaction(conn, entries)
        for entry in sorted(entries, key=lambda e: _ORDER[e.method]):
            try:
                responses[entry.index] = _run_transaction_entry(conn, entry, base)
            except ClinhubError as exc:
                raise EntryFailed(entry.index, exc) from None
    return [responses[entry.index] for entry in entries]


def _validate_entry(entry: Entry) -> None:
    try:
        validate(entry.resource, entry.resource_type)
    except ClinhubError as exc:
        raise EntryFailed(entry.index, exc) from None


def run_batch(
    engine: Engine, entries: list[Entry], base: str, audit: Callable[[Entry, str], None]
) -> list[Response]:
    """Each entry in its own transaction; a failure becomes that entry's response."""
    responses = []
    for entry in entries:
        try:
            if entry.resource is not None:
                validate(entry.resource, entry.resource_type)
            with engine.begin() as conn:
                response = _run(conn, entry, base)
            audit(entry, "success")
        except ClinhubError as exc:
            response = Response(exc.http_status, outcome=outcome_of(exc))
            audit(entry, "failure")
        responses.append(response)
    return responses


def response_bundle(kind: str, responses: list[Response]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [response.entry() for response in responses],
    }
