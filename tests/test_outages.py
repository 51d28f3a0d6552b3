"""Database outages, for real: a TCP proxy between the service and PostgreSQL is cut.

These tests are about PostgreSQL's network connection itself, so they use the PostgreSQL
database only (the embedded SQLite default has no network to lose).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, asgi_client, make_settings, running_app
from tests.factories import Factory, turns
from tests.servers import transcripts_process
from tests.tcp_proxy import TcpProxy
from transcripts.db.engine import Database

UNAVAILABLE_ENVELOPE = {
    "success": False,
    "message": "The service is temporarily unavailable; try again shortly.",
    "data": None,
    "errors": {"detail": ["The service is temporarily unavailable; try again shortly."]},
}
UNAVAILABLE_ANAM = {
    "statusCode": 503,
    "error": "Service Unavailable",
    "message": "The service is temporarily unavailable; try again shortly",
}


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    tcp_proxy = TcpProxy("127.0.0.1", 5432)
    await tcp_proxy.start()
    yield tcp_proxy
    await tcp_proxy.stop()


def through(proxy: TcpProxy, url: str) -> str:
    return url.replace("@127.0.0.1:5432/", f"@127.0.0.1:{proxy.port}/")


async def seeded(url: str) -> tuple[str, str, str]:
    """A session, an API key and an access token of its owner."""
    settings = make_settings(url)
    database = Database(settings)
    try:
        factory = Factory(database, settings)
        owner = await factory.user()
        session = await factory.session(
            await factory.character(owner), turns=turns(("user", "hello"))
        )
        _, key = await factory.api_key(owner)
        return str(session.session_id), key, factory.token(owner.id)
    finally:
        await database.dispose()


async def timed(client: httpx.AsyncClient, path: str, key: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await client.get(path, headers={"X-API-Key": key})
    return response, time.monotonic() - started


async def test_outage_answers_503_in_each_dialect_and_recovers_by_itself(
    migrated_postgresql_url: str, proxy: TcpProxy
) -> None:
    session_id, key, _ = await seeded(migrated_postgresql_url)
    settings = make_settings(
        through(proxy, migrated_postgresql_url),
        db_connect_timeout_seconds=1,
        db_statement_timeout_seconds=1,
        db_pool_timeout_seconds=1,
        db_pool_size=2,
        db_max_overflow=0,
    )
    agents = f"/api/agents/agent-session/{session_id}/transcript/"
    anam = f"/v1/sessions/{session_id}/transcript"

    async def expect(status: int, within: float) -> None:
        for path, body in ((agents, UNAVAILABLE_ENVELOPE), (anam, UNAVAILABLE_ANAM)):
            response, elapsed = await timed(client, path, key)
            assert response.status_code == status, (path, response.text)
            assert elapsed < within, (path, elapsed)
            if status == 503:
                assert response.json() == body
        ready = await client.get("/readyz")
        assert ready.status_code == (200 if status == 200 else 503)

    async for app in running_app(settings):
        async with asgi_client(app) as client:
            await expect(200, within=2)

            proxy.cut()  # the server is gone: connections reset, new ones refused
            await expect(503, within=2)
            proxy.restore()
            await expect(200, within=2)  # no restart

            proxy.blackhole()  # a partition: nothing answers at all
            # Bounded by the timeouts: command (statement + 2 s) plus connect, for the cancel.
            await expect(503, within=7)
            proxy.restore()
            await expect(200, within=2)


async def test_sigterm_lets_in_flight_requests_finish(
    migrated_postgresql_url: str, proxy: TcpProxy
) -> None:
    session_id, _, token = await seeded(migrated_postgresql_url)
    # A token, not a key: a key's first use also records last_used_at on another connection.
    headers = {"Authorization": f"Bearer {token}"}
    env = {
        "TRANSCRIPTS_DATABASE_URL": through(proxy, migrated_postgresql_url),
        "TRANSCRIPTS_JWT_SECRET": TEST_JWT_SECRET,
        # Only the read under test uses the pool: a background poll holding its one open
        # connection would make the read open another through a proxy that takes a second
        # a packet (a dozen seconds of handshake), which is not what this test is about.
        "TRANSCRIPTS_WEBHOOK_DELIVERER_ENABLED": "false",
        "TRANSCRIPTS_RETENTION_SWEEP_SECONDS": "86400",
    }
    path = f"/v1/sessions/{session_id}/transcript"
    with transcripts_process("serve", env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            assert (await client.get(path, headers=headers)).status_code == 200
            proxy.delay_seconds = 1.0  # from now on, every database reply takes a second
            in_flight = asyncio.create_task(client.get(path, headers=headers))
            await asyncio.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            response = await in_flight
        assert response.status_code == 200, "\n".join(server.output)
        assert response.json()["messages"][0]["message"] == "hello"
        # uvicorn re-raises the signal once it has shut down cleanly: exit status -SIGTERM.
        assert await asyncio.to_thread(server.process.wait, 20) == -signal.SIGTERM
        await asyncio.sleep(0.2)  # let the output reader catch up
        assert any("Application shutdown complete" in line for line in server.output)


async def test_a_statement_timeout_on_a_dashboard_read_is_503_not_500(
    migrated_postgresql_url: str,
) -> None:
    """The scale benchmark saw Session History's statement timeouts answer 500."""
    _, key, _ = await seeded(migrated_postgresql_url)
    settings = make_settings(migrated_postgresql_url, db_statement_timeout_seconds=1)
    blocker = await asyncpg.connect(migrated_postgresql_url.replace("+asyncpg", ""))
    try:
        async for app in running_app(settings):
            async with asgi_client(app) as client:
                # The caller is resolved first (users, api_keys); the listing then waits on
                # the locked table until the server cancels it.
                transaction = blocker.transaction()
                await transaction.start()
                await blocker.execute("LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
                try:
                    history = await client.get("/api/billing/usage/", headers={"X-API-Key": key})
                    listing = await client.get("/v1/sessions", headers={"X-API-Key": key})
                finally:
                    await transaction.rollback()
            assert (history.status_code, history.json()) == (503, UNAVAILABLE_ENVELOPE)
            assert (listing.status_code, listing.json()) == (503, UNAVAILABLE_ANAM)
    finally:
        await blocker.close()
