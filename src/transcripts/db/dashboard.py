"""The dashboard's reads: Session History, session listings, API keys, form responses.

SQLAlchemy Core selects, scoped to the caller in SQL like the transcript read, with a fixed
number of statements per call however many rows they return. They build the same
dialect-neutral records the hot read does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.engine import Database
from transcripts.db.tables import ApiKey, Character, FormResponse, Session, Tenant, Turn
from transcripts.domain import (
    ApiKeyRecord,
    Caller,
    FormResponseRecord,
    HistoryFilter,
    SessionHistoryPage,
    SessionPage,
    SessionRecord,
    Turns,
    UsageTotals,
)
from transcripts.errors import SESSION_NOT_FOUND, NotFound

__all__ = ["DashboardReads", "api_key_record", "load_session_record"]

# SessionRecord fields as Core columns.
_RECORD_COLUMNS = {
    "id": Session.id,
    "session_id": Session.session_id,
    "tenant_slug": Tenant.slug,
    "character_slug": Character.slug,
    "character_name": Character.name,
    "character_public_id": Character.public_id,
    "user_id": Session.user_id,
    "room_name": Session.room_name,
    "origin_url": Session.origin_url,
    # As stored, so the answer carries the JSON exactly as it was given.
    "metadata_json": cast(Session.metadata_, Text),
    "client_label": Session.client_label,
    "transcripts_enabled": Session.transcripts_enabled,
    "created_at": Session.created_at,
    "updated_at": Session.updated_at,
    "ended_at": Session.ended_at,
    "finalized_at": Session.finalized_at,
    "llm_input_tokens": Session.llm_input_tokens,
    "llm_output_tokens": Session.llm_output_tokens,
    "llm_model": Session.llm_model,
    "llm_provider": Session.llm_provider,
    "stt_audio_seconds": Session.stt_audio_seconds,
    "stt_provider": Session.stt_provider,
    "tts_characters": Session.tts_characters,
    "tts_provider": Session.tts_provider,
    "estimated_cost_micros": Session.estimated_cost_micros,
    "recording_status": Session.recording_status,
    "recording_url": Session.recording_url,
}
_SESSIONS_WITH_OWNERS = Session.__table__.join(
    Character.__table__, Character.id == Session.character_id
).join(Tenant.__table__, Tenant.id == Session.tenant_id)
_TURN_COLUMNS = (
    Turn.turn_index,
    Turn.role,
    Turn.text,
    Turn.ts,
    Turn.speaking_duration_seconds,
    Turn.was_interrupted,
)


def owned_by(caller: Caller) -> list[ColumnElement[bool]]:
    """The ownership rule as SQL: staff see everything, others their own characters' rows."""
    return [] if caller.is_staff else [Character.created_by_id == caller.user_id]


async def _session_records(
    db: AsyncSession, statement: Select[*tuple[Any, ...]], *, with_turns: bool = True
) -> list[SessionRecord]:
    """The sessions ``statement`` selects, with their transcripts: two statements in all."""
    rows = (await db.execute(statement)).mappings().all()
    # A session with transcripts disabled has no transcript to show, whatever was sent.
    turns = (
        await _turns_of(db, [row["id"] for row in rows if row["transcripts_enabled"]])
        if with_turns
        else {}
    )
    return [
        SessionRecord(
            **{
                **row,
                "session_id": str(row["session_id"]),
                "character_public_id": str(row["character_public_id"]),
                "recording_status": row["recording_status"].value,
            },
            turns=(turns.get(row["id"]) or Turns.empty()) if with_turns else None,
        )
        for row in rows
    ]


async def _turns_of(db: AsyncSession, session_pks: Sequence[int]) -> dict[int, Turns]:
    if not session_pks:
        return {}
    rows: dict[int, list[Sequence[Any]]] = {}
    result = await db.execute(
        select(Turn.session_pk, *_TURN_COLUMNS)
        .where(Turn.session_pk.in_(session_pks))
        .order_by(Turn.session_pk, Turn.turn_index)
    )
    for session_pk, *values in result:
        rows.setdefault(session_pk, []).append(values)
    # Row-wise to column-wise, the shape the domain holds a transcript in.
    return {pk: Turns(*map(list, zip(*turns, strict=True))) for pk, turns in rows.items()}


def _select_records() -> Select[*tuple[Any, ...]]:
    return select(*(column.label(name) for name, column in _RECORD_COLUMNS.items())).select_from(
        _SESSIONS_WITH_OWNERS
    )


async def load_session_record(db: AsyncSession, session_pk: int) -> SessionRecord:
    """One session as it stands in ``db``'s transaction (a writer's answer, before commit).

    The caller has already been checked against the session; this read is not scoped.
    """
    records = await _session_records(db, _select_records().where(Session.id == session_pk))
    if not records:
        raise NotFound(SESSION_NOT_FOUND)
    return records[0]


