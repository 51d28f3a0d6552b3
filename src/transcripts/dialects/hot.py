"""The transcript reads, answered without FastAPI's per-request machinery.

A transcript read is what the service does most. For a short transcript, FastAPI's work per
request (route matching through the included routers, twice; dependency resolution; path
validation; two exit stacks) cost more than the database round trip and the JSON encoding
together. This ASGI middleware answers exactly the requests that need none of it itself: a
GET of a transcript path whose id is a canonical UUID. It calls the same functions the
FastAPI routes call and renders failures with the same dialect renderer; an unexpected
exception goes on to the application's 500 handler as before.

Everything else continues to FastAPI, including any id that FastAPI has to validate (so a
malformed id gets the same 400). The routes stay declared there, so the OpenAPI document,
and every answer but the fast ones, are FastAPI's own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from transcripts.auth import credentials_from_headers
from transcripts.dialects.routing import ErrorRenderer, error_response
from transcripts.domain import Credentials
from transcripts.errors import TranscriptsError

__all__ = ["HotRead", "HotReads"]

# What pydantic accepts for a uuid.UUID path parameter, in its one canonical spelling.
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PARAMETER = re.compile(r"\{\w+\}")


@dataclass(frozen=True)
class HotRead:
    """A route's path template (as declared to FastAPI), its read and its error body."""

    path: str
    # (application state, credentials, session id, the request's scope) -> the response
    read: Callable[[Any, Credentials, uuid.UUID, Scope], Awaitable[Response]]
    render_error: ErrorRenderer


def _pattern(group: str, path: str) -> str:
    head, tail = _PARAMETER.split(path.rstrip("/"))
    # Both spellings, with and without the trailing slash, as add_slash_agnostic_route serves.
    return f"{re.escape(head)}(?P<{group}>{_UUID}){re.escape(tail)}/?"


def _credential_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The first ``X-API-Key`` and ``Authorization`` values, as Starlette's Headers.get reads."""
    api_key = authorization = None
    for name, value in headers:
        if name == b"x-api-key":
            if api_key is None:
                api_key = value.decode("latin-1")
        elif name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
    return api_key, authorization


class HotReads:
    def __init__(self, app: ASGIApp, reads: Sequence[HotRead]) -> None:
        self.app = app
        self._reads = {f"r{index}": read for index, read in enumerate(reads)}
        self._match = re.compile(
            "|".join(_pattern(group, read.path) for group, read in self._reads.items())
        ).fullmatch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        # Behind a root_path, FastAPI's own matching knows where the route path starts.
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            match = self._match(scope["path"])
        if match is None or match.lastgroup is None:
            await self.app(scope, receive, send)
            return
        hot = self._reads[match.lastgroup]
        state = scope["app"].state
        # What routing would have recorded: the metrics and the request log label by template.
        scope["route"] = hot
        try:
            api_key, authorization = _credential_headers(scope["headers"])
            credentials = credentials_from_headers(api_key, authorization, state.token_verifier)
            response = await hot.read(state, credentials, uuid.UUID(match[match.lastgroup]), scope)
        except TranscriptsError as error:
            response = error_response(hot.render_error, error)
        await response(scope, receive, send)
