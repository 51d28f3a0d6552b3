"""A dialect is one object: a third one plugs in with one line, and the fast path can neither
drift from its routes nor answer a request it does not fully understand."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.responses import Response
from starlette.types import Scope

from tests.factories import Factory, turns
from tests.toy_dialect import DIALECT as TOY
from transcripts.app import DIALECTS, create_app
from transcripts.dialects import Dialect, dialect_for_path
from transcripts.dialects.hot import HotReads, add_hot_route
from transcripts.dialects.routing import route_class
from transcripts.domain import Credentials
from transcripts.settings import Settings
from transcripts.state import AppState, app_state


@pytest.fixture(scope="module")
async def toy_app(settings: Settings) -> AsyncIterator[FastAPI]:
    async for running in running_app_with(settings, (*DIALECTS, TOY)):
        yield running


async def running_app_with(
    settings: Settings, dialects: tuple[Dialect, ...]
) -> AsyncIterator[FastAPI]:
    app = create_app(settings, dialects=dialects)  # the one line that registers a dialect
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def toy(toy_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=toy_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"X-Request-ID": "toy"}
    ) as client:
        yield client
    await app_state(toy_app).key_usage.drain()


async def test_a_third_dialect_reads_a_transcript_scoped_and_in_its_own_bodies(
    toy: httpx.AsyncClient, toy_app: FastAPI
) -> None:
    factory = Factory(app_state(toy_app).database, app_state(toy_app).settings)
    owner, stranger = await factory.user(), await factory.user()
    _, key = await factory.api_key(owner)
    _, stranger_key = await factory.api_key(stranger)
    session = await factory.session(
        await factory.character(owner),
        turns=turns(("assistant", "Hello."), ("user", "Hi there.")),
    )
    path = f"/toy/calls/{session.session_id}"

    read = await toy.get(path, headers={"X-API-Key": key})
    assert read.status_code == 200
    assert read.headers["X-Served-By"] == "hot"
    assert read.json() == {
        "call": str(session.session_id),
        "lines": ["assistant: Hello.", "user: Hi there."],
    }
    # Through FastAPI (a query string keeps the fast path out): the same bytes.
    slow = await toy.get(path, params={"x": "1"}, headers={"X-API-Key": key})
    assert slow.headers["X-Served-By"] == "fastapi"
    assert slow.content == read.content

    not_owned = await toy.get(path, headers={"X-API-Key": stranger_key})
    missing = await toy.get(f"/toy/calls/{uuid.uuid4()}", headers={"X-API-Key": stranger_key})
    assert not_owned.status_code == missing.status_code == 404
    assert not_owned.json() == missing.json() == {"code": 404, "reason": "Session not found."}
    assert not_owned.headers == missing.headers

    assert (await toy.get(path)).json() == {
        "code": 401,
        "reason": "Authentication credentials were not provided.",
    }
    malformed = await toy.get("/toy/calls/not-a-uuid", headers={"X-API-Key": key})
    assert malformed.status_code == 400
    assert malformed.json() == {"code": 400, "reason": "Invalid call_id."}
    unknown = await toy.get("/toy/nothing-here")
    assert unknown.json() == {"code": 404, "reason": "Not found."}
    # The other dialects are untouched by the third.
    anam = await toy.get(f"/v1/sessions/{uuid.uuid4()}/transcript", headers={"X-API-Key": key})
    assert anam.json() == {"statusCode": 404, "error": "Not Found", "message": "Session not found"}


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"redact": "pii"}, {}),
        ({"format": "vtt"}, {}),
        ({}, {"If-None-Match": '"abc"'}),
        ({}, {"If-Modified-Since": "Tue, 01 Dec 2026 00:00:00 GMT"}),
        ({}, {"Range": "bytes=0-10"}),
    ],
)
async def test_the_fast_path_leaves_what_it_does_not_handle_to_fastapi(
    toy: httpx.AsyncClient, toy_app: FastAPI, params: dict[str, str], headers: dict[str, str]
) -> None:
    factory = Factory(app_state(toy_app).database, app_state(toy_app).settings)
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(await factory.character(owner), turns=turns(("user", "Hi")))
    response = await toy.get(
        f"/toy/calls/{session.session_id}", params=params, headers={"X-API-Key": key, **headers}
    )
    assert response.status_code == 200
    assert response.headers["X-Served-By"] == "fastapi"


@pytest.mark.parametrize(
    ("headers", "status", "served_by"),
    [
        ({"If-None-Match": '"toy"'}, 304, "hot"),
        ({"If-None-Match": '"other"'}, 200, "hot"),
        ({"If-None-Match": '"toy"', "If-Match": '"toy"'}, 304, "fastapi"),
        ({"If-Modified-Since": "Tue, 01 Dec 2026 00:00:00 GMT"}, 200, "fastapi"),
        ({"Range": "bytes=0-10"}, 200, "fastapi"),
    ],
)
async def test_a_conditional_read_takes_if_none_match_on_the_fast_path_and_nothing_else(
    toy: httpx.AsyncClient,
    toy_app: FastAPI,
    headers: dict[str, str],
    status: int,
    served_by: str,
) -> None:
    factory = Factory(app_state(toy_app).database, app_state(toy_app).settings)
    owner = await factory.user()
    _, key = await factory.api_key(owner)
    session = await factory.session(await factory.character(owner), turns=turns(("user", "Hi")))
    response = await toy.get(
        f"/toy/tagged-calls/{session.session_id}", headers={"X-API-Key": key, **headers}
    )
    assert response.status_code == status
    assert response.headers["X-Served-By"] == served_by


def test_paths_are_answered_in_the_body_of_their_dialect() -> None:
    table = (*DIALECTS, TOY)
    assert [dialect_for_path(table, path).name for path in ("/v1", "/v1/sessions")] == [
        "anam",
        "anam",
    ]
    assert dialect_for_path(table, "/toy/calls/x").name == "toy"
    # Outside every dialect, and lookalike prefixes: the first dialect's body.
    for path in ("/api/billing/usage/", "/v1x", "/toys", "/recordings/b/k", "/"):
        assert dialect_for_path(table, path).name == "agents", path


async def _limit(request: Request) -> None:
    """Stands for anything a route may gain: a rate limiter, say."""


async def _flag(feature: Annotated[str, Query()] = "") -> None:
    """A dependency with a query parameter of its own."""


async def _read(
    state: AppState, credentials: Credentials, session_id: uuid.UUID, scope: Scope
) -> Response:
    return Response(orjson.dumps({}))


def _dialect_with(router: APIRouter) -> Dialect:
    return Dialect(
        name="drifted",
        prefix="/drifted",
        render_error=TOY.render_error,
        routers=(router,),
        error_model=TOY.error_model,
    )


def test_startup_fails_when_a_hot_route_gains_a_dependency_its_read_would_skip(
    settings: Settings,
) -> None:
    router = APIRouter(route_class=route_class("Drifted", TOY.render_error))
    add_hot_route(
        router,
        "/drifted/{session_id}",
        _read,
        session_id=uuid.UUID,
        dependencies=[Depends(_limit)],
    )
    with pytest.raises(RuntimeError, match=r"GET /drifted/\{session_id\} would skip .*_limit"):
        create_app(settings, dialects=(*DIALECTS, _dialect_with(router)))

    # On the router instead of the route: the same.
    router = APIRouter(
        route_class=route_class("Drifted", TOY.render_error), dependencies=[Depends(_limit)]
    )
    add_hot_route(router, "/drifted/{session_id}", _read, session_id=uuid.UUID)
    with pytest.raises(RuntimeError, match="would skip"):
        create_app(settings, dialects=(*DIALECTS, _dialect_with(router)))


def test_a_hot_read_that_applies_the_dependency_itself_may_declare_it(
    settings: Settings,
) -> None:
    router = APIRouter(route_class=route_class("Honest", TOY.render_error))
    add_hot_route(
        router,
        "/drifted/{session_id}",
        _read,
        session_id=uuid.UUID,
        honours=[_limit],
        dependencies=[Depends(_limit)],
    )
    app = create_app(settings, dialects=(*DIALECTS, _dialect_with(router)))
    assert "/drifted/{session_id}" in app.openapi()["paths"]

    # A parameter is never honoured: the fast path does not read query strings at all.
    router = APIRouter(route_class=route_class("Flagged", TOY.render_error))
    add_hot_route(
        router,
        "/drifted/{session_id}",
        _read,
        session_id=uuid.UUID,
        honours=[_flag],
        dependencies=[Depends(_flag)],
    )
    with pytest.raises(RuntimeError, match="feature"):
        create_app(settings, dialects=(*DIALECTS, _dialect_with(router)))


async def test_the_running_app_exposes_its_state_typed(app: FastAPI) -> None:
    state = app_state(app)
    assert isinstance(state, AppState)
    assert state.transcripts is not None
    assert state.settings.environment == "development"


def test_the_transcript_routes_of_both_dialects_are_hot(settings: Settings) -> None:
    app = create_app(settings)
    (hot_reads,) = [entry for entry in app.user_middleware if entry.cls is HotReads]
    assert sorted(read.path for read in hot_reads.kwargs["reads"]) == [
        "/api/agents/agent-session/{session_id}/transcript/",
        "/api/billing/sessions/{session_id}/",
        "/v1/sessions/{id}/transcript",
    ]
