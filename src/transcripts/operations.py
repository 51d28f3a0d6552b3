"""Endpoints for the platform, not for API clients: probes and metrics (not in the schema).

The probes are open: the platform calls them without credentials, and they tell nothing.
``/metrics`` is open too unless ``TRANSCRIPTS_METRICS_TOKEN`` is set; then it answers only
``Authorization: Bearer <token>`` (Prometheus's ``authorization.credentials_file``), compared
in constant time, and anything else is a plain 401 that a scraper reports as it is.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, PlainTextResponse, Response

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
    state = app_state(request.app)
    token = state.settings.metrics_token
    if token is not None and not _bears(
        request.headers.get("authorization"), token.get_secret_value()
    ):
        return PlainTextResponse(
            "/metrics needs 'Authorization: Bearer <TRANSCRIPTS_METRICS_TOKEN>'.\n",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if state.webhooks is not None:
        await state.webhooks.refresh_metrics()
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _bears(authorization: str | None, token: str) -> bool:
    """Whether the header is ``Bearer <token>``, by the API's own grammar (auth.py): the
    scheme in any case, spaces after it, SP or HTAB around the value, nothing else."""
    if authorization is None:
        return False
    scheme, _, presented = authorization.strip(" \t").partition(" ")
    if scheme.lower() != "bearer":
        return False
    # Starlette decodes header values as ISO-8859-1: these are the bytes the client sent.
    return hmac.compare_digest(presented.lstrip(" ").encode("latin-1"), token.encode())
