"""dashboard reads at scale: the owner on the session row, keyset indexes, usage rollups,
a trigram index for Anam's label search; each backfilled from the rows already there

Revision ID: cc37002fa595
Revises: f67217efc85a
Create Date: 2026-12-02 01:22:50.311702
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cc37002fa595"
down_revision: str | None = "f67217efc85a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SHARDS = 16  # usage_by_day's rows per day; transcripts.db.usage.SHARDS


def _day(column: str) -> str:
    """The UTC day of a stored time, as each backend spells it."""
    if op.get_bind().dialect.name == "postgresql":
        return f"CAST({column} AT TIME ZONE 'UTC' AS DATE)"
    return f"date({column})"


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "usage_by_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("llm_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("stt_audio_seconds", sa.Float(), nullable=False),
        sa.Column("tts_characters", sa.BigInteger(), nullable=False),
        sa.Column("estimated_cost_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "shard", name=op.f("pk_usage_by_day")),
    )
    op.create_table(
        "usage_by_character_day",
        sa.Column(
            "character_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("llm_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("stt_audio_seconds", sa.Float(), nullable=False),
        sa.Column("tts_characters", sa.BigInteger(), nullable=False),
        sa.Column("estimated_cost_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["character_id"],
            ["characters.id"],
            name=op.f("fk_usage_by_character_day_character_id_characters"),
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_usage_by_character_day_owner_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_usage_by_character_day_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("character_id", "day", name=op.f("pk_usage_by_character_day")),
    )
    with op.batch_alter_table("usage_by_character_day", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_by_character_day_owner_id_day", ["owner_id", "day"], unique=False
        )
        batch_op.create_index(
            "ix_usage_by_character_day_tenant_id_day", ["tenant_id", "day"], unique=False
        )

    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"))
        )
        batch_op.add_column(
            sa.Column("interruption_count", sa.Integer(), server_default="0", nullable=False)
        )
    # Backfill: the owner is the character's creator, as the reads have always scoped it; the
    # interruptions are the flagged assistant turns, as the summary counts them.
    op.execute(
        "UPDATE sessions SET"
        " owner_id = (SELECT c.created_by_id FROM characters c WHERE c.id = sessions.character_id),"
        " interruption_count = (SELECT count(*) FROM turns t WHERE t.session_pk = sessions.id"
        " AND t.role = 'assistant' AND t.was_interrupted)"
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "owner_id",
            existing_type=sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        )
        batch_op.drop_index(batch_op.f("ix_sessions_character_id_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_created_at"))
        batch_op.drop_index(batch_op.f("ix_sessions_tenant_id"))
        batch_op.create_index(
            "ix_sessions_character_id_created_at_id",
            ["character_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index("ix_sessions_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_sessions_owner_id_created_at_id", ["owner_id", "created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_sessions_tenant_id_created_at_id", ["tenant_id", "created_at", "id"], unique=False
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_sessions_owner_id_users"), "users", ["owner_id"], ["id"]
        )
    if postgresql:
        # A trusted extension since PostgreSQL 13: the database's owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_sessions_client_label_trgm",
            "sessions",
            ["client_label"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"client_label": "gin_trgm_ops"},
        )

    # Backfill the rollups from every session stored so far: each counts where it started.
    measures = (
        "count(*), sum(llm_input_tokens), sum(llm_output_tokens), sum(stt_audio_seconds),"
        " sum(tts_characters), sum(estimated_cost_micros)"
    )
    columns = (
        "sessions, llm_input_tokens, llm_output_tokens, stt_audio_seconds, tts_characters,"
        " estimated_cost_micros"
    )
    op.execute(
        f"INSERT INTO usage_by_character_day (character_id, day, owner_id, tenant_id, {columns})"
        f" SELECT character_id, {_day('created_at')}, min(owner_id), min(tenant_id), {measures}"
        f" FROM sessions GROUP BY character_id, {_day('created_at')}"
    )
    op.execute(
        f"INSERT INTO usage_by_day (day, shard, {columns})"
        f" SELECT {_day('created_at')}, id % {SHARDS}, {measures}"
        f" FROM sessions GROUP BY {_day('created_at')}, id % {SHARDS}"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_sessions_client_label_trgm", table_name="sessions")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_sessions_owner_id_users"), type_="foreignkey")
        batch_op.drop_index("ix_sessions_tenant_id_created_at_id")
        batch_op.drop_index("ix_sessions_owner_id_created_at_id")
        batch_op.drop_index("ix_sessions_created_at_id")
        batch_op.drop_index("ix_sessions_character_id_created_at_id")
        batch_op.create_index(batch_op.f("ix_sessions_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_sessions_character_id_created_at"),
            ["character_id", "created_at"],
            unique=False,
        )
        batch_op.drop_column("interruption_count")
        batch_op.drop_column("owner_id")

    with op.batch_alter_table("usage_by_character_day", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_by_character_day_tenant_id_day")
        batch_op.drop_index("ix_usage_by_character_day_owner_id_day")

    op.drop_table("usage_by_character_day")
    op.drop_table("usage_by_day")
