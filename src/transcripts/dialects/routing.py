"""Routing shared by both dialects: per-route error bodies and slash-agnostic paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from transcripts.errors import TranscriptsError

__all__ = [
    "DialectRoute",
    "ErrorRenderer",
    "add_slash_agnostic_route",
    "error_renderer_for",
    "error_response",
]


class ErrorRenderer(Protocol):
    def __call__(
        self, error: TranscriptsError, headers: dict[str, str] | None = None
    ) -> Response: ...


class DialectRoute(APIRoute):
    """An APIRoute that knows which dialect's error body its failures are written in."""

    render_error: ErrorRenderer


def route_class(name: str, renderer: ErrorRenderer) -> type[DialectRoute]:
    return type(name, (DialectRoute,), {"render_error": staticmethod(renderer)})


def error_response(renderer: ErrorRenderer, error: TranscriptsError) -> Response:
    """The failure in the dialect's body; a 401 also says how to authenticate."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
    return renderer(error, headers)


def error_renderer_for(
    request: Request, by_prefix: Callable[[str], ErrorRenderer]
) -> ErrorRenderer:
    """The renderer of the matched route; unmatched paths are judged by their prefix."""
    route = request.scope.get("route")
    if isinstance(route, DialectRoute):
        return route.render_error
    return by_prefix(request.url.path)


def add_slash_agnostic_route(
    router: APIRouter, path: str, endpoint: Callable[..., Any], **kwargs: Any
) -> None:
    """Serve ``path`` with and without its trailing slash, never redirecting.

    Clients of both vendors exist in both spellings; only the documented one is in the schema.
    """
    router.add_api_route(path, endpoint, **kwargs)
    alternate = path[:-1] if path.endswith("/") else f"{path}/"
    kwargs = {**kwargs, "include_in_schema": False, "operation_id": None}
    router.add_api_route(alternate, endpoint, **kwargs)
