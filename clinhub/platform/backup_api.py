"""HTTP API of the backup service: list, create, verify, restore and prune backups (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from clinhub.errors import InvalidInput
from clinhub.hub import Hub
from clinhub.platform import backup, jobs
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require

router = APIRouter(prefix="/admin/backups", tags=["admin"])
HubDep = Annotated[Hub, Depends(get_hub)]
Admin = Annotated[Principal, Depends(require("backup:manage"))]
BackupId = Annotated[
    str,
    PathParam(description="A backup id, or 'latest' for the newest one that has not failed verification."),
]


class RestoreBody(BaseModel):
    confirm: bool = Field(False, description="Must be true: the store is replaced by the backup.")


class PruneBody(BaseModel):
    keep_days: int = Field(30, ge=0, le=36500, description="Remove backups older than this many days.")
    keep_min: int = Field(7, ge=0, le=10000, description="Always keep this many newest good ones.")


def _audited(hub: Hub, request: Request, principal: Principal, action: str, resource_id: str | None = None):
    return backup.audited(
        hub,
        actor=principal.username,
        action=action,
        resource_id=resource_id,
        client_address=client_address(request),
    )


@router.get("", summary="List backups, newest first, with age, size and status")
def list_backups(hub: HubDep, request: Request, principal: Admin) -> list[dict]:
    with _audited(hub, request, principal, "backup.list"):
        return [info.as_dict() for info in backup.list_backups(hub)]


Wait = Annotated[
    bool,
    Query(description="Run in this request and answer with the result, instead of 202 and a job to poll."),
]


def _accepted(hub: HubDep, principal: Principal, kind: str, params: dict) -> JSONResponse:
    job_id = jobs.submit(hub, kind, params, created_by=principal.username)
    location = f"/jobs/{job_id}"
    body = {"job_id": job_id, "status": "queued", "status_url": location}
    return JSONResponse(body, status_code=202, headers={"Location": location})


@router.post(
    "",
    status_code=202,
    summary="Take an online backup of the store and the analytic files (a job; ?wait=true: now)",
    responses={201: {"description": "With wait=true: the backup taken"}},
)
def create_backup(hub: HubDep, request: Request, principal: Admin, wait: Wait = False):
    if not wait:
        return _accepted(hub, principal, "backup.create", {})
    with _audited(hub, request, principal, "backup.create") as note:
        info = backup.create_backup(hub)
        note.resource_id = str(info.id)
        note.detail = {"name": info.name, "size_bytes": info.size_bytes}
    return JSONResponse(info.as_dict(), status_code=201)


@router.post(
    "/{backup_id}/verify",
    status_code=202,
    summary="Check checksums, test-restore into a scratch database, compare with the manifest (a job; "
    "?wait=true: now)",
    responses={200: {"description": "With wait=true: the verification result"}},
)
def verify_backup(hub: HubDep, request: Request, principal: Admin, backup_id: BackupId, wait: Wait = False):
    if not wait:
        backup.find_backup(hub, backup_id)  # a bad or unknown id is a 400/404 now, not a failed job later
        return _accepted(hub, principal, "backup.verify", {"backup_id": backup_id})
    with _audited(hub, request, principal, "backup.verify", backup_id) as note:
        result = backup.verify_backup(hub, backup_id)
        note.resource_id = str(result.backup.id)
        note.outcome = "success" if result.ok else "failure"
        note.detail = {"reason": result.reason}
    return JSONResponse(result.as_dict(), status_code=200)


@router.post(
    "/{backup_id}/restore",
    summary='Replace the store with a backup (send {"confirm": true}); stop writers first',
)
def restore_backup(
    hub: HubDep, request: Request, principal: Admin, backup_id: BackupId, body: RestoreBody | None = None
) -> dict:
    if body is None or not body.confirm:
        raise InvalidInput('restore replaces the store with the backup; send {"confirm": true} to proceed')
    with _audited(hub, request, principal, "backup.restore", backup_id) as note:
        result = backup.restore_backup(hub, backup_id)
        note.resource_id = str(result.backup.id)
        note.outcome = "success" if result.ok else "failure"
        note.detail = {"reason": result.reason, "files": result.files}
    return result.as_dict()


@router.post("/prune", summary="Remove backups older than keep_days, always keeping the newest keep_min")
def prune_backups(hub: HubDep, request: Request, principal: Admin, body: PruneBody | None = None) -> dict:
    body = body or PruneBody()
    with _audited(hub, request, principal, "backup.prune") as note:
        result = backup.prune_backups(hub, body.keep_days, body.keep_min)
        note.detail = {
            "keep_days": body.keep_days,
            "keep_min": body.keep_min,
            "removed": [info.id for info in result.removed],
        }
    return result.as_dict()
