"""HTTP API of data quality under /quality: checks, runs (started as jobs), run detail, report, history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from clinhub.errors import NotFound
from clinhub.hub import Hub
from clinhub.platform import audit, jobs
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require
from clinhub.quality import history
from clinhub.quality.checks import load_ruleset, ruleset_names
from clinhub.quality.jobs import KIND, parse_as_of
from clinhub.quality.report import render_html
from clinhub.quality.service import DEFAULT_RULESET, run_and_save

router = APIRouter(prefix="/quality", tags=["quality"])
HubDep = Annotated[Hub, Depends(get_hub)]
Reader = Annotated[Principal, Depends(require("quality:read"))]
Runner = Annotated[Principal, Depends(require("quality:run"))]


class RunRequest(BaseModel):
    ruleset: str = Field(DEFAULT_RULESET, description="A packaged rule set, e.g. directory.")
    as_of: str | None = Field(None, description="The date checks compare with (default: today).")


def _packaged(name: str) -> str:
    # over HTTP only packaged rule sets: a path would let a caller read files on the server
    if name not in ruleset_names():
        raise NotFound(f"no rule set {name!r} (packaged: {', '.join(ruleset_names())})")
    return name


@router.get("/checks", summary="The checks of a rule set")
def get_checks(_: Reader, ruleset: str = DEFAULT_RULESET) -> dict:
    rules = load_ruleset(_packaged(ruleset))
    return {
        "ruleset": rules.name,
        "description": rules.description,
        "rulesets": ruleset_names(),
        "checks": [c.as_dict() for c in rules.checks],
    }


@router.get("/runs", summary="Stored runs, newest first")
def get_runs(
    hub: HubDep, _: Reader, ruleset: str | None = None, limit: int = Query(50, ge=1, le=1000)
) -> dict:
    return {"runs": history.list_runs(hub.store, ruleset, limit)}


@router.post(
    "/runs",
    status_code=202,
    summary="Start a run of a rule set as a job (poll /jobs/{id}); with wait=true, run it now and answer 200",
)
def post_run(
    hub: HubDep,
    request: Request,
    principal: Runner,
    body: RunRequest | None = None,
    wait: bool = False,
) -> JSONResponse:
    body = body or RunRequest()
    ruleset = _packaged(body.ruleset)
    as_of = parse_as_of(body.as_of)
    client = client_address(request)
    if wait:
        result = run_and_save(hub, ruleset, as_of=as_of, actor=principal.username, client_address=client)
        return JSONResponse(result.as_dict(), status_code=200)
    job_id = jobs.submit(hub, KIND, {"ruleset": ruleset, "as_of": body.as_of}, created_by=principal.username)
    audit.record(
        hub.store,
        actor=principal.username,
        action="quality.run.submit",
        resource_type="Job",
        resource_id=job_id,
        client_address=client,
        detail={"ruleset": ruleset},
    )
    return JSONResponse({"job_id": job_id, "status": f"/jobs/{job_id}"}, status_code=202)


@router.get("/runs/{run_id}", summary="One run with the result of every check (`latest` for the newest)")
def get_run(hub: HubDep, _: Reader, run_id: str) -> dict:
    return history.get_run(hub.store, run_id)


@router.get("/runs/{run_id}/report", summary="The self-contained HTML report of a run")
def get_report(hub: HubDep, _: Reader, run_id: str) -> HTMLResponse:
    run = history.get_run(hub.store, run_id)
    return HTMLResponse(render_html(run, history.trend(hub.store, run["ruleset"])))


@router.get("/runs/{run_id}/diff", summary="What changed since an earlier run: new, fixed, worse, better")
def get_diff(hub: HubDep, _: Reader, run_id: str, since: str | None = None) -> dict:
    run = history.get_run(hub.store, run_id)
    earlier = since or history.latest_run_id(hub.store, run["ruleset"], before=run["id"])
    if earlier is None:
        return {"old_run": None, "new_run": run["id"], **{k: [] for k in history.CHANGES}}
    return history.diff(hub.store, earlier, run["id"])


@router.get("/history", summary="The score trend over runs, oldest first")
def get_history(
    hub: HubDep, _: Reader, ruleset: str | None = None, limit: int = Query(30, ge=1, le=1000)
) -> dict:
    return {"trend": history.trend(hub.store, ruleset, limit)}
