"""The ASGI application: ``create_app()`` builds it, the lifespan owns every resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from transcripts import __version__
from transcripts.auth import TokenVerifier
from transcripts.cors import Cors, widget_paths
from transcripts.db.dashboard import DashboardReads
from transcripts.db.engine import CONNECTION_LOST, Database, is_unavailable
from transcripts.db.hot_read import TranscriptReads
from transcripts.db.key_usage import ApiKeyUsage
from transcripts.db.search import TranscriptSearch
from transcripts.dialects import Dialect, agents, anam, dialect_for_path
from transcripts.dialects.agents.mapper import webhook_summary
from transcripts.dialects.hot import HotReads, verify_hot_routes
from transcripts.dialects.routing import DialectRoute, error_response
from transcripts.docs_ui import router as docs_router
from transcripts.downloads import router as downloads_router
from transcripts.errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    TranscriptsError,
)
from transcripts.limits import RequestGuard
from transcripts.live import LiveHub
from transcripts.observability import (
    AccessLog,
    GaugeCollector,
    Metrics,
    ObservabilityMiddleware,
    PoolCollector,
    WebhookMetrics,
)
from transcripts.operations import router as operations_router
from transcripts.ratelimit import RateLimiter, RateLimits
from transcripts.recordings import open_recording_store
from transcripts.retention import RetentionSweeper
from transcripts.runtime import settle_garbage_collector
from transcripts.services.deletions import RecordingDeletions
from transcripts.settings import Settings
from transcripts.state import AppState
from transcripts.validation import field_errors
from transcripts.viewer import router as viewer_router
from transcripts.webhook_deliverer import WebhookDeliverer
from transcripts.widget_origins import WidgetOrigins

__all__ = ["DIALECTS", "create_app", "openapi_document"]

# The dialects the service speaks; the first also answers paths outside every dialect.
DIALECTS: tuple[Dialect, ...] = (agents.DIALECT, anam.DIALECT)

logger = logging.getLogger("transcripts")


def create_app(
    settings: Settings | None = None, *, dialects: Sequence[Dialect] = DIALECTS
) -> FastAPI:
    settings = settings or Settings()
    token_verifier = TokenVerifier(settings)
    metrics = Metrics()
    access_log = AccessLog()
    rate_limiter = RateLimiter.from_settings(settings, metrics.registry)  # None when off
    webhook_metrics = WebhookMetrics()
    metrics.registry.register(webhook_metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.callback(access_log.flush)  # last: the lines of the final requests
            if rate_limiter is not None:
                stack.push_async_callback(rate_limiter.close)
            database = Database(settings)
            stack.push_async_callback(database.dispose)
            key_usage = ApiKeyUsage(database)
            stack.push_async_callback(key_usage.drain)
            deliverer = None
            if settings.webhook_deliverer_enabled:
                deliverer = WebhookDeliverer(
                    database, settings, webhook_metrics, summarize=webhook_summary
                )
                await deliverer.start()
                # Stopped before the database is disposed: attempts in flight record
                # their outcome first.
                stack.push_async_callback(deliverer.stop)
            recordings = await open_recording_store(settings, stack)
            live = LiveHub(settings, database)
            await live.start()
            stack.push_async_callback(live.stop)  # before the database is disposed
            app.state.transcripts = AppState(
                settings=settings,
                token_verifier=token_verifier,
                metrics=metrics,
                access_log=access_log,
                database=database,
                key_usage=key_usage,
                transcripts=TranscriptReads(database, key_usage),
                dashboard=DashboardReads(database),
                recordings=recordings,
                recording_deletions=RecordingDeletions(database, recordings),
                widget_origins=WidgetOrigins(settings.widget_origins_ttl_seconds),
                live=live,
                search=TranscriptSearch(database, settings.search_config),
                webhooks=deliverer,
            )
            sweeper = RetentionSweeper(
                database,
                app.state.transcripts.recording_deletions,
                default_days=settings.retention_days,
                interval_seconds=settings.retention_sweep_seconds,
            )
            sweeping = asyncio.create_task(sweeper.run_forever(), name="retention-sweeper")
            stack.push_async_callback(_cancelled, sweeping)  # before the database is disposed
            metrics.registry.register(PoolCollector(lambda: database.engine.pool))
            metrics.registry.register(
                GaugeCollector(
                    "transcripts_live_streams",
                    "Live transcript streams open in this worker.",
                    lambda: live.followers,
                )
            )
            metrics.registry.register(
                GaugeCollector(
                    "transcripts_live_listening",
                    "1 while this worker hears appends (its LISTEN connection is up).",
                    lambda: float(live.listening),
                )
            )
            settle_garbage_collector()
            yield

    app = FastAPI(
        title="transcripts",
        version=__version__,
        summary="Voice-session transcripts in Oshara's enveloped dialect and Anam's /v1 dialect.",
        lifespan=lifespan,
        redirect_slashes=False,
        openapi_url="/openapi.json",
        docs_url=None,  # docs_ui serves it, with Swagger UI's assets from the package
        redoc_url=None,
        # The service's telemetry is its Prometheus metrics and JSON request log; FastAPI's
        # native OpenTelemetry would look up the global providers on every request (about
        # 10 µs of a 300 µs transcript read) to find that no SDK is installed.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.include_router(operations_router)
    app.include_router(docs_router)
    app.include_router(downloads_router)
    app.include_router(viewer_router)
    for dialect in dialects:
        for router in dialect.routers:
            app.include_router(router)
    app.add_middleware(HotReads, reads=verify_hot_routes(app.routes))

    def render(request: Request, error: TranscriptsError) -> Response:
        """The failure in the body of the matched route's dialect, else of the path's."""
        route = request.scope.get("route")
        if isinstance(route, DialectRoute):
            return error_response(route.render_error, error)
        return error_response(dialect_for_path(dialects, request.url.path).render_error, error)

    _install_error_handlers(app, render)
    if rate_limiter is not None:
        # Outside the hot reads, so they are counted like every route (ratelimit.py).
        prefixes = [dialect.prefix for dialect in dialects]
        app.add_middleware(
            RateLimits,
            limiter=rate_limiter,
            prefixes=prefixes,
            token_verifier=token_verifier,
            render_error=render,
        )
    # Observability outermost, so the guard's refusals are logged and counted too.
    app.add_middleware(RequestGuard, render_error=render)
    # Outside the guard, so a page may read its refusals; inside, so preflights are logged.
    app.add_middleware(
        Cors,
        allow_origins=settings.cors_allow_origins,
        widget_paths=widget_paths(app.routes),
        render_error=render,
    )
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, access_log=access_log, render_error=render
    )
    app.openapi = _openapi_factory(app)  # type: ignore[method-assign]
    return app


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


Renderer = Callable[[Request, TranscriptsError], Response]


def _install_error_handlers(app: FastAPI, render: Renderer) -> None:
    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TranscriptsError)
        return render(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        return render(request, BadRequest(f"Invalid {', '.join(errors)}.", errors))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: TranscriptsError
        if exc.status_code == 404:
            error = NotFound()
        elif exc.status_code == 405:
            error = MethodNotAllowed()
        else:
            error = TranscriptsError(str(exc.detail))
            error.status_code = exc.status_code
        response = render(request, error)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    async def database_error(request: Request, exc: Exception) -> Response:
        # Statements run through SQLAlchemy (the write side, listings) land here.
        if isinstance(exc, IntegrityError):
            # Two writers raced past the service's own checks (e.g. the same new slug at
            # once): the database kept one; the other learns the data conflicts.
            return render(request, Conflict())
        if is_unavailable(exc):
            logger.warning("database unreachable: %s", type(exc).__name__)
            return render(request, ServiceUnavailable())
        raise exc  # unexpected: ObservabilityMiddleware logs it and answers 500

    handlers: dict[type[Exception], Callable[[Request, Exception], Any]] = {
        TranscriptsError: domain_error,
        RequestValidationError: validation_error,
        StarletteHTTPException: http_error,
        DBAPIError: database_error,
        PoolTimeout: database_error,
        # A refused connection surfaces from the driver unwrapped when SQLAlchemy connects.
        **dict.fromkeys(CONNECTION_LOST, database_error),
    }
    for exception_class, handler in handlers.items():
        app.add_exception_handler(exception_class, handler)


SECURITY_SCHEMES = {
    "ApiKeyAuth": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key, `sk_` followed by 64 hex characters. Wins over a token.",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "An access JWT, or an API key sent as `Bearer sk_...`.",
    },
}


def _openapi_factory(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            # Validation failures answer 400 in the dialect's body (declared per route).
            for path_item in schema.get("paths", {}).values():
                for operation in path_item.values():
                    operation.get("responses", {}).pop("422", None)
            components = schema.setdefault("components", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            components["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def openapi_document() -> dict[str, Any]:
    """The service's OpenAPI document, as served at /openapi.json (no database needed)."""
    return create_app(Settings(_env_file=None, jwt_secret=None)).openapi()
