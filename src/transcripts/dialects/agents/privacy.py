"""Data rights in the enveloped dialect: deleting a session, erasing one person's sessions."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.background import BackgroundTask
from starlette.responses import Response

from transcripts.dependencies import AppStateDep, CallerDep, DbSessionDep, RecordingDeletionsDep
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, SessionIdPath, WriteRoute
from transcripts.dialects.agents.envelope import envelope_error_responses, envelope_response
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.generated.agents import ErasureReceiptEnvelope, ErasureRequest
from transcripts.services import deletions

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)


async def delete_agent_session(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DbSessionDep,
    recordings: RecordingDeletionsDep,
) -> Response:
    queued = await deletions.delete_session(db, caller, session_id)
    # After the response, so after the commit (DbSessionDep commits as the endpoint returns):
    # an object is never deleted for a deletion that rolled back.
    return Response(status_code=204, background=BackgroundTask(recordings.run, queued))


async def erase_personal_data(
    body: ErasureRequest, caller: CallerDep, state: AppStateDep
) -> Response:
    pairs = deletions.validate_metadata_pairs(dict(body.metadata))
    receipt = await deletions.erase_by_metadata(
        state.database, state.recording_deletions, caller, pairs
    )
    data = {
        "erased_sessions": receipt.sessions,
        "erased_recordings": receipt.recordings,
        "completed_at": receipt.completed_at,
    }
    return envelope_response(data)


add_slash_agnostic_route(
    router,
    "/api/agents/agent-session/{session_id}/",
    delete_agent_session,
    methods=["DELETE"],
    status_code=204,
    operation_id="deleteAgentSession",
    summary="Delete a session",
    description=(
        "Deletes the session: its turns, form responses, usage, metadata and recording object. "
        "Its id stays reserved: later appends, finalize and form responses answer 404. "
        "Deleting it again answers 204; a session that is not the caller's is the 404 of an "
        "unknown id."
    ),
    tags=["Agent sessions"],
    response_class=Response,
    responses={204: {"description": "Deleted."}, **envelope_error_responses()},
    openapi_extra=SECURITY,
)
add_slash_agnostic_route(
    router,
    "/api/privacy/erasure/",
    erase_personal_data,
    methods=["POST"],
    operation_id="erasePersonalData",
    summary="Erase one person's sessions",
    description=(
        "Deletes every session the caller can read whose metadata holds every given pair, "
        "as DELETE does one, a batch per transaction: an interrupted erasure has kept what "
        "it did, and asking again finishes it. The receipt counts what this request erased."
    ),
    tags=["Privacy"],
    route_class_override=WriteRoute,
    response_class=Response,
    responses={200: {"model": ErasureReceiptEnvelope}, **envelope_error_responses(413)},
    openapi_extra=SECURITY,
)
