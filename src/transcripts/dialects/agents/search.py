"""Full-text search across the caller's transcripts (``/api/agents/transcripts/search/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from transcripts.dependencies import AppStateDep, CallerDep
from transcripts.dialects.agents.base import SECURITY, EnvelopeRoute
from transcripts.dialects.agents.envelope import envelope_error_responses, envelope_response
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.domain import SearchPage
from transcripts.generated.agents import SearchResultsEnvelope
from transcripts.pagination import encode_search_cursor
from transcripts.services.search import MAX_QUERY_LENGTH, search_transcripts

__all__ = ["router"]

router = APIRouter(route_class=EnvelopeRoute)

MAX_SEARCH_PAGE_SIZE = 100


def search_results(page: SearchPage) -> dict[str, Any]:
    return {
        "results": [
            {
                "session_id": hit.session_id,
                "character_slug": hit.character_slug,
                "turn_index": hit.turn_index,
                "role": hit.role,
                "ts": hit.ts,
                "snippet": hit.snippet,
                "created_at": hit.created_at,
            }
            for hit in page.hits
        ],
        "next_cursor": (
            encode_search_cursor(page.next_position) if page.next_position is not None else None
        ),
    }


async def search(
    caller: CallerDep,
    state: AppStateDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=MAX_QUERY_LENGTH,
            description=(
                'Words (all must match), "a quoted phrase", `or` between two terms, -word to'
                " exclude; matched by stem (booking finds booked)."
            ),
        ),
    ],
    character_slug: Annotated[str | None, Query(max_length=64)] = None,
    role: Annotated[Literal["user", "assistant"] | None, Query()] = None,
    start: Annotated[
        datetime | None, Query(description="ISO 8601; sessions started at or after it (UTC).")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="ISO 8601; sessions started at or before it (UTC).")
    ] = None,
    sort: Annotated[
        Literal["recent", "relevance"],
        Query(
            description=(
                "recent: newest session first, then turn order. relevance: the best matches"
                " among the newest 500."
            )
        ),
    ] = "recent",
    cursor: Annotated[
        str | None,
        Query(max_length=200, description="The next_cursor of the page before."),
    ] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_SEARCH_PAGE_SIZE)] = 20,
) -> Response:
    page = await search_transcripts(
        state.search,
        caller,
        q,
        page_size=page_size,
        sort=sort,
        cursor=cursor,
        character_slug=character_slug,
        role=role,
        start=start,
        end=end,
    )
    return envelope_response(search_results(page))


add_slash_agnostic_route(
    router,
    "/api/agents/transcripts/search/",
    search,
    methods=["GET"],
    operation_id="searchTranscripts",
    summary="Search transcripts",
    description=(
        "Turns whose text matches q, in the sessions the caller can read, newest session first;"
        " each hit carries ts, to seek the recording to the moment, and a snippet with the"
        " matches in <b>...</b>."
    ),
    tags=["Agent sessions"],
    responses={200: {"model": SearchResultsEnvelope}, **envelope_error_responses()},
    response_class=Response,
    openapi_extra=SECURITY,
)
