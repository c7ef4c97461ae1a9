"""HTTP API of the performance advisor: the report, and ANALYZE/VACUUM of the store's tables."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from clinhub.hub import Hub
from clinhub.platform import audit, perf
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require

router = APIRouter(prefix="/admin/performance", tags=["performance"])
HubDep = Annotated[Hub, Depends(get_hub)]


class Maintenance(BaseModel):
    action: Literal[perf.ACTIONS]  # type: ignore[valid-type]
    tables: list[str] | None = Field(
        default=None, max_length=100, description="Store tables to maintain; default: all of them."
    )


@router.get("", summary="Slow statements, missing-index suggestions, table statistics, pool sizing")
def performance_report(hub: HubDep, _: Principal = Depends(require("perf:read"))) -> dict:
    return perf.report(hub)


@router.post("/maintenance", summary="Run ANALYZE or VACUUM on the store's tables")
def performance_maintenance(
    hub: HubDep,
    request: Request,
    body: Maintenance,
    principal: Principal = Depends(require("perf:manage")),
) -> dict:
    result = perf.maintain(hub, body.action, body.tables)
    audit.record(
        hub.store,
        actor=principal.username,
        action="perf.maintain",
        client_address=client_address(request),
        detail={"action": body.action, "tables": [step["target"] for step in result["steps"]]},
    )
    return result
