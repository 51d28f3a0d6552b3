"""Cursors: a listing's position, handed to clients as an opaque string and taken back.

A cursor names the last session a page showed (its start time and row id, the listing's
order), so the next page is a range of an index however deep it lies. It is URL-safe base64
of a versioned text, so its form can change without breaking the cursors clients hold, and
anything else is a 400 naming the ``cursor`` parameter.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from transcripts.domain import PageRequest, Position, SearchPosition
from transcripts.errors import BadRequest

__all__ = [
    "MAX_OFFSET",
    "decode_cursor",
    "decode_search_cursor",
    "encode_cursor",
    "encode_search_cursor",
    "page_request",
]

# How deep ?page= may reach (page x its size): past this a listing would read and skip that
# many index entries per request; a cursor costs the same at any depth.
MAX_OFFSET = 100_000

_VERSION = "v1"


def encode_cursor(position: Position) -> str:
    text = f"{_VERSION}|{position.created_at.isoformat()}|{position.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> Position:
    refusal = BadRequest(f"Invalid {field}.", {field: ["Not a cursor this service gave out."]})
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, moment, row_id = text.split("|")
        created_at = datetime.fromisoformat(moment)
        position = Position(created_at.astimezone(UTC), int(row_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refusal from None
    if version != _VERSION or created_at.tzinfo is None or position.id < 1:
        raise refusal
    return position


def page_request(
    size: int, *, page: int, cursor: str | None, page_field: str = "page"
) -> PageRequest:
    """The page asked for: by cursor (which wins), or by number within ``MAX_OFFSET``."""
    if cursor is not None:
        return PageRequest(size=size, after=decode_cursor(cursor))
    offset = (page - 1) * size
    if offset + size > MAX_OFFSET:
        message = (
            f"Pages reach {MAX_OFFSET} sessions deep at most; follow the cursor"
            " of the previous page to go further."
        )
        raise BadRequest(f"Invalid {page_field}.", {page_field: [message]})
    return PageRequest(size=size, offset=offset)


# Search results: a hit (its session's start and row id, its turn) newest first, or an
# offset into the ranked candidates (bounded, so an offset costs little).
_SEARCH_RECENT = "s1"
_SEARCH_RANKED = "r1"


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def encode_search_cursor(position: SearchPosition) -> str:
    if position.created_at is None:
        return _b64(f"{_SEARCH_RANKED}|{position.offset}")
    moment = position.created_at.isoformat()
    return _b64(f"{_SEARCH_RECENT}|{moment}|{position.id}|{position.turn_index}")


def decode_search_cursor(cursor: str, *, ranked: bool) -> SearchPosition:
    """A search cursor of the order asked for (a cursor of the other order is refused)."""
    refusal = BadRequest("Invalid cursor.", {"cursor": ["Not a cursor this service gave out."]})
    try:
        parts = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
        if ranked and parts[0] == _SEARCH_RANKED and len(parts) == 2:
            offset = int(parts[1])
            if offset < 1:
                raise ValueError(offset)
            return SearchPosition(offset=offset)
        if not ranked and parts[0] == _SEARCH_RECENT and len(parts) == 4:
            created_at = datetime.fromisoformat(parts[1])
            row_id, turn_index = int(parts[2]), int(parts[3])
            if created_at.tzinfo is None or row_id < 1 or turn_index < 0:
                raise ValueError(parts)
            return SearchPosition(created_at.astimezone(UTC), row_id, turn_index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise refusal from None
    raise refusal
