"""Retention, enforced: the sweeper of real `transcripts serve` replicas on one PostgreSQL
database, and `transcripts purge [--dry-run]`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from tests.conftest import make_settings, running_app
from tests.factories import SEED_USAGE, Factory, turns
from tests.servers import transcripts_process
from tests.test_cli import run_async
from transcripts.db.engine import Database
from transcripts.state import app_state

SWEPT = re.compile(r"retention: deleted (\d+) expired sessions")


async def _count(database: Database, sql: str, **parameters: Any) -> int:
    async with database.sessionmaker() as db:
        return int((await db.execute(text(sql), parameters)).scalar_one())


async def test_two_replicas_sweep_each_expired_session_once(
    migrated_postgresql_url: str, tmp_path: Path
) -> None:
    url = migrated_postgresql_url
    settings = make_settings(url, recordings_dir=str(tmp_path))
    database = Database(settings)
    factory = Factory(database, settings)
    owner = await factory.user()
    character = await factory.character(owner, retention_days=1)
    now = datetime.now(UTC)
    expired = []
    for index in range(40):
        name = f"swept/{uuid.uuid4().hex}.wav"
        (tmp_path / "calls" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "calls" / name).write_bytes(b"RIFF")
        expired.append(
            await factory.session(
                character,
                turns=turns(("user", f"Call {index}")),
                usage=SEED_USAGE,
                started_at=now - timedelta(days=2, minutes=index),
                recording_url=f"s3://calls/{name}",
            )
        )
    young = await factory.session(character, usage=SEED_USAGE, started_at=now - timedelta(hours=20))

    env = {
        "TRANSCRIPTS_DATABASE_URL": url,
        "TRANSCRIPTS_RECORDINGS_DIR": str(tmp_path),
        "TRANSCRIPTS_RETENTION_SWEEP_SECONDS": "0.2",
        "TRANSCRIPTS_DB_POOL_SIZE": "3",
    }
    owned = "SELECT count(*) FROM sessions WHERE character_id = :c"
    with (
        transcripts_process("serve", env=env, cwd=tmp_path) as first,
        transcripts_process("serve", env=env, cwd=tmp_path) as second,
    ):
        deadline = time.monotonic() + 60
        while await _count(database, owned, c=character.id) > 1:
            assert time.monotonic() < deadline, "\n".join(first.output + second.output)
            await asyncio.sleep(0.2)
        # Both keep sweeping a while longer: nothing is deleted twice.
        await asyncio.sleep(2)
    logs = first.output + second.output

    swept = [int(count) for line in logs for count in SWEPT.findall(line)]
    assert sum(swept) == 40, logs
    assert await _count(database, owned, c=character.id) == 1
    assert (
        await _count(
            database, "SELECT count(*) FROM session_tombstones WHERE owner_id = :o", o=owner.id
        )
        == 40
    )
    assert (
        await _count(
            database,
            "SELECT count(*) FROM turns t JOIN sessions s ON s.id = t.session_pk"
            " WHERE s.character_id = :c",
            c=character.id,
        )
        == 0
    )
    # The rollups lost each session once: one session left, never a negative count.
    assert (
        await _count(
            database,
            "SELECT sum(sessions) FROM usage_by_character_day WHERE character_id = :c",
            c=character.id,
        )
        == 1
    )
    assert not list((tmp_path / "calls" / "swept").iterdir())
    assert young.session_id not in {session.session_id for session in expired}
    await database.dispose()


async def test_purge_dry_run_lists_without_deleting_then_purge_deletes(
    database_url: str, factory: Factory
) -> None:
    owner = await factory.user()
    character = await factory.character(owner, retention_days=30)
    now = datetime.now(UTC).replace(microsecond=0)
    old = [
        await factory.session(character, started_at=now - timedelta(days=31 + index))
        for index in range(2)
    ]
    kept = await factory.session(character, started_at=now - timedelta(days=29))
    owned = "SELECT count(*) FROM sessions WHERE character_id = :c"

    dry = await run_async(database_url, "purge", "--dry-run", "--json")
    listed = [
        session
        for session in json.loads(dry.stdout)["sessions"]
        if session["character_slug"] == character.slug
    ]
    assert listed == [
        {
            "session_id": str(session.session_id),
            "character_slug": character.slug,
            "created_at": session.created_at.isoformat(),
        }
        for session in reversed(old)
    ]
    assert await _count(factory.database, owned, c=character.id) == 3

    plain = await run_async(database_url, "purge", "--dry-run")
    assert f"{old[0].session_id}  {character.slug}  " in plain.stdout
    assert "(dry run: nothing deleted)" in plain.stdout
    assert await _count(factory.database, owned, c=character.id) == 3

    purged = await run_async(database_url, "purge", "--json")
    receipt = json.loads(purged.stdout)
    assert receipt["dry_run"] is False
    assert receipt["erased_sessions"] >= 2
    assert await _count(factory.database, owned, c=character.id) == 1
    assert kept.session_id not in {session.session_id for session in old}


async def test_the_lifespan_sweeper_deletes_expired_sessions_on_its_own(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, recordings_dir=str(tmp_path), retention_sweep_seconds=0.1
    )
    async for app in running_app(settings):
        database = app_state(app).database
        factory = Factory(database, settings)
        owner = await factory.user()
        character = await factory.character(owner, retention_days=3)
        now = datetime.now(UTC)
        expired = await factory.session(character, started_at=now - timedelta(days=3, seconds=1))
        kept = await factory.session(character, started_at=now - timedelta(days=2))
        owned = "SELECT count(*) FROM sessions WHERE character_id = :c"
        deadline = time.monotonic() + 30
        while await _count(database, owned, c=character.id) > 1:
            assert time.monotonic() < deadline, "the sweeper did not run"
            await asyncio.sleep(0.1)
        remaining = "SELECT count(*) FROM sessions WHERE session_id = :s"
        for session, left in ((expired, 0), (kept, 1)):
            key = (
                session.session_id.hex if database.backend == "sqlite" else str(session.session_id)
            )
            assert await _count(database, remaining, s=key) == left
