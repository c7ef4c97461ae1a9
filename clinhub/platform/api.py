"""HTTP API of the platform services: login and tokens, users and API keys, audit trail, cache."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from clinhub.errors import InvalidInput, RateLimited, Unauthenticated
from clinhub.hub import Hub
from clinhub.platform import audit, auth
from clinhub.platform.backup_api import router as backup_router
from clinhub.platform.deps import client_address, get_hub, require
from clinhub.platform.jobs_api import router as jobs_router
from clinhub.platform.perf_api import router as perf_router
from clinhub.platform.permissions import ROLES, permissions_of

router = APIRouter()
router.include_router(backup_router)
router.include_router(jobs_router)
router.include_router(perf_router)
HubDep = Annotated[Hub, Depends(get_hub)]


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1024)


class RefreshBody(BaseModel):
    refresh_token: str


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str
    expires_in: int


async def _login_body(request: Request) -> LoginBody:
    # JSON for scripts; form fields for OAuth2 password flow clients such as the /docs "Authorize" button
    if request.headers.get("content-type", "").startswith("application/json"):
        return LoginBody.model_validate(await request.json())
    form = await request.form()
    return LoginBody(username=str(form.get("username", "")), password=str(form.get("password", "")))


@router.post(
    "/auth/login", tags=["auth"], response_model=TokenResponse, summary="Exchange a password for tokens"
)
def login(hub: HubDep, request: Request, body: LoginBody = Depends(_login_body)) -> TokenResponse:
    client = client_address(request)
    wait = hub.login_limiter.retry_after(body.username, client)
    if wait > 0:
        auth.RATE_LIMITED.inc()
        raise RateLimited("too many failed logins; try again later", retry_after=wait)
    try:
        principal = auth.authenticate(hub.store, body.username, body.password)
    except Unauthenticated:
        hub.login_limiter.failed(body.username, client)
        audit.record(
            hub.store, actor=body.username, action="auth.login", outcome="failure", client_address=client
        )
        raise
    hub.login_limiter.succeeded(body.username)
    audit.record(hub.store, actor=principal.username, action="auth.login", client_address=client)
    pair = auth.issue_tokens(
        principal,
        hub.settings.token_secret(),
        access_minutes=hub.settings.access_token_minutes,
        refresh_days=hub.settings.refresh_token_days,
    )
    return TokenResponse(**pair.__dict__)


@router.post(
    "/auth/refresh", tags=["auth"], response_model=TokenResponse, summary="New tokens for a refresh token"
)
def refresh(hub: HubDep, body: RefreshBody) -> TokenResponse:
    principal = auth.verify_token(hub.store, body.refresh_token, hub.settings.token_secret(), kind="refresh")
    pair = auth.issue_tokens(
        principal,
        hub.settings.token_secret(),
        access_minutes=hub.settings.access_token_minutes,
        refresh_days=hub.settings.refresh_token_days,
    )
    return TokenResponse(**pair.__dict__)


@router.get("/auth/me", tags=["auth"], summary="Who am I, and what may I do")
def me(principal: auth.Principal = Depends(require("profile:read"))) -> dict:
    return {
        "username": principal.username,
        "role": principal.role,
        "via": principal.via,
        "permissions": permissions_of(principal.role),
    }


# ------------------------------------------------------------------ users and keys
class NewUser(BaseModel):
    username: str
    password: str
    role: Literal[ROLES]  # type: ignore[valid-type]
    full_name: str = ""
    email: str = ""


class RoleChange(BaseModel):
    role: Literal[ROLES]  # type: ignore[valid-type]


class NewKey(BaseModel):
    username: str
    name: str = Field(min_length=1, max_length=150)
    expires_days: int | None = Field(default=None, ge=1, le=3650)


def _admin_audit(hub: Hub, request: Request, principal: auth.Principal, action: str, target: str) -> None:
    audit.record(
        hub.store,
        actor=principal.username,
        action=action,
        resource_type="User",
        resource_id=target,
        client_address=client_address(request),
    )


@router.get("/admin/users", tags=["admin"], summary="List users")
def users(hub: HubDep, _: auth.Principal = Depends(require("users:manage"))) -> list[dict]:
    return auth.list_users(hub.store)


@router.post("/admin/users", tags=["admin"], status_code=201, summary="Create a user")
def add_user(
    hub: HubDep, request: Request, body: NewUser, principal: auth.Principal = Depends(require("users:manage"))
) -> dict:
    user_id = auth.create_user(
        hub.store, body.username, body.password, body.role, full_name=body.full_name, email=body.email
    )
    _admin_audit(hub, request, principal, "user.create", body.username)
    return {"id": user_id, "username": body.username, "role": body.role}


@router.post("/admin/users/{username}/disable", tags=["admin"], summary="Disable a user")
def disable_user(
    hub: HubDep, request: Request, username: str, principal: auth.Principal = Depends(require("users:manage"))
) -> dict:
    if username == principal.username:
        raise InvalidInput("you cannot disable yourself")
    auth.set_disabled(hub.store, username, True)
    _admin_audit(hub, request, principal, "user.disable", username)
    return {"username": username, "disabled": True}


@router.post("/admin/users/{username}/enable", tags=["admin"], summary="Enable a user")
def enable_user(
    hub: HubDep, request: Request, username: str, principal: auth.Principal = Depends(require("users:manage"))
) -> dict:
    auth.set_disabled(hub.store, username, False)
    _admin_audit(hub, request, principal, "user.enable", username)
    return {"username": username, "disabled": False}


@router.put("/admin/users/{username}/role", tags=["admin"], summary="Change a user's role")
def change_role(
    hub: HubDep,
    request: Request,
    username: str,
    body: RoleChange,
    principal: auth.Principal = Depends(require("users:manage")),
) -> dict:
    auth.set_role(hub.store, username, body.role)
    _admin_audit(hub, request, principal, "user.role", username)
    return {"username": username, "role": body.role}


@router.get("/admin/keys", tags=["admin"], summary="List API keys (prefixes only)")
def keys(
    hub: HubDep, username: str | None = None, _: auth.Principal = Depends(require("users:manage"))
) -> list[dict]:
    return auth.list_api_keys(hub.store, username)


@router.post("/admin/keys", tags=["admin"], status_code=201, summary="Create an API key (shown once)")
def add_key(
    hub: HubDep, request: Request, body: NewKey, principal: auth.Principal = Depends(require("users:manage"))
) -> dict:
    key_id, key = auth.create_api_key(hub.store, body.username, body.name, expires_days=body.expires_days)
    _admin_audit(hub, request, principal, "apikey.create", body.username)
    return {"id": key_id, "key": key, "note": "store this key now: it is not shown again"}


@router.delete("/admin/keys/{key_id}", tags=["admin"], summary="Revoke an API key")
def revoke_key(
    hub: HubDep, request: Request, key_id: int, principal: auth.Principal = Depends(require("users:manage"))
) -> dict:
    auth.revoke_api_key(hub.store, key_id)
    _admin_audit(hub, request, principal, "apikey.revoke", str(key_id))
    return {"id": key_id, "revoked": True}


# ------------------------------------------------------------------ audit
@router.get("/audit", tags=["audit"], summary="Search the audit trail (JSON, or a FHIR Bundle of AuditEvent)")
def audit_search(
    hub: HubDep,
    request: Request,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    format: Literal["json", "fhir"] = "json",
    principal: auth.Principal = Depends(require("audit:read")),
) -> dict:
    total, events = audit.search(
        hub.store,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    audit.record(
        hub.store, actor=principal.username, action="audit.search", client_address=client_address(request)
    )
    if format == "fhir":
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": total,
            "entry": [{"resource": audit.to_fhir(event)} for event in events],
        }
    return {"total": total, "events": events}


@router.get("/audit/verify", tags=["audit"], summary="Check the audit trail's hash chain")
def audit_verify(hub: HubDep, _: auth.Principal = Depends(require("audit:read"))) -> dict:
    return audit.verify(hub.store).as_dict()


# ------------------------------------------------------------------ cache
class Invalidation(BaseModel):
    key: str | None = None
    pattern: str | None = None


@router.get("/cache/stats", tags=["cache"], summary="Hits, misses and size per cache tier")
def cache_stats(hub: HubDep, _: auth.Principal = Depends(require("cache:read"))) -> dict:
    return hub.cache.stats()


@router.post("/cache/invalidate", tags=["cache"], summary="Drop a key or every key matching a glob pattern")
def cache_invalidate(
    hub: HubDep,
    request: Request,
    body: Invalidation,
    principal: auth.Principal = Depends(require("cache:manage")),
) -> dict:
    if (body.key is None) == (body.pattern is None):
        raise InvalidInput("give exactly one of 'key' or 'pattern'")
    if body.key is not None:
        hub.cache.invalidate(body.key)
        removed = 1
    else:
        removed = hub.cache.invalidate_pattern(body.pattern)
    audit.record(
        hub.store,
        actor=principal.username,
        action="cache.invalidate",
        client_address=client_address(request),
        detail={"key": body.key, "pattern": body.pattern},
    )
    return {"invalidated": removed}
