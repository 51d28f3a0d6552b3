"""Oshara's enveloped dialect: ``{success, message, data, errors}``."""

from __future__ import annotations

from transcripts.dialects import Dialect
from transcripts.dialects.agents import (
    dashboard,
    lifecycle,
    privacy,
    search,
    transcripts,
    webhooks,
)
from transcripts.dialects.agents.envelope import render_envelope_error
from transcripts.generated.agents import ErrorEnvelope

__all__ = ["DIALECT"]

DIALECT = Dialect(
    name="agents",
    prefix="/api",
    render_error=render_envelope_error,
    routers=(
        transcripts.router,
        lifecycle.router,
        dashboard.router,
        privacy.router,
        search.router,
        webhooks.router,
    ),
    error_model=ErrorEnvelope,
    spec="agents.yaml",
)
