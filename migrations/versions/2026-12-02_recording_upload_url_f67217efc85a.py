"""recording upload url: the key a session was handed for a presigned upload

Existing rows keep NULL, which is exactly their state: no key has ever been handed out for
them (the upload route arrives with this revision). So the backfill is the column's default,
and a downgrade loses only keys handed out since, which nothing else refers to.

Revision ID: f67217efc85a
Revises: 5d0c1f7e2a91
Create Date: 2026-12-02 00:10:37.743765
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f67217efc85a"
down_revision: str | None = "5d0c1f7e2a91"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("recording_upload_url", sa.String(length=2048), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("recording_upload_url")
