"""HTTP API of the view engine: SQL on FHIR `$viewdefinition-run`, stored ViewDefinitions, the library."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from sqlalchemy import and_, select, update

from clinhub.engine import AnalyticEngine
from clinhub.errors import ClinhubError, Conflict, InvalidInput, NotFound
from clinhub.hub import Hub
from clinhub.platform import audit, jobs
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require
from clinhub.store.resources import put_resources
from clinhub.store.schema import fhir_resource, fhir_resource_history
from clinhub.views import export, library
from clinhub.views.export import KIND as EXPORT_KIND
from clinhub.views.export import ExportView, export_views_of
from clinhub.views.model import parse_view
from clinhub.views.runner import StoreSource, write_view

router = APIRouter(tags=["views"])
HubDep = Annotated[Hub, Depends(get_hub)]
Runner = Annotated[Principal, Depends(require("views:run"))]
Writer = Annotated[Principal, Depends(require("health_data:write"))]

RESOURCE = "ViewDefinition"
CHUNK = 64 * 1024
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
#: _format values (short names and the MIME types the specification also allows) -> output format
_FORMATS = {
    "csv": "csv",
    "text/csv": "csv",
    "ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/x-ndjson": "ndjson",
    "application/fhir+ndjson": "ndjson",
    "json": "json",
    "application/json": "json",
    "parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.parquet": "parquet",
}
_MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}


def outcome(status: int, code: str, diagnostics: str) -> JSONResponse:
    """A FHIR OperationOutcome with one error issue."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }
    return JSONResponse(body, status_code=status, media_type="application/fhir+json")


def _outcome_of(exc: ClinhubError) -> JSONResponse:
    return outcome(exc.http_status, exc.code, exc.message)


# ---------------------------------------------------------------- stored ViewDefinitions
def _fhir_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise InvalidInput(f"not a FHIR id: {value!r}")
    return value


def read_stored(hub: Hub, view_id: str) -> dict[str, Any]:
    """The current version of a stored ViewDefinition; NotFound when absent or deleted."""
    query = select(fhir_resource.c.resource).where(
        and_(
            fhir_resource.c.resource_type == RESOURCE,
            fhir_resource.c.id == _fhir_id(view_id),
            fhir_resource.c.deleted.is_(False),
        )
    )
    with hub.store.connect() as conn:
        resource = conn.execute(query).scalar()
    if resource is None:
        raise NotFound(f"no ViewDefinition/{view_id}")
    return resource


def save_stored(hub: Hub, resource: Any, view_id: str) -> dict[str, Any]:
    """Validate a ViewDefinition and store it as version n+1 of `view_id`; returns what was stored."""
    if not isinstance(resource, dict) or resource.get("resourceType") != RESOURCE:
        raise InvalidInput("the body must be a ViewDefinition resource")
    parse_view(resource)
    put_resources(hub.store, [{**resource, "id": _fhir_id(view_id)}])
    return read_stored(hub, view_id)


def delete_stored(hub: Hub, view_id: str) -> None:
    """Mark a stored ViewDefinition deleted: a new version flagged deleted; earlier ones stay in history."""
    current = read_stored(hub, view_id)
    now = datetime.now(UTC)
    version = int(current["meta"]["versionId"]) + 1
    key = and_(fhir_resource.c.resource_type == RESOURCE, fhir_resource.c.id == view_id)
    with hub.store.begin() as conn:
        conn.execute(
            update(fhir_resource).where(key).values(version_id=version, last_updated=now, deleted=True)
        )
        conn.execute(
            fhir_resource_history.insert().values(
                resource_type=RESOURCE,
                id=view_id,
                version_id=version,
                last_updated=now,
                deleted=True,
                resource=current,
            )
        )


def search_stored(hub: Hub, name: str | None) -> list[dict[str, Any]]:
    query = (
        select(fhir_resource.c.resource)
        .where(and_(fhir_resource.c.resource_type == RESOURCE, fhir_resource.c.deleted.is_(False)))
        .order_by(fhir_resource.c.id)
    )
    with hub.store.connect() as conn:
        found = [row[0] for row in conn.execute(query)]
    # ViewDefinitions are few and not health data, so the name match runs here, the same on every backend
    return [view for view in found if name is None or view.get("name") == name]


