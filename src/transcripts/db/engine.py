"""The database handle: SQLAlchemy owns the engine, the pool and the schema.

The transcript read borrows the driver connection (asyncpg or aiosqlite) from SQLAlchemy's
pool, so the hot path pays for neither the ORM nor the Core result machinery.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

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
from sqlalchemy.pool import ConnectionPoolEntry

from transcripts.errors import ServiceUnavailable
from transcripts.settings import Settings

__all__ = ["Database", "is_disconnect"]

logger = logging.getLogger(__name__)


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


def _driver_disconnect_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [OSError, TimeoutError, ConnectionError]
    try:
        import asyncpg

        errors += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError]
    except ImportError:  # pragma: no cover - asyncpg is a hard dependency
        pass
    return tuple(errors)


DRIVER_DISCONNECT_ERRORS = _driver_disconnect_errors()


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, DRIVER_DISCONNECT_ERRORS)


class Database:
    def __init__(self, settings: Settings) -> None:
        self.backend: Literal["postgresql", "sqlite"] = settings.database_backend
        self.engine: AsyncEngine = create_async_engine(
            settings.database_url, json_serializer=_json_serializer, **_engine_options(settings)
        )
        if self.backend == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_on_connect)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> AsyncSession:
        return self.sessionmaker()

    @asynccontextmanager
    async def driver_connection(self) -> AsyncIterator[Any]:
        """Yield the raw asyncpg/aiosqlite connection of a pooled SQLAlchemy connection.

        A connection that fails mid-query is invalidated, so the pool replaces it and the
        service recovers by itself when the database comes back.
        """
        try:
            async with self.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                try:
                    yield raw.driver_connection
                except DRIVER_DISCONNECT_ERRORS as exc:
                    await connection.invalidate(exc)
                    raise
        except Exception as exc:
            if is_disconnect(exc):
                logger.warning("database unreachable: %s", type(exc).__name__)
                raise ServiceUnavailable() from exc
            raise

    async def dispose(self) -> None:
        await self.engine.dispose()


def _engine_options(settings: Settings) -> dict[str, Any]:
    if settings.database_backend == "sqlite":
        return {"connect_args": {"timeout": settings.db_pool_timeout_seconds}}
    return {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "connect_args": {
            "timeout": settings.db_connect_timeout_seconds,
            "command_timeout": settings.db_statement_timeout_seconds,
            "server_settings": {
                "application_name": "transcripts",
                "statement_timeout": str(int(settings.db_statement_timeout_seconds * 1000)),
            },
        },
    }


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while the worker writes; foreign keys are off by default.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
