"""What an erasure reads for the big owner of the 1M-session scale database (bench/SCALE.md):
every window of its sessions, filtered by a metadata pair, exactly as
``services.deletions.erase_by_metadata`` does, but each window's transaction rolled back, so
the database is left as it was.

    .venv/bin/python -m bench.erasure_walk [postgresql+asyncpg://…/transcripts_scale_1m]

Prints the windows, the matches, the slowest window and the whole walk's time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime

from sqlalchemy import text

from transcripts.db.deletions import DeletionRepository
from transcripts.db.engine import Database
from transcripts.domain import Caller
from transcripts.services.deletions import ERASURE_WINDOW
from transcripts.settings import Settings

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/transcripts_scale_1m"


async def walk(url: str) -> None:
    database = Database(Settings(_env_file=None, database_url=url))  # type: ignore[call-arg]
    try:
        async with database.sessionmaker() as db:
            owner, visitor = (
                await db.execute(
                    text(
                        "SELECT owner_id, metadata->>'visitor' FROM sessions WHERE owner_id ="
                        " (SELECT owner_id FROM sessions GROUP BY owner_id"
                        " ORDER BY count(*) DESC LIMIT 1) ORDER BY id DESC LIMIT 1"
                    )
                )
            ).one()
        caller = Caller(user_id=owner, is_staff=False, tenant_id=None)
        after: tuple[datetime, int] | None = None
        windows = matches = 0
        slowest = 0.0
        started = time.perf_counter()
        while True:
            window_started = time.perf_counter()
            async with database.sessionmaker() as db:
                deletions = DeletionRepository(db)
                through = await deletions.window_end(caller, after=after, size=ERASURE_WINDOW)
                found = await deletions.lock_matching_metadata(
                    caller, {"visitor": visitor}, after=after, through=through
                )
                await db.rollback()
            slowest = max(slowest, time.perf_counter() - window_started)
            windows += 1
            matches += len(found)
            if through is None:
                break
            after = through
        total = time.perf_counter() - started
        print(
            f"owner {owner}: {windows} windows of {ERASURE_WINDOW}, {matches} matching session(s);"
            f" whole walk {total:.2f} s, slowest window {slowest * 1000:.0f} ms"
        )
    finally:
        await database.dispose()


if __name__ == "__main__":
    asyncio.run(walk(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_URL))
