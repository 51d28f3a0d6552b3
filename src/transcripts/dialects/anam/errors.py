"""Anam's error body: ``{"statusCode", "error", "message"}``, e.g. 404 "Session not found"."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from starlette.responses import Response

from transcripts.errors import TranscriptsError
from transcripts.generated.anam import Error
from transcripts.ratelimit import RATE_LIMITED_HEADERS

__all__ = ["ANAM_ERROR_RESPONSES", "render_anam_error"]


def render_anam_error(error: TranscriptsError, headers: dict[str, str] | None = None) -> Response:
    status = HTTPStatus(error.status_code)
    message = error.message
    if error.errors.keys() != {"detail"}:
        # One string says it all here: the field-level details join the sentence.
        details = "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in error.errors.items()
        )
        message = f"{message.removesuffix('.')} ({details})"
    # Anam's messages are phrases without a closing period ("Session not found").
    message = message.removesuffix(".")
    body = {"statusCode": status.value, "error": status.phrase, "message": message}
    return Response(
        orjson.dumps(body), status.value, headers=headers, media_type="application/json"
    )


def _error(description: str) -> dict[str, Any]:
    return {"model": Error, "description": description}


def _rate_limited(description: str) -> dict[str, Any]:
    return {**_error(description), "headers": RATE_LIMITED_HEADERS}


ANAM_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("Bad request - invalid session ID or query parameters."),
    401: _error("Unauthorized - invalid or missing API key or token."),
    404: _error("Not Found - the session does not exist or is not the caller's."),
    429: _rate_limited("Too Many Requests - over the caller's rate limit; see Retry-After."),
    431: _error("A credential header, or the header block, is larger than its limit."),
    500: _error("Server error."),
    503: _error("The database cannot be reached; retry shortly."),
}
