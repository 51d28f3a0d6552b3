"""Routing shared by both dialects: per-route error bodies and slash-agnostic paths."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from transcripts.errors import BadRequest, PayloadTooLarge, RateLimited, TranscriptsError
from transcripts.validation import unstorable_values

__all__ = [
    "REDACT_PARAMETER",
    "DialectRoute",
    "ErrorRenderer",
    "add_slash_agnostic_route",
    "error_response",
    "with_body_checks",
]


# ``?redact=pii`` as the OpenAPI document declares it on the transcript reads, whose hot
# read parses it from the scope (transcripts.privacy.requested_in_query).
REDACT_PARAMETER: dict[str, Any] = {
    "name": "redact",
    "in": "query",
    "required": False,
    "description": (
        "`pii` replaces e-mail addresses, phone numbers (spoken digits too), card numbers,"
        " IBANs and national ids in the answered text with [EMAIL], [PHONE], [CARD], [IBAN]"
        " and [ID]; any other value is a 400. The stored text is not changed."
    ),
    "schema": {"type": "string", "enum": ["pii"]},
}


class ErrorRenderer(Protocol):
    def __call__(
        self, error: TranscriptsError, headers: dict[str, str] | None = None
    ) -> Response: ...


class DialectRoute(APIRoute):
    """An APIRoute that knows which dialect's error body its failures are written in."""

    render_error: ErrorRenderer


def route_class(name: str, renderer: ErrorRenderer) -> type[DialectRoute]:
    return type(name, (DialectRoute,), {"render_error": staticmethod(renderer)})


def with_body_checks(base: type[DialectRoute], max_body_bytes: int) -> type[DialectRoute]:
    """``base`` with request bodies capped at ``max_body_bytes`` (413 in the route's dialect)
    and refused (400) when they hold values that could not be stored and read back unchanged.

    FastAPI's own ``max_body_size`` answers an oversized Content-Length with a plain-text 413
    sent around the exception handlers, so the limit is enforced here, before FastAPI reads
    the body: the declared length first, then the bytes as they actually arrive. Checking
    the values parses the body a second time: a few milliseconds for the largest (1 MiB),
    on the write path only.
    """
    too_large = f"The request body exceeds {max_body_bytes} bytes."

    class BodyLimitedRoute(base):  # type: ignore[valid-type,misc]
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler: Callable[[Request], Coroutine[Any, Any, Response]] = (
                super().get_route_handler()
            )

            async def limited_handler(request: Request) -> Response:
                declared = request.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_body_bytes:
                    raise PayloadTooLarge(too_large)
                chunks: list[bytes] = []
                size = 0
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body_bytes:
                        raise PayloadTooLarge(too_large)
                    chunks.append(chunk)
                body = b"".join(chunks)
                problems = unstorable_values(body)
                if problems:
                    raise BadRequest(f"Invalid {', '.join(problems)}.", problems)
                return await handler(Request(request.scope, _replay(body, request)))

            return limited_handler

    BodyLimitedRoute.__name__ = f"BodyLimited{base.__name__}"
    return BodyLimitedRoute


def _replay(body: bytes, request: Request) -> Callable[[], Coroutine[Any, Any, Message]]:
    """A receive channel that hands over the body already read, then the client's own."""
    pending = True

    async def receive() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await request.receive()

    return receive


def error_response(renderer: ErrorRenderer, error: TranscriptsError) -> Response:
    """The failure in the dialect's body; a 401 also says how to authenticate, a 429 when
    to come back."""
    headers = {"WWW-Authenticate": "Bearer"} if error.status_code == 401 else None
    if isinstance(error, RateLimited) and error.retry_after is not None:
        headers = {"Retry-After": str(error.retry_after)}
    return renderer(error, headers)


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
