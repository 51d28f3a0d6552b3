"""What one request may carry, in one place (README.md, "Limits", lists the same numbers).

Turns per batch (500) and the length of a turn's text (10,000) are part of the request
schemas in ``openapi/agents.yaml``, so they live there and in the models generated from it.

``RequestGuard`` refuses, before any route runs, what no route could accept: a header block
or a credential larger than the limits below (431), and a path or query string carrying the
character U+0000, which PostgreSQL cannot store or compare (400). The answer is in the
dialect of the path. It sees a head only once the server has parsed it whole: the server
itself (``transcripts.server``) refuses a head over ``MAX_HEAD_BYTES`` as it arrives, the
same cap as uvicorn's h11 parser and above the limits here, so a client meets these first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from transcripts.errors import BadRequest, HeadersTooLarge, TranscriptsError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CREDENTIAL_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_PAGE",
    "MAX_PAGE_SIZE",
    "MAX_PER_PAGE",
    "RequestGuard",
]

# Generous for a batch of 500 turns of everyday speech.
MAX_BODY_BYTES = 1024 * 1024
# Names and values of every header, summed.
MAX_HEADER_BYTES = 8 * 1024
# The request line and every header line as sent; the server closes a connection past it.
MAX_HEAD_BYTES = 16 * 1024
# An RS256 access token with the usual claims is about 1 KiB; an API key is 67 bytes.
MAX_CREDENTIAL_BYTES = 4 * 1024
# Session History's page_size, and Anam's perPage (its documented maximum).
MAX_PAGE_SIZE = 200
MAX_PER_PAGE = 100
# Far past any real history; keeps OFFSET inside a 64-bit integer.
MAX_PAGE = 1_000_000

_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
_NO_NUL = "Must not contain the character U+0000 (NUL)."

ErrorResponder = Callable[[Request, TranscriptsError], Any]


class RequestGuard:
    """A pure-ASGI check of the request head; its cost is a sum over the header lengths."""

    def __init__(self, app: ASGIApp, render_error: ErrorResponder) -> None:
        self.app = app
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = _refusal(scope)
            if refusal is not None:
                response = self.render_error(Request(scope), refusal)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refusal(scope: Scope) -> TranscriptsError | None:
    total = 0
    for name, value in scope["headers"]:
        total += len(name) + len(value)
        if len(value) > MAX_CREDENTIAL_BYTES and name in _CREDENTIAL_HEADERS:
            header = "Authorization" if name == b"authorization" else "X-API-Key"
            return HeadersTooLarge(f"The {header} header exceeds {MAX_CREDENTIAL_BYTES} bytes.")
    if total > MAX_HEADER_BYTES:
        return HeadersTooLarge(f"The request headers exceed {MAX_HEADER_BYTES} bytes in all.")
    query = scope["query_string"]
    if b"%00" in query or b"\x00" in query:
        return BadRequest("Invalid query.", {"query": [_NO_NUL]})
    if "\x00" in scope["path"]:
        return BadRequest("Invalid path.", {"path": [_NO_NUL]})
    return None
