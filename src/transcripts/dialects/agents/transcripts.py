"""The enveloped dialect's transcript reads: the hot path's routes."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from transcripts.caching import (
    private_cache_headers,
)
from transcripts.dependencies import AppStateDep, CredentialsDep
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, SessionIdPath
from transcripts.dialects.agents.envelope import ENVELOPE_ERROR_RESPONSES, envelope_response
from transcripts.dialects.agents.mapper import live_finalized_data, live_turn_data, session_summary
from transcripts.dialects.exports import (
    FORMAT_PARAMETER,
    DownloadQuery,
    FormatPath,
    RedactQuery,
    export_content,
    export_response,
)
from transcripts.dialects.hot import add_hot_route, conditional_transcript
from transcripts.dialects.routing import REDACT_PARAMETER, add_slash_agnostic_route
from transcripts.dialects.streams import STREAM_200, STREAM_429, add_stream_route
from transcripts.domain import Credentials
from transcripts.generated.agents import AgentSessionSummaryEnvelope
from transcripts.recordings import link_for
from transcripts.state import AppState

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)


async def get_session_transcript(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    # Weak: the body carries a presigned link made afresh on every read.
    found = await conditional_transcript(
        state, credentials, session_id, scope, "agents.summary", weak=True
    )
    if isinstance(found, Response):
        return found
    record, etag = found
    link = await link_for(state.recordings, record)
    response = envelope_response(session_summary(record, link))
    response.headers.update(private_cache_headers(etag))
    return response


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
    "openapi_extra": {**SECURITY, "parameters": [REDACT_PARAMETER]},
    "response_class": Response,
}
add_hot_route(
    router,
    "/api/agents/agent-session/{session_id}/transcript/",
    get_session_transcript,
    session_id=SessionIdPath,
    conditional=True,
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
    conditional=True,
    operation_id="getBillingSession",
    summary="Get a session (Oshara's billing path)",
    description="The same AgentSessionSummary, at the path Oshara's documentation uses.",
    tags=["Billing"],
    **_TRANSCRIPT_DOCS,
)
add_stream_route(
    router,
    "/api/agents/agent-session/{session_id}/transcript/stream/",
    session_id=SessionIdPath,
    turn=lambda turn, text, _started: live_turn_data(turn, text),
    finalized=live_finalized_data,
    operation_id="streamAgentSessionTranscript",
    summary="Follow a session's transcript live (Server-Sent Events)",
    description=(
        "The stored turns, then each turn as it is appended, as `event: turn` (data: a"
        " `transcript` item; id: increasing within the session, so `Last-Event-ID` resumes"
        " after the last turn received, whatever order the turns were appended in); then"
        " `event: finalized` with `{session_id, finalized_at, turn_count}` and the end. A"
        " finalized session replays and ends at once. `: ping` every"
        " STREAM_HEARTBEAT_SECONDS. Scoped as the transcript read; 429 past"
        " STREAM_MAX_PER_CALLER open streams."
    ),
    tags=["Agent sessions"],
    responses={
        200: STREAM_200,
        **ENVELOPE_ERROR_RESPONSES,
        429: {**ENVELOPE_ERROR_RESPONSES[429], "description": STREAM_429},
    },
    openapi_extra=SECURITY,
    response_class=Response,
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
