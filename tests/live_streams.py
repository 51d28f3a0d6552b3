"""What the live-stream tests and the streams benchmark share: reading an event stream as a
browser's EventSource would, and the people and sessions a stream is about."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.conftest import make_settings
from tests.factories import Factory
from transcripts.db.engine import Database

__all__ = ["Identity", "SseEvent", "SseReader", "identity", "open_stream", "stream_path"]

AGENTS_STREAM = "/api/agents/agent-session/{}/transcript/stream/"
ANAM_STREAM = "/v1/sessions/{}/transcript/stream"


def stream_path(dialect: str, session_id: str) -> str:
    return (AGENTS_STREAM if dialect == "agents" else ANAM_STREAM).format(session_id)


@dataclass
class SseEvent:
    """One event as the HTML standard's parser dispatches it (comments kept apart)."""

    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        assert self.data is not None
        return orjson.loads(self.data)


class SseReader:
    """Reads the events of a ``text/event-stream`` response as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()

    async def next(self, within: float = 20) -> SseEvent | None:
        """The next event or comment block; None when the server ended the stream."""
        async with asyncio.timeout(within):
            current = SseEvent()
            seen = False
            async for line in self._lines:
                if not line:
                    if seen:
                        return current
                    continue
                seen = True
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "":
                    current.comments.append(value)
                elif name == "event":
                    current.event = value
                elif name == "id":
                    current.id = value
                elif name == "data":
                    current.data = value if current.data is None else f"{current.data}\n{value}"
                elif name == "retry":
                    current.retry = int(value)
            return current if seen else None

    async def turns(self, count: int, within: float = 20) -> list[SseEvent]:
        """The next ``count`` turn events, heartbeats skipped."""
        found: list[SseEvent] = []
        while len(found) < count:
            event = await self.next(within)
            assert event is not None, f"the stream ended after {len(found)} of {count} turns"
            if event.event is None and event.comments:
                continue
            assert event.event == "turn", event
            found.append(event)
        return found

    async def next_event(self, within: float = 20) -> SseEvent | None:
        """The next event that is not a heartbeat; None at the end of the stream."""
        while True:
            event = await self.next(within)
            if event is None or event.event is not None or event.retry is not None:
                return event


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    path: str,
    headers: dict[str, str],
    *,
    last_event_id: str | None = None,
    params: dict[str, str] | None = None,
) -> AsyncIterator[tuple[httpx.Response, SseReader]]:
    if last_event_id is not None:
        headers = {**headers, "Last-Event-ID": last_event_id}
    async with client.stream("GET", path, headers=headers, params=params) as response:
        yield response, SseReader(response)


@dataclass(frozen=True)
class Identity:
    """A user of a deployment: its API key and access token headers, and a character."""

    user_id: int
    key: dict[str, str]
    jwt: dict[str, str]
    slug: str

    def headers(self, credentials: str) -> dict[str, str]:
        return self.key if credentials == "key" else self.jwt


async def identity(database_url: str) -> Identity:
    settings = make_settings(database_url)
    database = Database(settings)
    try:
        factory = Factory(database, settings)
        owner = await factory.user()
        _, key = await factory.api_key(owner)
        character = await factory.character(owner)
        token = factory.token(owner.id)
        token_headers = {"Authorization": f"Bearer {token}"}
        return Identity(owner.id, {"X-API-Key": key}, token_headers, character.slug)
    finally:
        await database.dispose()
