"""Routes of the enveloped dialect."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from starlette.responses import Response
from starlette.types import Scope

from transcripts.auth import CredentialsDep
from transcripts.db.repository import Repository
from transcripts.dependencies import RecordingStoreDep, RepositoryDep
from transcripts.dialects.agents.envelope import (
    ENVELOPE_ERROR_RESPONSES,
    envelope_response,
    render_envelope_error,
)
from transcripts.dialects.agents.mapper import session_summary
from transcripts.dialects.hot import HotRead
from transcripts.dialects.routing import add_slash_agnostic_route, route_class, with_body_checks
from transcripts.domain import Credentials
from transcripts.generated.agents import AgentSessionSummaryEnvelope
from transcripts.limits import MAX_BODY_BYTES
from transcripts.recordings import RecordingStore, link_for

__all__ = ["HOT_READS", "SECURITY", "EnvelopeRoute", "SessionIdPath", "WriteRoute", "router"]

EnvelopeRoute = route_class("EnvelopeRoute", render_envelope_error)
WriteRoute = with_body_checks(EnvelopeRoute, MAX_BODY_BYTES)
router = APIRouter(route_class=EnvelopeRoute)

SessionIdPath = Annotated[
    uuid.UUID, Path(description="The session_id (UUID) returned at session start.")
]
SECURITY: dict[str, Any] = {"security": [{"ApiKeyAuth": []}, {"BearerAuth": []}]}


async def session_transcript(
    repository: Repository,
    recordings: RecordingStore,
    credentials: Credentials,
    session_id: uuid.UUID,
    scope: Scope,
) -> Response:
    record = await repository.session(credentials, session_id)
    link = await link_for(recordings, record.recording_url, scope)
    return envelope_response(session_summary(record, link))


async def get_session_transcript(
    request: Request,
    session_id: SessionIdPath,
    credentials: CredentialsDep,
    repository: RepositoryDep,
    recordings: RecordingStoreDep,
) -> Response:
    return await session_transcript(repository, recordings, credentials, session_id, request.scope)


def _hot_transcript(
    state: Any, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Awaitable[Response]:
    return session_transcript(
        state.repository, state.recording_store, credentials, session_id, scope
    )


TRANSCRIPT_PATH = "/api/agents/agent-session/{session_id}/transcript/"
BILLING_PATH = "/api/billing/sessions/{session_id}/"
HOT_READS = [
    HotRead(path, _hot_transcript, render_envelope_error)
    for path in (TRANSCRIPT_PATH, BILLING_PATH)
]


_TRANSCRIPT_DOCS = {
    "responses": {200: {"model": AgentSessionSummaryEnvelope}, **ENVELOPE_ERROR_RESPONSES},
    "openapi_extra": SECURITY,
    "response_class": Response,
}
add_slash_agnostic_route(
    router,
    TRANSCRIPT_PATH,
    get_session_transcript,
    methods=["GET"],
    operation_id="getAgentSessionTranscript",
    summary="Get a session transcript",
    description=(
        "AgentSessionSummary for a single voice session, including the entire transcript. "
        "Staff see any session; other callers only sessions of characters they created."
    ),
    tags=["Agent sessions"],
    **_TRANSCRIPT_DOCS,
)
add_slash_agnostic_route(
    router,
    BILLING_PATH,
    get_session_transcript,
    methods=["GET"],
    operation_id="getBillingSession",
    summary="Get a session (Oshara's billing path)",
    description="The same AgentSessionSummary, at the path Oshara's documentation uses.",
    tags=["Billing"],
    **_TRANSCRIPT_DOCS,
)
