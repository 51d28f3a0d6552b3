"""The scale benchmark's generator (``bench/scale_data.py``) at 100 sessions, read back
through the service: what COPY wrote is what the service reads, and the schema survives
the load. No timings: those belong to ``make bench-scale``."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import asyncpg
import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from bench.scale import cursor_page
from bench.scale_data import (
    CHUNK_SESSIONS,
    FEATURED_TURNS,
    RARE_PHRASES,
    ScaleDatabase,
    Shape,
    generate_chunk,
    head_revision,
    prepare,
)
from tests.conftest import POSTGRES_ADMIN_URL, make_settings, running_app
from transcripts.migrate import alembic_config
from transcripts.state import app_state

SHAPE = Shape(sessions=100)


@pytest.fixture(scope="module")
async def scale_database() -> AsyncIterator[ScaleDatabase]:
    name = f"transcripts_test_scale_{uuid.uuid4().hex[:12]}"
    try:
        yield await prepare(POSTGRES_ADMIN_URL, name, SHAPE, log=lambda _: None)
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture(scope="module")
async def client(scale_database: ScaleDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async for app in running_app(make_settings(scale_database.url)):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://scale") as client:
            yield client
        await app_state(app).key_usage.drain()


def test_the_rows_are_the_same_from_the_same_seed() -> None:
    first, again = generate_chunk(SHAPE, 0), generate_chunk(SHAPE, 0)
    assert first.sessions.data == again.sessions.data
    assert first.turns.data == again.turns.data
    assert first.sessions.rows == min(CHUNK_SESSIONS, SHAPE.sessions)
    other = generate_chunk(Shape(sessions=100, seed=SHAPE.seed + 1), 0)
    assert other.sessions.data != first.sessions.data


async def test_the_build_holds_what_it_recorded(scale_database: ScaleDatabase) -> None:
    info = scale_database.info
    connection = await asyncpg.connect(scale_database.dsn)
    try:
        sessions, turns, big = await connection.fetchrow(
            "SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM turns),"
            " (SELECT count(*) FROM sessions s JOIN characters c ON c.id = s.character_id"
            "  WHERE c.created_by_id = 1)"
        )
        null_labels = await connection.fetchval(
            "SELECT count(*) FROM sessions WHERE client_label IS NULL"
        )
        next_id = await connection.fetchval("SELECT nextval('sessions_id_seq')")
    finally:
        await connection.close()
    assert (sessions, turns, big) == (SHAPE.sessions, info.turns, info.big_owner_sessions)
    assert 0 < big < sessions
    assert turns > 10 * sessions
    assert 0 < null_labels < sessions  # NULL stays NULL through CSV
    assert next_id == SHAPE.sessions + 1


async def test_a_second_prepare_reuses_the_build(scale_database: ScaleDatabase) -> None:
    again = await prepare(POSTGRES_ADMIN_URL, scale_database.name, SHAPE, log=lambda _: None)
    assert not again.built
    assert again.info == scale_database.info
    assert again.featured_session_id == scale_database.featured_session_id


async def test_the_big_owner_reads_their_history(
    client: httpx.AsyncClient, scale_database: ScaleDatabase
) -> None:
    response = await client.get(
        "/api/billing/usage/?page_size=200",
        headers={"X-API-Key": scale_database.keys["owner"]},
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["total_sessions"] == scale_database.info.big_owner_sessions
    assert len(data["sessions"]) == scale_database.info.big_owner_sessions
    assert float(data["total_estimated_cost_usd"]) > 0
    started = [session["created_at"] for session in data["sessions"]]
    assert started == sorted(started, reverse=True)


async def test_staff_sees_every_session(
    client: httpx.AsyncClient, scale_database: ScaleDatabase
) -> None:
    response = await client.get(
        "/v1/sessions?perPage=10",
        headers={"Authorization": f"Bearer {scale_database.keys['staff']}"},
    )
    assert response.status_code == 200
    assert response.json()["meta"]["total"] == SHAPE.sessions


async def test_the_featured_session_reads_whole(
    client: httpx.AsyncClient, scale_database: ScaleDatabase
) -> None:
    session_id = scale_database.featured_session_id
    owner = scale_database.keys["owner"]
    anam = await client.get(
        f"/v1/sessions/{session_id}/transcript", headers={"Authorization": f"Bearer {owner}"}
    )
    assert anam.status_code == 200
    messages = anam.json()["messages"]
    assert len(messages) == FEATURED_TURNS
    assert RARE_PHRASES[0] in messages[7]["message"]
    found = await client.get(
        f"/v1/sessions?search={session_id}", headers={"Authorization": f"Bearer {owner}"}
    )
    assert [session["id"] for session in found.json()["data"]] == [session_id]


class _Pages:
    """Answers like Session History's and /v1/sessions', with a cursor until page 3."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get(self, caller: str, path: str) -> httpx.Response:
        self.asked.append(path)
        page = len(self.asked)
        cursor = f"c{page}/x" if page < 3 else None
        if path.startswith("/v1/"):
            return httpx.Response(200, json={"data": [], "meta": {"nextCursor": cursor}})
        return httpx.Response(200, json={"data": {"sessions": [], "next_cursor": cursor}})


@pytest.mark.parametrize("path", ["/api/billing/usage/?page_size=50", "/v1/sessions?perPage=100"])
def test_cursor_page_follows_the_cursor_to_the_end_at_most(path: str) -> None:
    pages = _Pages()
    assert cursor_page(path, "owner", 2)(pages) == f"{path}&cursor=c1%2Fx"
    assert pages.asked == [path]
    pages = _Pages()
    assert cursor_page(path, "owner", 10)(pages) == f"{path}&cursor=c2%2Fx"
    assert len(pages.asked) == 3


async def test_a_build_at_an_older_revision_is_upgraded_in_place_not_rebuilt() -> None:
    name = f"transcripts_test_scale_{uuid.uuid4().hex[:12]}"
    try:
        built = await prepare(POSTGRES_ADMIN_URL, name, SHAPE, log=lambda _: None)
        script = ScriptDirectory.from_config(alembic_config(built.url))
        previous = script.get_revision(head_revision()).down_revision
        assert isinstance(previous, str)
        # As if built before the head's revision: the schema and the comment say so.
        with ThreadPoolExecutor(max_workers=1) as executor:
            executor.submit(command.downgrade, alembic_config(built.url), previous).result()
        comment = json.dumps(asdict(replace(built.info, revision=previous)))
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f"COMMENT ON DATABASE \"{name}\" IS '{comment}'")
        finally:
            await admin.close()

        logged: list[str] = []
        again = await prepare(POSTGRES_ADMIN_URL, name, SHAPE, log=logged.append)
        assert not again.built
        assert again.info == built.info  # the same rows, built when they were; now at head
        assert logged[0] == f"upgrading {name} from {previous} to {head_revision()}"
        connection = await asyncpg.connect(again.dsn)
        try:
            assert await connection.fetchval("SELECT version_num FROM alembic_version") == (
                head_revision()
            )
            assert await connection.fetchval("SELECT count(*) FROM sessions") == SHAPE.sessions
        finally:
            await connection.close()
    finally:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
