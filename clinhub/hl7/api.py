"""HTTP API of the HL7 v2 message store under /hl7: search, show, error queue, replay, counts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from clinhub.hl7 import messages
from clinhub.hub import Hub
from clinhub.platform import audit
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require

router = APIRouter(prefix="/hl7", tags=["hl7"])
HubDep = Annotated[Hub, Depends(get_hub)]
Reader = Annotated[Principal, Depends(require("health_data:read"))]
Manager = Annotated[Principal, Depends(require("hl7:manage"))]
MessageId = Annotated[int, PathParam(ge=1, description="A stored message's id.")]


class Filters(BaseModel):
    """Which messages: every field is optional and they combine with AND."""

    type: str | None = Field(None, max_length=16, description="MSH-9.1, e.g. ADT")
    trigger: str | None = Field(None, max_length=16, description="MSH-9.2, e.g. A01")
    status: str | None = Field(None, description=f"One of {', '.join(messages.STATUSES)}")
    sender: str | None = Field(None, max_length=180, description="MSH-3 or MSH-4")
    control_id: str | None = Field(None, max_length=199, description="MSH-10")
    since: datetime | None = Field(None, description="Received at or after")
    until: datetime | None = Field(None, description="Received before")
    patient_identifier: str | None = Field(None, max_length=199, description="A PID-3 identifier value")
    text: str | None = Field(None, max_length=200, description="Text anywhere in the raw message")
    ids: list[int] | None = Field(None, max_length=10_000, description="These message ids")

    def criteria(self) -> messages.MessageFilter:
        return messages.MessageFilter(
            message_type=self.type,
            trigger_event=self.trigger,
            status=self.status,
            sender=self.sender,
            control_id=self.control_id,
            since=self.since,
            until=self.until,
            patient_identifier=self.patient_identifier,
            text=self.text,
            ids=self.ids,
        )


class ReplayBody(Filters):
    limit: int = Field(10_000, ge=1, le=100_000, description="Replay at most this many")


def _audit(hub: Hub, request: Request, principal: Principal, action: str, **fields) -> None:
    audit.record(
        hub.store,
        actor=principal.username,
        action=action,
        resource_type="HL7Message",
        client_address=client_address(request),
        **fields,
    )


@router.get("/messages", summary="Search stored messages (newest first); the raw text is not included")
def search_messages(
    hub: HubDep,
    request: Request,
    principal: Reader,
    filters: Annotated[Filters, Query()],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    found = messages.search(hub.store, filters.criteria(), limit=limit, offset=offset)
    _audit(hub, request, principal, "hl7.search", detail={"returned": len(found["messages"])})
    return found


@router.get("/messages/{message_id}", summary="One message: raw text, parsed tree, FHIR resources it made")
def show_message(hub: HubDep, request: Request, principal: Reader, message_id: MessageId) -> dict:
    try:
        body = messages.get_message(hub.store, message_id)
    except Exception:
        _audit(hub, request, principal, "hl7.read", resource_id=str(message_id), outcome="error")
        raise
    _audit(hub, request, principal, "hl7.read", resource_id=str(message_id))
    return body


@router.get("/errors", summary="The error queue: messages that could not be accepted or mapped")
def error_queue(
    hub: HubDep,
    request: Request,
    principal: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict:
    found = messages.error_queue(hub.store, limit=limit, offset=offset)
    _audit(hub, request, principal, "hl7.errors", detail={"returned": len(found["messages"])})
    return found


@router.post("/messages/{message_id}/replay", summary="Map one message to FHIR again (after a mapping fix)")
def replay_message(hub: HubDep, request: Request, principal: Manager, message_id: MessageId) -> dict:
    messages.get_message(hub.store, message_id)  # 404 for an unknown id
    result = messages.replay(hub.store, messages.MessageFilter(ids=[message_id]), limit=1)
    _audit(hub, request, principal, "hl7.replay", resource_id=str(message_id), detail=result.__dict__)
    return {**result.__dict__, "message": messages.get_message(hub.store, message_id)}


@router.post("/replay", summary="Map every message matching the filters to FHIR again (e.g. status=error)")
def replay_messages(hub: HubDep, request: Request, principal: Manager, body: ReplayBody) -> dict:
    result = messages.replay(hub.store, body.criteria(), limit=body.limit)
    _audit(hub, request, principal, "hl7.replay", detail=result.__dict__)
    return result.__dict__


@router.get("/stats", summary="Stored messages per status and the mapping backlog")
def stats(hub: HubDep, principal: Annotated[Principal, Depends(require("analytics:read"))]) -> dict:
    return {"by_status": messages.counts(hub.store), "backlog": messages.pending_count(hub.store)}
