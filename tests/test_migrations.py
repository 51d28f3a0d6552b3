"""The Alembic history: each change that alters stored data backfills the rows already there,
on both databases, and undoes. (That it builds what the models describe: test_cli.py runs
`alembic check`.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_ADMIN_URL, _admin_execute, run_elsewhere
from transcripts.migrate import alembic_config


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of its own, with no schema yet (a migration test starts from nothing)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"transcripts_migrations_{uuid.uuid4().hex[:12]}"
    run_elsewhere(lambda: _admin_execute(f'CREATE DATABASE "{name}"'))
    try:
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace(
            "postgresql://", "postgresql+asyncpg://"
        )
        yield f"{base}/{name}"
    finally:
        run_elsewhere(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate_to(url: str, revision: str) -> None:
    run_elsewhere_sync(lambda: command.upgrade(alembic_config(url), revision))


def downgrade_to(url: str, revision: str) -> None:
    run_elsewhere_sync(lambda: command.downgrade(alembic_config(url), revision))


def run_elsewhere_sync(work: Any) -> None:
    """Alembic's env starts an event loop of its own: run it off the test's loop."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(work).result()


async def _run(url: str, statements: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    engine = create_async_engine(url)
    results = []
    try:
        async with engine.begin() as connection:
            for statement, parameters in statements:
                result = await connection.execute(sa.text(statement), parameters)
                results.append(result.all() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return results


def run_sql(url: str, *statements: tuple[str, dict[str, Any]]) -> list[Any]:
    holder: list[list[Any]] = []
    run_elsewhere_sync(lambda: holder.append(asyncio.run(_run(url, list(statements)))))
    return holder[0]


def _seed_before_counters(url: str) -> None:
    """Rows as the schema before the counters held them: two sessions, one with turns."""
    now: Any = "2026-11-30 10:00:00.000000"
    if url.startswith("postgresql"):
        now = datetime(2026, 11, 30, 10, tzinfo=UTC)
    run_sql(
        url,
        (
            "INSERT INTO tenants (id, slug, name, created_at) VALUES (1, 't', 'T', :now)",
            {"now": now},
        ),
        (
            "INSERT INTO users (id, email, tenant_id, is_staff, is_active, created_at)"
            " VALUES (1, 'a@b.c', 1, false, true, :now)",
            {"now": now},
        ),
        (
            "INSERT INTO characters (id, public_id, slug, name, tenant_id, created_by_id,"
            " is_active, transcripts_enabled, allowed_origins, created_at)"
            " VALUES (1, :uuid, 'c', 'C', 1, 1, true, true, '[]', :now)",
            {"uuid": uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()), "now": now},
        ),
        *[
            (
                "INSERT INTO sessions (id, session_id, tenant_id, character_id, room_name,"
                " metadata, transcripts_enabled, created_at, llm_input_tokens,"
                " llm_output_tokens, stt_audio_seconds, tts_characters, estimated_cost_micros,"
                " recording_status) VALUES (:id, :uuid, 1, 1, 'r', '{}', true, :now,"
                " 0, 0, 0, 0, 0, 'NONE')",
                {
                    "id": pk,
                    "uuid": uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()),
                    "now": now,
                },
            )
            for pk in (1, 2)
        ],
        *[
            (
                "INSERT INTO turns (session_pk, turn_index, role, text, ts, was_interrupted,"
                " created_at) VALUES (1, :index, 'user', :text, 0, false, :now)",
                {"index": index, "text": text, "now": now},
            )
            for index, text in enumerate(["Hello", "Crème brûlée"])
        ],
    )


def test_session_counters_are_backfilled_and_undone(empty_database: str) -> None:
    migrate_to(empty_database, "339659e893f2")
    _seed_before_counters(empty_database)

    migrate_to(empty_database, "5d0c1f7e2a91")
    (rows,) = run_sql(
        empty_database, ("SELECT id, turn_count, text_bytes FROM sessions ORDER BY id", {})
    )
    # "Crème brûlée" is 12 characters and 15 bytes of UTF-8.
    assert [tuple(row) for row in rows] == [(1, 2, 5 + 15), (2, 0, 0)]

    downgrade_to(empty_database, "339659e893f2")
    (rows,) = run_sql(empty_database, ("SELECT count(*) FROM turns", {}))
    assert rows[0][0] == 2
