"""The ASGI application: ``create_app()`` builds it, the lifespan owns every resource."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
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
from transcripts.db.engine import CONNECTION_LOST, Database, is_unavailable
from transcripts.db.repository import ApiKeyUsage, Repository
from transcripts.dialects.agents import dashboard, lifecycle
from transcripts.dialects.agents.envelope import render_envelope_error
from transcripts.dialects.agents.routes import HOT_READS as AGENTS_HOT_READS
from transcripts.dialects.agents.routes import router as agents_router
from transcripts.dialects.anam.errors import render_anam_error
from transcripts.dialects.anam.routes import HOT_READS as ANAM_HOT_READS
from transcripts.dialects.anam.routes import router as anam_router
from transcripts.dialects.hot import HotReads
from transcripts.dialects.routing import ErrorRenderer, error_renderer_for, error_response
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
from transcripts.observability import AccessLog, Metrics, ObservabilityMiddleware, PoolCollector
from transcripts.operations import router as operations_router
from transcripts.recordings import open_recording_store
from transcripts.runtime import settle_garbage_collector
from transcripts.settings import Settings
from transcripts.validation import field_errors

__all__ = ["create_app", "openapi_document"]

logger = logging.getLogger("transcripts")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    token_verifier = TokenVerifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.callback(access_log.flush)  # last: the lines of the final requests
            database = Database(settings)
            stack.push_async_callback(database.dispose)
            key_usage = ApiKeyUsage(database)
            stack.push_async_callback(key_usage.drain)
            app.state.key_usage = key_usage
            app.state.database = database
            app.state.repository = Repository(database, key_usage)
            app.state.recording_store = await open_recording_store(settings, stack)
            metrics.registry.register(PoolCollector(lambda: database.engine.pool))
            settle_garbage_collector()
            yield

    app = FastAPI(
        title="transcripts",
        version=__version__,
        summary="Voice-session transcripts in Oshara's enveloped dialect and Anam's /v1 dialect.",
        lifespan=lifespan,
        redirect_slashes=False,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # The service's telemetry is its Prometheus metrics and JSON request log; FastAPI's
        # native OpenTelemetry would look up the global providers on every request (about
        # 10 µs of a 300 µs transcript read) to find that no SDK is installed.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.token_verifier = token_verifier
    metrics = Metrics()
    app.state.metrics = metrics
    access_log = AccessLog()
    app.state.access_log = access_log
    app.include_router(operations_router)
    app.include_router(downloads_router)
    app.include_router(agents_router)
    app.include_router(lifecycle.router)
    app.include_router(dashboard.router)
    app.include_router(anam_router)
    app.add_middleware(HotReads, reads=[*AGENTS_HOT_READS, *ANAM_HOT_READS])
    _install_error_handlers(app)
    # Observability outermost, so the guard's refusals are logged and counted too.
    app.add_middleware(RequestGuard, render_error=_render)
    app.add_middleware(
        ObservabilityMiddleware, metrics=metrics, access_log=access_log, render_error=_render
    )
    app.openapi = _openapi_factory(app)  # type: ignore[method-assign]
    return app


def _renderer_by_prefix(path: str) -> ErrorRenderer:
    return render_anam_error if path == "/v1" or path.startswith("/v1/") else render_envelope_error


def _render(request: Request, error: TranscriptsError) -> Response:
    return error_response(error_renderer_for(request, _renderer_by_prefix), error)


def _install_error_handlers(app: FastAPI) -> None:
    async def domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TranscriptsError)
        return _render(request, exc)

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        return _render(request, BadRequest(f"Invalid {', '.join(errors)}.", errors))

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
        response = _render(request, error)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    async def database_error(request: Request, exc: Exception) -> Response:
        # Statements run through SQLAlchemy (the write side, listings) land here.
        if isinstance(exc, IntegrityError):
            # Two writers raced past the service's own checks (e.g. the same new slug at
            # once): the database kept one; the other learns the data conflicts.
            return _render(request, Conflict())
        if is_unavailable(exc):
            logger.warning("database unreachable: %s", type(exc).__name__)
            return _render(request, ServiceUnavailable())
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
