"""The database handle: SQLAlchemy owns the engine, the pool and the schema.

The transcript read borrows the driver connection (asyncpg or aiosqlite) from SQLAlchemy's
pool, so the hot path pays for neither the ORM nor the Core result machinery. Because that
read bypasses SQLAlchemy's execution layer, it also takes over what that layer does when the
database goes away: invalidating the pool, so the service recovers by itself.

It also borrows the connection without a greenlet when it can. The asyncio extension runs
every pool operation in a new greenlet, and each new greenlet costs CPython a frame stack of
its own, an mmap and a munmap: on the benchmark's virtual machine, checkout, ``SELECT 1`` and
checkin took 80-90 µs of CPU that way and 37 µs without greenlets, where a whole 10-turn
transcript read takes about 200. SQLAlchemy's pool code is synchronous, and taking an idle,
live connection out and putting it back involve no I/O, so those run directly; whatever
needs the database (connecting, reconnecting, waiting for a free connection, closing one,
rolling back) runs in a greenlet as before. Which of the two a checkout will be is read off
the entry the pool would hand out (``_hands_out_a_live_connection``), not found by trying.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import (
    ConnectionPoolEntry,
    Pool,
    PoolProxiedConnection,
    PoolResetState,
    QueuePool,
)
from sqlalchemy.util import greenlet_spawn

from transcripts.errors import ServiceUnavailable
from transcripts.settings import Settings

__all__ = ["Database", "is_unavailable"]

logger = logging.getLogger(__name__)

# The connection is gone: every pooled connection of its generation is suspect. A server
# that restarts or is told to drop its clients (pg_terminate_backend) says so first, with
# an "operator intervention" error (SQLSTATE 57P01-57P03), before it hangs up.
CONNECTION_LOST: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    asyncpg.exceptions.InternalClientError,
)
# The database is there but cannot answer now (statement timeout, no connection slot left,
# SQLite's write lock).
BUSY: tuple[type[Exception], ...] = (
    asyncpg.QueryCanceledError,
    asyncpg.exceptions.InsufficientResourcesError,
    sqlite3.OperationalError,
)


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def is_unavailable(exc: BaseException) -> bool:
    """Whether a failure means "the database cannot be reached or cannot answer now"."""
    if isinstance(exc, PoolTimeout | ServiceUnavailable):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        # SQLAlchemy's asyncpg adapter wraps the driver's error (a statement timeout's
        # QueryCanceledError, say) in a plain DBAPIError, with the driver's as the cause.
        return isinstance(getattr(exc.orig, "__cause__", None), CONNECTION_LOST + BUSY)
    return isinstance(exc, CONNECTION_LOST + BUSY)  # TimeoutError is an OSError


class Database:
    def __init__(self, settings: Settings) -> None:
        self.backend: Literal["postgresql", "sqlite"] = settings.database_backend
        self.engine: AsyncEngine = create_async_engine(
            settings.database_url,
            json_serializer=_json_serializer,
            # Bound parameters can be API key hashes or transcript text: keep them out of errors.
            hide_parameters=True,
            **_engine_options(settings),
        )
        if self.backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
            event.listen(self.engine.sync_engine, "reset", _sqlite_rollback_if_open)
        # A class of this database's own, so that listeners of its units of work (the live
        # transcript's, on SQLite) hear only them.
        self.sync_session_class: type[OrmSession] = type("DatabaseSession", (OrmSession,), {})
        self.sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=self.sync_session_class
        )

    def session(self) -> AsyncSession:
        return self.sessionmaker()

    async def fetch_row(
        self, sql: str, postgres_args: Sequence[Any], sqlite_params: Mapping[str, Any]
    ) -> Sequence[Any] | None:
        """One read-only statement on a pooled driver connection.

        A lost connection invalidates the pool's generation (as SQLAlchemy does for the
        statements it runs) and the read is tried once more on a fresh connection: a
        database restart costs one retry, not one 503 per stale pooled connection.
        """
        for attempt in (1, 2):
            try:
                pool = self.engine.pool  # the one the connection goes back to, even mid-dispose
                pooled = await self._checkout(pool)
                released = False
                try:
                    row = await self._fetch_row(
                        pooled.driver_connection, sql, postgres_args, sqlite_params
                    )
                    released = _checkin_without_io(pool, pooled)
                    return row
                except TimeoutError as exc:
                    # No answer within the command timeout: the connection's state is
                    # unknown, and a retry would only double the wait.
                    pooled.invalidate(exc)
                    raise
                except CONNECTION_LOST as exc:
                    self.engine.pool._invalidate(pooled, exc)  # the whole generation
                    if attempt == 2:
                        raise
                    logger.warning(
                        "database connection lost (%s); retrying once", type(exc).__name__
                    )
                finally:
                    if not released:
                        await greenlet_spawn(pooled.close)
            except Exception as exc:
                if is_unavailable(exc):
                    logger.warning("database unavailable: %s", type(exc).__name__)
                    raise ServiceUnavailable() from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _checkout(self, pool: Pool) -> PoolProxiedConnection:
        if isinstance(pool, QueuePool) and _hands_out_a_live_connection(pool):
            return pool.connect()
        # The pool's own checkout and checkin, without the Connection facade that
        # engine.connect() wraps around them.
        return await self.engine.raw_connection()

    async def _fetch_row(
        self,
        driver: Any,
        sql: str,
        postgres_args: Sequence[Any],
        sqlite_params: Mapping[str, Any],
    ) -> Sequence[Any] | None:
        if self.backend == "postgresql":
            row: Sequence[Any] | None = await driver.fetchrow(sql, *postgres_args)
            return row
        cursor = await driver.execute(sql, sqlite_params)
        try:
            fetched: Sequence[Any] | None = await cursor.fetchone()
            return fetched
        finally:
            await cursor.close()

    async def ping(self) -> None:
        """Raise ServiceUnavailable unless the database answers a trivial statement."""
        await self.fetch_row("SELECT 1", (), {})

    async def dispose(self) -> None:
        await self.engine.dispose()


def _engine_options(settings: Settings) -> dict[str, Any]:
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
    }
    if settings.database_backend == "sqlite":
        return {
            **pool,
            # _sqlite_rollback_if_open resets instead.
            "pool_reset_on_return": None,
            "connect_args": {"timeout": settings.db_pool_timeout_seconds},
        }
    statement_timeout = settings.db_statement_timeout_seconds
    return {
        **pool,
        "connect_args": {
            "timeout": settings.db_connect_timeout_seconds,
            # The server's statement_timeout fires first and leaves the connection usable;
            # the client-side limit only catches a server that stopped answering at all.
            "command_timeout": statement_timeout + 2,
            "server_settings": {
                "application_name": "transcripts",
                "statement_timeout": str(int(statement_timeout * 1000)),
            },
        },
    }


def _hands_out_a_live_connection(pool: QueuePool) -> bool:
    """Whether ``pool.connect()`` would hand out an idle connection as it is, with no I/O.

    That is: one is idle (nothing to wait for, nothing to open), and the entry the queue gives
    next holds a connection that no invalidation, recycling or pre-ping would make the pool
    reconnect or ping. The pool's public API does not tell, so this reads its queue and asks
    the entry with the pool's own test. Should a SQLAlchemy release move these internals, the
    answer is "no": reads take the greenlet, slower but right, and tests/test_pool.py fails.
    """
    try:
        if pool._recycle > -1 or pool._pre_ping:
            return False
        queue: Any = pool._pool  # AsyncAdaptedQueue, over an asyncio.Queue and its deque
        idle = queue._queue._queue
        if not idle:
            return False
        entry = idle[-1] if queue.use_lifo else idle[0]
        return not entry._is_hard_or_soft_invalidated()
    except AttributeError:
        return False


def _checkin_without_io(pool: Pool, pooled: PoolProxiedConnection) -> bool:
    """Put ``pooled`` back into ``pool`` now, if that takes no I/O; say whether it did."""
    if (
        isinstance(pool, QueuePool)
        # Room in the pool: nothing is closed (an overflow connection would be).
        and pool.checkedin() < pool.size()
        # Nothing to roll back: the read ran outside a transaction.
        and not _in_transaction(pooled.driver_connection)
    ):
        pooled.close()
        return True
    return False


def _in_transaction(driver: Any) -> bool:
    if isinstance(driver, asyncpg.Connection):
        return bool(driver.is_in_transaction())
    return bool(driver.in_transaction)  # aiosqlite, read from sqlite3 without a thread hop


def _sqlite_rollback_if_open(
    dbapi_connection: Any, _record: ConnectionPoolEntry, reset_state: PoolResetState
) -> None:
    """SQLite's reset on return: a rollback only when a transaction is open.

    SQLAlchemy's default rolls back on every return, and for aiosqlite every rollback is a
    round trip to the connection's thread, even after a read that opened no transaction.
    """
    if (
        reset_state.asyncio_safe
        and not reset_state.transaction_was_reset
        and dbapi_connection.driver_connection.in_transaction
    ):
        dbapi_connection.rollback()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while the worker writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
