"""The dashboard's reads: Session History, session listings, API keys, form responses.

SQLAlchemy Core selects, scoped to the caller in SQL like the transcript read, with a fixed
number of statements per call however many rows they return. They build the same
dialect-neutral records the hot read does.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, cast, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.engine import Database
from transcripts.db.tables import (
    ApiKey,
    Character,
    FormResponse,
    Session,
    Tenant,
    Turn,
    UsageByCharacterDay,
    UsageByDay,
)
from transcripts.db.usage import RollupScope, totals_between
from transcripts.domain import (
    ApiKeyRecord,
    Caller,
    FormResponseRecord,
    HistoryFilter,
    PageRequest,
    Position,
    SessionHistoryPage,
    SessionPage,
    SessionRecord,
    Turns,
)
from transcripts.errors import SESSION_NOT_FOUND, NotFound

__all__ = ["DashboardReads", "api_key_record", "find_session_records", "load_session_record"]

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
    "counted_turns": Session.turn_count,
    "counted_interruptions": Session.interruption_count,
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
    """The ownership rule as SQL, on a session's row: staff see every session, others the
    sessions of the characters they created (the session's owner, set when it started)."""
    return [] if caller.is_staff else [Session.owner_id == caller.user_id]


def characters_owned_by(caller: Caller) -> list[ColumnElement[bool]]:
    """The same rule on a character's row."""
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


async def find_session_records(
    db: AsyncSession, session_ids: Sequence[uuid.UUID]
) -> dict[str, SessionRecord]:
    """Sessions by their public ids, not scoped (for the service's own work, such as
    webhooks' bodies), by ``session_id``; one that is gone is not in the answer."""
    records = await _session_records(
        db, _select_records().where(Session.session_id.in_(list(session_ids)))
    )
    return {record.session_id: record for record in records}


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
    """Anam's search: a session id is looked up as one (the unique index); anything else is
    a case-insensitive part of the client label (a trigram index serves it on PostgreSQL)."""
    try:
        return Session.session_id == uuid.UUID(search)
    except ValueError:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return Session.client_label.ilike(f"%{escaped}%", escape="\\")


def _character_id(column: Any, value: object) -> ColumnElement[Any]:
    """The id of the character whose ``column`` is ``value`` (NULL, so no match, if none)."""
    return select(Character.id).where(column == value).scalar_subquery()


def _after(
    position: Position, created_at: Any = Session.created_at, id_: Any = Session.id
) -> ColumnElement[bool]:
    """Sessions after ``position`` in the listings' order (newest first, then highest id).

    The first condition is implied by the second; it is there for the index: a btree bounds
    its scan by ``created_at <=`` but only filters by the OR, so without it a cursor deep in
    an owner's history would walk every entry before the position (50,000 at page 1000)."""
    return and_(
        created_at <= position.created_at,
        or_(
            created_at < position.created_at,
            and_(created_at == position.created_at, id_ < position.id),
        ),
    )


async def _page(
    db: AsyncSession,
    conditions: list[ColumnElement[bool]],
    request: PageRequest,
    *,
    with_turns: bool,
) -> tuple[list[SessionRecord], Position | None]:
    """One page of the sessions ``conditions`` select, newest first, and the position to
    continue from when more follow. The page is found on an index of the sessions alone
    (its scope, then created_at and id), then only its rows are read whole."""
    keyset = [*conditions, _after(request.after)] if request.after else conditions
    found = (
        await db.execute(
            select(Session.id, Session.created_at)
            .where(*keyset)
            .order_by(Session.created_at.desc(), Session.id.desc())
            .offset(request.offset)
            .limit(request.size + 1)
        )
    ).all()
    return await _load_page(db, found, request, with_turns=with_turns)


async def _counted_page(
    db: AsyncSession, conditions: list[ColumnElement[bool]], request: PageRequest
) -> tuple[int, list[SessionRecord], Position | None]:
    """How many sessions ``conditions`` select, and one page of them without transcripts, in
    one pass over them. For a search by a part of the label the index only proposes rows
    (trigrams are lossy): each match is confirmed on its row, so counting the matches reads
    them all, and the page is then a top-N sort of what the count has read, not a second
    walk down the owner's sessions filtering each."""
    matches = select(Session.id, Session.created_at).where(*conditions).cte("matches")
    newest_first = (matches.c.created_at.desc(), matches.c.id.desc())
    keyset = [_after(request.after, matches.c.created_at, matches.c.id)] if request.after else []
    page = (
        select(matches.c.id, matches.c.created_at)
        .where(*keyset)
        .order_by(*newest_first)
        .offset(request.offset)
        .limit(request.size + 1)
        .subquery("page")
    )
    total = select(func.count().label("total")).select_from(matches).subquery("total")
    rows = (
        await db.execute(
            select(total.c.total, page.c.id, page.c.created_at)
            .select_from(total.outerjoin(page, true()))
            .order_by(page.c.created_at.desc(), page.c.id.desc())
        )
    ).all()
    # One row even when the page is empty (the count's), with no session in it.
    found = [row for row in rows if row.id is not None]
    records, next_position = await _load_page(db, found, request, with_turns=False)
    return int(rows[0].total), records, next_position


async def _load_page(
    db: AsyncSession, found: Sequence[Any], request: PageRequest, *, with_turns: bool
) -> tuple[list[SessionRecord], Position | None]:
    """The sessions ``found`` (id and created_at, one more than a page when more follow),
    read whole, and the position to continue from."""
    more = len(found) > request.size
    found = found[: request.size]
    if not found:
        return [], None
    records = {
        record.id: record
        for record in await _session_records(
            db,
            _select_records().where(Session.id.in_([row.id for row in found])),
            with_turns=with_turns,
        )
    }
    last = found[-1]
    return [records[row.id] for row in found], Position(last.created_at, last.id) if more else None


def _history_scope(
    caller: Caller, history: HistoryFilter
) -> tuple[list[ColumnElement[bool]], RollupScope]:
    """Session History's filters, on the sessions and on the rollup rows that sum them."""
    sessions = owned_by(caller)
    rollup: list[ColumnElement[bool]] = []
    if not caller.is_staff:
        rollup.append(UsageByCharacterDay.owner_id == caller.user_id)
    if history.character_slug is not None:
        character = _character_id(Character.slug, history.character_slug)
        sessions.append(Session.character_id == character)
        rollup.append(UsageByCharacterDay.character_id == character)
    if history.tenant_slug is not None:
        tenant = select(Tenant.id).where(Tenant.slug == history.tenant_slug).scalar_subquery()
        sessions.append(Session.tenant_id == tenant)
        rollup.append(UsageByCharacterDay.tenant_id == tenant)
    if not rollup:
        # Staff, unfiltered: everyone's totals, a few rows a day.
        return sessions, RollupScope(UsageByDay, [])
    return sessions, RollupScope(UsageByCharacterDay, rollup)


def _dated(
    conditions: list[ColumnElement[bool]], start: datetime | None, end: datetime | None
) -> list[ColumnElement[bool]]:
    dated = list(conditions)
    if start is not None:
        dated.append(Session.created_at >= start)
    if end is not None:
        dated.append(Session.created_at <= end)
    return dated


class DashboardReads:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def list_sessions(
        self,
        caller: Caller,
        request: PageRequest,
        *,
        persona_id: uuid.UUID | None = None,
        search: str | None = None,
    ) -> SessionPage:
        """A page of the caller's sessions, newest first, without transcripts, and how many
        there are in all."""
        conditions = owned_by(caller)
        rollup = [] if caller.is_staff else [UsageByCharacterDay.owner_id == caller.user_id]
        table: type[UsageByCharacterDay] | type[UsageByDay] = UsageByCharacterDay
        if persona_id is not None:
            character = _character_id(Character.public_id, persona_id)
            conditions.append(Session.character_id == character)
            rollup.append(UsageByCharacterDay.character_id == character)
        elif caller.is_staff:
            table = UsageByDay
        async with self._database.session() as db:
            if search:
                # Matches are counted from the sessions themselves, through the index the
                # search uses: an id matches one session, a label part those it is in.
                conditions.append(_search_condition(search))
                total, records, next_position = await _counted_page(db, conditions, request)
                return SessionPage(records=records, total=total, next_position=next_position)
            summed = await db.scalar(select(func.sum(table.sessions)).where(*rollup))
            records, next_position = await _page(db, conditions, request, with_turns=False)
        return SessionPage(records=records, total=int(summed or 0), next_position=next_position)

    async def session_history(
        self,
        caller: Caller,
        history: HistoryFilter,
        request: PageRequest,
        *,
        with_turns: bool = True,
    ) -> SessionHistoryPage:
        """Totals over every session the filter selects (from the rollups), and one page of
        them, newest first."""
        sessions, rollup = _history_scope(caller, history)
        async with self._database.session() as db:
            totals = await totals_between(
                db,
                start=history.start,
                end=history.end,
                session_conditions=sessions,
                rollup=rollup,
            )
            records, next_position = await _page(
                db, _dated(sessions, history.start, history.end), request, with_turns=with_turns
            )
        return SessionHistoryPage(
            totals=totals,
            records=records,
            page_size=request.size,
            next_position=next_position,
        )

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
            .where(Character.slug == character_slug, *characters_owned_by(caller))
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
