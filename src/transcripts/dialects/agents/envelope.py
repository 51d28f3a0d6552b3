"""The envelope every answer of this dialect is wrapped in."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from transcripts.errors import TranscriptsError
from transcripts.ratelimit import RATE_LIMITED_HEADERS

__all__ = [
    "ENVELOPE_ERROR_RESPONSES",
    "envelope_error_responses",
    "envelope_response",
    "render_envelope_error",
]

# Datetimes are written the way Django REST Framework writes them: ISO 8601, "Z" for UTC.
_OPTIONS = orjson.OPT_UTC_Z


def envelope_response(data: Any, status_code: int = 200, message: str = "OK") -> Response:
    body = {"success": True, "message": message, "data": data, "errors": None}
    return Response(orjson.dumps(body, option=_OPTIONS), status_code, media_type="application/json")


def render_envelope_error(
    error: TranscriptsError, headers: dict[str, str] | None = None
) -> Response:
    body = {"success": False, "message": error.message, "data": None, "errors": error.errors}
    return Response(
        orjson.dumps(body), error.status_code, headers=headers, media_type="application/json"
    )


def _error(description: str, *, rate_limited: bool = False) -> dict[str, Any]:
    from transcripts.generated.agents import ErrorEnvelope

    response: dict[str, Any] = {"model": ErrorEnvelope, "description": description}
    if rate_limited:
        response["headers"] = RATE_LIMITED_HEADERS
    return response


ENVELOPE_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Bad request: a malformed id, parameter or body."),
    401: _error("Missing, invalid or expired credentials, or an inactive API key."),
    404: _error("Not found, or not the caller's: the two answers are identical."),
    429: _error("Over the caller's rate limit; Retry-After says when to retry.", rate_limited=True),
    431: _error("A credential header, or the header block, is larger than its limit."),
    500: _error("Server error; no internals are disclosed."),
    503: _error("The database cannot be reached; retry shortly."),
}


_MORE_ERRORS = {
    403: "The browser origin is not on the character's allowed_origins.",
    409: "Conflicts with stored data: a slug in use, a rewrite of a stored turn, a write after"
    " finalize.",
    413: "The request body is larger than the documented limit.",
    429: "Over the caller's rate limit, or the character has its maximum of sessions in"
    " progress (the concurrent-session limit); Retry-After says when to retry.",
}


def envelope_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The common error answers plus those of ``statuses`` (403, 409, 413, or 429 for a
    route with a limit of its own) for one route."""
    return {
        **ENVELOPE_ERROR_RESPONSES,
        **{status: _error(_MORE_ERRORS[status], rate_limited=status == 429) for status in statuses},
    }