def resolve_reference(hub: Hub, reference: str) -> tuple[dict[str, Any], str]:
    """A view and its label from `ViewDefinition/<id>` (stored) or a bare name (library, then stored id)."""
    if reference.startswith(f"{RESOURCE}/"):
        view_id = reference.removeprefix(f"{RESOURCE}/")
        return read_stored(hub, view_id), reference
    if library.has_view(reference):
        return library.get_view(reference), reference
    return read_stored(hub, reference), f"{RESOURCE}/{reference}"


# ---------------------------------------------------------------- $viewdefinition-run
@dataclass
class RunRequest:
    view: dict[str, Any]
    label: str
    fmt: str = "csv"
    header: bool = True
    limit: int | None = None
    patient: str | None = None
    since: datetime | None = None


def _output_format(value: str) -> str:
    if value not in _FORMATS:
        raise InvalidInput(f"unknown _format {value!r}; use csv, ndjson, json or parquet")
    return _FORMATS[value]


def _patient_id(value: str) -> str:
    return _fhir_id(value.removeprefix("Patient/"))


def _since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"_since must be an instant, e.g. 2024-01-31T12:00:00Z; got {value!r}") from None
    # the store keeps naive UTC timestamps; a value without a zone is taken as UTC
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _limit(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"_limit must be a non-negative integer, got {value!r}")
    return value


def _value(parameter: dict[str, Any]) -> Any:
    values = [v for k, v in parameter.items() if k.startswith("value")]
    if len(values) != 1:
        raise InvalidInput(f"parameter {parameter.get('name')!r} needs exactly one value[x]")
    return values[0]


