"""Reads. Every query is scoped to its caller inside the SQL itself.

The transcript read is the hot path: one statement resolves the caller (API key or token
user), applies the ownership rule and returns the session with its whole transcript,
column-wise. It runs on the driver connection with hand-written SQL per backend, and
decodes straight into the dialect-neutral ``SessionRecord``.

The dashboard reads (Session History, API keys, form responses) are SQLAlchemy Core
selects with a fixed number of statements per call, however many rows they return.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import ColumnElement, Select, Text, cast, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from transcripts.db.engine import Database
from transcripts.db.tables import ApiKey, Character, FormResponse, Session, Tenant, Turn
from transcripts.domain import (
    ApiKeyCredentials,
    Caller,
    Credentials,
    HistoryFilter,
    SessionHistoryPage,
    SessionPage,
    SessionRecord,
    Turns,
    UsageTotals,
    UserCredentials,
)
from transcripts.errors import NotAuthenticated, NotFound

Backend = Literal["postgresql", "sqlite"]
CredentialKind = Literal["key", "user"]

__all__ = [
    "SESSION_NOT_FOUND",
    "SESSION_SQL",
    "ApiKeyUsage",
    "Repository",
    "load_session_record",
    "session_from_row",
]

logger = logging.getLogger(__name__)

SESSION_NOT_FOUND = "Session not found."

# From this many turns on, mapping a transcript to its dialect and encoding it take
# milliseconds of CPU (about 2 ms at 1,000 turns, 15-45 ms at 10,000, by dialect), against
# about 5 µs for stepping back.
LONG_TRANSCRIPT_TURNS = 1_000

# Caller resolution: zero rows means the credentials name no active user.
_CALLER_BY_KEY = """
    SELECT u.id AS user_id, u.is_staff, u.tenant_id, k.id AS api_key_id,
           k.last_used_at AS api_key_last_used_at
    FROM api_keys k JOIN users u ON u.id = k.user_id
    WHERE k.key_hash = {param} AND k.is_active AND u.is_active
"""
_CALLER_BY_USER = """
    SELECT u.id AS user_id, u.is_staff, u.tenant_id, NULL AS api_key_id,
           NULL AS api_key_last_used_at
    FROM users u
    WHERE u.id = {param} AND u.is_active
"""

# The ownership rule. It lives in the join condition, so a session that exists but is not
# the caller's produces exactly the row a missing session produces.
_SCOPED_SESSION_JOIN = """
    FROM caller
    LEFT JOIN (sessions s
               JOIN characters c ON c.id = s.character_id
               JOIN tenants tn ON tn.id = s.tenant_id)
      ON s.session_id = {param} AND (caller.is_staff OR c.created_by_id = caller.user_id)
"""

_SESSION_COLUMNS = """
    caller.user_id, caller.is_staff, caller.tenant_id, caller.api_key_id,
    caller.api_key_last_used_at,
    s.id, {session_uuid}, tn.slug, c.slug, c.name, {character_uuid}, s.user_id, s.room_name,
    s.origin_url, {metadata}, s.client_label, s.transcripts_enabled, s.created_at,
    s.updated_at, s.ended_at, s.finalized_at, s.llm_input_tokens, s.llm_output_tokens,
    s.llm_model, s.llm_provider, s.stt_audio_seconds, s.stt_provider, s.tts_characters,
    s.tts_provider, s.estimated_cost_micros, s.recording_status, s.recording_url
"""

# A session with transcripts disabled has no transcript to show, whatever was sent.
_ORDERED_TURNS = """
    (SELECT * FROM turns
     WHERE turns.session_pk = s.id AND s.transcripts_enabled
     ORDER BY turns.turn_index) o
