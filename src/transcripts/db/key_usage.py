"""``api_keys.last_used_at``, kept roughly current without a write on every read."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import update

from transcripts.db.engine import Database
from transcripts.db.tables import ApiKey

__all__ = ["ApiKeyUsage"]

logger = logging.getLogger(__name__)


class ApiKeyUsage:
    """Refreshes a key's timestamp at most once per ``interval`` and after the response,
    in a task of its own.

    The in-process memo only saves writes; the UPDATE's own condition keeps replicas from
    fighting over the row.
    """

    def __init__(self, database: Database, interval_seconds: float = 60.0) -> None:
        self._database = database
        self._interval = interval_seconds
        self._scheduled: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def seen(self, api_key_id: int | None, last_used_at: datetime | None) -> None:
        if api_key_id is None:
            return
        if last_used_at is not None:
            if last_used_at.tzinfo is None:
                last_used_at = last_used_at.replace(tzinfo=UTC)
            if (datetime.now(UTC) - last_used_at).total_seconds() < self._interval:
                return
        now = time.monotonic()
        if now - self._scheduled.get(api_key_id, float("-inf")) < self._interval:
            return
        self._scheduled[api_key_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(api_key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _touch(self, api_key_id: int) -> None:
        now = datetime.now(UTC)
        cutoff = datetime.fromtimestamp(now.timestamp() - self._interval, UTC)
        try:
            async with self._database.sessionmaker.begin() as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == api_key_id,
                        (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < cutoff),
                    )
                    .values(last_used_at=now)
                    .execution_options(synchronize_session=False)
                )
        except Exception:
            logger.warning("could not record API key use", exc_info=True)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
