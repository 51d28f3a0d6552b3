"""What sits beside the transcript in Oshara's dashboard: Session History, API keys, forms."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from transcripts.cors import admit_widget_origin
from transcripts.dependencies import (
    CallerDep,
    DashboardDep,
    DbSessionDep,
    OptionalCallerDep,
    RecordingStoreDep,
)
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute, SlugPath, WriteRoute
from transcripts.dialects.agents.envelope import envelope_error_responses, envelope_response
from transcripts.dialects.agents.mapper import api_key_data, form_response_data, session_history
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.domain import HistoryFilter
from transcripts.errors import BadRequest
from transcripts.generated.agents import (
    ApiKeyCreatedEnvelope,
    ApiKeyEnvelope,
    ApiKeyListEnvelope,
    CreateApiKeyRequest,
    CreateFormResponseRequest,
    FormResponseEnvelope,
    FormResponseListEnvelope,
    SessionHistoryEnvelope,
)
from transcripts.limits import MAX_PAGE, MAX_PAGE_SIZE
from transcripts.pagination import page_request
from transcripts.privacy import REDACT_PII, redact_record, redaction_requested
from transcripts.recordings import link_for
from transcripts.services import accounts, sessions
from transcripts.validation import as_utc

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)

MAX_ROW_ID = 2**63 - 1


async def get_session_history(
    caller: CallerDep,
    dashboard: DashboardDep,
    recordings: RecordingStoreDep,
    character_slug: Annotated[str | None, Query(max_length=64)] = None,
    tenant_id: Annotated[str | None, Query(max_length=64, description="A tenant slug.")] = None,
    start: Annotated[
        datetime | None, Query(description="ISO 8601; sessions started at or after it (UTC).")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="ISO 8601; sessions started at or before it (UTC).")
    ] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based.")] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The next_cursor of the page before; wins over page."),
    ] = None,
    include_transcript: Annotated[
        bool, Query(description="false: each session without its transcript (a lighter page).")
    ] = True,
    redact: Annotated[
        str | None,
        Query(
            description="pii: each transcript with its PII replaced by tags (as on the read).",
            json_schema_extra={"enum": [REDACT_PII]},
        ),
    ] = None,
) -> Response:
    redacting = redaction_requested([] if redact is None else [redact])
    start, end = as_utc(start, "start"), as_utc(end, "end")
    if start is not None and end is not None and end < start:
        raise BadRequest("Invalid end.", {"end": ["Must not be before start."]})
    history = await dashboard.session_history(
        caller,
        HistoryFilter(character_slug=character_slug, tenant_slug=tenant_id, start=start, end=end),
        page_request(page_size, page=page, cursor=cursor),
        with_turns=include_transcript,
    )
    if redacting:
        history = replace(history, records=[redact_record(record) for record in history.records])
    links = [await link_for(recordings, record) for record in history.records]
    return envelope_response(session_history(history, links, page=None if cursor else page))


async def list_api_keys(caller: CallerDep, dashboard: DashboardDep) -> Response:
    return envelope_response(
        [api_key_data(key) for key in await dashboard.api_keys(caller.user_id)]
    )


async def create_api_key(
    body: CreateApiKeyRequest, caller: CallerDep, db: DbSessionDep
) -> Response:
    api_key, generated = await accounts.create_api_key(db, caller.user_id, body.name)
    # The one time the key itself is shown; only its hash is stored.
    data = {**api_key_data(api_key), "key": generated.key}
    return envelope_response(data, status_code=201)


async def revoke_api_key(
    api_key_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID)], caller: CallerDep, db: DbSessionDep
) -> Response:
    api_key = await accounts.revoke_api_key(db, api_key_id, owner_id=caller.user_id)
    return envelope_response(api_key_data(api_key))


async def create_form_response(
    slug: SlugPath,
    body: CreateFormResponseRequest,
    request: Request,
    caller: OptionalCallerDep,
    db: DbSessionDep,
) -> Response:
    character = await accounts.character_open_to(
        db, slug, caller=caller, origin=request.headers.get("origin"), field="slug"
    )
    admit_widget_origin(request, character.allowed_origins)
    response = await sessions.record_form_response(
        db, character, body.session_id, form_id=body.form_id, values=body.values
    )
    return envelope_response(form_response_data(response), status_code=201)


async def list_form_responses(
    slug: SlugPath,
    caller: CallerDep,
    dashboard: DashboardDep,
    session_id: uuid.UUID | None = None,
    form_id: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    responses = await dashboard.form_responses(caller, slug, session_id=session_id, form_id=form_id)
    return envelope_response([form_response_data(response) for response in responses])


_READ: dict[str, Any] = {"response_class": Response, "openapi_extra": SECURITY}
_WRITE: dict[str, Any] = {**_READ, "route_class_override": WriteRoute}

add_slash_agnostic_route(
    router,
    "/api/billing/usage/",
    get_session_history,
    methods=["GET"],
    operation_id="getSessionHistory",
    summary="Session History",
    description=(
        "Totals over every session the filters select, and one page of AgentSessionSummary "
        "objects, newest first. Sessions of characters the caller does not own are absent."
    ),
    tags=["Billing"],
    responses={200: {"model": SessionHistoryEnvelope}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    "/api/auth/api-keys/",
    list_api_keys,
    methods=["GET"],
    operation_id="listApiKeys",
    summary="List the caller's API keys",
    tags=["API keys"],
    responses={200: {"model": ApiKeyListEnvelope}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    "/api/auth/api-keys/",
    create_api_key,
    methods=["POST"],
    status_code=201,
    operation_id="createApiKey",
    summary="Create an API key",
    description="The answer carries the key itself, shown this once.",
    tags=["API keys"],
    responses={201: {"model": ApiKeyCreatedEnvelope}, **envelope_error_responses(413)},
    **_WRITE,
)
add_slash_agnostic_route(
    router,
    "/api/auth/api-keys/{api_key_id}/",
    revoke_api_key,
    methods=["DELETE"],
    operation_id="revokeApiKey",
    summary="Revoke an API key",
    description="Deactivates one of the caller's keys; repeating it changes nothing.",
    tags=["API keys"],
    responses={200: {"model": ApiKeyEnvelope}, **envelope_error_responses()},
    **_READ,
)
add_slash_agnostic_route(
    router,
    "/api/agents/{slug}/form-responses/",
    create_form_response,
    methods=["POST"],
    status_code=201,
    operation_id="createFormResponse",
    summary="Submit a form response",
    description=(
        "From the widget (an Origin on the character's allowed_origins) or with the "
        "credentials of the character's owner. The session must be one of this character's."
    ),
    tags=["Form responses"],
    responses={201: {"model": FormResponseEnvelope}, **envelope_error_responses(403, 413)},
    **{**_WRITE, "openapi_extra": {"security": [*SECURITY["security"], {}]}},
)
add_slash_agnostic_route(
    router,
    "/api/agents/{slug}/form-responses/",
    list_form_responses,
    methods=["GET"],
    operation_id="listFormResponses",
    summary="List form responses",
    description="Oldest first; a character the caller does not own has none.",
    tags=["Form responses"],
    responses={200: {"model": FormResponseListEnvelope}, **envelope_error_responses()},
    **_READ,
)
