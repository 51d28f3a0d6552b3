"""How the transcript read borrows connections from SQLAlchemy's pool, on both databases."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import await_, greenlet_spawn

from tests.conftest import asgi_client, make_settings, migrate, running_app
from tests.factories import Factory, turns
from transcripts.state import app_state

TRANSCRIPT = "/api/agents/agent-session/{}/transcript/"


@pytest.fixture
async def small_pool_app(database_url: str) -> AsyncIterator[FastAPI]:
    async for app in running_app(make_settings(database_url, db_pool_size=2, db_max_overflow=0)):
        yield app


async def _owned_transcript(app: FastAPI) -> tuple[str, dict[str, str]]:
    factory = Factory(app_state(app).database, app_state(app).settings)
    owner = await factory.user()
    session = await factory.session(await factory.character(owner), turns=turns(("user", "hi")))
    _, key = await factory.api_key(owner)
    return TRANSCRIPT.format(session.session_id), {"X-API-Key": key}


async def test_reads_past_the_pool_size_wait_for_a_connection(small_pool_app: FastAPI) -> None:
    path, headers = await _owned_transcript(small_pool_app)
    async with asgi_client(small_pool_app) as client:
        responses = await asyncio.gather(*(client.get(path, headers=headers) for _ in range(12)))
    assert [response.status_code for response in responses] == [200] * 12
    await _settled(small_pool_app)


async def _settled(app: FastAPI) -> None:
    """Both connections open and back in the pool."""
    pool = app_state(app).database.engine.pool
    assert isinstance(pool, QueuePool)
    for _ in range(100):  # the key's last_used_at is written after the response
        if pool.checkedout() == 0:
            break
        await asyncio.sleep(0.02)
    assert (pool.checkedout(), pool.checkedin()) == (0, 2)


async def _warmed_up(
    app: FastAPI, client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    """Both connections of the small pool opened by concurrent reads, and idle again."""
    warm = await asyncio.gather(*(client.get(path, headers=headers) for _ in range(4)))
    assert {response.status_code for response in warm} == {200}
    await _settled(app)


def _count_slow_checkouts(monkeypatch: pytest.MonkeyPatch) -> tuple[list[object], list[object]]:
    """Checkouts through engine.raw_connection(), and greenlets the read starts itself."""
    slow_checkouts: list[object] = []
    raw_connection = AsyncEngine.raw_connection

    async def counted(engine: AsyncEngine) -> Any:
        slow_checkouts.append(engine)
        return await raw_connection(engine)

    monkeypatch.setattr(AsyncEngine, "raw_connection", counted)
    spawned: list[object] = []

    async def counted_spawn(fn: Any, *args: Any, **kwargs: Any) -> Any:
        spawned.append(fn)
        return await greenlet_spawn(fn, *args, **kwargs)

    monkeypatch.setattr("transcripts.db.engine.greenlet_spawn", counted_spawn)
    return slow_checkouts, spawned


async def test_steady_reads_borrow_idle_connections_without_a_greenlet(
    small_pool_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, headers = await _owned_transcript(small_pool_app)
    async with asgi_client(small_pool_app) as client:
        await _warmed_up(small_pool_app, client, path, headers)
        slow_checkouts, spawned = _count_slow_checkouts(monkeypatch)
        for _ in range(5):
            assert (await client.get(path, headers=headers)).status_code == 200
    assert (slow_checkouts, spawned) == ([], [])


async def test_after_an_invalidation_only_the_reconnect_takes_a_greenlet(
    small_pool_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, headers = await _owned_transcript(small_pool_app)
    engine: AsyncEngine = app_state(small_pool_app).database.engine
    async with asgi_client(small_pool_app) as client:
        await _warmed_up(small_pool_app, client, path, headers)
        # One connection dropped, as when the database hangs up on it: the next checkout
        # of its pool entry has to reconnect.
        pooled = await engine.raw_connection()
        pooled.invalidate()
        await greenlet_spawn(pooled.close)
        slow_checkouts, _ = _count_slow_checkouts(monkeypatch)
        slow_per_read = []
        for _ in range(6):
            before = len(slow_checkouts)
            assert (await client.get(path, headers=headers)).status_code == 200
            slow_per_read.append(len(slow_checkouts) - before)
    # Through the greenlet once, for the connection that reconnects; every other read direct.
    assert sorted(slow_per_read) == [0, 0, 0, 0, 0, 1]


async def _two_connections_opened(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app_state(app).database.engine
    first, second = await engine.raw_connection(), await engine.raw_connection()
    await greenlet_spawn(first.close)
    await greenlet_spawn(second.close)
    return engine


async def test_an_invalidation_during_a_reconnect_leaves_no_read_failing(
    small_pool_app: FastAPI,
) -> None:
    """A connection that finishes reconnecting after the pool was invalidated is stale."""
    database = app_state(small_pool_app).database
    engine = await _two_connections_opened(small_pool_app)
    dropped = await engine.raw_connection()
    dropped.invalidate()  # its next checkout reconnects
    await greenlet_spawn(dropped.close)
    slow = True

    @event.listens_for(engine.sync_engine.dialect, "do_connect")
    def connect_slowly(*_: Any) -> None:
        if slow:
            await_(asyncio.sleep(0.2))

    reconnecting = asyncio.create_task(database.ping())
    await asyncio.sleep(0.05)  # that read is now inside the slow reconnect
    slow = False
    other = await engine.raw_connection()
    engine.pool._invalidate(other, ConnectionResetError())  # what a lost connection does
    await greenlet_spawn(other.close)
    await reconnecting
    for _ in range(6):
        await database.ping()


async def test_a_connection_left_to_the_garbage_collector_leaves_no_read_failing(
    small_pool_app: FastAPI,
) -> None:
    database = app_state(small_pool_app).database
    engine = await _two_connections_opened(small_pool_app)
    leaked = await engine.raw_connection()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's own warning about the leak
        del leaked
        gc.collect()
    for _ in range(4):
        await database.ping()


async def test_overflow_connections_are_closed_in_a_greenlet(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, db_pool_size=1, db_max_overflow=3)
    async for app in running_app(settings):
        path, headers = await _owned_transcript(app)
        async with asgi_client(app) as client:
            for _ in range(3):
                responses = await asyncio.gather(
                    *(client.get(path, headers=headers) for _ in range(8))
                )
                assert {response.status_code for response in responses} == {200}
        await app_state(app).key_usage.drain()
        pool = app_state(app).database.engine.pool
        assert isinstance(pool, QueuePool)
        assert (pool.checkedout(), pool.overflow()) == (0, -0)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


async def test_sqlite_connections_returned_inside_a_transaction_are_rolled_back(
    sqlite_url: str,
) -> None:
    """SQLite's reset on return skips the rollback after a read, not after a transaction."""
    settings = make_settings(migrate(sqlite_url), db_pool_size=1, db_max_overflow=0)
    async for app in running_app(settings):
        engine: AsyncEngine = app_state(app).database.engine
        pooled = await engine.raw_connection()
        await pooled.driver_connection.execute("BEGIN")
        assert pooled.driver_connection.in_transaction
        await greenlet_spawn(pooled.close)
        pooled = await engine.raw_connection()  # the same connection: the pool holds one
        in_transaction = pooled.driver_connection.in_transaction
        await greenlet_spawn(pooled.close)
        assert not in_transaction
