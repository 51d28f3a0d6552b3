"""The live transcript route (DESIGN.md, "Live transcript"), declared once for both dialects.

Everything that can fail is decided before the stream opens, so it is answered as the
transcript read answers it, in the dialect's body: the credentials (401), the session and
its owner (404, the same for another caller's session), the query and ``Last-Event-ID``
(400), the caller's open streams (429). Then ``text/event-stream`` (sse-starlette): each
turn is an ``event: turn`` whose ``id`` is the turn's append_seq, so ``Last-Event-ID``
resumes exactly after the last turn received; ``event: finalized`` ends the stream.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, cast

import anyio
import orjson
from fastapi import APIRouter, Header, Query, Request
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from transcripts.dependencies import CredentialsDep
from transcripts.dialects.routing import add_slash_agnostic_route
from transcripts.domain import LiveSession, LiveTurn
from transcripts.live import (
    Dropped,
    Finalized,
    Follower,
    Heartbeat,
    Idle,
    LiveHub,
    ShuttingDown,
    follow,
)
from transcripts.redaction import redact_pii
from transcripts.settings import Settings
from transcripts.state import app_state

__all__ = ["STREAM_200", "STREAM_429", "add_stream_route"]

# (the turn, its text as sent, the session's start) -> the dialect's item
TurnMapper = Callable[[LiveTurn, str, datetime], dict[str, Any]]
FinalizedMapper = Callable[[LiveSession], dict[str, Any]]

RedactQuery = Annotated[
    Literal["pii"] | None,
    Query(
        description="`pii`: e-mail addresses, phone numbers, card numbers, IBANs and"
        " national ids in each turn's text are replaced by [EMAIL], [PHONE], [CARD], [IBAN], [ID]."
    ),
]
LastEventIdHeader = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=2**63 - 1,
        description="The id of the last event received: the stream resumes after it.",
    ),
]

STREAM_200: dict[str, Any] = {
    "description": (
        "An event stream: `event: turn` (id: increasing within the session; data: one"
        " transcript item), then `event: finalized` and the end; `: ping` comments between."
    ),
    "content": {
        "text/event-stream": {
            "schema": {
                "description": "One event of the stream (heartbeat comments are not events).",
                "type": "object",
                "properties": {
                    "event": {"type": "string", "enum": ["turn", "finalized"]},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "description": "JSON: the item, or the end of the session.",
                    },
                    "retry": {
                        "type": "integer",
                        "description": "On shutdown: reconnect after this many milliseconds.",
                    },
                },
            }
        }
    },
}

STREAM_429 = (
    "Over the caller's rate limit, or the caller already has STREAM_MAX_PER_CALLER streams"
    " open on this worker; Retry-After says when to retry."
)

# How long a stream may take to say goodbye once the server is told to stop: it has only
# a `retry:` line to send, and uvicorn waits for it before the process can exit.
_SHUTDOWN_GRACE_SECONDS = 1.0
_OPTIONS = orjson.OPT_UTC_Z


_PING = ServerSentEvent(comment="ping")


class LiveResponse(EventSourceResponse):
    """An event stream that its hub can end at once (a reader that fell behind), and that
    always leaves its hub when it ends, however it ends."""

    def __init__(
        self,
        content: AsyncIterator[ServerSentEvent],
        hub: LiveHub,
        follower: Follower,
        settings: Settings,
    ) -> None:
        super().__init__(
            content,
            # Heartbeats come from the stream itself (live.follow): no ping task per stream.
            ping=0,
            # A client that reads nothing for this long is gone, or as good as gone.
            send_timeout=settings.stream_send_timeout_seconds,
            # sse-starlette only calls set() on it, which the follower has.
            shutdown_event=cast("anyio.Event", follower),
            shutdown_grace_period=_SHUTDOWN_GRACE_SECONDS,
        )
        self._hub = hub
        self._follower = follower

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.CancelScope() as cancel_scope:
                self._follower.on_drop = cancel_scope.cancel
                await super().__call__(scope, receive, send)
        except SendTimeoutError:
            pass  # the connection is closed unfinished: the client resumes by Last-Event-ID
        finally:
            self._hub.unsubscribe(self._follower)


def add_stream_route(
    router: APIRouter,
    path: str,
    *,
    session_id: Any,
    turn: TurnMapper,
    finalized: FinalizedMapper,
    **kwargs: Any,
) -> None:
    """``GET path``: the live stream of one session; ``session_id`` is the path parameter's
    annotation, ``turn`` and ``finalized`` write the dialect's event data."""

    async def endpoint(
        request: Request,
        session_id: uuid.UUID,
        credentials: CredentialsDep,
        redact: RedactQuery = None,
        last_event_id: LastEventIdHeader = None,
    ) -> LiveResponse:
        state = app_state(request.app)
        # Exactly the transcript read's scope: 401, and 404 for another caller's session.
        record = await state.transcripts.session(credentials, session_id, with_turns=False)
        follower = state.live.subscribe(record.session_id, credentials)
        events = _events(
            state.live,
            follower,
            state.settings,
            session_pk=record.id,
            after=last_event_id or 0,
            started=record.created_at,
            redact=redact == "pii",
            turn=turn,
            finalized=finalized,
        )
        return LiveResponse(events, state.live, follower, state.settings)

    endpoint.__annotations__["session_id"] = session_id
    add_slash_agnostic_route(router, path, endpoint, methods=["GET"], **kwargs)


async def _events(
    hub: LiveHub,
    follower: Follower,
    settings: Settings,
    *,
    session_pk: int,
    after: int,
    started: datetime,
    redact: bool,
    turn: TurnMapper,
    finalized: FinalizedMapper,
) -> AsyncIterator[ServerSentEvent]:
    """The stream's events in the dialect's shapes. A generator of its own, holding only
    what it uses: an idle stream keeps this frame for as long as it is open."""
    async for item in follow(hub, follower, session_pk, after, settings):
        if isinstance(item, LiveTurn):
            text = redact_pii(item.text) if redact else item.text
            data = orjson.dumps(turn(item, text, started), option=_OPTIONS).decode()
            yield ServerSentEvent(data=data, event="turn", id=str(item.seq))
        elif isinstance(item, Finalized):
            data = orjson.dumps(finalized(item.session), option=_OPTIONS).decode()
            yield ServerSentEvent(data=data, event="finalized")
        elif isinstance(item, Heartbeat):
            yield _PING
        elif isinstance(item, ShuttingDown):
            yield ServerSentEvent(retry=settings.stream_retry_ms)
        elif isinstance(item, Idle | Dropped):
            return
