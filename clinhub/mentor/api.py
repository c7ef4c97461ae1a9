"""HTTP API of the mentor: v2 under /mentor/v2, the legacy v1 chat under /mentor/v1."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from clinhub.mentor import conversations
from clinhub.mentor.engine import MAX_BULK, Ask, Mentor
from clinhub.mentor.personas import get_persona, load_personas
from clinhub.platform import audit
from clinhub.platform.auth import Principal
from clinhub.platform.deps import client_address, get_hub, require

router = APIRouter(prefix="/mentor", tags=["mentor"])
User = Annotated[Principal, Depends(require("assistant:use"))]
Manager = Annotated[Principal, Depends(require("cache:manage"))]
_lock = threading.Lock()


def get_mentor(request: Request) -> Mentor:
    """The app's one Mentor (the affinity matrix, personas and LLM client loaded once)."""
    state = request.app.state
    if getattr(state, "mentor", None) is None:
        with _lock:
            if getattr(state, "mentor", None) is None:
                hub = get_hub(request)
                state.mentor = Mentor(hub.store, hub.cache, hub.settings)
    return state.mentor


MentorDep = Annotated[Mentor, Depends(get_mentor)]


class Turn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(max_length=8000)


class Context(BaseModel):
    session_id: str | None = Field(None, description="Keep the conversation under this id (per user).")
    history: list[Turn] = Field(
        default_factory=list, max_length=50, description="Earlier turns, oldest first."
    )
    language: Literal["en", "ko"] | None = Field(None, description="Answer language (default: the text's).")


class ProcessRequest(BaseModel):
    text: str = Field(min_length=1, max_length=8000, description="The user's message.")
    resonance_key: str | None = Field(
        None, description="tone-pace-intent; inferred from the text when absent. A bad one is a 422."
    )
    context: Context = Field(default_factory=Context)
    include_metadata: bool = True
    use_cache: bool = True
    prompt_mode: Literal["full", "summary_light"] = "full"
    persona: str | None = Field(None, description="Answer as this persona instead of the routed one.")
    stream: bool = Field(False, description="Server-sent events: a meta event, delta events, done.")


class MultiRequest(ProcessRequest):
    personas: list[str] | None = Field(None, description="Which personas answer (default: all four).")


class RecommendRequest(BaseModel):
    scenario: str | None = Field(None, max_length=8000, description="What the user needs, in words.")
    resonance_key: str | None = None


class BulkRequest(BaseModel):
    items: list[ProcessRequest] = Field(min_length=1, max_length=MAX_BULK)


class V1Request(BaseModel):
    text: str = Field(min_length=1, max_length=8000)


def _ask(body: ProcessRequest, principal: Principal) -> Ask:
    return Ask(
        text=body.text,
        resonance_key=body.resonance_key,
        session_id=body.context.session_id,
        history=[turn.model_dump() for turn in body.context.history],
        include_metadata=body.include_metadata,
        use_cache=body.use_cache,
        prompt_mode=body.prompt_mode,
        language=body.context.language,
        persona=body.persona,
        user=principal.username,
        role=principal.role,
    )


# ------------------------------------------------------------------------------------------- v2
@router.get("/v2/health", summary="Mentor liveness (no credentials)")
def health() -> dict:
    return {"status": "ok", "personas": len(load_personas())}


@router.get("/v2/status", summary="LLM backend, inference model, cache")
def status(mentor: MentorDep, _: User) -> dict:
    return mentor.status()


@router.get("/v2/personas", summary="The four personas")
def personas(_: User) -> dict:
    return {"personas": [p.as_dict(summary=True) for p in load_personas().values()]}


@router.get("/v2/personas/{name}", summary="One persona in full")
def persona(name: str, _: User) -> dict:
    return get_persona(name).as_dict()


@router.get("/v2/cache-stats", summary="Routing and answer cache statistics")
def cache_stats(mentor: MentorDep, _: User) -> dict:
    return mentor.cache_stats()


@router.post("/v2/process", summary="Answer one message with the persona that fits it")
def process(body: ProcessRequest, mentor: MentorDep, principal: User):
    ask = _ask(body, principal)
    if body.stream:
        head, pieces = mentor.stream(ask)

        def events():
            yield b"event: meta\ndata: " + orjson.dumps(head) + b"\n\n"
            for piece in pieces:
                yield b"event: delta\ndata: " + orjson.dumps({"content": piece}) + b"\n\n"
            yield b"event: done\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    return mentor.process(ask)


@router.post("/v2/chat/multi-persona", summary="The same message answered by several personas")
def multi(body: MultiRequest, mentor: MentorDep, principal: User) -> dict:
    return mentor.multi(_ask(body, principal), body.personas)


@router.post("/v2/recommend", summary="The best persona for a scenario, with its capabilities")
def recommend(body: RecommendRequest, mentor: MentorDep, _: User) -> dict:
    return mentor.recommend(body.scenario, body.resonance_key)


@router.post("/v2/bulk-process", summary=f"Up to {MAX_BULK} messages at once")
def bulk(body: BulkRequest, mentor: MentorDep, principal: User) -> dict:
    results = mentor.bulk([_ask(item, principal) for item in body.items])
    return {"count": len(results), "failed": sum(1 for r in results if not r["ok"]), "results": results}


@router.post("/v2/cache/clear", summary="Drop every mentor cache entry")
def cache_clear(request: Request, mentor: MentorDep, principal: Manager) -> dict:
    removed = mentor.cache_clear()
    audit.record(
        get_hub(request).store,
        actor=principal.username,
        action="mentor.cache.clear",
        client_address=client_address(request),
        detail={"removed": removed},
    )
    return {"removed": removed}


@router.post("/v2/cache/invalidate", summary="Drop mentor cache entries matching a pattern")
def cache_invalidate(
    request: Request,
    mentor: MentorDep,
    principal: Manager,
    pattern: str = Query(..., description="e.g. route:* or answer:*"),
) -> dict:
    removed = mentor.cache_invalidate(pattern)
    audit.record(
        get_hub(request).store,
        actor=principal.username,
        action="mentor.cache.invalidate",
        client_address=client_address(request),
        detail={"pattern": pattern, "removed": removed},
    )
    return {"pattern": pattern, "removed": removed}


@router.get("/v2/conversations", summary="Your conversations, newest first")
def list_conversations(request: Request, principal: User) -> dict:
    return {"conversations": conversations.list_conversations(get_hub(request).store, principal.username)}


@router.delete("/v2/conversations/{session_id}", summary="Delete one of your conversations", status_code=204)
def delete_conversation(session_id: str, request: Request, principal: User) -> None:
    conversations.delete_conversation(get_hub(request).store, session_id, principal.username)


# ------------------------------------------------------------------------------------------- v1
@router.post("/v1/chat", summary="Legacy chat: text in, the v1 response shape out")
def chat_v1(body: V1Request, mentor: MentorDep, principal: User) -> dict:
    answer = mentor.process(
        Ask(text=body.text, include_metadata=False, user=principal.username, role=principal.role)
    )
    return {
        "response": answer["content"],
        "persona": answer["persona_used"],
        "resonance_key": answer["resonance_key"],
        "confidence": answer["routing"]["confidence"],
        "timestamp": datetime.now(UTC).isoformat(),
    }


__all__ = ["get_mentor", "router"]
