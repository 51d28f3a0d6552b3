"""Running the Alembic history step by step on a database of a test's own, and SQL beside it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import run_elsewhere
from transcripts.migrate import alembic_config

__all__ = ["columns", "migrate", "run"]


def migrate(url: str, action: str, revision: str) -> None:
    # Alembic's env runs a loop of its own: keep it off any running one.
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(getattr(command, action), alembic_config(url), revision).result()


def run(url: str, statement: str, **parameters: Any) -> list[dict[str, Any]]:
    async def execute() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(sa.text(statement), parameters)
                return [dict(row) for row in result.mappings()] if result.returns_rows else []
        finally:
            await engine.dispose()

    return run_elsewhere(execute)


def columns(url: str, table: str = "sessions") -> set[str]:
    async def inspect() -> set[str]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                found = await connection.run_sync(lambda sync: sa.inspect(sync).get_columns(table))
                return {column["name"] for column in found}
        finally:
            await engine.dispose()

    return run_elsewhere(inspect)
