"""Server-side failures answer in the envelope and disclose nothing."""

from __future__ import annotations

import uuid

import pytest
from fastapi import FastAPI

from tests.conftest import asgi_client, make_settings, running_app
from tests.factories import Factory
from tests.servers import free_port
from transcripts.state import app_state

TRANSCRIPT = "/api/agents/agent-session/{}/transcript/"
UNAVAILABLE = {
    "success": False,
    "message": "The service is temporarily unavailable; try again shortly.",
    "data": None,
    "errors": {"detail": ["The service is temporarily unavailable; try again shortly."]},
}


@pytest.fixture
def unreachable_url(backend: str, tmp_path: object) -> str:
    if backend == "postgresql":
        return f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere"
    return f"sqlite+aiosqlite:///{tmp_path}/no/such/directory/transcripts.db"


async def test_unreachable_database_is_503(unreachable_url: str, factory: Factory) -> None:
    key_user = await factory.user()
    _, key = await factory.api_key(key_user)
    async for app in running_app(make_settings(unreachable_url, db_connect_timeout_seconds=2)):
        async with asgi_client(app) as client:
            for headers in (
                {"X-API-Key": key},
                {"Authorization": f"Bearer {factory.token(key_user.id)}"},
            ):
                response = await client.get(TRANSCRIPT.format(uuid.uuid4()), headers=headers)
                assert response.status_code == 503
                assert response.json() == UNAVAILABLE


async def test_unreachable_database_is_503_on_the_write_path(
    unreachable_url: str, factory: Factory
) -> None:
    key_user = await factory.user()
    _, key = await factory.api_key(key_user)
    requests = [
        ("POST", f"/api/agents/agent-session/{uuid.uuid4()}/turns/", {"X-API-Key": key}, []),
        ("POST", "/api/agents/agent-session/", {"Origin": "https://shop.example"}, {"agent": "x"}),
        ("GET", "/api/billing/usage/", {"X-API-Key": key}, None),
    ]
    async for app in running_app(make_settings(unreachable_url, db_connect_timeout_seconds=2)):
        async with asgi_client(app) as client:
            for method, path, headers, body in requests:
                response = await client.request(method, path, headers=headers, json=body)
                assert response.status_code == 503, path
                assert response.json() == UNAVAILABLE, path


async def test_unexpected_error_is_500_without_internals(
    app: FastAPI,
    factory: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail: password=hunter2")

    monkeypatch.setattr(app_state(app).transcripts, "session", explode)
    _, key = await factory.api_key(await factory.user())
    async with asgi_client(app, raise_app_exceptions=False) as client:
        response = await client.get(TRANSCRIPT.format(uuid.uuid4()), headers={"X-API-Key": key})

    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "message": "The server could not complete the request.",
        "data": None,
        "errors": {"detail": ["The server could not complete the request."]},
    }
    assert "hunter2" not in response.text
    assert "unhandled RuntimeError" in caplog.text  # the operator still learns what broke


async def test_pool_recovers_after_the_database_drops_every_connection(
    migrated_postgresql_url: str,
) -> None:
    """A PostgreSQL restart (here: every backend of the service terminated) costs no 503."""
    import asyncio

    import asyncpg

    from tests.factories import Factory, turns

    settings = make_settings(migrated_postgresql_url, db_pool_size=4, db_max_overflow=0)
    async for app in running_app(settings):
        factory = Factory(app_state(app).database, settings)
        owner = await factory.user()
        session = await factory.session(await factory.character(owner), turns=turns(("user", "hi")))
        _, key = await factory.api_key(owner)
        path = TRANSCRIPT.format(session.session_id)
        async with asgi_client(app) as client:
            warm = await asyncio.gather(
                *(client.get(path, headers={"X-API-Key": key}) for _ in range(8))
            )
            assert {response.status_code for response in warm} == {200}

            admin = await asyncpg.connect(migrated_postgresql_url.replace("+asyncpg", ""))
            try:
                killed = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'transcripts' AND datname = current_database()"
                )
            finally:
                await admin.close()
            assert killed >= 1

            statuses = [
                (await client.get(path, headers={"X-API-Key": key})).status_code for _ in range(8)
            ]
            assert statuses == [200] * 8
