"""CORS: which browser pages may read the service's answers (DESIGN.md, "Caching, limits,
browsers").

Two kinds of caller come from a browser:

- The widget, on a customer's page, calling the routes that take no credentials (session
  start, form responses: every route whose dependencies include the optional caller). Its
  origins are the ``allowed_origins`` of the active characters, which change at run time.
  A preflight carries no body, so for session start it cannot name the character: it is
  granted to an origin on *some* active character's list, for ``POST`` with ``Content-Type``
  only; that list is held for a few seconds (``transcripts.widget_origins``), so that
  preflights, which anyone may send, cost no database work each. The
  real request's answer carries ``Access-Control-Allow-Origin`` only once the route has
  found its origin on *that* character's list (``admit_widget_origin``); an origin the
  character does not allow is refused (403) with nothing a page could read.
- Anything else (a dashboard, an Anam client in a browser) may call the whole API from the
  origins of ``TRANSCRIPTS_CORS_ALLOW_ORIGINS``, with Starlette's ``CORSMiddleware`` and its
  semantics: the credential and conditional headers allowed, the headers a client needs
  exposed. These origins may call the widget routes too, with credentials.

A preflight that is refused is Starlette's plain ``400 Disallowed CORS ...`` without the
grant (a browser reads only the missing header; the status and text are for people). A
request without an ``Origin`` header, as every server-to-server call is, costs one scan of
the header names and nothing else: no CORS header is added, not even ``Vary``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import SAFELISTED_HEADERS, CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from transcripts.db.engine import is_unavailable
from transcripts.dependencies import get_optional_caller
from transcripts.errors import ServiceUnavailable, TranscriptsError
from transcripts.services import accounts
from transcripts.state import app_state

__all__ = ["Cors", "admit_widget_origin", "widget_paths"]

READ_API_METHODS = ("DELETE", "GET", "PATCH", "POST")
READ_API_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "Last-Event-ID", "X-API-Key")
EXPOSED_HEADERS = (
    "ETag",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "X-Request-ID",
)
WIDGET_METHOD = "POST"
WIDGET_HEADERS = frozenset(header.lower() for header in SAFELISTED_HEADERS)  # Content-Type too
# How long a browser may keep a preflight's answer (Starlette's default; Chromium caps it at 2 h).
MAX_AGE_SECONDS = 600
PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"

_GRANT = "transcripts.cors.widget_grant"

ErrorResponder = Callable[[Request, TranscriptsError], Response]


class _WidgetGrant:
    """The widget request's origin, and whether the route found it on its character's list.

    A mutable object in the scope, so the route's verdict reaches the middleware even through
    a copied scope."""

    __slots__ = ("admitted", "origin")

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.admitted = False


def admit_widget_origin(request: Request, allowed_origins: Sequence[str]) -> None:
    """Let the page that sent this widget request read the answer, if its ``Origin`` is on
    ``allowed_origins`` (its character's). Routes call it once they know the character."""
    grant = request.scope.get(_GRANT)
    if isinstance(grant, _WidgetGrant) and accounts.origin_allowed(grant.origin, allowed_origins):
        grant.admitted = True


def widget_paths(routes: Sequence[BaseRoute]) -> list[str]:
    """The path templates of the routes a browser may call without credentials."""
    paths = []
    for route in iter_route_contexts(routes):
        dependant = getattr(route, "dependant", None)
        if isinstance(dependant, Dependant) and get_optional_caller in _calls(dependant):
            paths.append(str(route.path))
    return paths


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _origin(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"origin":
            return value.decode("latin-1")
    return None


class Cors:
    """The ASGI middleware: Starlette's ``CORSMiddleware`` for the API's configured origins,
    the widget's own rules for the widget routes (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: Sequence[str],
        widget_paths: Sequence[str],
        render_error: ErrorResponder,
    ) -> None:
        self.app = app
        self._api = CORSMiddleware(
            app,
            allow_origins=frozenset(allow_origins),
            allow_methods=READ_API_METHODS,
            allow_headers=READ_API_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )
        self._widget_paths = [compile_path(path)[0] for path in widget_paths]
        self._render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _origin(scope["headers"]) if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        if self._api.is_allowed_origin(origin) or not self._is_widget_path(scope):
            await self._api(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            response = await self._widget_preflight(scope, origin, headers)
            await response(scope, receive, send)
            return
        grant = _WidgetGrant(origin)
        scope[_GRANT] = grant
        await self.app(scope, receive, functools.partial(_widget_send, grant, send))

    def _is_widget_path(self, scope: Scope) -> bool:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return any(pattern.match(path) for pattern in self._widget_paths)

    async def _widget_preflight(self, scope: Scope, origin: str, headers: Headers) -> Response:
        vary = {"Vary": PREFLIGHT_VARY}
        requested = headers.get("access-control-request-headers", "")
        failures = [
            failure
            for failure, failed in (
                ("method", headers["access-control-request-method"] != WIDGET_METHOD),
                ("headers", not _names(requested) <= WIDGET_HEADERS),
            )
            if failed
        ]
        if not failures:
            state = app_state(scope["app"])

            async def load() -> frozenset[str]:
                async with state.database.sessionmaker() as db:
                    return await accounts.active_allowed_origins(db)

            try:
                if not await state.widget_origins.allows(origin, load):
                    failures.append("origin")
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                return self._render_error(Request(scope), ServiceUnavailable())
        if failures:
            return PlainTextResponse(
                f"Disallowed CORS {', '.join(failures)}", status_code=400, headers=vary
            )
        return PlainTextResponse(
            "OK",
            headers={
                **vary,
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": WIDGET_METHOD,
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            },
        )


def _names(header_list: str) -> set[str]:
    return {name.strip().lower() for name in header_list.split(",") if name.strip()}


async def _widget_send(grant: _WidgetGrant, send: Send, message: Message) -> None:
    if message["type"] == "http.response.start":
        headers = MutableHeaders(scope=message)
        if grant.admitted:
            headers["Access-Control-Allow-Origin"] = grant.origin
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        headers.add_vary_header("Origin")
    await send(message)
