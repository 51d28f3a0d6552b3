"""full-text search over turns: PostgreSQL's generated tsvector column under a GIN index,
SQLite's FTS5 table kept by triggers; each built from the turns already stored

The text-search configuration of the PostgreSQL column is TRANSCRIPTS_SEARCH_CONFIG
(english when unset), as the service reads it; `transcripts search-reindex` rebuilds the
column when it changes. Neither object is in the models (db/tables.py): migrations/env.py
leaves them out of `alembic check`.

SQLite: turns_fts indexes turns by rowid. A later migration that rebuilds turns in batch
mode (a new table, rows copied) drops these triggers and renumbers rows: it must create the
triggers again and run `INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')`.

Revision ID: 21142e4ba3a9
Revises: cc37002fa595
Create Date: 2026-12-02 03:20:00.000000
"""

import os
import re
from collections.abc import Sequence

from alembic import op

revision: str = "21142e4ba3a9"
down_revision: str | None = "a8e51c3d9b70"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# transcripts.db.search.SEARCH_CONFIG_PATTERN: the name is written into the DDL.
_CONFIG_PATTERN = r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?"

SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE turns_fts USING fts5(text, content='turns', content_rowid='rowid',"
    " tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER turns_fts_insert AFTER INSERT ON turns BEGIN"
    " INSERT INTO turns_fts(rowid, text) VALUES (new.rowid, new.text); END",
    "CREATE TRIGGER turns_fts_delete AFTER DELETE ON turns BEGIN"
    " INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.rowid, old.text); END",
    "CREATE TRIGGER turns_fts_update AFTER UPDATE OF text ON turns BEGIN"
    " INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.rowid, old.text);"
    " INSERT INTO turns_fts(rowid, text) VALUES (new.rowid, new.text); END",
    # The backfill: every turn stored so far.
    "INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')",
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS turns_fts_update",
    "DROP TRIGGER IF EXISTS turns_fts_delete",
    "DROP TRIGGER IF EXISTS turns_fts_insert",
    "DROP TABLE IF EXISTS turns_fts",
)


def _config() -> str:
    config = os.environ.get("TRANSCRIPTS_SEARCH_CONFIG") or "english"
    if not re.fullmatch(_CONFIG_PATTERN, config):
        raise ValueError(f"TRANSCRIPTS_SEARCH_CONFIG: not a configuration name: {config!r}")
    return config


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for statement in SQLITE_UPGRADE:
            op.execute(statement)
        return
    # A GIN build over millions of turns sorts far faster with more memory than the default.
    op.execute("SET LOCAL maintenance_work_mem = '256MB'")
    # Adding a stored generated column computes it for every row already there: the backfill.
    op.execute(
        "ALTER TABLE turns ADD COLUMN search_vector tsvector GENERATED ALWAYS AS"
        f" (to_tsvector('{_config()}'::regconfig, text)) STORED"
    )
    op.execute("CREATE INDEX ix_turns_search_vector ON turns USING gin (search_vector)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for statement in SQLITE_DOWNGRADE:
            op.execute(statement)
        return
    op.execute("DROP INDEX IF EXISTS ix_turns_search_vector")
    op.execute("ALTER TABLE turns DROP COLUMN IF EXISTS search_vector")
