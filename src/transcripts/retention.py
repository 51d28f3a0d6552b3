"""The sweeper: deletes expired sessions and retries recording deletions, in every replica's
lifespan, one replica at a time.

Each replica wakes every ``RETENTION_SWEEP_SECONDS`` and sweeps only if no other replica is
sweeping: on PostgreSQL it takes ``pg_try_advisory_xact_lock`` on a connection of its own for
the sweep's duration (released with that transaction, so a replica that dies mid-sweep frees
it), and a replica that finds it taken sleeps until its next turn. On SQLite the service is one
process, which sweeps alone. The deletions themselves lock the sessions they delete (and skip
those locked), so even two sweeps at once would delete each session once.
"""

from __future__ import annotations

import asyncio
import logging

from transcripts.db.deletions import try_sweep_lock
from transcripts.db.engine import Database, is_unavailable
from transcripts.domain import DeletionReceipt
from transcripts.services.deletions import RecordingDeletions, purge_expired

__all__ = ["RetentionSweeper"]

logger = logging.getLogger(__name__)


class RetentionSweeper:
    def __init__(
        self,
        database: Database,
        recordings: RecordingDeletions,
        *,
        default_days: int | None,
        interval_seconds: float,
    ) -> None:
        self._database = database
        self._recordings = recordings
        self._default_days = default_days
        self._interval = interval_seconds

    async def sweep_once(self) -> DeletionReceipt | None:
        """One sweep; None when another replica is sweeping."""
        if self._database.backend != "postgresql":
            return await self._sweep()
        async with self._database.engine.connect() as connection:
            if not await try_sweep_lock(connection):
                return None
            # The lock lives as long as this connection's transaction: until the block ends.
            return await self._sweep()

    async def _sweep(self) -> DeletionReceipt:
        receipt = await purge_expired(
            self._database, self._recordings, default_days=self._default_days
        )
        # Those that failed before (a store that was unreachable), now due again.
        await self._recordings.run()
        return receipt

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_unavailable(exc):
                    logger.exception("retention sweep failed")
                    continue
                # The database is away (a restart, a failover): the next turn tries again.
                logger.warning(
                    "retention sweep skipped: database unreachable (%s)", type(exc).__name__
                )