def parse_parameters(hub: Hub, body: Any, query_format: str | None) -> RunRequest:
    """A RunRequest from a FHIR Parameters resource; `_format` in the query wins over the body's."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidInput("the body must be a FHIR Parameters resource")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise InvalidInput("Parameters.parameter must be a list of objects")
    view: tuple[dict[str, Any], str] | None = None
    options: dict[str, Any] = {}
    for parameter in parameters:
        name = parameter.get("name")
        if name == "viewResource":
            resource = parameter.get("resource")
            if not isinstance(resource, dict):
                raise InvalidInput("viewResource needs a ViewDefinition in 'resource'")
            view = (resource, resource.get("name") or "inline")
        elif name == "viewReference":
            value = _value(parameter)
            reference = value.get("reference") if isinstance(value, dict) else value
            if not isinstance(reference, str):
                raise InvalidInput("viewReference must be a reference such as ViewDefinition/<id>")
            view = resolve_reference(hub, reference)
        elif name == "_format":
            options["fmt"] = _output_format(str(_value(parameter)))
        elif name == "header":
            options["header"] = _value(parameter) is not False
        elif name == "_limit":
            options["limit"] = _limit(_value(parameter))
        elif name == "patient":
            value = _value(parameter)
            options["patient"] = _patient_id(value.get("reference", "") if isinstance(value, dict) else value)
        elif name == "_since":
            options["since"] = _since(str(_value(parameter)))
        else:
            raise InvalidInput(f"unsupported parameter {name!r}")
    if view is None:
        raise InvalidInput("give the view as viewResource or viewReference")
    if query_format is not None:
        options["fmt"] = _output_format(query_format)
    return RunRequest(view[0], view[1], **options)


def execute(hub: Hub, run: RunRequest, folder: Path) -> Path:
    """Run the view over the store into a file in `folder` (DuckDB COPY); returns the file."""
    parse_view(run.view)
    out = folder / f"rows.{run.fmt}"
    source = StoreSource(() if run.patient is None else (run.patient,), run.since)
    # an engine per run: a DuckDB connection is not safe to share between request threads
    with AnalyticEngine(hub.settings.store_url) as engine:
        write_view(engine, run.view, source, out, run.fmt, run.limit)
    return out


def _file_chunks(path: Path, folder: Path, skip_header: bool) -> Iterator[bytes]:
    try:
        with path.open("rb") as handle:
            if skip_header:
                # a CSV header is the column names, which never hold a newline
                handle.readline()
            while chunk := handle.read(CHUNK):
                yield chunk
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_and_stream(hub: Hub, run: RunRequest, principal: Principal, address: str) -> Response:
    folder = Path(tempfile.mkdtemp(prefix="clinhub-run-"))
    detail = {"view": run.label, "limit": run.limit, "format": run.fmt, "patient": run.patient}
    try:
        path = execute(hub, run, folder)
    except ClinhubError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        audit.record(
            hub.store,
            actor=principal.username,
            action="view.run",
            outcome="failure",
            resource_type=RESOURCE,
            client_address=address,
            detail={**detail, "error": exc.code},
        )
        return _outcome_of(exc)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    audit.record(
        hub.store,
        actor=principal.username,
        action="view.run",
        resource_type=RESOURCE,
        client_address=address,
        detail=detail,
    )
    chunks = _file_chunks(path, folder, skip_header=run.fmt == "csv" and not run.header)
    return StreamingResponse(chunks, media_type=_MEDIA_TYPES[run.fmt])


@router.post(
    "/fhir/ViewDefinition/$viewdefinition-run",
    summary="Run a ViewDefinition (inline or referenced) over the store and stream its rows",
)
async def run_post(
    hub: HubDep,
    request: Request,
    principal: Runner,
    format_query: Annotated[str | None, Query(alias="_format")] = None,
) -> Response:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return outcome(400, "invalid", "the body is not valid JSON")
    try:
        run = await run_in_threadpool(parse_parameters, hub, body, format_query)
    except ClinhubError as exc:
        return _outcome_of(exc)
    return await run_in_threadpool(_run_and_stream, hub, run, principal, client_address(request))


@router.get(
    "/fhir/ViewDefinition/$viewdefinition-run",
    summary="Run a stored or library ViewDefinition over the store and stream its rows",
)
def run_get(
    hub: HubDep,
    request: Request,
    principal: Runner,
    view_reference: Annotated[str, Query(alias="viewReference")],
    format_query: Annotated[str, Query(alias="_format")] = "csv",
    header: bool = True,
    limit: Annotated[int | None, Query(alias="_limit")] = None,
    patient: str | None = None,
    since: Annotated[str | None, Query(alias="_since")] = None,
) -> Response:
    try:
        view, label = resolve_reference(hub, view_reference)
        run = RunRequest(
            view,
            label,
            _output_format(format_query),
            header,
            None if limit is None else _limit(limit),
            None if patient is None else _patient_id(patient),
            None if since is None else _since(since),
        )
    except ClinhubError as exc:
        return _outcome_of(exc)
    return _run_and_stream(hub, run, principal, client_address(request))


# ---------------------------------------------------------------- $viewdefinition-export
EXPORT = "/fhir/ViewDefinition/$viewdefinition-export"
#: seconds a client is asked to wait between polls of a running export
RETRY_AFTER = 2


class UnsupportedParameter(InvalidInput):
    """A parameter of the specification this server does not support (400, issue code not-supported)."""

    code = "not-supported"


@dataclass
class ExportRequest:
    views: list[ExportView]
    fmt: str = "csv"
    patients: list[str] = field(default_factory=list)
    since: datetime | None = None
    client_tracking_id: str | None = None

    def job_params(self) -> dict[str, Any]:
        return {
            "views": [item.as_dict() for item in self.views],
            "output_format": self.fmt,
            "patients": self.patients,
            "since": None if self.since is None else self.since.isoformat(),
            "client_tracking_id": self.client_tracking_id,
        }


def _reference(value: Any, what: str) -> str:
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str) or not reference:
        raise InvalidInput(f"{what} must be a reference such as ViewDefinition/<id>")
    return reference


def _export_view(hub: Hub, parameter: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    """(output name, label, ViewDefinition) of one `view` parameter and its parts."""
    parts = parameter.get("part")
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise InvalidInput("a 'view' parameter needs parts: name, and viewReference or viewResource")
    name, found = None, []
    for part in parts:
        kind = part.get("name")
        if kind == "name":
            name = _value(part)
            if not isinstance(name, str):
                raise InvalidInput("view.name must be a string")
        elif kind == "viewReference":
            found.append(resolve_reference(hub, _reference(_value(part), "view.viewReference"))[::-1])
        elif kind == "viewResource":
            resource = part.get("resource")
            if not isinstance(resource, dict):
                raise InvalidInput("view.viewResource needs a ViewDefinition in 'resource'")
            found.append((resource.get("name") or "inline", resource))
        else:
            raise InvalidInput(f"unsupported part {kind!r} of a view parameter")
    if len(found) != 1:
        raise InvalidInput("each view parameter needs exactly one of viewReference and viewResource")
    label, view = found[0]
    return name, label, view


def parse_export(hub: Hub, body: Any, query_format: str | None) -> ExportRequest:
    """An ExportRequest from a FHIR Parameters resource, every view resolved and validated."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise InvalidInput("the body must be a FHIR Parameters resource")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list) or not all(isinstance(p, dict) for p in parameters):
        raise InvalidInput("Parameters.parameter must be a list of objects")
    views: list[tuple[str | None, str, dict[str, Any]]] = []
    options: dict[str, Any] = {"patients": []}
    for parameter in parameters:
        name = parameter.get("name")
        if name == "view":
            views.append(_export_view(hub, parameter))
        elif name == "_format":
            options["fmt"] = _output_format(str(_value(parameter)))
        elif name == "patient":
            options["patients"].append(_patient_id(_reference(_value(parameter), "patient")))
        elif name == "_since":
            options["since"] = _since(str(_value(parameter)))
        elif name == "clientTrackingId":
            tracking = _value(parameter)
            if not isinstance(tracking, str) or not 0 < len(tracking) <= 200:
                raise InvalidInput("clientTrackingId must be a string of at most 200 characters")
            options["client_tracking_id"] = tracking
        elif name in ("group", "source"):
            raise UnsupportedParameter(f"the {name!r} parameter is not supported")
        else:
            raise InvalidInput(f"unsupported parameter {name!r}")
    if not views:
        raise InvalidInput("give at least one 'view' parameter")
    if query_format is not None:
        options["fmt"] = _output_format(query_format)
    request = ExportRequest(export_views_of(views), **options)
    _check_patients(hub, request.patients)
    return request


