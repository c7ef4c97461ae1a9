"""FastAPI dependencies: who is calling (token or API key) and whether their role allows the route."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from clinhub.errors import PermissionDenied, Unauthenticated
from clinhub.hub import Hub
from clinhub.platform import audit, auth
from clinhub.platform.permissions import PERMISSIONS, allows

_bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login, or an API key")

#: routes that need no credentials; every other route must declare a permission with `require`
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/mentor/v2/health",
        "/auth/login",
        "/auth/refresh",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/openapi.json",
    }
)


def get_hub(request: Request) -> Hub:
    return request.app.state.hub


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def current_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> auth.Principal:
    hub = get_hub(request)
    credential = credentials.credentials if credentials else request.headers.get("x-api-key")
    if not credential:
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token or API key>'")
    if auth.is_api_key(credential):
        return auth.verify_api_key(hub.store, credential)
    return auth.verify_token(hub.store, credential, hub.settings.token_secret())


def require(permission: str) -> Callable[..., auth.Principal]:
    """A dependency that admits callers whose role holds `permission`, and names it for the route table."""
    if permission not in PERMISSIONS:
        raise KeyError(f"unknown permission {permission!r}")

    def check(request: Request, principal: auth.Principal = Depends(current_principal)) -> auth.Principal:
        if not allows(principal.role, permission):
            audit.record(
                get_hub(request).store,
                actor=principal.username,
                action="access.denied",
                outcome="denied",
                client_address=client_address(request),
                detail={"permission": permission, "route": _route(request)},
            )
            raise PermissionDenied(f"role {principal.role!r} lacks permission {permission!r}")
        return principal

    check.permission = permission  # type: ignore[attr-defined]
    return check


def _route(request: Request) -> str:
    return getattr(request.scope.get("route"), "path", request.url.path)


@dataclass(frozen=True)
class RouteEntry:
    path: str
    methods: frozenset[str]
    route: APIRoute


def route_table(app) -> list[RouteEntry]:
    """Every API route of `app` with its full path, including routes of included routers."""
    entries: list[RouteEntry] = []

    def walk(routes, prefix: str) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                entries.append(RouteEntry(prefix + route.path, frozenset(route.methods), route))
            elif hasattr(route, "original_router"):  # FastAPI's wrapper for include_router()
                context = getattr(route, "include_context", None)
                walk(route.original_router.routes, prefix + getattr(context, "prefix", ""))

    walk(app.routes, "")
    return entries


def declared_permission(route: APIRoute) -> str | None:
    """The permission a route declared through `require`, found by walking its dependencies."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        permission = getattr(dependant.call, "permission", None)
        if permission:
            return permission
        pending.extend(dependant.dependencies)
    return None
