"""The migration that records the key handed out for an upload, on both databases: from the
previous head with data in place, up (existing sessions keep every value, with no key handed
out) and down again (the column goes, the rows stay)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import POSTGRES_ADMIN_URL, _admin_execute, run_elsewhere
from transcripts.migrate import alembic_config

REVISION = "f67217efc85a"
PREVIOUS = "339659e893f2"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migration.db'}"
        return
    name = f"transcripts_migration_{uuid.uuid4().hex[:12]}"
    run_elsewhere(lambda: _admin_execute(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        run_elsewhere(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(url: str, action: str, revision: str) -> None:
    # Alembic's env runs a loop of its own: keep it off any running one.
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(getattr(command, action), alembic_config(url), revision).result()


def run(url: str, statement: str, **parameters: Any) -> list[dict[str, Any]]:
    async def execute() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(sa.text(statement), parameters)
                return [dict(row) for row in result.mappings()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return run_elsewhere(execute)


def columns(url: str) -> set[str]:
    async def inspect() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                found = await connection.run_sync(
                    lambda sync: sa.inspect(sync).get_columns("sessions")
                )
                return {column["name"] for column in found}
        finally:
            await engine.dispose()

    return run_elsewhere(inspect)


SESSION_COLUMNS = "id, session_id, recording_url, recording_status, llm_input_tokens"


def test_upgrade_keeps_sessions_with_no_key_handed_out_and_downgrade_drops_it(
    empty_database: str,
) -> None:
    url = empty_database
    migrate(url, "upgrade", PREVIOUS)
    now = "2026-11-21 10:00:00+00:00"
    run(url, f"INSERT INTO tenants (id, slug, name, created_at) VALUES (1, 't', 'T', '{now}')")
    run(
        url,
        "INSERT INTO users (id, email, tenant_id, is_staff, is_active, created_at)"
        f" VALUES (1, 'a@b.c', 1, false, true, '{now}')",
    )
    run(
        url,
        "INSERT INTO characters (id, public_id, slug, name, tenant_id, created_by_id, is_active,"
        " transcripts_enabled, allowed_origins, created_at)"
        f" VALUES (1, :public_id, 'bot', 'Bot', 1, 1, true, true, '[]', '{now}')",
        public_id=uuid.uuid4().hex if "sqlite" in url else str(uuid.uuid4()),
    )
    session_ids = [uuid.uuid4(), uuid.uuid4()]
    for pk, (session_id, recording) in enumerate(
        zip(session_ids, ["s3://calls/a.mp4", None], strict=True), start=1
    ):
        run(
            url,
            "INSERT INTO sessions (id, session_id, tenant_id, character_id, room_name, metadata,"
            " transcripts_enabled, created_at, llm_input_tokens, llm_output_tokens,"
            " stt_audio_seconds, tts_characters, estimated_cost_micros, recording_status,"
            " recording_url)"
            f" VALUES (:pk, :session_id, 1, 1, 'room', '{{}}', true, '{now}', :tokens, 0, 0, 0,"
            " 0, :status, :recording)",
            pk=pk,
            session_id=session_id.hex if "sqlite" in url else str(session_id),
            tokens=100 * pk,
            status="READY" if recording else "NONE",
            recording=recording,
        )
    before = run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id")
    assert "recording_upload_url" not in columns(url)

    migrate(url, "upgrade", REVISION)
    assert "recording_upload_url" in columns(url)
    assert run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id") == before
    assert run(url, "SELECT recording_upload_url FROM sessions ORDER BY id") == [
        {"recording_upload_url": None},
        {"recording_upload_url": None},
    ]
    run(url, "UPDATE sessions SET recording_upload_url = 's3://recordings/uploads/x' WHERE id = 2")

    migrate(url, "downgrade", PREVIOUS)
    assert "recording_upload_url" not in columns(url)
    assert run(url, f"SELECT {SESSION_COLUMNS} FROM sessions ORDER BY id") == before