def _check_patients(hub: Hub, patients: list[str]) -> None:
    if not patients:
        return
    query = select(fhir_resource.c.id).where(
        and_(
            fhir_resource.c.resource_type == "Patient",
            fhir_resource.c.id.in_(patients),
            fhir_resource.c.deleted.is_(False),
        )
    )
    with hub.store.connect() as conn:
        known = set(conn.execute(query).scalars())
    missing = [patient for patient in patients if patient not in known]
    if missing:
        raise NotFound(f"Patient/{missing[0]} not found")


def _export_url(request: Request, export_id: str, file_name: str | None = None) -> str:
    base = str(request.base_url).rstrip("/") + f"{EXPORT}/{export_id}"
    return base if file_name is None else f"{base}/{file_name}"


def _parameter(name: str, kind: str, value: Any) -> dict[str, Any]:
    return {"name": name, f"value{kind}": value}


def _export_job(hub: Hub, principal: Principal, export_id: str) -> dict[str, Any]:
    """The export's job, if the caller started it or is an admin; anyone else is told it does not exist."""
    try:
        found = jobs.get_job(hub, export_id)
    except NotFound:
        raise NotFound(f"no export {export_id}") from None
    mine = principal.role == "admin" or found["created_by"] == principal.username
    if found["kind"] != EXPORT_KIND or not mine:
        raise NotFound(f"no export {export_id}")
    if export.is_cancelled(hub.settings, export_id) or found["status"] == "cancelled":
        raise NotFound(f"export {export_id} was cancelled")
    return found


_EXPORT_STATUS = {
    "queued": "accepted",
    "running": "in-progress",
    "succeeded": "completed",
    "failed": "failed",
}


