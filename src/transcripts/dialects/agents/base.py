"""What every route of the enveloped dialect shares: its route classes and path types."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Path

from transcripts.dialects.agents.envelope import render_envelope_error
from transcripts.dialects.routing import route_class, with_body_checks
from transcripts.limits import MAX_BODY_BYTES

__all__ = ["SECURITY", "EnvelopeRoute", "SessionIdPath", "SlugPath", "WriteRoute"]

EnvelopeRoute = route_class("EnvelopeRoute", render_envelope_error)
WriteRoute = with_body_checks(EnvelopeRoute, MAX_BODY_BYTES)

SessionIdPath = Annotated[
    uuid.UUID, Path(description="The session_id (UUID) returned at session start.")
]
SlugPath = Annotated[str, Path(max_length=64, description="The character's slug.")]
SECURITY: dict[str, Any] = {"security": [{"ApiKeyAuth": []}, {"BearerAuth": []}]}
