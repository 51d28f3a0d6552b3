"""The transcript read: the hot path, one scoped round trip on the driver connection.

One statement resolves the caller (API key or token user), applies the ownership rule and
returns the session with its whole transcript, column-wise. It is hand-written SQL per
backend, run on the driver connection SQLAlchemy's pool lends (``Database.fetch_row``),
and decoded straight into the dialect-neutral ``SessionRecord``: no ORM, no Core result.

The select list is generated from the names of ``SessionRecord``'s fields, so a row's
columns are found by name (``_AT``), never by a position written out by hand.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import select, text

from transcripts.db.engine import Database
from transcripts.db.key_usage import ApiKeyUsage
from transcripts.db.tables import Turn
from transcripts.domain import (
    ApiKeyCredentials,
    Caller,
    Credentials,
    SessionRecord,
    Turns,
    UserCredentials,
)
from transcripts.errors import SESSION_NOT_FOUND, NotAuthenticated, NotFound

__all__ = [
    "LONG_TRANSCRIPT_TURNS",
    "SESSION_SQL",
    "TranscriptReads",
    "session_from_row",
]

Backend = Literal["postgresql", "sqlite"]
CredentialKind = Literal["key", "user"]

# From this many turns on, mapping a transcript to its dialect and encoding it take
# milliseconds of CPU (about 2 ms at 1,000 turns, 15-45 ms at 10,000, by dialect), against
# about 5 µs for stepping back.
LONG_TRANSCRIPT_TURNS = 1_000

# Caller resolution: zero rows means the credentials name no active user.
_CALLER_FIELDS = ("user_id", "is_staff", "tenant_id", "api_key_id", "api_key_last_used_at")
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
      ON s.session_id = {param} AND (caller.is_staff OR s.owner_id = caller.user_id)
"""

# Each SessionRecord field and the column that holds it.
_SESSION_COLUMNS = {
    "id": "s.id",
    "session_id": "s.session_id",
    "tenant_slug": "tn.slug",
    "character_slug": "c.slug",
    "character_name": "c.name",
    "character_public_id": "c.public_id",
    "user_id": "s.user_id",
    "room_name": "s.room_name",
    "origin_url": "s.origin_url",
    # As stored, so the answer carries the JSON exactly as it was given.
    "metadata_json": "s.metadata",
    "client_label": "s.client_label",
    "transcripts_enabled": "s.transcripts_enabled",
    "created_at": "s.created_at",
    "updated_at": "s.updated_at",
    "ended_at": "s.ended_at",
    "finalized_at": "s.finalized_at",
    "llm_input_tokens": "s.llm_input_tokens",
    "llm_output_tokens": "s.llm_output_tokens",
    "llm_model": "s.llm_model",
    "llm_provider": "s.llm_provider",
    "stt_audio_seconds": "s.stt_audio_seconds",
    "stt_provider": "s.stt_provider",
    "tts_characters": "s.tts_characters",
    "tts_provider": "s.tts_provider",
    "estimated_cost_micros": "s.estimated_cost_micros",
    "recording_status": "s.recording_status",
    "recording_url": "s.recording_url",
    "counted_turns": "s.turn_count",
    "counted_interruptions": "s.interruption_count",
}
# asyncpg would decode these into a UUID object and a parsed JSON value: orjson takes
# neither as it is, so PostgreSQL sends them as text.
_TEXT_ON_POSTGRES = {"session_id", "character_public_id", "metadata_json"}
_SESSION_FIELDS = [field.name for field in fields(SessionRecord) if field.name != "turns"]
if list(_SESSION_COLUMNS) != _SESSION_FIELDS:  # pragma: no cover - a programming error
    raise RuntimeError("_SESSION_COLUMNS must name SessionRecord's fields, in order")

# Where each named column sits in a row: the caller, the session, then the transcript.
_AT = {
    name: position
    for position, name in enumerate([*_CALLER_FIELDS, *_SESSION_FIELDS, *Turns._fields])
}
_SESSION_START = _AT[_SESSION_FIELDS[0]]
_TURNS_START = _AT[Turns._fields[0]]
_SESSION_SLICE = slice(_SESSION_START, _TURNS_START)

# SQLite returns these as text or integers; PostgreSQL (through the casts above) as they are.
_SQLITE_UUIDS = ("session_id", "character_public_id")
_SQLITE_DATETIMES = ("created_at", "updated_at", "ended_at", "finalized_at")
_SQLITE_BOOLEANS = ("transcripts_enabled",)

# A session with transcripts disabled has no transcript to show, whatever was sent.
_ORDERED_TURNS = """
    (SELECT * FROM turns
     WHERE turns.session_pk = s.id AND s.transcripts_enabled
     ORDER BY turns.turn_index) o
"""

