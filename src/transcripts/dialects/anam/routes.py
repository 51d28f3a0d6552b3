"""Routes of the Anam dialect (``/v1/sessions``)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Scope

from transcripts.caching import (
    private_cache_headers,
)
from transcripts.dependencies import (
    AppStateDep,
    CallerDep,
    CredentialsDep,
    DashboardDep,
    DbSessionDep,
    RecordingDeletionsDep,
    RecordingStoreDep,
    TranscriptsDep,
)
from transcripts.dialects.anam.errors import ANAM_ERROR_RESPONSES, render_anam_error
from transcripts.dialects.anam.mapper import (
    anam_live_finalized,
    anam_live_turn,
    anam_session,
    anam_session_list,
    anam_transcript,
)
from transcripts.dialects.exports import (
    FORMAT_PARAMETER,
    DownloadQuery,
    FormatPath,
    RedactQuery,
    export_content,
    export_response,
)
from transcripts.dialects.hot import add_hot_route, conditional_transcript
from transcripts.dialects.routing import REDACT_PARAMETER, add_slash_agnostic_route, route_class
from transcripts.dialects.streams import STREAM_200, STREAM_429, add_stream_route
from transcripts.domain import Credentials
from transcripts.errors import NotFound
from transcripts.generated.anam import Session, SessionList, SessionRecording, SessionTranscript
from transcripts.limits import MAX_PAGE, MAX_PER_PAGE
from transcripts.pagination import page_request
from transcripts.recordings import link_for
from transcripts.services import deletions
from transcripts.state import AppState

__all__ = ["AnamRoute", "router"]

AnamRoute = route_class("AnamRoute", render_anam_error)
router = APIRouter(route_class=AnamRoute)

SessionIdPath = Annotated[uuid.UUID, Path(alias="id", description="Session ID")]
SECURITY: dict[str, Any] = {"security": [{"BearerAuth": []}, {"ApiKeyAuth": []}]}


def _json(document: Any) -> Response:
    return Response(orjson.dumps(document), media_type="application/json")


_NOT_MODIFIED: dict[int | str, Any] = {
    304: {"description": "The caller's copy (If-None-Match) is current: no body, its ETag."}
}


def _docs(
    model: type | None,
    errors: tuple[int, ...] = (400, 401, 404, 429, 431, 500, 503),
    *,
    openapi_extra: dict[str, Any] | None = None,
    conditional: bool = False,
    export: bool = False,
) -> dict[str, Any]:
    responses: dict[int | str, Any]
    if export:
        responses = {200: export_content()}
    elif model:
        responses = {200: {"model": model}}
    else:
        responses = {204: {"description": "Deleted."}}
    if conditional:
        responses.update(_NOT_MODIFIED)
    responses.update({status: ANAM_ERROR_RESPONSES[status] for status in errors})
    return {
        "tags": ["Sessions"],
        "response_class": Response,
        "responses": responses,
        "openapi_extra": {**SECURITY, **(openapi_extra or {})},
    }


async def get_session_transcript(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    # Strong: the body carries no link.
    found = await conditional_transcript(
        state, credentials, session_id, scope, "anam.transcript", weak=False
    )
    if isinstance(found, Response):
        return found
    record, etag = found
    response = _json(anam_transcript(record))
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
        dialect="anam",
        download=download,
        redact=redact,
    )


async def get_session(
    session_id: SessionIdPath, credentials: CredentialsDep, transcripts: TranscriptsDep
) -> Response:
    record = await transcripts.session(credentials, session_id, with_turns=False)
    return _json(anam_session(record))


async def get_session_recording(
    session_id: SessionIdPath,
    credentials: CredentialsDep,
    transcripts: TranscriptsDep,
    recordings: RecordingStoreDep,
) -> Response:
    record = await transcripts.session(credentials, session_id, with_turns=False)
    signed = await link_for(recordings, record)
    if signed is None:
        raise NotFound("Recording not found")
    return _json({"recordingUrl": signed.url})


async def delete_session(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DbSessionDep,
    recordings: RecordingDeletionsDep,
) -> Response:
    queued = await deletions.delete_session(db, caller, session_id)
    # After the response, so after the commit (DbSessionDep commits as the endpoint returns).
    return Response(status_code=204, background=BackgroundTask(recordings.run, queued))


async def list_sessions(
    caller: CallerDep,
    dashboard: DashboardDep,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page number for pagination.")] = 1,
    per_page: Annotated[
        int,
        Query(
            alias="perPage",
            ge=1,
            le=MAX_PER_PAGE,
            description="Number of items per page (max 100).",
        ),
    ] = 10,
    search: Annotated[
        str | None,
        Query(max_length=200, description="Search term to filter sessions by ID or client label."),
    ] = None,
    persona_id: Annotated[
        uuid.UUID | None, Query(alias="personaId", description="Filter sessions by persona ID.")
    ] = None,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="meta.nextCursor of the page before; wins over page."),
    ] = None,
) -> Response:
    sessions = await dashboard.list_sessions(
        caller,
        page_request(per_page, page=page, cursor=cursor),
        persona_id=persona_id,
        search=search,
    )
    return _json(anam_session_list(sessions, None if cursor else page, per_page))


add_hot_route(
    router,
    "/v1/sessions/{id}/transcript",
    get_session_transcript,
    session_id=SessionIdPath,
    conditional=True,
    operation_id="getSessionTranscript",
    summary="get session transcript",
    description="Returns the conversation transcript for a session",
    **_docs(SessionTranscript, openapi_extra={"parameters": [REDACT_PARAMETER]}, conditional=True),
)
add_stream_route(
    router,
    "/v1/sessions/{id}/transcript/stream",
    session_id=SessionIdPath,
    turn=anam_live_turn,
    finalized=anam_live_finalized,
    operation_id="streamSessionTranscript",
    summary="stream session transcript",
    description=(
        "Server-Sent Events: the stored messages, then each message as it is appended, as"
        " `event: turn` (data: a transcript message with `turnIndex`; id: increasing within"
        " the session, for `Last-Event-ID`), then `event: finalized` with `{sessionId,"
        " endTime, durationMs, totalMessages}` and the end. `: ping` every"
        " STREAM_HEARTBEAT_SECONDS; 429 past STREAM_MAX_PER_CALLER open streams."
    ),
    **{
        **_docs(SessionTranscript),
        "responses": {
            200: STREAM_200,
            **ANAM_ERROR_RESPONSES,
            429: {**ANAM_ERROR_RESPONSES[429], "description": STREAM_429},
        },
    },
)
add_slash_agnostic_route(
    router,
    f"/v1/sessions/{{id}}/transcript/{FORMAT_PARAMETER}",
    export_session_transcript,
    methods=["GET"],
    operation_id="exportSessionTranscript",
    summary="Export session transcript",
    description=(
        "The transcript as WebVTT (text/vtt), SubRip (application/x-subrip), plain text,"
        " Markdown or JSON Lines (application/x-ndjson), cues timed to the recording."
    ),
    **_docs(None, conditional=True, export=True),
)
add_slash_agnostic_route(
    router,
    "/v1/sessions/{id}/recording",
    get_session_recording,
    methods=["GET"],
    operation_id="getSessionRecording",
    summary="Get session recording",
    description="Returns a presigned URL to download the session recording (1 hour by default).",
    **_docs(SessionRecording),
)
add_slash_agnostic_route(
    router,
    "/v1/sessions/{id}",
    get_session,
    methods=["GET"],
    operation_id="getSession",
    summary="Get session",
    description="Returns a session by ID.",
    **_docs(Session),
)
add_slash_agnostic_route(
    router,
    "/v1/sessions/{id}",
    delete_session,
    methods=["DELETE"],
    status_code=204,
    operation_id="deleteSession",
    summary="Delete session",
    description=(
        "Deletes the session: its transcript, usage, metadata and recording object. Its id "
        "stays reserved: later writes to it answer 404. Deleting it again answers 204; a "
        "session that is not the caller's is the 404 of an unknown id."
    ),
    **_docs(None),
)
add_slash_agnostic_route(
    router,
    "/v1/sessions",
    list_sessions,
    methods=["GET"],
    operation_id="listSessions",
    summary="List sessions",
    description="Returns a paginated list of the caller's sessions, newest first.",
    **_docs(SessionList, errors=(400, 401, 429, 431, 500, 503)),
)
