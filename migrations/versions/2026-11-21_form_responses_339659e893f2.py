"""form responses

Revision ID: 339659e893f2
Revises: 1cf97fcb7f3d
Create Date: 2026-11-21 10:04:33.227084
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import transcripts.db.types

revision: str = "339659e893f2"
down_revision: str | None = "1cf97fcb7f3d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "form_responses",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "character_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "session_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("form_id", sa.String(length=100), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", transcripts.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["character_id"],
            ["characters.id"],
            name=op.f("fk_form_responses_character_id_characters"),
        ),
        sa.ForeignKeyConstraint(
            ["session_pk"],
            ["sessions.id"],
            name=op.f("fk_form_responses_session_pk_sessions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_form_responses")),
    )
    with op.batch_alter_table("form_responses", schema=None) as batch_op:
        batch_op.create_index(
            "ix_form_responses_character_id_created_at",
            ["character_id", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_form_responses_session_pk"), ["session_pk"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("form_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_form_responses_session_pk"))
        batch_op.drop_index("ix_form_responses_character_id_created_at")

    op.drop_table("form_responses")
