"""Deleting sessions: the rows of a session, its tombstone, the recording objects still to
delete, and which sessions erasure and retention select.

A repository wraps the unit of work it is given and never commits; the service that calls
it owns the transaction (``transcripts.services.deletions``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from transcripts.db.dashboard import owned_by
from transcripts.db.tables import (
    Character,
    FormResponse,
    RecordingDeletion,
    Session,
    SessionTombstone,
    Turn,
)
from transcripts.domain import (
    Caller,
    ExpiredSession,
    PendingRecordingDeletion,
    SessionForDeletion,
    UsageTotals,
)

__all__ = ["DeletionRepository", "MetadataValue", "try_sweep_lock"]

MetadataValue = str | int | bool

# The advisory lock key of the retention sweep: any constant the service uses for nothing else.
SWEEP_LOCK_KEY = 0x7472616E5F7377  # "tran_sw"

_COLUMNS = (
    Session.id,
    Session.session_id,
    Session.tenant_id,
    Session.owner_id,
    Session.character_id,
    Session.created_at,
    Session.llm_input_tokens,
    Session.llm_output_tokens,
    Session.stt_audio_seconds,
    Session.tts_characters,
    Session.estimated_cost_micros,
    Session.recording_url,
    Session.recording_upload_url,
)


def _for_deletion(row: Any) -> SessionForDeletion:
    urls = tuple(dict.fromkeys(url for url in (row.recording_url, row.recording_upload_url) if url))
    return SessionForDeletion(
        id=row.id,
        session_id=row.session_id,
        tenant_id=row.tenant_id,
        owner_id=row.owner_id,
        character_id=row.character_id,
        created_at=row.created_at,
        usage=UsageTotals(
            sessions=1,
            llm_input_tokens=row.llm_input_tokens,
            llm_output_tokens=row.llm_output_tokens,
            stt_audio_seconds=row.stt_audio_seconds,
            tts_characters=row.tts_characters,
            estimated_cost_micros=row.estimated_cost_micros,
        ),
        recording_urls=urls,
    )


class DeletionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self._backend = db.get_bind().dialect.name

    async def _take_write_lock(self) -> None:
        if self._backend == "sqlite":
            # SQLite has no row locks and its driver begins a transaction only at the first
            # write: a no-op write takes the database's write lock before anything is read,
            # so no append can slip in between the read and the delete.
            await self._db.execute(
                update(SessionTombstone)
                .where(SessionTombstone.session_id.is_(None))
                .values(deleted_at=SessionTombstone.deleted_at)
                .execution_options(synchronize_session=False)
            )

    async def lock_session(
        self, caller: Caller, session_id: uuid.UUID
    ) -> SessionForDeletion | None:
        """The caller's session, locked for deletion; None when missing or not the caller's."""
        await self._take_write_lock()
        statement = (
            select(*_COLUMNS)
            .where(Session.session_id == session_id, *owned_by(caller))
            .with_for_update(of=Session)
        )
        row = (await self._db.execute(statement)).first()
        return None if row is None else _for_deletion(row)

    async def tombstone_visible_to(self, caller: Caller, session_id: uuid.UUID) -> bool:
        """Whether the session was deleted and was the caller's (staff: anyone's)."""
        conditions = [SessionTombstone.session_id == session_id]
        if not caller.is_staff:
            conditions.append(SessionTombstone.owner_id == caller.user_id)
        return (
            await self._db.scalar(
                select(func.count()).select_from(SessionTombstone).where(*conditions)
            )
            or 0
        ) > 0

    async def is_tombstoned(self, session_id: uuid.UUID) -> bool:
        return (
            await self._db.scalar(
                select(func.count())
                .select_from(SessionTombstone)
                .where(SessionTombstone.session_id == session_id)
            )
            or 0
        ) > 0

    async def window_end(
        self, caller: Caller, *, after: tuple[datetime, int] | None, size: int
    ) -> tuple[datetime, int] | None:
        """The (created_at, id) of the ``size``-th of the caller's sessions after ``after``,
        in the order of the caller's scope index; None when fewer remain. One index range
        (index only), whatever the caller owns."""
        conditions = [*owned_by(caller)]
        if after is not None:
            conditions.append(tuple_(Session.created_at, Session.id) > tuple_(*after))
        statement = (
            select(Session.created_at, Session.id)
            .where(*conditions)
            .order_by(Session.created_at, Session.id)
            .offset(size - 1)
            .limit(1)
        )
        row = (await self._db.execute(statement)).first()
        return None if row is None else (row.created_at, row.id)

    async def lock_matching_metadata(
        self,
        caller: Caller,
        pairs: dict[str, MetadataValue],
        *,
        after: tuple[datetime, int] | None,
        through: tuple[datetime, int] | None,
    ) -> list[SessionForDeletion]:
        """The caller's sessions in (after, through] whose metadata holds every pair, locked
        for deletion. The scope and the metadata test are SQL, and the range bounds what
        the statement reads: the metadata has no index, so a window of the caller's sessions
        is filtered, never all of them in one statement."""
        await self._take_write_lock()
        conditions = [*owned_by(caller), *self._metadata_holds(pairs)]
        key = tuple_(Session.created_at, Session.id)
        if after is not None:
            conditions.append(key > tuple_(*after))
        if through is not None:
            conditions.append(key <= tuple_(*through))
        statement = (
            select(*_COLUMNS)
            .where(*conditions)
            .order_by(Session.created_at, Session.id)
            .with_for_update(of=Session)
        )
        return [_for_deletion(row) for row in await self._db.execute(statement)]

    def _metadata_holds(self, pairs: dict[str, MetadataValue]) -> list[ColumnElement[bool]]:
        if self._backend == "postgresql":
            # Containment of a one-level object: each key present with an equal JSON value
            # (a string "42" is not the number 42, nor true the string "true").
            return [Session.metadata_.cast(JSONB).contains(pairs)]
        conditions: list[ColumnElement[bool]] = []
        for key, value in pairs.items():
            path = '$."' + key + '"'
            kind = (
                ("true" if value else "false")
                if isinstance(value, bool)
                else ("integer" if isinstance(value, int) else "text")
            )
            held = func.json_type(Session.metadata_, path) == kind
            if not isinstance(value, bool):
                held = and_(held, func.json_extract(Session.metadata_, path) == value)
            conditions.append(held)
        return conditions

    async def lock_expired(
        self, character_id: int, *, started_before: datetime, limit: int
    ) -> list[SessionForDeletion]:
        """Up to ``limit`` sessions of the character that started before the cutoff, oldest
        first, locked for deletion (PostgreSQL: skipping rows another sweeper holds)."""
        await self._take_write_lock()
        statement = (
            select(*_COLUMNS)
            .where(Session.character_id == character_id, Session.created_at < started_before)
            .order_by(Session.created_at, Session.id)
            .limit(limit)
            .with_for_update(of=Session, skip_locked=True)
        )
        return [_for_deletion(row) for row in await self._db.execute(statement)]

    async def retention_policies(self, default_days: int | None) -> list[tuple[int, int]]:
        """(character id, days) of every character whose sessions expire."""
        statement = select(Character.id, Character.retention_days)
        if default_days is None:
            statement = statement.where(Character.retention_days.is_not(None))
        return [
            (row.id, row.retention_days or default_days or 0)
            for row in await self._db.execute(statement.order_by(Character.id))
        ]

    async def expired_sessions(
        self,
        character_id: int,
        *,
        started_before: datetime,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ExpiredSession]:
        """What a purge would delete (a dry run), a page at a time, without locking."""
        conditions = [Session.character_id == character_id, Session.created_at < started_before]
        if after is not None:
            conditions.append(tuple_(Session.created_at, Session.id) > tuple_(*after))
        statement = (
            select(Session.id, Session.session_id, Session.created_at, Character.slug)
            .join(Character, Character.id == Session.character_id)
            .where(*conditions)
            .order_by(Session.created_at, Session.id)
            .limit(limit)
        )
        return [
            ExpiredSession(
                id=row.id,
                session_id=row.session_id,
                character_slug=row.slug,
                created_at=row.created_at,
            )
            for row in await self._db.execute(statement)
        ]

    async def delete_sessions(
        self, sessions: Sequence[SessionForDeletion], *, now: datetime
    ) -> None:
        """Every row of the sessions, each replaced by its tombstone, and each recording
        object queued for deletion: all in the caller's transaction."""
        if not sessions:
            return
        pks = [session.id for session in sessions]
        await self._db.execute(
            delete(Turn)
            .where(Turn.session_pk.in_(pks))
            .execution_options(synchronize_session=False)
        )
        await self._db.execute(
            delete(FormResponse)
            .where(FormResponse.session_pk.in_(pks))
            .execution_options(synchronize_session=False)
        )
        await self._db.execute(
            delete(Session).where(Session.id.in_(pks)).execution_options(synchronize_session=False)
        )
        await self._db.execute(
            insert(SessionTombstone),
            [
                {"session_id": session.session_id, "owner_id": session.owner_id, "deleted_at": now}
                for session in sessions
            ],
        )
        recordings = [
            {
                "recording_url": url,
                "session_id": session.session_id,
                "next_attempt_at": now,
                "created_at": now,
            }
            for session in sessions
            for url in session.recording_urls
        ]
        if recordings:
            await self._db.execute(insert(RecordingDeletion), recordings)

    async def claim_recording_deletions(
        self, *, now: datetime, lease: timedelta, limit: int, ids: Sequence[int] | None = None
    ) -> list[PendingRecordingDeletion]:
        """Recording deletions due now (or those of ``ids``, if due), each pushed past
        ``lease`` so that no other worker takes it meanwhile; a worker that dies holding one
        leaves it to be tried again once the lease runs out."""
        due = select(RecordingDeletion.id).where(RecordingDeletion.next_attempt_at <= now)
        if ids is not None:
            due = due.where(RecordingDeletion.id.in_(list(ids)))
        due = due.order_by(RecordingDeletion.next_attempt_at, RecordingDeletion.id).limit(limit)
        if self._backend == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claimed = await self._db.execute(
            update(RecordingDeletion)
            .where(
                RecordingDeletion.id.in_(due.scalar_subquery()),
                RecordingDeletion.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + lease, attempts=RecordingDeletion.attempts + 1)
            .returning(
                RecordingDeletion.id, RecordingDeletion.recording_url, RecordingDeletion.attempts
            )
            .execution_options(synchronize_session=False)
        )
        return [
            PendingRecordingDeletion(
                id=row.id, recording_url=row.recording_url, attempts=row.attempts
            )
            for row in claimed
        ]

    async def recording_deletion_ids(self, session_ids: Sequence[uuid.UUID]) -> list[int]:
        if not session_ids:
            return []
        return list(
            await self._db.scalars(
                select(RecordingDeletion.id).where(
                    RecordingDeletion.session_id.in_(list(session_ids))
                )
            )
        )

    async def recording_deleted(self, deletion_id: int) -> None:
        await self._db.execute(
            delete(RecordingDeletion)
            .where(RecordingDeletion.id == deletion_id)
            .execution_options(synchronize_session=False)
        )

    async def recording_failed(self, deletion_id: int, error: str, *, retry_at: datetime) -> None:
        await self._db.execute(
            update(RecordingDeletion)
            .where(RecordingDeletion.id == deletion_id)
            .values(last_error=error[:500], next_attempt_at=retry_at)
            .execution_options(synchronize_session=False)
        )


async def try_sweep_lock(connection: AsyncConnection) -> bool:
    """Take the retention sweep's advisory lock in ``connection``'s transaction if no one
    holds it (PostgreSQL). It is released when that transaction ends, however it ends: a
    pooled connection never carries it on to its next user."""
    return bool(await connection.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY))))
