"""Endpoints for the platform, not for API clients: probes and metrics (not in the schema)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from transcripts.errors import ServiceUnavailable
from transcripts.state import app_state

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> Response:
    """Liveness: the process answers. Never touches the database, so an outage there does not
    get every replica restarted."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Readiness: the database answers; a replica that cannot reach it leaves the rotation."""
    try:
        await app_state(request.app).database.ping()
    except ServiceUnavailable:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(app_state(request.app).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
