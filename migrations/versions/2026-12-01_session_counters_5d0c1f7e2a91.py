"""session counters: turns and transcript bytes per session, for the per-session caps

Revision ID: 5d0c1f7e2a91
Revises: 339659e893f2
Create Date: 2026-12-01 00:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d0c1f7e2a91"
down_revision: str | None = "339659e893f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("turn_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("text_bytes", sa.BigInteger(), server_default="0", nullable=False)
        )
    # Backfill from the turns already stored: bytes are the text's UTF-8 length.
    text_bytes = (
        "octet_length(t.text)"
        if op.get_bind().dialect.name == "postgresql"
        else "length(CAST(t.text AS BLOB))"
    )
    op.execute(
        "UPDATE sessions SET"
        " turn_count = (SELECT count(*) FROM turns t WHERE t.session_pk = sessions.id),"
        f" text_bytes = (SELECT coalesce(sum({text_bytes}), 0) FROM turns t"
        " WHERE t.session_pk = sessions.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("text_bytes")
        batch_op.drop_column("turn_count")
