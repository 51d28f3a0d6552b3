"""The enveloped dialect's transcript reads: the hot path's routes."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from transcripts.caching import (
    if_none_match,
    matches,
    not_modified,
    private_cache_headers,
    transcript_etag,
)
from transcripts.dependencies import AppStateDep, CredentialsDep
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, SessionIdPath
from transcripts.dialects.agents.envelope import ENVELOPE_ERROR_RESPONSES, envelope_response
from transcripts.dialects.agents.mapper import session_summary
from transcripts.dialects.exports import (
    FORMAT_PARAMETER,
    DownloadQuery,
    FormatPath,
    RedactQuery,
    export_content,
    export_response,
)
from transcripts.dialects.hot import add_hot_route
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.domain import Credentials
from transcripts.generated.agents import AgentSessionSummaryEnvelope
from transcripts.recordings import link_for
from transcripts.state import AppState

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)


async def get_session_transcript(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    condition = if_none_match(scope)
    if condition is not None:
        # The session row alone says whether the caller's copy is current.
        head = await state.transcripts.session(credentials, session_id, with_turns=False)
        etag = transcript_etag(head, _REPRESENTATION, weak=True)
        if etag is not None and matches(condition, etag):
            return not_modified(etag)
    record = await state.transcripts.session(credentials, session_id)
    link = await link_for(state.recordings, record)
    response = envelope_response(session_summary(record, link))
    response.headers.update(
        private_cache_headers(transcript_etag(record, _REPRESENTATION, weak=True))
    )
    return response


# The tag's name for what this read answers (a redacted read would be another).
_REPRESENTATION = "agents.summary"


async def export_session_transcript(
    request: Request,
    session_id: SessionIdPath,
    format_name: FormatPath,
    credentials: CredentialsDep,
    state: AppStateDep,
    download: DownloadQuery = False,
    redact: RedactQuery = None,
) -> Response:
    return await export_response(
        state,
        credentials,
        session_id,
        format_name,
        request,
        dialect="agents",
        download=download,
        redact=redact,
    )


_NOT_MODIFIED: dict[int | str, Any] = {
    304: {"description": "The caller's copy (If-None-Match) is current: no body, its ETag."}
}
_TRANSCRIPT_DOCS: dict[str, Any] = {
    "responses": {
        200: {"model": AgentSessionSummaryEnvelope},
        **_NOT_MODIFIED,
        **ENVELOPE_ERROR_RESPONSES,
    },
    "openapi_extra": SECURITY,
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
add_slash_agnostic_route(
    router,
    f"/api/agents/agent-session/{{session_id}}/transcript/{FORMAT_PARAMETER}/",
    export_session_transcript,
    methods=["GET"],
    operation_id="exportAgentSessionTranscript",
    summary="Export a session transcript",
    description=(
        "The transcript as WebVTT (text/vtt, <v Assistant>/<v User> voices), SubRip"
        " (application/x-subrip), plain text, Markdown or JSON Lines (application/x-ndjson, one"
        " turn a line). A cue runs from the turn's ts for its speaking duration (else to the"
        " next turn's ts), so captions play in step with the recording."
    ),
    tags=["Agent sessions"],
    responses={200: export_content(), **_NOT_MODIFIED, **ENVELOPE_ERROR_RESPONSES},
    openapi_extra=SECURITY,
    response_class=Response,
)
