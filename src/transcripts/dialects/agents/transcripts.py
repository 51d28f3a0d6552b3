"""The enveloped dialect's transcript reads: the hot path's routes."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from starlette.responses import Response
from starlette.types import Scope

from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, SessionIdPath
from transcripts.dialects.agents.envelope import ENVELOPE_ERROR_RESPONSES, envelope_response
from transcripts.dialects.agents.mapper import session_summary
from transcripts.dialects.hot import add_hot_route
from transcripts.dialects.routing import REDACT_PARAMETER
from transcripts.domain import Credentials
from transcripts.generated.agents import AgentSessionSummaryEnvelope
from transcripts.privacy import redact_record, requested_in_query
from transcripts.recordings import link_for
from transcripts.state import AppState

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)


async def get_session_transcript(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    redact = requested_in_query(scope["query_string"])
    record = await state.transcripts.session(credentials, session_id)
    if redact:
        record = redact_record(record)
    link = await link_for(state.recordings, record)
    return envelope_response(session_summary(record, link))


_TRANSCRIPT_DOCS: dict[str, Any] = {
    "responses": {200: {"model": AgentSessionSummaryEnvelope}, **ENVELOPE_ERROR_RESPONSES},
    "openapi_extra": {**SECURITY, "parameters": [REDACT_PARAMETER]},
    "response_class": Response,
}
add_hot_route(
    router,
    "/api/agents/agent-session/{session_id}/transcript/",
    get_session_transcript,
    session_id=SessionIdPath,
    operation_id="getAgentSessionTranscript",
    summary="Get a session transcript",
    description=(
        "AgentSessionSummary for a single voice session, including the entire transcript. "
        "Staff see any session; other callers only sessions of characters they created."
    ),
    tags=["Agent sessions"],
    **_TRANSCRIPT_DOCS,
)
add_hot_route(
    router,
    "/api/billing/sessions/{session_id}/",
    get_session_transcript,
    session_id=SessionIdPath,
    operation_id="getBillingSession",
    summary="Get a session (Oshara's billing path)",
    description="The same AgentSessionSummary, at the path Oshara's documentation uses.",
    tags=["Billing"],
    **_TRANSCRIPT_DOCS,
)