"""

# PostgreSQL: the transcript comes back as six arrays, which asyncpg decodes in C.
_POSTGRES_TURN_COLUMNS = (
    ", t.turn_index, t.role, t.text, t.ts, t.speaking_duration_seconds, t.was_interrupted"
)
_POSTGRES_TURNS_JOIN = f"""
    LEFT JOIN LATERAL (
        SELECT array_agg(o.turn_index) AS turn_index, array_agg(o.role) AS role,
               array_agg(o.text) AS text, array_agg(o.ts) AS ts,
               array_agg(o.speaking_duration_seconds) AS speaking_duration_seconds,
               array_agg(o.was_interrupted) AS was_interrupted
        FROM {_ORDERED_TURNS}
    ) t ON true
"""

# SQLite: one JSON object of six arrays. Floats travel as quote() text, the one rendering
# that round-trips every double (SQLite's JSON and printf keep only 15-16 digits).
_SQLITE_TURN_COLUMNS = f""",
    (SELECT json_object(
        'turn_index', json_group_array(o.turn_index),
        'role', json_group_array(o.role),
        'text', json_group_array(o.text),
        'ts', json_group_array(quote(o.ts)),
        'speaking_duration_seconds', json_group_array(
            CASE WHEN o.speaking_duration_seconds IS NULL THEN NULL
                 ELSE quote(o.speaking_duration_seconds) END),
        'was_interrupted', json_group_array(o.was_interrupted))
     FROM {_ORDERED_TURNS}
     HAVING count(*) > 0)
"""


def _session_sql(backend: Backend, kind: CredentialKind, with_turns: bool) -> str:
    """The scoped session read, for one backend and one kind of credentials."""
    if backend == "postgresql":
        caller = _CALLER_BY_KEY if kind == "key" else _CALLER_BY_USER
        columns = _SESSION_COLUMNS.format(
            session_uuid="s.session_id::text",
            character_uuid="c.public_id::text",
            metadata="s.metadata::text",
        )
        return (
            f"WITH caller AS ({caller.format(param='$1')}) SELECT {columns}"
            + (_POSTGRES_TURN_COLUMNS if with_turns else "")
            + _SCOPED_SESSION_JOIN.format(param="$2")
            + (_POSTGRES_TURNS_JOIN if with_turns else "")
        )
    caller = _CALLER_BY_KEY if kind == "key" else _CALLER_BY_USER
    columns = _SESSION_COLUMNS.format(
        session_uuid="s.session_id", character_uuid="c.public_id", metadata="s.metadata"
    )
    return (
        f"WITH caller AS ({caller.format(param=':caller')}) SELECT {columns}"
        + (_SQLITE_TURN_COLUMNS if with_turns else "")
        + _SCOPED_SESSION_JOIN.format(param=":session_id")
    )


SESSION_SQL = {
    (backend, kind, with_turns): _session_sql(backend, kind, with_turns)
    for backend in ("postgresql", "sqlite")
    for kind in ("key", "user")
    for with_turns in (True, False)
}

CALLER_SQL = {
    "key": text(_CALLER_BY_KEY.format(param=":caller")),
    "user": text(_CALLER_BY_USER.format(param=":caller")),
}

_CALLER_COLUMNS = 5


def _credential_kind_and_value(credentials: Credentials) -> tuple[CredentialKind, str | int]:
    if isinstance(credentials, ApiKeyCredentials):
        return "key", credentials.key_hash
    if isinstance(credentials, UserCredentials):
        return "user", credentials.user_id
    raise TypeError(f"unknown credentials {type(credentials).__name__}")


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _sqlite_uuid(value: str) -> str:
    return str(uuid.UUID(hex=value))


_SESSION_FIELDS = [field.name for field in fields(SessionRecord) if field.name != "turns"]
_TURNS_OFFSET = _CALLER_COLUMNS + len(_SESSION_FIELDS)


def _session_record(values: Sequence[Any], turns: Turns | None) -> SessionRecord:
    return SessionRecord(**dict(zip(_SESSION_FIELDS, values, strict=True)), turns=turns)


def _ordered(turns: Turns) -> Turns:
    """Aggregates over an ordered subquery keep its order in practice, but SQL does not
    promise it; checking costs one C-speed pass over the indexes."""
    indexes = turns.turn_index
    if indexes == sorted(indexes):
        return turns
    order = sorted(range(len(indexes)), key=indexes.__getitem__)
    return Turns._make([column[position] for position in order] for column in turns)


def _postgres_record(row: Sequence[Any], with_turns: bool) -> SessionRecord:
    session = row[_CALLER_COLUMNS:_TURNS_OFFSET]
    if not with_turns:
        return _session_record(session, None)
    turns = row[_TURNS_OFFSET:]
    return _session_record(session, Turns.empty() if turns[0] is None else _ordered(Turns(*turns)))


def _sqlite_record(row: Sequence[Any], with_turns: bool) -> SessionRecord:
    session = list(row[_CALLER_COLUMNS:_TURNS_OFFSET])
    session[1] = _sqlite_uuid(session[1])
    session[5] = _sqlite_uuid(session[5])
    session[11] = bool(session[11])
    for datetime_column in (12, 13, 14, 15):
        session[datetime_column] = _sqlite_datetime(session[datetime_column])
    if not with_turns:
        return _session_record(session, None)
    packed = row[-1]
    if packed is None:
        return _session_record(session, Turns.empty())
    columns = orjson.loads(packed)
    turns = Turns(
        turn_index=columns["turn_index"],
        role=columns["role"],
        text=columns["text"],
        ts=[float(value) for value in columns["ts"]],
        speaking_duration_seconds=[
            None if value is None else float(value)
            for value in columns["speaking_duration_seconds"]
        ],
        was_interrupted=[bool(value) for value in columns["was_interrupted"]],
    )
    return _session_record(session, _ordered(turns))


# SessionRecord fields as Core columns, for the reads that build records off the hot path.
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


def _owned_by(caller: Caller) -> list[ColumnElement[bool]]:
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


def session_from_row(
    backend: Backend, row: Sequence[Any], with_turns: bool
) -> SessionRecord | None:
    """Decode a row of ``SESSION_SQL``: None when the session is missing or not the caller's."""
    if row[_CALLER_COLUMNS] is None:
        return None
    if backend == "postgresql":
        return _postgres_record(row, with_turns)
    return _sqlite_record(row, with_turns)


