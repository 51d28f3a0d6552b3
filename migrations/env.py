"""Alembic environment: one history for PostgreSQL and SQLite, run through the async engine."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from transcripts.db.tables import Base
from transcripts.settings import Settings

config = context.config
target_metadata = Base.metadata


def database_url() -> str:
    # `transcripts migrate` passes the URL in; plain `alembic` reads the service's settings.
    return config.attributes.get("database_url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


# Full-text search (revision 21142e4ba3a9), which the models leave out: PostgreSQL's generated
# column and its index; SQLite's FTS5 table and the shadow tables FTS5 keeps beside it.
SEARCH_COLUMNS = {"search_vector"}
SEARCH_INDEXES = {"ix_turns_search_vector"}
SEARCH_TABLE = "turns_fts"


def _is_search_index(type_: str, name: str | None) -> bool:
    if name is None:
        return False
    if type_ == "table":
        return name == SEARCH_TABLE or name.startswith(SEARCH_TABLE + "_")
    return (type_ == "column" and name in SEARCH_COLUMNS) or (
        type_ == "index" and name in SEARCH_INDEXES
    )


def _only_this_dialects(dialect: str) -> Any:
    """Leave out of comparisons what the models create on another database only (an index
    declared with ``ddl_if(dialect=...)``, such as PostgreSQL's trigram index)."""

    def include_object(
        item: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if reflected and compare_to is None and _is_search_index(type_, name):
            return False
        condition = getattr(item, "_ddl_if", None)
        return condition is None or condition.dialect in (None, dialect)

    return include_object


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_only_this_dialects(connection.dialect.name),
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        # Also when a step fails: its connection is closed, not left to the collector.
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_migrations_online())
