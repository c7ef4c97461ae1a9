"""The FHIR R4 REST API under /fhir: thin routes over clinhub.fhir's repository, search and bundles.

Every answer is `application/fhir+json`; every error an OperationOutcome (the route class below turns
clinhub errors, bad parameters and unexpected failures into one). Reads need `health_data:read`, writes
`health_data:write`, and every interaction writes an audit event (resource type and id, never content).
Mount this router after the views router: `/fhir/ViewDefinition...` belongs to the views, and the generic
`/fhir/{type}` routes refuse names that are no FHIR R4 resource type.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute

from clinhub.errors import ClinhubError, Conflict, InvalidInput, NotFound, Unauthenticated
from clinhub.fhir import bundle as bundles
from clinhub.fhir import repository
from clinhub.fhir.capability import capability_statement
from clinhub.fhir.export import parse_since, parse_types
from clinhub.fhir.jobs import export_dir
from clinhub.fhir.responses import (
    FHIR_JSON,
    etag,
    history_bundle,
    last_modified,
    outcome,
    outcome_of,
    searchset,
)
from clinhub.fhir.search import parse_search, run_search
from clinhub.fhir.validation import is_resource_type, validate
from clinhub.hub import Hub
from clinhub.platform import audit, jobs
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require
from clinhub.platform.logging import get_logger

log = get_logger("clinhub.fhir")
_STARTED = datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _fhir(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(content, status_code=status, headers=headers, media_type=FHIR_JSON)


def _problem(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return _fhir(body, status, headers)


class FhirRoute(APIRoute):
    """A route whose failures, including those of its dependencies (401, 403), are OperationOutcomes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handle(request)
            except ClinhubError as exc:
                headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
                return _problem(exc.http_status, outcome_of(exc), headers)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                return _problem(400, outcome("invalid", f"{where}: {first.get('msg', 'invalid request')}"))
            except Exception as exc:
                # the exception's text may carry health data: log its type and route only
                log.error("unhandled error", error=type(exc).__name__, method=request.method, route=self.path)
                return _problem(500, outcome("exception", "internal error"))

        return route


router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)
HubDep = Annotated[Hub, Depends(get_hub)]
Reader = Annotated[Principal, Depends(require("health_data:read"))]
Writer = Annotated[Principal, Depends(require("health_data:write"))]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _type(resource_type: str) -> str:
    if not is_resource_type(resource_type):
        raise NotFound(f"{resource_type!r} is not a FHIR R4 resource type this server serves")
    return resource_type


_READS = frozenset({"read", "vread", "search", "history"})


def _audit(
    hub: Hub,
    request: Request,
    principal: Principal,
    action: str,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome_name: str = "success",
    detail: dict | None = None,
) -> None:
    event = {
        "actor": principal.username,
        "action": f"fhir.{action}",
        "outcome": outcome_name,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "client_address": client_address(request),
        "detail": detail,
    }
    if action in _READS and hub.settings.audit_reads == "async":
        # a read's event may follow its response, committed with others (platform.audit.AuditQueue)
        hub.audit_queue.submit(**event)
    else:
        audit.record(hub.store, **event)  # a write's event is committed before its response


def _audited(
    hub: Hub,
    request: Request,
    principal: Principal,
    action: str,
    resource_type: str | None,
    resource_id: str | None,
    work: Callable[[], Response],
    detail: dict | None = None,
) -> Response:
    """Run `work`, audit its outcome (failure too), and answer its response or an OperationOutcome."""
    try:
        response = work()
    except ClinhubError as exc:
        failed = {**(detail or {}), "error": exc.code}
        _audit(hub, request, principal, action, resource_type, resource_id, "failure", failed)
        raise
    _audit(hub, request, principal, action, resource_type, resource_id, detail=detail)
    return response


async def _body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON") from None


def _resource_headers(resource: dict, base: str) -> dict[str, str]:
    version = resource["meta"]["versionId"]
    headers = {
        "ETag": etag(resource),
        "Location": f"{base}/{resource['resourceType']}/{resource['id']}/_history/{version}",
    }
    modified = last_modified(resource)
    if modified:
        headers["Last-Modified"] = modified
    return headers


def _written(result: repository.WriteResult, base: str, prefer: str | None) -> Response:
    headers = _resource_headers(result.resource, base)
    if prefer and "return=minimal" in prefer:
        return Response(status_code=result.status, headers=headers)
    if prefer and "return=OperationOutcome" in prefer:
        return _fhir(outcome("informational", result.outcome, "information"), result.status, headers)
    return _fhir(result.resource, result.status, headers)


