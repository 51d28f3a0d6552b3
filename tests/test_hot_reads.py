"""The transcript reads answered by the hot path are the answers FastAPI's routes give.

Every request here goes once through the application as it runs (the hot path takes the
transcript GETs) and once through the same application with that middleware left out, and
the two answers must match in status, headers and bytes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from tests.factories import SEED_USAGE, Factory, turns
from transcripts.auth import hash_api_key
from transcripts.db.hot_read import LONG_TRANSCRIPT_TURNS
from transcripts.demo import long_transcript
from transcripts.dialects.hot import HotReads
from transcripts.domain import ApiKeyCredentials
from transcripts.state import app_state


class FastAPIOnly:
    """The application's middleware stack, built without the hot path."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        kept = app.user_middleware
        app.user_middleware = [entry for entry in kept if entry.cls is not HotReads]
        try:
            self.stack = app.build_middleware_stack()
        finally:
            app.user_middleware = kept

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app
        await self.stack(scope, receive, send)


@pytest.fixture
async def both(app: FastAPI) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    def client(target: object) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=target, raise_app_exceptions=False)  # type: ignore[arg-type]
        # A pinned request id: the two answers then compare equal, headers and all.
        return httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers={"X-Request-ID": "hot"}
        )

    async with client(app) as hot, client(FastAPIOnly(app)) as plain:
        yield hot, plain


async def test_hot_answers_are_fastapi_answers(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], factory: Factory
) -> None:
    hot, plain = both
    owner, stranger = await factory.user(), await factory.user()
    _, key = await factory.api_key(owner)
    _, stranger_key = await factory.api_key(stranger)
    session = await factory.session(
        await factory.character(owner),
        user_id=owner.id,
        turns=turns(("assistant", "Hello there."), ("user", "Hi! Can you help me?")),
        usage=SEED_USAGE,
    )
    ids = {
        "owned": str(session.session_id),
        "owned, upper case": str(session.session_id).upper(),
        "missing": str(uuid.uuid4()),
        "no hyphens": session.session_id.hex,
        "braces": "{" + str(session.session_id) + "}",
        "malformed": "not-a-uuid",
    }
    paths = [
        "/api/agents/agent-session/{}/transcript/",
        "/api/agents/agent-session/{}/transcript",
        "/api/billing/sessions/{}/",
        "/api/billing/sessions/{}",
        "/v1/sessions/{}/transcript",
        "/v1/sessions/{}/transcript/",
        "/v1/sessions/{}/transcript?verbose=1",
    ]
    token = factory.token(owner.id)
    credentials = {
        "key": {"X-API-Key": key},
        "key as bearer": {"Authorization": f"Bearer {key}"},
        "token": {"Authorization": f"Bearer {token}"},
        "key wins over token": {"X-API-Key": key, "Authorization": "Bearer nonsense"},
        "stranger": {"X-API-Key": stranger_key},
        "none": {},
        "malformed key": {"X-API-Key": "sk_short"},
        "unknown key": {"X-API-Key": "sk_" + "0" * 64},
        "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "expired token": {"Authorization": f"Bearer {factory.token(owner.id, exp=1)}"},
        "unknown user": {"Authorization": f"Bearer {factory.token(2**40)}"},
    }
    statuses = set()
    for path in paths:
        for id_name, session_id in ids.items():
            for credential_name, headers in credentials.items():
                url = path.format(session_id)
                answers = [await client.get(url, headers=headers) for client in (hot, plain)]
                case = f"{url} with {credential_name} ({id_name})"
                assert answers[0].status_code == answers[1].status_code, case
                assert answers[0].headers.multi_items() == answers[1].headers.multi_items(), case
                assert answers[0].content == answers[1].content, case
                statuses.add(answers[0].status_code)
    assert statuses == {200, 400, 401, 404}


async def test_other_methods_and_paths_are_fastapi_answers(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient], factory: Factory
) -> None:
    hot, plain = both
    _, key = await factory.api_key(await factory.user())
    session_id = uuid.uuid4()
    requests = [
        ("HEAD", f"/api/agents/agent-session/{session_id}/transcript/"),
        ("POST", f"/v1/sessions/{session_id}/transcript"),
        ("GET", f"/v1/sessions/{session_id}"),
        ("GET", f"/v1/sessions/{session_id}/transcript/extra"),
        ("GET", f"/api/agents/agent-session/{session_id}/transcript//"),
    ]
    for method, url in requests:
        answers = [
            await client.request(method, url, headers={"X-API-Key": key}) for client in (hot, plain)
        ]
        assert answers[0].status_code == answers[1].status_code, (method, url)
        assert answers[0].content == answers[1].content, (method, url)


async def test_unexpected_failure_on_the_hot_path_is_the_500(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
    app: FastAPI,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app_state(app).transcripts, "session", explode)
    _, key = await factory.api_key(await factory.user())
    for path in ("/api/billing/sessions/{}/", "/v1/sessions/{}/transcript"):
        url = path.format(uuid.uuid4())
        answers = [await client.get(url, headers={"X-API-Key": key}) for client in both]
        assert answers[0].status_code == answers[1].status_code == 500
        assert answers[0].content == answers[1].content
        assert b"secret" not in answers[0].content


@pytest.mark.parametrize(
    ("turn_count", "expected"),
    [(LONG_TRANSCRIPT_TURNS, ["woken", "read"]), (LONG_TRANSCRIPT_TURNS - 1, ["read", "woken"])],
)
async def test_a_long_read_steps_back_behind_requests_woken_meanwhile(
    app: FastAPI,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    turn_count: int,
    expected: list[str],
) -> None:
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(
        await factory.character(owner), turns=long_transcript(turn_count)
    )
    database = app_state(app).database
    loop = asyncio.get_running_loop()
    order: list[str] = []
    fetch_row = database.fetch_row

    async def fetch_row_as_io_arrives(*arguments: Any) -> Any:
        row = await fetch_row(*arguments)
        # As uvloop's next poll would: an I/O callback, run in that poll, that wakes another
        # request's task (which would then send its own query).
        loop.call_soon(loop.call_soon, order.append, "woken")
        return row

    monkeypatch.setattr(database, "fetch_row", fetch_row_as_io_arrives)
    record = await app_state(app).transcripts.session(
        ApiKeyCredentials(key_hash=hash_api_key(key)), session.session_id
    )
    order.append("read")  # where the mapping and encoding begin
    for _ in range(3):
        await asyncio.sleep(0)
    assert record.turn_count == turn_count
    # A short read goes on at once: stepping back would cost more than it gives.
    assert order == expected
