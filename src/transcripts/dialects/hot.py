"""The transcript reads, answered without FastAPI's per-request machinery.

A transcript read is what the service does most. For a short transcript, FastAPI's work per
request (route matching through the included routers, twice; dependency resolution; path
validation; two exit stacks) cost more than the database round trip and the JSON encoding
together. So a transcript route is declared once, with ``add_hot_route``: that declaration
makes both the FastAPI route (for the OpenAPI document, and for every request the fast path
leaves alone) and its hot read, the function both call.

``HotReads``, an ASGI middleware, answers exactly the requests that need none of FastAPI's
work itself: a GET of a hot route's path whose id is a canonical UUID, with no query string
and no conditional or range header. Everything else continues to FastAPI, including any id
that FastAPI has to validate (so a malformed id gets the same 400) and any query parameter
or header the read might have to honour (``?redact=``, ``If-None-Match``): the fast path
never answers such a request as if they were absent. A read declared ``conditional`` honours
``If-None-Match`` itself (it answers 304 from the session's row alone when the tag matches,
``transcripts.caching``), so the fast path passes that header to it instead of leaving the
request to FastAPI: a revalidation is the cheapest read there is and should not pay for
FastAPI's machinery. Every other conditional or range header still goes to FastAPI, and every
finalized read, hot or not, carries the ``ETag`` and ``Cache-Control: private``.

The two cannot drift apart: ``verify_hot_routes`` refuses, when the application is built, a
hot route that has gained a dependency or a parameter its hot read would skip (a rate
limiter, say), unless the read declares that it applies it itself (``honours``).
"""

from __future__ import annotations

import inspect
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from transcripts.auth import credentials_from_headers
from transcripts.caching import if_none_match, matches, not_modified, transcript_etag
from transcripts.dependencies import CredentialsDep, get_credentials
from transcripts.dialects.routing import (
    DialectRoute,
    ErrorRenderer,
    add_slash_agnostic_route,
    error_response,
)
from transcripts.domain import Credentials, SessionRecord
from transcripts.errors import TranscriptsError
from transcripts.privacy import redact_record, requested_in_query
from transcripts.state import AppState, app_state

__all__ = ["HotRead", "HotReads", "HotRoute", "add_hot_route", "verify_hot_routes"]

# (the application's state, the caller's credentials, the session id, the request's scope)
HotReadFunction = Callable[[AppState, Credentials, uuid.UUID, Scope], Awaitable[Response]]

# What pydantic accepts for a uuid.UUID path parameter, in its one canonical spelling.
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_PARAMETER = re.compile(r"\{\w+\}")


@dataclass(frozen=True)
class HotRead:
    """A route's path template (as declared to FastAPI), its read and its error body."""

    path: str
    read: HotReadFunction
    render_error: ErrorRenderer
    # Dependencies, beside the credentials, that ``read`` applies itself.
    honours: frozenset[Callable[..., Any]] = field(default_factory=frozenset)
    # ``read`` answers ``If-None-Match`` itself (a 304 when the caller's tag is current).
    conditional: bool = False


class HotRoute(DialectRoute):
    """A FastAPI route whose requests the fast path may answer through ``hot``."""

    hot: HotRead


def add_hot_route(
    router: APIRouter,
    path: str,
    read: HotReadFunction,
    *,
    session_id: Any,
    honours: Iterable[Callable[..., Any]] = (),
    conditional: bool = False,
    **kwargs: Any,
) -> None:
    """Declare a GET of one session: the FastAPI route (both slash spellings) and its hot
    read, one function for both. ``session_id`` is the path parameter's annotation."""
    base: type[APIRoute] = kwargs.pop("route_class_override", None) or router.route_class
    if not issubclass(base, DialectRoute):
        raise TypeError(
            "a hot route belongs to a dialect: its router's route_class is a DialectRoute"
        )
    hot = HotRead(path, read, base.render_error, frozenset(honours), conditional)
    route_class = type(f"Hot{base.__name__}", (HotRoute, base), {"hot": hot})

    async def endpoint(
        request: Request, session_id: uuid.UUID, credentials: Credentials
    ) -> Response:
        return await read(app_state(request.app), credentials, session_id, request.scope)

    # The annotations FastAPI reads: the dialect's path type, and the credentials dependency.
    endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            inspect.Parameter("session_id", inspect.Parameter.KEYWORD_ONLY, annotation=session_id),
            inspect.Parameter(
                "credentials", inspect.Parameter.KEYWORD_ONLY, annotation=CredentialsDep
            ),
        ],
        return_annotation=Response,
    )
    endpoint.__name__ = read.__name__
    add_slash_agnostic_route(
        router, path, endpoint, methods=["GET"], route_class_override=route_class, **kwargs
    )


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _dependency_calls(dependency)