# ------------------------------------------------------------------ server-level
@router.get("/metadata", summary="The CapabilityStatement: interactions, search parameters, operations")
def metadata(request: Request, _principal: Reader) -> Response:
    return _fhir(capability_statement(_base(request), _STARTED))


@router.post("", summary="Process a transaction (atomic) or batch Bundle")
async def transaction(hub: HubDep, request: Request, principal: Writer) -> Response:
    body = await _body(request)
    kind, entries = bundles.parse_entries(body)
    base = _base(request)
    if kind == "batch":

        def audit_entry(entry: bundles.Entry, result: str) -> None:
            _audit(
                hub,
                request,
                principal,
                f"batch.{entry.method.lower()}",
                entry.resource_type,
                entry.resource_id,
                result,
            )

        responses = await run_in_threadpool(bundles.run_batch, hub.store, entries, base, audit_entry)
        return _fhir(bundles.response_bundle(kind, responses))
    try:
        responses = await run_in_threadpool(bundles.run_transaction, hub.store, entries, base)
    except ClinhubError as exc:
        detail = {"error": exc.code, "entries": len(entries)}
        await run_in_threadpool(_audit, hub, request, principal, "transaction", None, None, "failure", detail)
        raise
    await run_in_threadpool(
        _audit, hub, request, principal, "transaction", None, None, "success", {"entries": len(entries)}
    )
    return _fhir(bundles.response_bundle(kind, responses))


# ------------------------------------------------------------------ Bulk Data $export
def _kick_off(hub: Hub, request: Request, principal: Principal, level: str, group_id: str | None) -> Response:
    query = request.query_params
    output_format = query.get("_outputFormat")
    if output_format not in (None, "application/fhir+ndjson", "application/ndjson", "ndjson"):
        raise InvalidInput("_outputFormat must be application/fhir+ndjson")
    types = parse_types(query.get("_type"))
    since = query.get("_since")
    parse_since(since)
    if level == "group":
        with hub.store.connect() as conn:
            repository.read(conn, "Group", group_id or "")
    params = {"level": level, "group_id": group_id, "types": types, "since": since}
    job_id = jobs.submit(hub, "fhir.export", params, created_by=principal.username)
    _audit(
        hub,
        request,
        principal,
        "export",
        "Group" if group_id else None,
        group_id,
        detail={"job": job_id, "level": level},
    )
    return Response(
        status_code=202, headers={"Content-Location": f"{_base(request)}/$export-status/{job_id}"}
    )


@router.get("/$export", summary="Bulk Data export of the whole store (async: 202 and a status URL)")
def export_system(hub: HubDep, request: Request, principal: Reader) -> Response:
    return _kick_off(hub, request, principal, "system", None)


@router.get("/Patient/$export", summary="Bulk Data export of every patient's compartment")
def export_patients(hub: HubDep, request: Request, principal: Reader) -> Response:
    return _kick_off(hub, request, principal, "patient", None)


@router.get("/Group/{group_id}/$export", summary="Bulk Data export of a Group's members' compartments")
def export_group(hub: HubDep, request: Request, principal: Reader, group_id: str) -> Response:
    return _kick_off(hub, request, principal, "group", repository.check_id(group_id))


def _export_job(hub: Hub, principal: Principal, job_id: str) -> dict:
    found = jobs.get_job(hub, job_id)
    if found["kind"] != "fhir.export" or (
        principal.role != "admin" and found["created_by"] != principal.username
    ):
        raise NotFound(f"no export {job_id}")
    return found


@router.get(
    "/$export-status/{job_id}", summary="Status of an export: 202 while it runs, 200 with the manifest"
)
def export_status(hub: HubDep, request: Request, principal: Reader, job_id: str) -> Response:
    found = _export_job(hub, principal, job_id)
    status = found["status"]
    if status in ("queued", "running"):
        return Response(
            status_code=202, headers={"X-Progress": f"{found['progress']}% {status}", "Retry-After": "2"}
        )
    if status == "cancelled":
        raise NotFound(f"export {job_id} was cancelled")
    if status == "failed":
        return _problem(500, outcome("exception", f"the export failed: {found['error']}"))
    result = found["result"] or {}
    base = _base(request)
    manifest = {
        "transactionTime": result.get("transactionTime"),
        "request": f"{base}/$export" if found["params"].get("level") == "system" else base,
        "requiresAccessToken": True,
        "output": [
            {
                "type": item["type"],
                "url": f"{base}/$export-file/{job_id}/{item['file']}",
                "count": item["count"],
            }
            for item in result.get("output", [])
        ],
        "error": [],
    }
    return Response(orjson.dumps(manifest), media_type="application/json")


