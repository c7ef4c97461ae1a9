"""create_app(): the FastAPI application; mounts each domain's router and maps errors, nothing else."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from clinhub import __version__
from clinhub.analytics.api import router as analytics_router
from clinhub.config import Settings, get_settings
from clinhub.errors import ClinhubError, RateLimited, Unauthenticated
from clinhub.fhir.api import router as fhir_router
from clinhub.hl7.api import router as hl7_router
from clinhub.hl7.mllp import MLLPServer
from clinhub.hub import Hub
from clinhub.mentor.api import router as mentor_router
from clinhub.platform import backup, health
from clinhub.platform.api import router as platform_router
from clinhub.platform.jobs import start_inprocess_worker
from clinhub.platform.logging import RequestContextMiddleware, get_logger
from clinhub.platform.logging import configure as configure_logging
from clinhub.platform.metrics import MetricsMiddleware, render
from clinhub.quality.api import router as quality_router
from clinhub.views.api import router as views_router

log = get_logger("clinhub.api")


def _error_body(code: str, message: str) -> dict:
    return {"error": code, "message": message}


def create_app(settings: Settings | None = None, *, run_worker: bool = False) -> FastAPI:
    """Build the clinhub HTTP API for `settings` (default: from the environment); with `run_worker`, jobs
    also run in this process (the embedded default of `clinhub serve`)."""
    hub = Hub(settings or get_settings())
    configure_logging(hub.settings.log_level, hub.settings.log_format)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = start_inprocess_worker(hub) if run_worker else None
        listener = None
        if hub.settings.mllp_enabled:
            listener = await MLLPServer(hub, hub.settings.host, hub.settings.mllp_port).start()
        try:
            yield
        finally:
            if listener is not None:
                await listener.stop()
            if worker is not None:
                worker.stop()
            hub.close()

    app = FastAPI(
        title="clinhub",
        version=__version__,
        description="Clinical data hub: HL7 v2 and FHIR R4 in, SQL on FHIR views, quality, analytics.",
        lifespan=lifespan,
    )
    app.state.hub = hub
    backup.watch_last_success(hub)
    app.add_middleware(MetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)

    @app.exception_handler(ClinhubError)
    async def clinhub_error(_request: Request, exc: ClinhubError) -> JSONResponse:
        headers = {}
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimited):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse(_error_body(exc.code, exc.message), status_code=exc.http_status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # the exception text may carry health data: log its type and route only
        route = getattr(request.scope.get("route"), "path", "unmatched")
        log.error("unhandled error", error=type(exc).__name__, method=request.method, route=route)
        return JSONResponse(_error_body("exception", "internal error"), status_code=500)

    @app.get("/health", tags=["health"], summary="Status of the store, the analytic engine and the cache")
    def get_health() -> JSONResponse:
        body = health.report(hub.store, hub.engine, hub.settings.redis_url)
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/health/live", tags=["health"], summary="Liveness: the process answers")
    def get_live() -> dict:
        return {"status": "alive"}

    @app.get("/health/ready", tags=["health"], summary="Readiness: store reachable and fully migrated")
    def get_ready() -> JSONResponse:
        store = health.check_store(hub.store)
        body = {"status": "ready" if store.ok else "not ready", "store": store.as_dict()}
        return JSONResponse(body, status_code=200 if store.ok else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=True)
    def get_metrics() -> Response:
        payload, content_type = render()
        return Response(payload, media_type=content_type)

    app.include_router(platform_router)
    app.include_router(views_router)
    app.include_router(hl7_router)
    app.include_router(fhir_router)  # after views_router: /fhir/ViewDefinition is the views'
    app.include_router(quality_router)
    app.include_router(mentor_router)
    app.include_router(analytics_router)
    return app