def _parameters(dependant: Dependant) -> Iterator[str]:
    for parameter in (
        *dependant.query_params,
        *dependant.header_params,
        *dependant.cookie_params,
        *dependant.body_params,
    ):
        yield parameter.name
    for dependency in dependant.dependencies:
        yield from _parameters(dependency)


def verify_hot_routes(routes: Sequence[BaseRoute]) -> list[HotRead]:
    """The hot reads of ``routes``, once each; raises if one would skip what its route does.

    Routes are judged as the application will run them, inside the routers they were
    included through (whose dependencies they inherit).
    """
    reads: dict[int, HotRead] = {}
    for route in iter_route_contexts(routes):
        original = route.original_route
        if not isinstance(original, HotRoute):
            continue
        hot = original.hot
        dependant: Dependant = route.dependant
        skipped = {
            getattr(call, "__name__", repr(call))
            for call in _dependency_calls(dependant)
            if call is not get_credentials and call not in hot.honours
        }
        parameters = set(_parameters(dependant))
        if skipped or parameters:
            raise RuntimeError(
                f"the hot read of GET {route.path} would skip what its route depends on"
                f" ({', '.join(sorted(skipped | parameters))}); apply it in the read and"
                " declare it in honours=, or declare the route without add_hot_route"
            )
        reads.setdefault(id(hot), hot)
    return list(reads.values())


def _pattern(group: str, path: str) -> str:
    head, tail = _PARAMETER.split(path.rstrip("/"))
    # Both spellings, with and without the trailing slash, as add_slash_agnostic_route serves.
    return f"{re.escape(head)}(?P<{group}>{_UUID}){re.escape(tail)}/?"


def _credential_headers(
    headers: Iterable[tuple[bytes, bytes]], *, conditional: bool
) -> tuple[str | None, str | None] | None:
    """The first ``X-API-Key`` and ``Authorization`` values, as Starlette's Headers.get reads;
    None when a header asks for something the read does not do (a conditional request it
    does not honour, a range)."""
    api_key = authorization = None
    for name, value in headers:
        if name == b"x-api-key":
            if api_key is None:
                api_key = value.decode("latin-1")
        elif name == b"authorization":
            if authorization is None:
                authorization = value.decode("latin-1")
        elif (name.startswith(b"if-") or name == b"range") and not (
            conditional and name == b"if-none-match"
        ):
            # A conditional request or a range: what a GET answers depends on it.
            return None
    return api_key, authorization


class HotReads:
    def __init__(self, app: ASGIApp, reads: Sequence[HotRead]) -> None:
        self.app = app
        self._reads = {f"r{index}": read for index, read in enumerate(reads)}
        self._match = (
            re.compile(
                "|".join(_pattern(group, read.path) for group, read in self._reads.items())
            ).fullmatch
            if reads
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        # Behind a root_path, FastAPI's own matching knows where the route path starts.
        if (
            self._match is not None
            and scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and not scope.get("root_path")
        ):
            match = self._match(scope["path"])
        if match is None or match.lastgroup is None:
            await self.app(scope, receive, send)
            return
        hot = self._reads[match.lastgroup]
        headers = _credential_headers(scope["headers"], conditional=hot.conditional)
        if headers is None:
            await self.app(scope, receive, send)
            return
        state = app_state(scope["app"])
        # What routing would have recorded: the metrics and the request log label by template.
        scope["route"] = hot
        try:
            credentials = credentials_from_headers(*headers, state.token_verifier)
            response = await hot.read(state, credentials, uuid.UUID(match[match.lastgroup]), scope)
        except TranscriptsError as error:
            response = error_response(hot.render_error, error)
        await response(scope, receive, send)


async def conditional_transcript(
    state: AppState,
    credentials: Credentials,
    session_id: uuid.UUID,
    scope: Scope,
    representation: str,
    *,
    weak: bool,
) -> tuple[SessionRecord, str | None] | Response:
    """What a conditional transcript read (``add_hot_route(..., conditional=True)``) answers
    before its dialect maps it: a 304 when ``If-None-Match`` holds the current tag (from the
    session's row alone), else the record, redacted when ``?redact=pii`` asks, and its tag.
    A redacted read is another entity than ``representation``, with a tag of its own."""
    if requested_in_query(scope["query_string"]):
        representation += ".redacted"
        redact = True
    else:
        redact = False
    condition = if_none_match(scope)
    if condition is not None:
        head = await state.transcripts.session(credentials, session_id, with_turns=False)
        etag = transcript_etag(head, representation, weak=weak)
        if etag is not None and matches(condition, etag):
            return not_modified(etag)
    record = await state.transcripts.session(credentials, session_id)
    etag = transcript_etag(record, representation, weak=weak)
    return (redact_record(record) if redact else record), etag