@router.delete("/$export-status/{job_id}", summary="Cancel a queued export, or delete a finished one's files")
def export_delete(hub: HubDep, request: Request, principal: Reader, job_id: str) -> Response:
    found = _export_job(hub, principal, job_id)
    if found["status"] == "queued":
        jobs.cancel(hub, job_id)
    elif found["status"] == "running":
        raise Conflict(f"export {job_id} is running; delete it once it has finished")
    shutil.rmtree(export_dir(hub.settings.data_dir, job_id), ignore_errors=True)
    _audit(hub, request, principal, "export.delete", None, None, detail={"job": job_id})
    return Response(status_code=202)


@router.get("/$export-file/{job_id}/{file_name}", summary="One NDJSON file of a finished export")
def export_file(hub: HubDep, request: Request, principal: Reader, job_id: str, file_name: str) -> Response:
    found = _export_job(hub, principal, job_id)
    stem = file_name.removesuffix(".ndjson")
    if found["status"] != "succeeded" or not file_name.endswith(".ndjson") or not is_resource_type(stem):
        raise NotFound(f"no file {file_name} in export {job_id}")
    path: Path = export_dir(hub.settings.data_dir, job_id) / file_name
    if not path.is_file():
        raise NotFound(f"no file {file_name} in export {job_id}")
    _audit(hub, request, principal, "export.download", stem, None, detail={"job": job_id})
    return FileResponse(path, media_type="application/fhir+ndjson")


# ------------------------------------------------------------------ type level
def _search(hub: Hub, request: Request, resource_type: str, query: list[tuple[str, str]]) -> Response:
    strict = "handling=strict" in request.headers.get("prefer", "")
    search = parse_search(resource_type, query, strict=strict)
    with hub.store.connect() as conn:
        result = run_search(conn, search)
    return _fhir(searchset(result, search, _base(request)))


@router.get("/{resource_type}", summary="Search a resource type (paged searchset Bundle)")
def search_get(hub: HubDep, request: Request, principal: Reader, resource_type: str) -> Response:
    _type(resource_type)
    # parameter names only: their values may name patients
    names = sorted({key.partition(":")[0] for key in request.query_params})
    return _audited(
        hub,
        request,
        principal,
        "search",
        resource_type,
        None,
        lambda: _search(hub, request, resource_type, list(request.query_params.multi_items())),
        {"params": names},
    )


@router.post("/{resource_type}/_search", summary="Search with parameters in a form body")
async def search_post(hub: HubDep, request: Request, principal: Reader, resource_type: str) -> Response:
    _type(resource_type)
    content_type = request.headers.get("content-type", "application/x-www-form-urlencoded")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise InvalidInput("POST _search takes its parameters as application/x-www-form-urlencoded")
    form = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    query = [*request.query_params.multi_items(), *form]
    return await run_in_threadpool(
        _audited,
        hub,
        request,
        principal,
        "search",
        resource_type,
        None,
        lambda: _search(hub, request, resource_type, query),
    )


@router.post(
    "/{resource_type}",
    status_code=201,
    summary="Create (server-assigned id); If-None-Exist for conditional create",
)
async def create(hub: HubDep, request: Request, principal: Writer, resource_type: str) -> Response:
    _type(resource_type)
    body = await _body(request)
    if_none_exist = request.headers.get("if-none-exist")

    def work() -> Response:
        validate(body, resource_type)
        with hub.store.begin() as conn:
            result = repository.create(conn, body, if_none_exist=if_none_exist)
        return _written(result, _base(request), request.headers.get("prefer"))

    return await run_in_threadpool(_audited, hub, request, principal, "create", resource_type, None, work)


