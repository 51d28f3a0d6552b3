"""label search within an owner, and totals from covering rollup indexes (PostgreSQL only; on
SQLite nothing: it matches labels plainly and has no INCLUDE)

One GIN index over the owner, the character and the label's trigrams (with btree_gin), in
place of the label's trigram index alone:
A search by a part of the label (Anam's ``search=``) is always scoped: to the caller's
sessions, sometimes to one character (``persona_id``), or (staff) to everything. With the
trigrams indexed alone, PostgreSQL ANDed their bitmap with one built from the owner's btree
index, whose cost grows with every session the owner has (200,000 entries read to find 4,000
matches). A multicolumn GIN index answers any subset of its columns in one scan, intersecting
the owner's, the character's and the trigrams' posting lists as it goes.

The rollup indexes by owner and by tenant now include the measures: an owner's totals sum
one row per character and day (7,300 for 20 characters over a year), scattered over the
heap as the days were written; read from the index alone they are a few dozen leaf pages.

Revision ID: c6ac8e569eb1
Revises: 21142e4ba3a9
Create Date: 2026-12-02 04:10:00.000000
"""

from collections.abc import Sequence

from alembic import op

MEASURES = [
    "sessions",
    "llm_input_tokens",
    "llm_output_tokens",
    "stt_audio_seconds",
    "tts_characters",
    "estimated_cost_micros",
]


def _rollup_indexes(include: list[str]) -> None:
    for scope in ("owner_id", "tenant_id"):
        name = f"ix_usage_by_character_day_{scope}_day"
        op.drop_index(name, table_name="usage_by_character_day")
        op.create_index(name, "usage_by_character_day", [scope, "day"], postgresql_include=include)


revision: str = "c6ac8e569eb1"
down_revision: str | None = "21142e4ba3a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Trusted since PostgreSQL 13, as pg_trgm: the database's owner may create it. It gives
    # GIN the btree operators for the integer columns.
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index(
        "ix_sessions_owner_id_character_id_client_label_trgm",
        "sessions",
        ["owner_id", "character_id", "client_label"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"client_label": "gin_trgm_ops"},
    )
    op.drop_index("ix_sessions_client_label_trgm", table_name="sessions")
    _rollup_indexes(MEASURES)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_sessions_client_label_trgm",
        "sessions",
        ["client_label"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"client_label": "gin_trgm_ops"},
    )
    op.drop_index("ix_sessions_owner_id_character_id_client_label_trgm", table_name="sessions")
    _rollup_indexes([])
    # The extension stays: another database object may have come to use it since.
