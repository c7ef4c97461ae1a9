"""HTTP API of the jobs service: submit, list, inspect and cancel long-running work."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from clinhub.errors import NotFound, PermissionDenied
from clinhub.hub import Hub
from clinhub.platform import audit, jobs
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require
from clinhub.platform.permissions import allows

router = APIRouter(prefix="/jobs", tags=["jobs"])
HubDep = Annotated[Hub, Depends(get_hub)]
Reader = Annotated[Principal, Depends(require("jobs:read"))]


class JobRequest(BaseModel):
    kind: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


def _sees_all(principal: Principal) -> bool:
    return principal.role == "admin"


def _visible_job(hub: Hub, principal: Principal, job_id: str) -> dict:
    """The job, if the caller submitted it or is an admin; anyone else is told it does not exist."""
    found = jobs.get_job(hub, job_id)
    if not _sees_all(principal) and found["created_by"] != principal.username:
        raise NotFound(f"no job {job_id}")
    return found


@router.get("", summary="List jobs, newest first (your own; every job for admins)")
def list_jobs(
    hub: HubDep,
    principal: Reader,
    status: str | None = None,
    kind: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict]:
    owner = None if _sees_all(principal) else principal.username
    return jobs.list_jobs(hub, status=status, kind=kind, limit=limit, created_by=owner)


@router.get("/kinds", summary="Job kinds, their parameters and the permission each needs")
def job_kinds(_: Reader) -> list[dict]:
    return [kind.as_dict() for kind in jobs.kinds()]


@router.get("/{job_id}", summary="One job: status, progress, result or error")
def get_job(hub: HubDep, principal: Reader, job_id: str) -> dict:
    return _visible_job(hub, principal, job_id)


@router.post("", status_code=202, summary="Submit a job of a known kind; a worker runs it")
def submit_job(hub: HubDep, request: Request, principal: Reader, body: JobRequest) -> dict:
    kind = jobs.get_kind(body.kind)
    client = client_address(request)
    if not allows(principal.role, kind.permission):
        audit.record(
            hub.store,
            actor=principal.username,
            action="access.denied",
            outcome="denied",
            client_address=client,
            detail={"permission": kind.permission, "job_kind": kind.name},
        )
        raise PermissionDenied(f"role {principal.role!r} lacks permission {kind.permission!r}")
    job_id = jobs.submit(hub, kind.name, body.params, created_by=principal.username)
    # the kind only: parameters may name files or patients, and audit details hold no health data
    audit.record(
        hub.store,
        actor=principal.username,
        action="job.submit",
        resource_type="Job",
        resource_id=job_id,
        client_address=client,
        detail={"kind": kind.name},
    )
    return jobs.get_job(hub, job_id)


@router.post("/{job_id}/cancel", summary="Cancel a queued job")
def cancel_job(hub: HubDep, request: Request, principal: Reader, job_id: str) -> dict:
    found = _visible_job(hub, principal, job_id)
    cancelled = jobs.cancel(hub, job_id)
    audit.record(
        hub.store,
        actor=principal.username,
        action="job.cancel",
        resource_type="Job",
        resource_id=job_id,
        client_address=client_address(request),
        detail={"kind": found["kind"]},
    )
    return cancelled