def export_status(hub: Hub, request: Request, principal: Principal, export_id: str) -> Response:
    """The status of an export as the specification's Parameters: 202 while it runs (and when it
    failed, with the error), 200 with the output files when it is done."""
    found = _export_job(hub, principal, export_id)
    status = _EXPORT_STATUS[found["status"]]
    parameters = [
        _parameter("exportId", "String", export_id),
        *(
            [_parameter("clientTrackingId", "String", found["params"]["client_tracking_id"])]
            if found["params"].get("client_tracking_id")
            else []
        ),
        _parameter("status", "Code", status),
        _parameter("location", "Uri", _export_url(request, export_id)),
        _parameter("_format", "Code", found["params"]["output_format"]),
    ]
    if found["started_at"]:
        parameters.append(_parameter("exportStartTime", "Instant", found["started_at"]))
    headers: dict[str, str] = {}
    if status == "completed":
        manifest = export.read_manifest(hub.settings, export_id)
        if manifest is None:
            raise NotFound(f"export {export_id} was deleted")
        finished = datetime.fromisoformat(found["finished_at"])
        started = datetime.fromisoformat(found["started_at"])
        parameters += [
            _parameter("exportEndTime", "Instant", found["finished_at"]),
            _parameter("exportDuration", "Integer", round((finished - started).total_seconds())),
        ]
        for output in manifest["output"]:
            parts = [
                _parameter("name", "String", output["name"]),
                _parameter("location", "Uri", _export_url(request, export_id, output["file"])),
                _parameter("rows", "Integer", output["rows"]),
            ]
            parameters.append({"name": "output", "part": parts})
        return _fhir_json({"resourceType": "Parameters", "parameter": parameters})
    if status == "failed":
        parameters.append(_parameter("error", "String", found["error"] or "the export failed"))
    else:
        headers = {"X-Progress": f"{found['progress']}%", "Retry-After": str(RETRY_AFTER)}
    return _fhir_json({"resourceType": "Parameters", "parameter": parameters}, 202, headers)


def start_export(hub: Hub, asked: ExportRequest, principal: Principal) -> str:
    return jobs.submit(hub, EXPORT_KIND, asked.job_params(), created_by=principal.username)


@router.post(
    EXPORT,
    status_code=202,
    summary="Export views over the store to files, asynchronously; poll the Content-Location for status",
)
async def export_post(
    hub: HubDep,
    request: Request,
    principal: Runner,
    format_query: Annotated[str | None, Query(alias="_format")] = None,
) -> Response:
    address = client_address(request)

    def refused(exc: ClinhubError) -> Response:
        audit.record(
            hub.store,
            actor=principal.username,
            action="view.export",
            outcome="failure",
            resource_type="Job",
            client_address=address,
            detail={"error": exc.code},
        )
        return _outcome_of(exc)

    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return await run_in_threadpool(refused, InvalidInput("the body is not valid JSON"))
    try:
        asked = await run_in_threadpool(parse_export, hub, body, format_query)
        export_id = await run_in_threadpool(start_export, hub, asked, principal)
    except ClinhubError as exc:
        return await run_in_threadpool(refused, exc)
    detail = {
        "views": [item.label for item in asked.views],
        "format": asked.fmt,
        "patients": asked.patients,
    }
    await run_in_threadpool(
        audit.record,
        hub.store,
        actor=principal.username,
        action="view.export",
        resource_type="Job",
        resource_id=export_id,
        client_address=address,
        detail=detail,
    )
    location = _export_url(request, export_id)
    parameters = [
        _parameter("exportId", "String", export_id),
        *(
            [_parameter("clientTrackingId", "String", asked.client_tracking_id)]
            if asked.client_tracking_id
            else []
        ),
        _parameter("status", "Code", "accepted"),
        _parameter("location", "Uri", location),
    ]
    return _fhir_json(
        {"resourceType": "Parameters", "parameter": parameters}, 202, {"Content-Location": location}
    )


@router.get(EXPORT + "/{export_id}", summary="Status of a view export; 200 with its files once done")
def export_get(hub: HubDep, request: Request, principal: Runner, export_id: str) -> Response:
    try:
        return export_status(hub, request, principal, export_id)
    except ClinhubError as exc:
        return _outcome_of(exc)


@router.delete(EXPORT + "/{export_id}", status_code=202, summary="Cancel a view export, or delete its files")
def export_delete(hub: HubDep, request: Request, principal: Runner, export_id: str) -> Response:
    try:
        found = _export_job(hub, principal, export_id)
        if found["status"] == "queued":
            with contextlib.suppress(Conflict):  # a worker took it meanwhile: the marker stops it
                jobs.cancel(hub, export_id)
        export.cancel(hub.settings, export_id)
    except ClinhubError as exc:
        return _outcome_of(exc)
    audit.record(
        hub.store,
        actor=principal.username,
        action="view.export.cancel",
        resource_type="Job",
        resource_id=export_id,
        client_address=client_address(request),
        detail={"status": found["status"]},
    )
    parameters = [_parameter("exportId", "String", export_id), _parameter("status", "Code", "cancelled")]
    return _fhir_json({"resourceType": "Parameters", "parameter": parameters}, 202)