# PostgreSQL: the transcript comes back as six arrays, which asyncpg decodes in C.
_POSTGRES_TURN_COLUMNS = "".join(f", t.{name}" for name in Turns._fields)
_POSTGRES_TURNS_JOIN = f"""
    LEFT JOIN LATERAL (
        SELECT {", ".join(f"array_agg(o.{name}) AS {name}" for name in Turns._fields)}
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

# The columns of Turns, in its order.
_BATCH_COLUMNS = tuple(getattr(Turn, name) for name in Turns._fields)

_CALLERS = {"key": _CALLER_BY_KEY, "user": _CALLER_BY_USER}
_PARAMETERS = {"postgresql": ("$1", "$2"), "sqlite": (":caller", ":session_id")}


def _session_sql(backend: Backend, kind: CredentialKind, with_turns: bool) -> str:
    """The scoped session read, for one backend and one kind of credentials."""
    caller_param, session_param = _PARAMETERS[backend]
    caller_columns = ", ".join(f"caller.{name}" for name in _CALLER_FIELDS)
    session_columns = ", ".join(
        f"{column}::text" if backend == "postgresql" and name in _TEXT_ON_POSTGRES else column
        for name, column in _SESSION_COLUMNS.items()
    )
    turn_columns = turns_join = ""
    if with_turns and backend == "postgresql":
        turn_columns, turns_join = _POSTGRES_TURN_COLUMNS, _POSTGRES_TURNS_JOIN
    elif with_turns:
        turn_columns = _SQLITE_TURN_COLUMNS
    return (
        f"WITH caller AS ({_CALLERS[kind].format(param=caller_param)})"
        f" SELECT {caller_columns}, {session_columns}{turn_columns}"
        + _SCOPED_SESSION_JOIN.format(param=session_param)
        + turns_join
    )


SESSION_SQL = {
    (backend, kind, with_turns): _session_sql(backend, kind, with_turns)
    for backend in ("postgresql", "sqlite")
    for kind in ("key", "user")
    for with_turns in (True, False)
}

CALLER_SQL = {kind: text(sql.format(param=":caller")) for kind, sql in _CALLERS.items()}


def _credential_kind_and_value(credentials: Credentials) -> tuple[CredentialKind, str | int]:
    if isinstance(credentials, ApiKeyCredentials):
        return "key", credentials.key_hash
    if isinstance(credentials, UserCredentials):
        return "user", credentials.user_id
    raise TypeError(f"unknown credentials {type(credentials).__name__}")


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def _as_datetime(value: datetime | str | None) -> datetime | None:
    return _sqlite_datetime(value) if isinstance(value, str) else value


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
    session = row[_SESSION_SLICE]
    if not with_turns:
        return _session_record(session, None)
    turns = row[_TURNS_START:]
    return _session_record(session, Turns.empty() if turns[0] is None else _ordered(Turns(*turns)))


_SESSION_AT = {name: position for position, name in enumerate(_SESSION_FIELDS)}


def _sqlite_record(row: Sequence[Any], with_turns: bool) -> SessionRecord:
    session = list(row[_SESSION_SLICE])
    for name in _SQLITE_UUIDS:
        session[_SESSION_AT[name]] = str(uuid.UUID(hex=session[_SESSION_AT[name]]))
    for name in _SQLITE_BOOLEANS:
        session[_SESSION_AT[name]] = bool(session[_SESSION_AT[name]])
    for name in _SQLITE_DATETIMES:
        session[_SESSION_AT[name]] = _sqlite_datetime(session[_SESSION_AT[name]])
    if not with_turns:
        return _session_record(session, None)
    packed = row[_TURNS_START]
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


def session_from_row(
    backend: Backend, row: Sequence[Any], with_turns: bool
) -> SessionRecord | None:
    """Decode a row of ``SESSION_SQL``: None when the session is missing or not the caller's."""
    if row[_SESSION_START] is None:
        return None
    if backend == "postgresql":
        return _postgres_record(row, with_turns)
    return _sqlite_record(row, with_turns)


class TranscriptReads:
    """The scoped reads every transcript route makes: the session, and the caller alone."""

    def __init__(self, database: Database, key_usage: ApiKeyUsage) -> None:
        self._database = database
        self._key_usage = key_usage

    async def session(
        self, credentials: Credentials, session_id: uuid.UUID, *, with_turns: bool = True
    ) -> SessionRecord:
        """The session (and its transcript), if the caller may see it. One round trip."""
        kind, value = _credential_kind_and_value(credentials)
        backend = self._database.backend
        row = await self._database.fetch_row(
            SESSION_SQL[backend, kind, with_turns],
            (value, session_id),
            {"caller": value, "session_id": session_id.hex},
        )
        if row is None:
            raise NotAuthenticated("Invalid or inactive credentials.")
        self._key_usage.seen(row[_AT["api_key_id"]], _as_datetime(row[_AT["api_key_last_used_at"]]))
        record = session_from_row(backend, row, with_turns)
        if record is None:
            raise NotFound(SESSION_NOT_FOUND)
        if with_turns and record.turn_count >= LONG_TRANSCRIPT_TURNS:
            await _step_back()
        return record

    async def turn_batches(self, record: SessionRecord, size: int) -> AsyncIterator[Turns]:
        """The transcript of a session already read (and so scoped) with ``session``, in turn
        order, ``size`` turns a statement: each batch is a range of the primary key, read on a
        connection held only for that statement, so neither memory nor a pooled connection is
        held for the whole of a long transcript while it is sent."""
        if not record.transcripts_enabled:
            return
        after = -1
        while True:
            statement = (
                select(*_BATCH_COLUMNS)
                .where(Turn.session_pk == record.id, Turn.turn_index > after)
                .order_by(Turn.turn_index)
                .limit(size)
            )
            async with self._database.session() as session:
                rows = (await session.execute(statement)).all()
            if not rows:
                return
            yield Turns._make(list(column) for column in zip(*rows, strict=True))
            if len(rows) < size:
                return
            after = rows[-1][0]

    async def caller(self, credentials: Credentials) -> Caller:
        """Who the credentials name, for routes that read more than one session."""
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
