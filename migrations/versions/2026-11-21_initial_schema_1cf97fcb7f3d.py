"""initial schema

Revision ID: 1cf97fcb7f3d
Revises:
Create Date: 2026-11-21 09:47:46.797509
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import transcripts.db.types

revision: str = "1cf97fcb7f3d"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("is_staff", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_users_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_users_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key_preview", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)

    op.create_table(
        "characters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("public_id", sa.Uuid(), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "created_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("transcripts_enabled", sa.Boolean(), nullable=False),
        sa.Column("allowed_origins", sa.JSON(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_characters_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_characters_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_characters")),
        sa.UniqueConstraint("public_id", name=op.f("uq_characters_public_id")),
        sa.UniqueConstraint("slug", name=op.f("uq_characters_slug")),
    )
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_characters_created_by_id"), ["created_by_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_characters_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column(
            "tenant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "character_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("room_name", sa.String(length=200), nullable=False),
        sa.Column("origin_url", sa.String(length=2048), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("client_label", sa.String(length=200), nullable=True),
        sa.Column("transcripts_enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finalized_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("llm_input_tokens", sa.Integer(), nullable=False),
        sa.Column("llm_output_tokens", sa.Integer(), nullable=False),
        sa.Column("llm_model", sa.String(length=100), nullable=True),
        sa.Column("llm_provider", sa.String(length=100), nullable=True),
        sa.Column("stt_audio_seconds", sa.Float(), nullable=False),
        sa.Column("stt_provider", sa.String(length=100), nullable=True),
        sa.Column("tts_characters", sa.Integer(), nullable=False),
        sa.Column("tts_provider", sa.String(length=100), nullable=True),
        sa.Column("estimated_cost_micros", sa.BigInteger(), nullable=False),
        sa.Column(
            "recording_status",
            sa.Enum(
                "NONE",
                "PENDING",
                "READY",
                "FAILED",
                name="recordingstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("recording_url", sa.String(length=2048), nullable=True),
        sa.ForeignKeyConstraint(
            ["character_id"], ["characters.id"], name=op.f("fk_sessions_character_id_characters")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_sessions_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("session_id", name=op.f("uq_sessions_session_id")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sessions_character_id_created_at", ["character_id", "created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_sessions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_user_id"), ["user_id"], unique=False)

    op.create_table(
        "turns",
        sa.Column(
            "session_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("speaking_duration_seconds", sa.Float(), nullable=True),
        sa.Column("was_interrupted", sa.Boolean(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f("ck_turns_role")),
        sa.CheckConstraint("ts >= 0", name=op.f("ck_turns_ts_non_negative")),
        sa.CheckConstraint("turn_index >= 0", name=op.f("ck_turns_turn_index_non_negative")),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_turns_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("session_pk", "turn_index", name=op.f("pk_turns")),
    )


def downgrade() -> None:
    op.drop_table("turns")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sessions_user_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_created_at"))
        batch_op.drop_index("ix_sessions_character_id_created_at")

    op.drop_table("sessions")
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_characters_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_characters_created_by_id"))

    op.drop_table("characters")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))

    op.drop_table("api_keys")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_tenant_id"))

    op.drop_table("users")
    op.drop_table("tenants")