@router.get(EXPORT + "/{export_id}/{file_name}", summary="Download a file of a finished view export")
def export_download(
    hub: HubDep, request: Request, principal: Runner, export_id: str, file_name: str
) -> Response:
    try:
        _export_job(hub, principal, export_id)
        path = export.output_file(hub.settings, export_id, file_name)
    except ClinhubError as exc:
        return _outcome_of(exc)
    audit.record(
        hub.store,
        actor=principal.username,
        action="view.export.download",
        resource_type="Job",
        resource_id=export_id,
        client_address=client_address(request),
        detail={"file": file_name},
    )
    fmt = path.suffix.removeprefix(".")
    return FileResponse(path, media_type=_MEDIA_TYPES[fmt], filename=file_name)


# ---------------------------------------------------------------- ViewDefinition resources
def _audit_write(hub: Hub, request: Request, principal: Principal, action: str, view_id: str) -> None:
    audit.record(
        hub.store,
        actor=principal.username,
        action=action,
        resource_type=RESOURCE,
        resource_id=view_id,
        client_address=client_address(request),
    )


def _location(resource: dict[str, Any]) -> str:
    return f"/fhir/{RESOURCE}/{resource['id']}/_history/{resource['meta']['versionId']}"


def _fhir_json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/fhir+json")


async def _json_body(request: Request) -> Any:
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInput("the body is not valid JSON") from None


@router.post("/fhir/ViewDefinition", status_code=201, summary="Store a new ViewDefinition (validated first)")
async def create_view(hub: HubDep, request: Request, principal: Writer) -> Response:
    try:
        body = await _json_body(request)
        # FHIR create: the server assigns the id
        stored = await run_in_threadpool(save_stored, hub, body, str(uuid.uuid4()))
    except ClinhubError as exc:
        return _outcome_of(exc)
    await run_in_threadpool(_audit_write, hub, request, principal, "view.create", stored["id"])
    return _fhir_json(stored, 201, {"Location": _location(stored)})


@router.get("/fhir/ViewDefinition", summary="Search stored ViewDefinitions by name (a searchset Bundle)")
def search_views(hub: HubDep, _principal: Runner, name: str | None = None) -> Response:
    found = search_stored(hub, name)
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "entry": [
            {"fullUrl": f"{RESOURCE}/{view['id']}", "resource": view, "search": {"mode": "match"}}
            for view in found
        ],
    }
    return _fhir_json(bundle)


@router.put("/fhir/ViewDefinition/{view_id}", summary="Create or replace a stored ViewDefinition")
async def update_view(hub: HubDep, request: Request, principal: Writer, view_id: str) -> Response:
    try:
        body = await _json_body(request)
        if isinstance(body, dict) and body.get("id", view_id) != view_id:
            raise InvalidInput(f"the body's id {body['id']!r} differs from the URL's {view_id!r}")
        stored = await run_in_threadpool(save_stored, hub, body, view_id)
    except ClinhubError as exc:
        return _outcome_of(exc)
    await run_in_threadpool(_audit_write, hub, request, principal, "view.update", view_id)
    created = stored["meta"]["versionId"] == "1"
    return _fhir_json(stored, 201 if created else 200, {"Location": _location(stored)})


@router.get("/fhir/ViewDefinition/{view_id}", summary="Read a stored ViewDefinition")
def read_view(hub: HubDep, _principal: Runner, view_id: str) -> Response:
    try:
        return _fhir_json(read_stored(hub, view_id))
    except ClinhubError as exc:
        return _outcome_of(exc)


@router.delete("/fhir/ViewDefinition/{view_id}", summary="Delete a stored ViewDefinition (history is kept)")
def delete_view(hub: HubDep, request: Request, principal: Writer, view_id: str) -> Response:
    try:
        delete_stored(hub, view_id)
    except ClinhubError as exc:
        return _outcome_of(exc)
    _audit_write(hub, request, principal, "view.delete", view_id)
    return Response(status_code=204)


@router.get("/views/library", summary="The views shipped with clinhub: name, resource, title, description")
def list_library(_principal: Runner) -> list[dict[str, str]]:
    return library.list_views()
