"""Data rights: deleting a session, erasing one person's sessions, enforcing retention.

Every deletion goes through ``delete_sessions``, in the caller's transaction: the turns, form
responses and session row go, a tombstone keeps the id (a late append, finalize or form
response answers 404 and recreates nothing), the usage rollups are corrected, and each
recording object is queued in ``recording_deletions``. The objects themselves are deleted
after the transaction commits (``RecordingDeletions``): a store call inside the transaction
would hold row locks on the network, and an object deleted before a rollback would be lost
for a session that still exists. A deletion the store refuses stays queued and is retried by
the sweeper (``transcripts.retention``) until it succeeds.

Erasure and retention delete in batches, each batch its own transaction: memory and the
time locks are held stay bounded whatever the caller owns, and an interrupted run has
committed what it did, so running it again continues where it stopped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.deletions import DeletionRepository, MetadataValue
from transcripts.db.engine import Database
from transcripts.db.usage import UsageRollups
from transcripts.domain import (
    Caller,
    DeletionReceipt,
    ExpiredSession,
    SessionForDeletion,
)
from transcripts.errors import SESSION_NOT_FOUND, BadRequest, NotFound
from transcripts.recordings import RecordingStore
from transcripts.services import webhooks

__all__ = [
    "BATCH_SIZE",
    "ERASURE_WINDOW",
    "RecordingDeletions",
    "delete_session",
    "delete_sessions",
    "erase_by_metadata",
    "expired_sessions",
    "purge_expired",
    "validate_metadata_pairs",
]

logger = logging.getLogger(__name__)

# Sessions per transaction in erasure and retention: a batch's rows, locks and rollup
# upserts stay small, and a commit every few hundred sessions keeps progress durable.
BATCH_SIZE = 500
# A claimed recording deletion is not claimed again before this (its worker may be slow).
RECORDING_LEASE = timedelta(minutes=5)
# After a failure: 1 min, 2, 4, ... at most 6 h between attempts; never given up.
RETRY_FIRST = timedelta(minutes=1)
RETRY_MAX = timedelta(hours=6)
# Sessions of the caller read per erasure transaction (matching or not).
ERASURE_WINDOW = 2000
MAX_METADATA_PAIRS = 10
MAX_METADATA_KEY = 200


async def delete_sessions(
    db: AsyncSession, sessions: Sequence[SessionForDeletion], *, now: datetime
) -> None:
    """Delete ``sessions`` (locked by the caller, in this transaction) completely.

    The one place every deletion passes through, whatever asked for it (DELETE, erasure,
    retention)."""
    if not sessions:
        return
    await DeletionRepository(db).delete_sessions(sessions, now=now)
    await UsageRollups(db).take_back(sessions)
    # In this transaction: session.deleted is sent exactly when the deletion commits, and
    # the events already stored about these sessions (their transcripts) go with them.
    await webhooks.sessions_deleted(
        db, [(session.session_id, session.owner_id) for session in sessions], deleted_at=now
    )


async def delete_session(db: AsyncSession, caller: Caller, session_id: uuid.UUID) -> list[int]:
    """Delete the caller's session; answers the recording deletions it queued (to run once
    the transaction commits).

    Deleting a session the caller already deleted succeeds again, as a retried DELETE
    should; a session that is not the caller's, deleted or not, is the 404 of an unknown id.
    """
    deletions = DeletionRepository(db)
    session = await deletions.lock_session(caller, session_id)
    if session is None:
        if await deletions.tombstone_visible_to(caller, session_id):
            return []
        raise NotFound(SESSION_NOT_FOUND)
    await delete_sessions(db, [session], now=datetime.now(UTC))
    return await deletions.recording_deletion_ids([session.session_id])


def validate_metadata_pairs(pairs: dict[str, object]) -> dict[str, MetadataValue]:
    """The pairs an erasure matches: 1 to 10 keys, each value a string, integer or boolean
    (compared as JSON values: "42" is not 42)."""
    errors: list[str] = []
    if not pairs:
        errors.append("Give at least one key and value to match.")
    elif len(pairs) > MAX_METADATA_PAIRS:
        errors.append(f"Give at most {MAX_METADATA_PAIRS} keys.")
    checked: dict[str, MetadataValue] = {}
    for key, value in pairs.items():
        if (
            not key
            or len(key) > MAX_METADATA_KEY
            or any(c in key for c in '"\\')
            or not key.isprintable()
        ):
            errors.append(
                f"Key {key!r} is not a plain key of at most {MAX_METADATA_KEY} characters."
            )
        elif not isinstance(value, str | int | bool) or (
            isinstance(value, int) and not -(2**63) <= value < 2**63
        ):
            errors.append(f"The value of {key!r} must be a string, a 64-bit integer or a boolean.")
        else:
            checked[key] = value
    if errors:
        raise BadRequest("Invalid metadata.", {"metadata": errors})
    return checked


@dataclass
class _Tally:
    sessions: int = 0
    recordings: int = 0
    pending: int = 0

    def receipt(self) -> DeletionReceipt:
        return DeletionReceipt(self.sessions, self.recordings, self.pending, datetime.now(UTC))


async def erase_by_metadata(
    database: Database,
    recordings: RecordingDeletions,
    caller: Caller,
    pairs: dict[str, MetadataValue],
    *,
    window: int = ERASURE_WINDOW,
) -> DeletionReceipt:
    """Delete every session the caller can read whose metadata holds every pair; the
    receipt counts what this call deleted.

    The caller's sessions are walked in windows of ``window`` along their scope index, one
    transaction each: each statement reads at most a window, so no statement nears the
    statement timeout however many sessions the caller owns (200,000: 100 windows), and an
    interrupted erasure has committed every window before the one it was in."""
    tally = _Tally()
    after: tuple[datetime, int] | None = None
    while True:
        async with database.sessionmaker.begin() as db:
            deletions = DeletionRepository(db)
            through = await deletions.window_end(caller, after=after, size=window)
            batch = await deletions.lock_matching_metadata(
                caller, pairs, after=after, through=through
            )
            await delete_sessions(db, batch, now=datetime.now(UTC))
            queued = await deletions.recording_deletion_ids([s.session_id for s in batch])
        await _count(tally, batch, recordings, queued)
        if through is None:
            return tally.receipt()
        after = through


async def _count(
    tally: _Tally,
    batch: Sequence[SessionForDeletion],
    recordings: RecordingDeletions,
    queued: list[int],
) -> None:
    tally.sessions += len(batch)
    deleted, failed = await recordings.run(queued)
    tally.recordings += deleted
    tally.pending += failed


async def purge_expired(
    database: Database,
    recordings: RecordingDeletions,
    *,
    default_days: int | None,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
) -> DeletionReceipt:
    """Delete every session older than its character's retention (else ``default_days``;
    neither: kept). Sessions another purge holds are skipped, not waited for."""
    now = now or datetime.now(UTC)
    tally = _Tally()
    async with database.sessionmaker() as db:
        policies = await DeletionRepository(db).retention_policies(default_days)
    for character_id, days in policies:
        cutoff = now - timedelta(days=days)
        while True:
            async with database.sessionmaker.begin() as db:
                deletions = DeletionRepository(db)
                batch = await deletions.lock_expired(
                    character_id, started_before=cutoff, limit=batch_size
                )
                await delete_sessions(db, batch, now=datetime.now(UTC))
                queued = await deletions.recording_deletion_ids([s.session_id for s in batch])
            await _count(tally, batch, recordings, queued)
            if len(batch) < batch_size:
                break
    if tally.sessions:
        logger.info("retention: deleted %d expired sessions", tally.sessions)
    return tally.receipt()


async def expired_sessions(
    database: Database,
    *,
    default_days: int | None,
    now: datetime | None = None,
    page_size: int = BATCH_SIZE,
) -> AsyncIterator[ExpiredSession]:
    """What ``purge_expired`` would delete now, read a page at a time and changed nothing."""
    now = now or datetime.now(UTC)
    async with database.sessionmaker() as db:
        deletions = DeletionRepository(db)
        for character_id, days in await deletions.retention_policies(default_days):
            after: tuple[datetime, int] | None = None
            while True:
                page = await deletions.expired_sessions(
                    character_id,
                    started_before=now - timedelta(days=days),
                    after=after,
                    limit=page_size,
                )
                for session in page:
                    yield session
                if len(page) < page_size:
                    break
                after = (page[-1].created_at, page[-1].id)


class RecordingDeletions:
    """Deletes queued recording objects from the store, each queued row removed only once
    its object is gone; a failure is retried later with a growing delay, never dropped."""

    def __init__(self, database: Database, store: RecordingStore) -> None:
        self._database = database
        self._store = store

    async def run(
        self, ids: Sequence[int] | None = None, *, limit: int = BATCH_SIZE
    ) -> tuple[int, int]:
        """Delete the due recordings (only those of ``ids`` when given); answers (deleted,
        failed)."""
        if ids is not None and not ids:
            return 0, 0
        deleted = failed = 0
        while True:
            now = datetime.now(UTC)
            async with self._database.sessionmaker.begin() as db:
                claimed = await DeletionRepository(db).claim_recording_deletions(
                    now=now, lease=RECORDING_LEASE, limit=limit, ids=ids
                )
            for pending in claimed:
                try:
                    await self._store.delete(pending.recording_url)
                except Exception as exc:  # the store's errors vary; each is retried later
                    failed += 1
                    delay = min(RETRY_FIRST * 2 ** (pending.attempts - 1), RETRY_MAX)
                    logger.warning(
                        "recording deletion failed (attempt %d, retried in %s): %s",
                        pending.attempts,
                        delay,
                        type(exc).__name__,
                    )
                    async with self._database.sessionmaker.begin() as db:
                        await DeletionRepository(db).recording_failed(
                            pending.id, f"{type(exc).__name__}: {exc}", retry_at=now + delay
                        )
                    continue
                deleted += 1
                async with self._database.sessionmaker.begin() as db:
                    await DeletionRepository(db).recording_deleted(pending.id)
            if ids is not None or len(claimed) < limit:
                return deleted, failed