class ApiKeyUsage:
    """Keeps ``api_keys.last_used_at`` roughly current without a write on every read.

    A key's timestamp is refreshed at most once per ``interval`` and after the response,
    in a task of its own. The in-process memo only saves writes; the UPDATE's own condition
    keeps replicas from fighting over the row.
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
                    text(
                        "UPDATE api_keys SET last_used_at = :now WHERE id = :id"
                        " AND (last_used_at IS NULL OR last_used_at < :cutoff)"
                    ).bindparams(now=now, id=api_key_id, cutoff=cutoff),
                )
        except Exception:
            logger.warning("could not record API key use", exc_info=True)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class Repository:
    def __init__(self, database: Database, key_usage: ApiKeyUsage) -> None:
        self._database = database
        self._key_usage = key_usage

    async def session(
        self, credentials: Credentials, session_id: uuid.UUID, *, with_turns: bool = True
    ) -> SessionRecord:
        """The session (and its transcript), if the caller may see it. One round trip."""
        kind, value = _credential_kind_and_value(credentials)
        backend = self._database.backend
        sql = SESSION_SQL[backend, kind, with_turns]
        row = await self._database.fetch_row(
            sql, (value, session_id), {"caller": value, "session_id": session_id.hex}
        )
        if row is None:
            raise NotAuthenticated("Invalid or inactive credentials.")
        self._key_usage.seen(row[3], _as_datetime(row[4]))
        record = session_from_row(backend, row, with_turns)
        if record is None:
            raise NotFound(SESSION_NOT_FOUND)
        if with_turns and record.turn_count >= LONG_TRANSCRIPT_TURNS:
            await _step_back()
        return record

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
        conditions = _owned_by(caller)
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

    async def resolve_caller(self, credentials: Credentials) -> Caller:
        kind, value = _credential_kind_and_value(credentials)
        async with self._database.session() as session:
            row = (await session.execute(CALLER_SQL[kind], {"caller": value})).first()
        if row is None:
            raise NotAuthenticated("Invalid or inactive credentials.")
        self._key_usage.seen(row.api_key_id, _as_datetime(row.api_key_last_used_at))
        return Caller(
            user_id=row.user_id,
            is_staff=bool(row.is_staff),
            tenant_id=row.tenant_id,
            api_key_id=row.api_key_id,
        )

    async def session_history(
        self, caller: Caller, history: HistoryFilter, *, page: int, page_size: int
    ) -> SessionHistoryPage:
        """Totals over every session the filter selects, and one page of them, newest first."""
        conditions = _owned_by(caller)
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
                        func.count(),
                        func.coalesce(func.sum(Session.llm_input_tokens), 0),
                        func.coalesce(func.sum(Session.llm_output_tokens), 0),
                        func.coalesce(func.sum(Session.stt_audio_seconds), 0.0),
                        func.coalesce(func.sum(Session.tts_characters), 0),
                        func.coalesce(func.sum(Session.estimated_cost_micros), 0),
                    )
                    .select_from(_SESSIONS_WITH_OWNERS)
                    .where(*conditions)
                )
            ).one()
            totals = UsageTotals(
                sessions=sums[0],
                llm_input_tokens=int(sums[1]),
                llm_output_tokens=int(sums[2]),
                stt_audio_seconds=float(sums[3]),
                tts_characters=int(sums[4]),
                # PostgreSQL sums a bigint into a numeric.
                estimated_cost_micros=int(sums[5]),
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

    async def api_keys(self, user_id: int) -> list[ApiKey]:
        async with self._database.session() as db:
            return list(
                await db.scalars(
                    select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id)
                )
            )

    async def form_responses(
        self,
        caller: Caller,
        character_slug: str,
        *,
        session_id: uuid.UUID | None = None,
        form_id: str | None = None,
    ) -> list[tuple[FormResponse, uuid.UUID]]:
        """A character's form responses with their sessions' ids, oldest first.

        Not the caller's character: no rows, exactly as for an unknown one.
        """
        statement = (
            select(FormResponse, Session.session_id)
            .join(Session, Session.id == FormResponse.session_pk)
            .join(Character, Character.id == FormResponse.character_id)
            .where(Character.slug == character_slug, *_owned_by(caller))
            .order_by(FormResponse.created_at, FormResponse.id)
        )
        if session_id is not None:
            statement = statement.where(Session.session_id == session_id)
        if form_id is not None:
            statement = statement.where(FormResponse.form_id == form_id)
        async with self._database.session() as db:
            return [(response, session) for response, session in await db.execute(statement)]


async def _step_back() -> None:
    """Let the requests that are ready go first, before a long stretch of CPU work.

    While a long transcript is mapped to its dialect and encoded, the event loop does nothing
    else: requests that have just arrived wait to send their queries, and the database idles
    though it could be preparing their rows meanwhile. Measured with the database's backends
    on the other core, 16 clients reading a 10,000-turn transcript got 0.75 of the baseline's
    throughput (B0, whose asyncpg pool releases a connection in a task of its own, so that each
    of its reads waits two rounds of the loop after its rows arrive) and 0.98 once this read
    stepped back too. Two yields, for uvloop (what ``transcripts serve`` runs), which calls
    I/O callbacks during its poll, between two rounds of ready callbacks: the first yield
    lets that poll happen, and what it wakes (a request's first step, which sends its query)
    is queued behind this task; the second goes behind it. asyncio's own loop queues an I/O
    callback for the next round first, so there the mapping still comes first: slower, not
    wrong.
    """
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def _search_condition(search: str) -> ColumnElement[bool]:
    """Anam's search: the session's ID, or a case-insensitive part of its client label."""
    label = Session.client_label.icontains(search, autoescape=True)
    try:
        return or_(Session.session_id == uuid.UUID(search), label)
    except ValueError:
        return label


def _as_datetime(value: datetime | str | None) -> datetime | None:
    return _sqlite_datetime(value) if isinstance(value, str) else value
