"""The voice worker's write path: a character, then a session started, its turns, finalize,
and the recording's upload."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from transcripts.cors import admit_widget_origin
from transcripts.dependencies import (
    CallerDep,
    DbSessionDep,
    OptionalCallerDep,
    RecordingStoreDep,
    SettingsDep,
    WidgetOriginsChangedDep,
)
from transcripts.dialects.agents.base import (
    SECURITY,
    EnvelopeRoute,
    SessionIdPath,
    SlugPath,
    WriteRoute,
)
from transcripts.dialects.agents.envelope import envelope_error_responses, envelope_response
from transcripts.dialects.agents.mapper import character_data, session_summary
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.domain import NewTurn
from transcripts.errors import BadRequest
from transcripts.generated.agents import (
    AgentSessionSummaryEnvelope,
    CharacterEnvelope,
    CreateCharacterRequest,
    FinalizeRequest,
    RecordingUploadEnvelope,
    RecordingUploadRequest,
    StartSessionEnvelope,
    StartSessionRequest,
    TurnBatch,
    TurnsAppendedEnvelope,
    UpdateCharacterRequest,
)
from transcripts.livekit import LiveKit
from transcripts.pricing import Usage
from transcripts.recording_keys import RecordingKeys
from transcripts.recordings import link_for
from transcripts.services import accounts, sessions

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute, tags=["Agent sessions"])

# Oshara's value: the LiveKit token is good for an hour.
SESSION_TOKEN_TTL_SECONDS = 3600


async def create_character(
    body: CreateCharacterRequest,
    caller: CallerDep,
    _origins: WidgetOriginsChangedDep,
    db: DbSessionDep,
) -> Response:
    character = await accounts.create_character(
        db,
        caller.user_id,
        slug=body.slug,
        name=body.name,
        allowed_origins=[origin.root for origin in body.allowed_origins],
        transcripts_enabled=body.transcripts_enabled,
    )
    return envelope_response(character_data(character), status_code=201)


async def update_character(
    slug: SlugPath,
    body: UpdateCharacterRequest,
    caller: CallerDep,
    _origins: WidgetOriginsChangedDep,
    db: DbSessionDep,
) -> Response:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise BadRequest("Invalid body.", {"body": ["Give at least one field to change."]})
    # retention_days: null goes back to the service's RETENTION_DAYS; nothing else has a null.
    nulls = sorted(
        name for name, value in changes.items() if value is None and name != "retention_days"
    )
    if nulls:
        raise BadRequest(
            f"Invalid {', '.join(nulls)}.", {name: ["Must not be null."] for name in nulls}
        )
    if "allowed_origins" in changes:
        changes["allowed_origins"] = [origin.root for origin in body.allowed_origins or []]
    character = await accounts.update_character(db, caller, slug, changes)
    return envelope_response(character_data(character))


async def start_agent_session(
    body: StartSessionRequest,
    request: Request,
    caller: OptionalCallerDep,
    db: DbSessionDep,
    settings: SettingsDep,
) -> Response:
    character = await accounts.character_open_to(
        db, body.agent, caller=caller, origin=request.headers.get("origin"), field="agent"
    )
    admit_widget_origin(request, character.allowed_origins)
    session = await sessions.start_session(
        db,
        character,
        user_id=caller.user_id if caller else None,
        origin_url=body.origin_url,
        metadata=body.metadata,
        room_name=body.room_name,
        client_label=body.client_label,
        concurrency=sessions.ConcurrencyLimit(
            settings.max_concurrent_sessions_per_character,
            timedelta(seconds=settings.concurrent_session_window_seconds),
        ),
    )
    identity = f"user-{caller.user_id}" if caller else f"visitor-{secrets.token_hex(6)}"
    data: dict[str, Any] = {
        "session_id": str(session.session_id),
        "room_name": session.room_name,
        "participant_identity": identity,
        "character_slug": character.slug,
        "expires_in_seconds": SESSION_TOKEN_TTL_SECONDS,
    }
    livekit = LiveKit.from_settings(settings)
    if livekit is not None:
        data["token"] = livekit.access_token(
            identity=identity, room=session.room_name, ttl_seconds=SESSION_TOKEN_TTL_SECONDS
        )
        data["livekit_url"] = livekit.url
    return envelope_response(data, status_code=201)


async def append_session_turns(
    session_id: SessionIdPath,
    batch: TurnBatch,
    caller: CallerDep,
    db: DbSessionDep,
    settings: SettingsDep,
) -> Response:
    turns = [NewTurn(**turn.model_dump()) for turn in batch.root]
    result = await sessions.append(db, caller, session_id, turns, settings.session_limits)
    data = {
        "session_id": str(result.session_id),
        "received": result.received,
        "inserted": result.inserted,
        "turn_count": result.turn_count,
    }
    return envelope_response(data)


async def finalize_agent_session(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DbSessionDep,
    settings: SettingsDep,
    recordings: RecordingStoreDep,
    body: Annotated[FinalizeRequest | None, Body()] = None,
) -> Response:
    body = body or FinalizeRequest()
    usage = Usage(
        llm_input_tokens=body.llm_input_tokens or 0,
        llm_output_tokens=body.llm_output_tokens or 0,
        llm_model=body.llm_model,
        llm_provider=body.llm_provider,
        stt_audio_seconds=body.stt_audio_seconds or 0.0,
        stt_provider=body.stt_provider,
        tts_characters=body.tts_characters or 0,
        tts_provider=body.tts_provider,
    )
    record = await sessions.finalize(
        db,
        caller,
        session_id,
        usage,
        settings.prices,
        recordings,
        RecordingKeys.from_settings(settings),
        ended_at=body.ended_at,
        recording_url=body.recording_url,
    )
    link = await link_for(recordings, record)
    return envelope_response(session_summary(record, link))


async def upload_session_recording(
    session_id: SessionIdPath,
    caller: CallerDep,
    db: DbSessionDep,
    settings: SettingsDep,
    recordings: RecordingStoreDep,
    body: Annotated[RecordingUploadRequest | None, Body()] = None,
) -> Response:
    body = body or RecordingUploadRequest()
    upload = await sessions.recording_upload(
        db,
        caller,
        session_id,
        recordings,
        RecordingKeys.from_settings(settings),
        extension=body.format,
    )
    data = {
        "recording_url": upload.recording_url,
        "upload_url": upload.url,
        "expires_at": upload.expires_at,
        "method": upload.method,
        "headers": upload.headers,
    }
    return envelope_response(data)


_WRITE = {"route_class_override": WriteRoute, "response_class": Response, "openapi_extra": SECURITY}

add_slash_agnostic_route(
    router,
    "/api/ai-characters/",
    create_character,
    methods=["POST"],
    status_code=201,
    operation_id="createCharacter",
    summary="Create an AI character",
    description="A character owned by the caller, in the caller's tenant. The slug is unique.",
    tags=["Characters"],
    responses={201: {"model": CharacterEnvelope}, **envelope_error_responses(409, 413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    "/api/ai-characters/{slug}/",
    update_character,
    methods=["PATCH"],
    operation_id="updateCharacter",
    summary="Change an AI character's settings",
    description=(
        "Only the fields given change. The caller must own the character (or be staff); "
        "another's character is the same 404 as an unknown slug."
    ),
    tags=["Characters"],
    responses={200: {"model": CharacterEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    "/api/agents/agent-session/",
    start_agent_session,
    methods=["POST"],
    status_code=201,
    operation_id="startAgentSession",
    summary="Start a session",
    description=(
        "With credentials, the caller must own the character (or be staff). Without, the "
        "request's Origin must be on the character's allowed_origins (the browser widget). "
        "The LiveKit token and URL are present when the service has LiveKit configured."
    ),
    responses={201: {"model": StartSessionEnvelope}, **envelope_error_responses(403, 413, 429)},
    **{**_WRITE, "openapi_extra": {"security": [*SECURITY["security"], {}]}},
)
add_slash_agnostic_route(
    router,
    "/api/agents/agent-session/{session_id}/turns/",
    append_session_turns,
    methods=["POST"],
    operation_id="appendAgentSessionTurns",
    summary="Append turns",
    description=(
        "A JSON array of at most 500 turns, in any order. Idempotent on turn_index: a "
        "retried turn changes nothing, a different text for a stored index is a 409 and the "
        "whole batch is refused. A finalized session takes no more turns (409)."
    ),
    responses={200: {"model": TurnsAppendedEnvelope}, **envelope_error_responses(409, 413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    "/api/agents/agent-session/{session_id}/finalize/",
    finalize_agent_session,
    methods=["POST"],
    operation_id="finalizeAgentSession",
    summary="Finalize a session",
    description=(
        "Usage, ended_at (default: now) and the recording; computes the duration and "
        "estimated_cost_usd. Idempotent: a repeated finalize answers the stored result."
    ),
    responses={200: {"model": AgentSessionSummaryEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    "/api/agents/agent-session/{session_id}/recording/upload/",
    upload_session_recording,
    methods=["POST"],
    operation_id="uploadAgentSessionRecording",
    summary="Upload a recording",
    description=(
        "A key for the session's recording and a presigned PUT of it: send the bytes to "
        "upload_url with the given headers, then register recording_url at finalize. The "
        "one key outside the tenant's recordings prefix that the session may register. "
        "Allowed, before or after finalize, until the recording is READY (then 409); asking "
        "again for the same format answers the same key with a fresh link."
    ),
    responses={200: {"model": RecordingUploadEnvelope}, **envelope_error_responses(409, 413)},
    **_WRITE,
)
