"""data rights: session tombstones, the recording deletions still to do, and per character
retention_days and pii_redaction (existing characters: no retention of their own, no
redaction at write)

Revision ID: 9b3e4d5a1c20
Revises: cc37002fa595
Create Date: 2026-12-02 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b3e4d5a1c20"
down_revision: str | None = "cc37002fa595"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "session_tombstones",
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", BIG_ID, nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_session_tombstones_owner_id_users")
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_session_tombstones")),
    )
    with op.batch_alter_table("session_tombstones", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_session_tombstones_owner_id"), ["owner_id"], unique=False
        )
    op.create_table(
        "recording_deletions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("recording_url", sa.String(length=2048), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_deletions")),
    )
    with op.batch_alter_table("recording_deletions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_recording_deletions_next_attempt_at", ["next_attempt_at"], unique=False
        )
    # Backfill by the server defaults: every existing character keeps its sessions for as long
    # as the service's RETENTION_DAYS says (retention_days NULL) and stores text as given.
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retention_days", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("pii_redaction", sa.String(length=16), server_default="none", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_characters_pii_redaction"), "pii_redaction IN ('none', 'store')"
        )
        batch_op.create_check_constraint(
            op.f("ck_characters_retention_days_positive"), "retention_days >= 1"
        )


def downgrade() -> None:
    with op.batch_alter_table("characters", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_characters_retention_days_positive"), type_="check")
        batch_op.drop_constraint(op.f("ck_characters_pii_redaction"), type_="check")
        batch_op.drop_column("pii_redaction")
        batch_op.drop_column("retention_days")
    with op.batch_alter_table("recording_deletions", schema=None) as batch_op:
        batch_op.drop_index("ix_recording_deletions_next_attempt_at")
    op.drop_table("recording_deletions")
    with op.batch_alter_table("session_tombstones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_tombstones_owner_id"))
    op.drop_table("session_tombstones")
