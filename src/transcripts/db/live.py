"""The live transcript's statements: announcing a change, listening for it, reading it.

A change is announced from the writer's own transaction. On PostgreSQL that is
``pg_notify``, which the server delivers only if the transaction commits; on SQLite (one
process) the announcement waits on the unit of work and is handed to the process's
listener when it commits. A notice carries ids only (the session, the last append_seq):
a listener reads the turns themselves from the database (``LiveReads``), never from it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session as OrmSession

from transcripts.db.engine import Database
from transcripts.db.tables import Session, Turn
from transcripts.domain import LiveSession, LiveTurn

__all__ = [
    "CHANNEL",
    "FINALIZED",
    "InProcessNotices",
    "LiveReads",
    "PostgresListener",
    "announce_finalized",
    "announce_turns",
    "parse_notice",
]

logger = logging.getLogger(__name__)

CHANNEL = "transcripts_live"
# The seq a finalize announces: after every turn the session can have.
FINALIZED = 2**63 - 1
_PENDING = "transcripts.live.pending"

Deliver = Callable[[str, int], None]


async def announce_turns(db: AsyncSession, session_id: uuid.UUID, last_seq: int) -> None:
    """Tell listeners, once ``db`` commits, that the session's turns up to ``last_seq`` are
    stored."""
    await _announce(db, session_id, last_seq)


async def announce_finalized(db: AsyncSession, session_id: uuid.UUID) -> None:
    await _announce(db, session_id, FINALIZED)


async def _announce(db: AsyncSession, session_id: uuid.UUID, seq: int) -> None:
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": f"{session_id}:{seq}"},
        )
        return
    db.sync_session.info.setdefault(_PENDING, []).append((str(session_id), seq))


def parse_notice(payload: str) -> tuple[str, int] | None:
    """``(session_id, seq)`` of a notice; None for one this version did not write."""
    session_id, _, seq = payload.partition(":")
    try:
        return str(uuid.UUID(session_id)), int(seq)
    except ValueError:
        return None


class InProcessNotices:
    """SQLite: hands each committed announcement of ``database``'s units of work to
    ``deliver``; a rolled-back one is dropped."""

    def __init__(self, database: Database, deliver: Deliver) -> None:
        self._session_class = database.sync_session_class
        self._deliver = deliver
        event.listen(self._session_class, "after_commit", self._committed)
        event.listen(self._session_class, "after_rollback", self._rolled_back)

    def _committed(self, session: OrmSession) -> None:
        for session_id, seq in session.info.pop(_PENDING, ()):
            self._deliver(session_id, seq)

    def _rolled_back(self, session: OrmSession) -> None:
        session.info.pop(_PENDING, None)

    def close(self) -> None:
        event.remove(self._session_class, "after_commit", self._committed)
        event.remove(self._session_class, "after_rollback", self._rolled_back)


class PostgresListener:
    """One LISTEN connection per process, kept open: after it is lost, it connects again
    with backoff and calls ``on_reconnect`` (whatever was announced meanwhile is lost, so
    every listener must read again from what it last sent)."""

    def __init__(
        self,
        database_url: str,
        deliver: Deliver,
        on_reconnect: Callable[[], None],
        *,
        connect_timeout: float,
        check_every: float = 5.0,
        backoff: Sequence[float] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0),
    ) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._connect_timeout = connect_timeout
        self._check_every = check_every
        self._backoff = backoff
        self.connected = asyncio.Event()

    def _received(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        notice = parse_notice(payload)
        if notice is not None:
            self._deliver(*notice)

    async def run(self) -> None:
        """Listen until cancelled."""
        failures = 0
        first = True
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=self._connect_timeout,
                    server_settings={"application_name": "transcripts-live"},
                )
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(_set, lost))
                await connection.add_listener(CHANNEL, self._received)
                self.connected.set()
                if not first:
                    logger.info("live: listening again after %d failed attempts", failures)
                    self._on_reconnect()
                first = False
                failures = 0
                await self._watch(connection, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: connect again, later
                self.connected.clear()
                if failures == 0:
                    logger.warning("live: listening connection lost (%s)", type(exc).__name__)
                first = False
                delay = self._backoff[min(failures, len(self._backoff) - 1)]
                failures += 1
                await asyncio.sleep(delay)
            finally:
                if connection is not None:
                    connection.terminate()

    async def _watch(self, connection: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return (by raising) once the connection is gone: closed by the server, or not
        answering a trivial statement (a half-open TCP connection says nothing)."""
        while True:
            try:
                await asyncio.wait_for(lost.wait(), self._check_every)
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=self._connect_timeout)
                continue
            raise ConnectionError("the server closed the listening connection")


def _set(event: asyncio.Event, _connection: object) -> None:
    event.set()


class LiveReads:
    """What a live stream reads: its session's row, and the turns after a seq."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def session(self, session_pk: int) -> LiveSession | None:
        async with self._database.session() as db:
            row = (
                await db.execute(
                    select(
                        Session.session_id,
                        Session.created_at,
                        Session.ended_at,
                        Session.finalized_at,
                        Session.turn_count,
                    ).where(Session.id == session_pk)
                )
            ).first()
        return None if row is None else LiveSession(*row)

    async def turns_after(self, session_pk: int, after_seq: int, limit: int) -> list[LiveTurn]:
        """The session's turns appended after ``after_seq``, in the order appended."""
        async with self._database.session() as db:
            rows = await db.execute(
                select(
                    Turn.append_seq,
                    Turn.turn_index,
                    Turn.role,
                    Turn.text,
                    Turn.ts,
                    Turn.speaking_duration_seconds,
                    Turn.was_interrupted,
                )
                .where(Turn.session_pk == session_pk, Turn.append_seq > after_seq)
                .order_by(Turn.append_seq)
                .limit(limit)
            )
            return [
                LiveTurn(
                    seq=seq,
                    turn_index=index,
                    role="assistant" if role == "assistant" else "user",
                    text=text_,
                    ts=ts,
                    speaking_duration_seconds=speaking,
                    was_interrupted=bool(interrupted),
                )
                for seq, index, role, text_, ts, speaking, interrupted in rows
            ]