@router.put("/{resource_type}", summary="Conditional update: update the one match of the query, or create")
async def conditional_update(
    hub: HubDep, request: Request, principal: Writer, resource_type: str
) -> Response:
    _type(resource_type)
    body = await _body(request)
    criteria = request.url.query
    if_match = repository.parse_etag(request.headers.get("if-match"))

    def work() -> Response:
        validate(body, resource_type)
        with hub.store.begin() as conn:
            result = repository.conditional_update(conn, resource_type, criteria, body, if_match=if_match)
        return _written(result, _base(request), request.headers.get("prefer"))

    return await run_in_threadpool(_audited, hub, request, principal, "update", resource_type, None, work)


@router.get("/{resource_type}/_history", summary="History of every resource of a type, newest first")
def history_type(hub: HubDep, request: Request, principal: Reader, resource_type: str) -> Response:
    _type(resource_type)
    return _audited(
        hub,
        request,
        principal,
        "history",
        resource_type,
        None,
        lambda: _history(hub, request, resource_type, None),
    )


def _history(hub: Hub, request: Request, resource_type: str, resource_id: str | None) -> Response:
    query = request.query_params
    count = _bounded(query.get("_count"), "_count", 50, 1, 1000)
    offset = _bounded(query.get("_offset"), "_offset", 0, 0, 10_000_000)
    since = parse_since(query.get("_since"))
    with hub.store.connect() as conn:
        versions, more, total = repository.history(
            conn, resource_type, resource_id, since=since, count=count, offset=offset
        )
    base = _base(request)
    self_url = f"{base}/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/_history"
    if query.get("_since"):
        self_url += f"?_since={query['_since']}"
    return _fhir(history_bundle(versions, more, total, base, self_url, count, offset))


def _bounded(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}")
    return int(value)


# ------------------------------------------------------------------ instance level
@router.get("/{resource_type}/{resource_id}", summary="Read the current version (410 once deleted)")
def read(hub: HubDep, request: Request, principal: Reader, resource_type: str, resource_id: str) -> Response:
    _type(resource_type)

    def work() -> Response:
        with hub.store.connect() as conn:
            resource = repository.read(conn, resource_type, resource_id)
        headers = {"ETag": etag(resource)}
        modified = last_modified(resource)
        if modified:
            headers["Last-Modified"] = modified
        return _fhir(resource, headers=headers)

    return _audited(hub, request, principal, "read", resource_type, resource_id, work)


@router.put(
    "/{resource_type}/{resource_id}", summary="Update (or create with this id); If-Match for versioned update"
)
async def update(
    hub: HubDep, request: Request, principal: Writer, resource_type: str, resource_id: str
) -> Response:
    _type(resource_type)
    body = await _body(request)
    if_match = repository.parse_etag(request.headers.get("if-match"))

    def work() -> Response:
        validate(body, resource_type)
        with hub.store.begin() as conn:
            result = repository.update(conn, resource_type, resource_id, body, if_match=if_match)
        return _written(result, _base(request), request.headers.get("prefer"))

    return await run_in_threadpool(
        _audited, hub, request, principal, "update", resource_type, resource_id, work
    )


@router.delete("/{resource_type}/{resource_id}", summary="Delete (history is kept; reads then answer 410)")
def delete(
    hub: HubDep, request: Request, principal: Writer, resource_type: str, resource_id: str
) -> Response:
    _type(resource_type)
    if_match = repository.parse_etag(request.headers.get("if-match"))

    def work() -> Response:
        with hub.store.begin() as conn:
            version = repository.delete(conn, resource_type, resource_id, if_match=if_match)
        headers = {"ETag": f'W/"{version}"'} if version else None
        return Response(status_code=204, headers=headers)

    return _audited(hub, request, principal, "delete", resource_type, resource_id, work)


@router.get("/{resource_type}/{resource_id}/_history", summary="Every version of a resource, newest first")
def history_instance(
    hub: HubDep, request: Request, principal: Reader, resource_type: str, resource_id: str
) -> Response:
    _type(resource_type)
    return _audited(
        hub,
        request,
        principal,
        "history",
        resource_type,
        resource_id,
        lambda: _history(hub, request, resource_type, resource_id),
    )


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="Read one version (vread)")
def vread(
    hub: HubDep, request: Request, principal: Reader, resource_type: str, resource_id: str, version_id: str
) -> Response:
    _type(resource_type)

    def work() -> Response:
        with hub.store.connect() as conn:
            resource = repository.vread(conn, resource_type, resource_id, version_id)
        return _fhir(resource, headers={"ETag": etag(resource)})

    return _audited(hub, request, principal, "vread", resource_type, resource_id, work)