def api_key_record(api_key: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=api_key.id,
        user_id=api_key.user_id,
        name=api_key.name,
        key_preview=api_key.key_preview,
        is_active=api_key.is_active,
        created_at=api_key.created_at,
        last_used_at=api_key.last_used_at,
    )


def _search_condition(search: str) -> ColumnElement[bool]:
    """Anam's search: the session's ID, or a case-insensitive part of its client label."""
    label = Session.client_label.icontains(search, autoescape=True)
    try:
        return or_(Session.session_id == uuid.UUID(search), label)
    except ValueError:
        return label


class DashboardReads:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def list_sessions(
        self,
        caller: Caller,
        *,
        page: int,
        per_page: int,
        persona_id: uuid.UUID | None = None,
        search: str | None = None,
    ) -> SessionPage:
        """A page of the caller's sessions, newest first, without transcripts."""
        conditions = owned_by(caller)
        if persona_id is not None:
            conditions.append(Character.public_id == persona_id)
        if search:
            conditions.append(_search_condition(search))
        async with self._database.session() as db:
            total = await db.scalar(
                select(func.count()).select_from(_SESSIONS_WITH_OWNERS).where(*conditions)
            )
            records = await _session_records(
                db,
                _select_records()
                .where(*conditions)
                .order_by(Session.created_at.desc(), Session.id.desc())
                .limit(per_page)
                .offset((page - 1) * per_page),
                with_turns=False,
            )
        return SessionPage(records=records, total=total or 0)

    async def session_history(
        self, caller: Caller, history: HistoryFilter, *, page: int, page_size: int
    ) -> SessionHistoryPage:
        """Totals over every session the filter selects, and one page of them, newest first."""
        conditions = owned_by(caller)
        if history.character_slug is not None:
            conditions.append(Character.slug == history.character_slug)
        if history.tenant_slug is not None:
            conditions.append(Tenant.slug == history.tenant_slug)
        if history.start is not None:
            conditions.append(Session.created_at >= history.start)
        if history.end is not None:
            conditions.append(Session.created_at <= history.end)
        offset = (page - 1) * page_size
        async with self._database.session() as db:
            sums = (
                await db.execute(
                    select(
                        func.count().label("sessions"),
                        func.coalesce(func.sum(Session.llm_input_tokens), 0).label("llm_input"),
                        func.coalesce(func.sum(Session.llm_output_tokens), 0).label("llm_output"),
                        func.coalesce(func.sum(Session.stt_audio_seconds), 0.0).label("stt"),
                        func.coalesce(func.sum(Session.tts_characters), 0).label("tts"),
                        func.coalesce(func.sum(Session.estimated_cost_micros), 0).label("cost"),
                    )
                    .select_from(_SESSIONS_WITH_OWNERS)
                    .where(*conditions)
                )
            ).one()
            totals = UsageTotals(
                sessions=sums.sessions,
                llm_input_tokens=int(sums.llm_input),
                llm_output_tokens=int(sums.llm_output),
                stt_audio_seconds=float(sums.stt),
                tts_characters=int(sums.tts),
                # PostgreSQL sums a bigint into a numeric.
                estimated_cost_micros=int(sums.cost),
            )
            records = []
            if offset < totals.sessions:
                records = await _session_records(
                    db,
                    _select_records()
                    .where(*conditions)
                    .order_by(Session.created_at.desc(), Session.id.desc())
                    .limit(page_size)
                    .offset(offset),
                )
        return SessionHistoryPage(totals=totals, records=records, page=page, page_size=page_size)

    async def api_keys(self, user_id: int) -> list[ApiKeyRecord]:
        async with self._database.session() as db:
            keys = await db.scalars(
                select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
            )
            return [api_key_record(key) for key in keys]

    async def form_responses(
        self,
        caller: Caller,
        character_slug: str,
        *,
        session_id: uuid.UUID | None = None,
        form_id: str | None = None,
    ) -> list[FormResponseRecord]:
        """A character's form responses with their sessions' ids, oldest first.

        Not the caller's character: no rows, exactly as for an unknown one.
        """
        statement = (
            select(FormResponse, Session.session_id)
            .join(Session, Session.id == FormResponse.session_pk)
            .join(Character, Character.id == FormResponse.character_id)
            .where(Character.slug == character_slug, *owned_by(caller))
            .order_by(FormResponse.created_at, FormResponse.id)
        )
        if session_id is not None:
            statement = statement.where(Session.session_id == session_id)
        if form_id is not None:
            statement = statement.where(FormResponse.form_id == form_id)
        async with self._database.session() as db:
            return [
                form_response_record(response, session)
                for response, session in await db.execute(statement)
            ]


def form_response_record(response: FormResponse, session_id: uuid.UUID) -> FormResponseRecord:
    return FormResponseRecord(
        id=response.id,
        form_id=response.form_id,
        session_id=session_id,
        values=response.values,
        created_at=response.created_at,
    )
