"""Full-text search's rules: what a query may be, its cursor, its filters."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from transcripts.db.engine import Database
from transcripts.db.search import TranscriptSearch, fts5_query, rebuild_search_index
from transcripts.domain import Caller, SearchPage, SearchQuery
from transcripts.errors import BadRequest
from transcripts.pagination import decode_search_cursor
from transcripts.validation import as_utc

__all__ = ["MAX_QUERY_LENGTH", "reindex", "search_transcripts"]

# Longer than any phrase a person types into a search box; a longer one only costs more.
MAX_QUERY_LENGTH = 200


async def search_transcripts(
    search: TranscriptSearch,
    caller: Caller,
    q: str,
    *,
    page_size: int,
    sort: Literal["recent", "relevance"] = "recent",
    cursor: str | None = None,
    character_slug: str | None = None,
    role: Literal["user", "assistant"] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> SearchPage:
    """One page of the turns matching ``q`` in the sessions ``caller`` may read."""
    text = q.strip()
    if len(text) > MAX_QUERY_LENGTH:
        raise BadRequest("Invalid q.", {"q": [f"At most {MAX_QUERY_LENGTH} characters."]})
    # No word at all, or exclusions alone (-word): the latter would match nearly every turn,
    # through no index.
    if not fts5_query(text):
        raise BadRequest("Invalid q.", {"q": ["Give at least one word to search for."]})
    start, end = as_utc(start, "start"), as_utc(end, "end")
    if start is not None and end is not None and end < start:
        raise BadRequest("Invalid end.", {"end": ["Must not be before start."]})
    after = decode_search_cursor(cursor, ranked=sort == "relevance") if cursor else None
    query = SearchQuery(
        text=text,
        size=page_size,
        sort=sort,
        character_slug=character_slug,
        role=role,
        start=start,
        end=end,
        after=after,
    )
    return await search.search(caller, query)


async def reindex(database: Database, config: str) -> str:
    """Rebuild the search index (``transcripts search-reindex``): on PostgreSQL with the
    text-search configuration ``config``, after it changed; what was done, as a sentence."""
    return await rebuild_search_index(database, config)
