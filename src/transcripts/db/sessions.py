"""The write path's statements: sessions, their turns, finalize, form responses.

A repository wraps the unit of work (an ``AsyncSession``) it is given and never commits;
the caller of the service owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.dashboard import form_response_record, owned_by
from transcripts.db.tables import Character, FormResponse, Session, Tenant, Turn
from transcripts.domain import (
    Caller,
    CharacterRecord,
    FormResponseRecord,
    NewTurn,
    RecordingStatus,
    SessionRef,
)

__all__ = ["SessionRepository"]


def _ref(session: Session, pii_redaction: str) -> SessionRef:
    return SessionRef(
        id=session.id,
        session_id=session.session_id,
        tenant_id=session.tenant_id,
        character_id=session.character_id,
        owner_id=session.owner_id,
        user_id=session.user_id,
        room_name=session.room_name,
        transcripts_enabled=session.transcripts_enabled,
        created_at=session.created_at,
        finalized_at=session.finalized_at,
        recording_url=session.recording_url,
        recording_status=session.recording_status,
        turn_count=session.turn_count,
        text_bytes=session.text_bytes,
        recording_upload_url=session.recording_upload_url,
        pii_redaction="store" if pii_redaction == "store" else "none",
    )


class SessionRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db
        self._backend = db.get_bind().dialect.name

    async def add(
        self,
        character: CharacterRecord,
        *,
        user_id: int | None,
        room_name: str,
        origin_url: str | None,
        metadata: dict[str, Any],
        client_label: str | None,
        created_at: datetime,
        session_id: uuid.UUID | None = None,
    ) -> SessionRef:
        session = Session(
            session_id=session_id or uuid.uuid4(),
            tenant_id=character.tenant_id,
            character_id=character.id,
            owner_id=character.created_by_id,
            user_id=user_id,
            room_name=room_name,
            origin_url=origin_url,
            metadata_=metadata,
            client_label=client_label,
            transcripts_enabled=character.transcripts_enabled,
            created_at=created_at,
        )
        self._db.add(session)
        await self._db.flush()
        return _ref(session, character.pii_redaction)

    async def lock_character(self, character_id: int) -> None:
        """Hold the character's row until the transaction ends, so that session starts of
        one character run one at a time (their count and their insert)."""
        if self._backend == "sqlite":
            # As in lock_for_write: a no-op write takes the database's write lock now.
            await self._db.execute(
                update(Character)
                .where(Character.id == character_id)
                .values(id=Character.id)
                .execution_options(synchronize_session=False)
            )
            return
        # FOR NO KEY UPDATE: it excludes the other starts, but not the FOR KEY SHARE that
        # inserting a row referencing the character takes (a form response, say).
        await self._db.execute(
            select(Character.id).where(Character.id == character_id).with_for_update(key_share=True)
        )

    async def open_session_count(self, character_id: int, *, started_after: datetime) -> int:
        """Sessions of the character started after ``started_after`` and not finalized."""
        statement = select(func.count()).where(
            Session.character_id == character_id,
            Session.created_at > started_after,
            Session.finalized_at.is_(None),
        )
        return await self._db.scalar(statement) or 0

    async def lock_for_write(self, caller: Caller, session_id: uuid.UUID) -> SessionRef | None:
        """The caller's session, locked until the transaction ends; None when it is missing
        or not the caller's."""
        if self._backend == "sqlite":
            # SQLite has no row locks, and its driver begins a transaction only at the first
            # write: a no-op write takes the database's write lock before the session is read.
            await self._db.execute(
                update(Session)
                .where(Session.session_id == session_id)
                .values(id=Session.id)
                .execution_options(synchronize_session=False)
            )
        statement = (
            select(Session, Character.pii_redaction)
            .join(Character, Character.id == Session.character_id)
            .where(Session.session_id == session_id, *owned_by(caller))
            .with_for_update(of=Session)
            # The row as it is now, even if an older copy is in this session's identity map.
            .execution_options(populate_existing=True)
        )
        row = (await self._db.execute(statement)).first()
        return None if row is None else _ref(row[0], row[1])

    async def insert_turns(
        self, session_pk: int, turns: Sequence[NewTurn], *, now: datetime, after_seq: int
    ) -> dict[int, int]:
        """Insert the turns whose index is not stored yet, numbered in the batch's order
        from ``after_seq`` + 1; returns the append_seq of each index inserted.

        A turn already stored keeps its number, and the number reserved for its retry is
        never used: a gap, which readers of the stream never notice."""
        rows = [
            {
                "session_pk": session_pk,
                "turn_index": turn.turn_index,
                "role": turn.role,
                "text": turn.text,
                "ts": turn.ts,
                "speaking_duration_seconds": turn.speaking_duration_seconds,
                "was_interrupted": turn.was_interrupted,
                "created_at": now,
                "append_seq": after_seq + position,
            }
            for position, turn in enumerate(turns, start=1)
        ]
        insert = postgres_insert if self._backend == "postgresql" else sqlite_insert
        statement = insert(Turn).on_conflict_do_nothing(index_elements=["session_pk", "turn_index"])
        result = await self._db.execute(statement.returning(Turn.turn_index, Turn.append_seq), rows)
        return {row[0]: row[1] for row in result}

    async def stored_turns(self, session_pk: int, indexes: Iterable[int]) -> dict[int, NewTurn]:
        turns = await self._db.scalars(
            select(Turn).where(Turn.session_pk == session_pk, Turn.turn_index.in_(list(indexes)))
        )
        return {
            turn.turn_index: NewTurn(
                turn_index=turn.turn_index,
                role="assistant" if turn.role == "assistant" else "user",
                text=turn.text,
                ts=turn.ts,
                speaking_duration_seconds=turn.speaking_duration_seconds,
                was_interrupted=turn.was_interrupted,
            )
            for turn in turns
        }

    async def reserve_append_seqs(self, session_pk: int, count: int) -> int:
        """Take the session's next ``count`` append numbers; returns the one before them.

        Read from the row, not from a SessionRef (which may predate an earlier append of
        the same transaction); the caller holds the session's write lock."""
        reserved = await self._db.scalar(
            update(Session)
            .where(Session.id == session_pk)
            .values(
                last_append_seq=Session.last_append_seq + count,
                # Numbering is not a change to the session itself (Anam's updatedAt).
                updated_at=Session.updated_at,
            )
            .returning(Session.last_append_seq)
            .execution_options(synchronize_session=False)
        )
        if reserved is None:  # pragma: no cover - the caller holds the row's lock
            raise LookupError(f"session {session_pk} is gone")
        return int(reserved) - count

    async def count_appended(
        self, session_pk: int, turns: int, text_bytes: int, interruptions: int
    ) -> None:
        """Add what an append stored to the session's counters."""
        await self._db.execute(
            update(Session)
            .where(Session.id == session_pk)
            .values(
                turn_count=Session.turn_count + turns,
                text_bytes=Session.text_bytes + text_bytes,
                interruption_count=Session.interruption_count + interruptions,
                # Counting is not a change to the session itself (Anam's updatedAt).
                updated_at=Session.updated_at,
            )
            .execution_options(synchronize_session=False)
        )

    async def update(self, session_pk: int, **values: Any) -> None:
        """Set columns of the session's row (``updated_at`` follows)."""
        await self._db.execute(
            update(Session)
            .where(Session.id == session_pk)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    async def tenant_slug(self, tenant_id: int) -> str:
        """The slug of a session's tenant (recording keys are scoped by it)."""
        return await self._db.scalar(select(Tenant.slug).where(Tenant.id == tenant_id)) or ""

    async def recording_ready(self, session_id: uuid.UUID, recording_url: str) -> bool:
        """Whether the session holds ``recording_url`` as its recording, ``READY``."""
        found = await self._db.scalar(
            select(Session.id).where(
                Session.session_id == session_id,
                Session.recording_url == recording_url,
                Session.recording_status == RecordingStatus.READY,
            )
        )
        return found is not None

    async def session_pk_of_character(self, session_id: uuid.UUID, character_id: int) -> int | None:
        return await self._db.scalar(
            select(Session.id).where(
                Session.session_id == session_id, Session.character_id == character_id
            )
        )

    async def add_form_response(
        self,
        *,
        character_id: int,
        session_pk: int,
        session_id: uuid.UUID,
        form_id: str,
        values: dict[str, Any],
    ) -> FormResponseRecord:
        response = FormResponse(
            character_id=character_id, session_pk=session_pk, form_id=form_id, values=values
        )
        self._db.add(response)
        await self._db.flush()
        return form_response_record(response, session_id)

    async def session_ids_created_by(self, user_id: int) -> list[uuid.UUID]:
        """The ids of sessions of the user's characters, oldest first."""
        return list(
            await self._db.scalars(
                select(Session.session_id)
                .join(Character, Character.id == Session.character_id)
                .where(Character.created_by_id == user_id)
                .order_by(Session.id)
            )
        )
