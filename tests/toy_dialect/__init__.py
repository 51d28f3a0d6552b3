"""A third dialect that exists only for the tests: proof that a dialect is one object.

It reads a transcript at ``/toy/calls/{call_id}`` in a shape of its own and answers failures
in a body of its own, through the same repositories as the two real dialects, without a line
of ``transcripts.db`` or ``transcripts.app`` written for it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Scope

from transcripts.dialects import Dialect
from transcripts.dialects.hot import HotRead, add_hot_route
from transcripts.dialects.routing import route_class
from transcripts.domain import Credentials
from transcripts.errors import TranscriptsError
from transcripts.state import AppState

__all__ = ["DIALECT"]


class ToyError(BaseModel):
    code: int
    reason: str


def render_toy_error(error: TranscriptsError, headers: dict[str, str] | None = None) -> Response:
    body = {"code": error.status_code, "reason": error.message}
    return Response(orjson.dumps(body), error.status_code, headers=headers)


router = APIRouter(route_class=route_class("ToyRoute", render_toy_error))


async def read_call(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    record = await state.transcripts.session(credentials, session_id)
    body: dict[str, Any] = {
        "call": record.session_id,
        "lines": [
            f"{role}: {text}"
            for role, text in zip(record.transcript.role, record.transcript.text, strict=True)
        ],
    }
    # Which of the two ways the read was reached: the tests check the fast path's choices.
    served_by = "hot" if isinstance(scope.get("route"), HotRead) else "fastapi"
    return Response(orjson.dumps(body), headers={"X-Served-By": served_by})


add_hot_route(
    router,
    "/toy/calls/{call_id}",
    read_call,
    session_id=Annotated[uuid.UUID, Path(alias="call_id")],
    operation_id="toyReadCall",
    response_class=Response,
)


async def read_call_conditionally(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    """The same read, for a route declared ``conditional``: it honours If-None-Match itself
    (every call has the tag "toy")."""
    if (b"if-none-match", b'"toy"') in scope["headers"]:
        served_by = "hot" if isinstance(scope.get("route"), HotRead) else "fastapi"
        return Response(status_code=304, headers={"X-Served-By": served_by, "ETag": '"toy"'})
    return await read_call(state, credentials, session_id, scope)


add_hot_route(
    router,
    "/toy/tagged-calls/{call_id}",
    read_call_conditionally,
    session_id=Annotated[uuid.UUID, Path(alias="call_id")],
    conditional=True,
    operation_id="toyReadTaggedCall",
    response_class=Response,
)

DIALECT = Dialect(
    name="toy",
    prefix="/toy",
    render_error=render_toy_error,
    routers=(router,),
    error_model=ToyError,
)
