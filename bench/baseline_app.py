"""B0: the physical limit of this stack on this machine, for the service to be measured against.

A bare Starlette route, no FastAPI, no auth, no SQLAlchemy: it runs the service's own scoped
statement (``SESSION_SQL``) on a raw driver pool of the service's size, with the caller
precomputed (the API key's hash, or the token's user id), and encodes the dialect's document
with orjson. It reuses the service's pure functions that decode the row and map it to each
dialect's shape, so both produce the same bytes and the comparison isolates what the service
adds on top: routing, validation, credentials, pool checkout and error handling.

    GET /{agents|anam}/{key|user}/{session_id}

Configured by the same ``TRANSCRIPTS_*`` variables as the service, plus ``BENCH_KEY_HASH``,
``BENCH_USER_ID`` and ``BENCH_POOL_MIN``/``BENCH_POOL_MAX`` (what the service's pool can hold).
Run it with ``python -m bench.baseline_app --port N``: the service's own uvicorn flags.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from transcripts.db.engine import Database
from transcripts.db.hot_read import SESSION_SQL, session_from_row
from transcripts.dialects.agents.mapper import session_summary
from transcripts.dialects.anam.mapper import anam_transcript
from transcripts.domain import SessionRecord
from transcripts.runtime import settle_garbage_collector
from transcripts.settings import Settings

__all__ = ["baseline_app", "create_app", "service_pool_bounds"]

Fetch = Callable[[str, str | int, uuid.UUID], Awaitable[Sequence[Any] | None]]


def _agents(record: SessionRecord) -> bytes:
    document = {
        "success": True,
        "message": "OK",
        "data": session_summary(record, None),
        "errors": None,
    }
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)


def _anam(record: SessionRecord) -> bytes:
    return orjson.dumps(anam_transcript(record))


ENCODERS = {"agents": _agents, "anam": _anam}


async def _keep_session(connection: asyncpg.Connection) -> None:
    return None


@asynccontextmanager
async def _postgres(settings: Settings, size: tuple[int, int]) -> AsyncIterator[Fetch]:
    timeout = settings.db_statement_timeout_seconds
    pool = await asyncpg.create_pool(
        settings.database_url.replace("postgresql+asyncpg://", "postgresql://", 1),
        min_size=size[0],
        max_size=size[1],
        command_timeout=timeout + 5,
        server_settings={"statement_timeout": str(int(timeout * 1000))},
        # asyncpg's default reset costs a round trip per release; SQLAlchemy's pool sends
        # nothing for a connection that ran no transaction, and neither does the limit.
        reset=_keep_session,
    )

    async def fetch(sql: str, caller: str | int, session_id: uuid.UUID) -> Sequence[Any] | None:
        async with pool.acquire() as connection:
            row: Sequence[Any] | None = await connection.fetchrow(sql, caller, session_id)
            return row

    try:
        yield fetch
    finally:
        await pool.close()


@asynccontextmanager
async def _sqlite(settings: Settings, size: tuple[int, int]) -> AsyncIterator[Fetch]:
    path = settings.database_url.split(":///", 1)[1]
    idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    opened = []
    for _ in range(size[1]):
        connection = await aiosqlite.connect(path, timeout=settings.db_pool_timeout_seconds)
        # The service's connect-time pragmas (transcripts.db.engine).
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute("PRAGMA foreign_keys=ON")
        opened.append(connection)
        idle.put_nowait(connection)

    async def fetch(sql: str, caller: str | int, session_id: uuid.UUID) -> Sequence[Any] | None:
        connection = await idle.get()
        try:
            cursor = await connection.execute(sql, {"caller": caller, "session_id": session_id.hex})
            try:
                row: Sequence[Any] | None = await cursor.fetchone()
                return row
            finally:
                await cursor.close()
        finally:
            idle.put_nowait(connection)

    try:
        yield fetch
    finally:
        for connection in opened:
            await connection.close()


def service_pool_bounds(settings: Settings) -> tuple[int, int]:
    """What the service's pool keeps and can hold, so B0's raw pool gets the same."""
    pool: Any = Database(settings).engine.pool
    return pool.size(), pool.size() + pool._max_overflow


def baseline_app(
    settings: Settings, *, key_hash: str, user_id: int, pool: tuple[int, int]
) -> Starlette:
    """B0 over ``settings``' database, reading as the owner of ``key_hash`` and ``user_id``."""
    backend = settings.database_backend
    callers: dict[str, str | int] = {"key": key_hash, "user": user_id}
    fetch: Fetch | None = None

    async def transcript(request: Request) -> Response:
        params = request.path_params
        kind = params["kind"]
        assert fetch is not None
        row = await fetch(
            SESSION_SQL[backend, kind, True], callers[kind], uuid.UUID(params["session_id"])
        )
        if row is None:
            return Response(status_code=401)
        record = session_from_row(backend, row, True)
        if record is None:
            return Response(status_code=404)
        return Response(ENCODERS[params["dialect"]](record), media_type="application/json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal fetch
        opener = _postgres if backend == "postgresql" else _sqlite
        async with opener(settings, pool) as fetch:
            settle_garbage_collector()  # as the service does after its startup
            yield

    return Starlette(
        routes=[Route("/{dialect}/{kind}/{session_id}", transcript)], lifespan=lifespan
    )


def create_app() -> Starlette:
    """The uvicorn factory: configured from the environment by ``bench/run.py``."""
    return baseline_app(
        Settings(),
        key_hash=os.environ["BENCH_KEY_HASH"],
        user_id=int(os.environ["BENCH_USER_ID"]),
        pool=(int(os.environ["BENCH_POOL_MIN"]), int(os.environ["BENCH_POOL_MAX"])),
    )


if __name__ == "__main__":
    from transcripts.cli import serve

    parser = argparse.ArgumentParser(description="B0, the benchmark's baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve("bench.baseline_app:create_app", host=args.host, port=args.port)
