"""webhook_events.payload may be empty until the event is first claimed (nothing to backfill:
every stored event has its body)

session.finalized no longer carries its body into the finalize's transaction: the deliverer
that first claims the event renders it from the session and stores it, and every attempt
sends those bytes.

Revision ID: e2b7c41d9f06
Revises: c9e4a4236bc8
Create Date: 2026-12-02 06:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e2b7c41d9f06"
down_revision: str | None = "c9e4a4236bc8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # The schema before this one has no way to render a body: refuse rather than lose the
    # events or send a body that is not the summary receivers were promised.
    waiting = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM webhook_events WHERE payload IS NULL")
    )
    if waiting:
        raise RuntimeError(
            f"{waiting} webhook event(s) have no body yet (not claimed by a deliverer since"
            " their session was finalized): let this version's deliverer send them (re-enable"
            " their endpoints if disabled), or delete them, before downgrading."
        )
    with op.batch_alter_table("webhook_events", schema=None) as batch_op:
        batch_op.alter_column("payload", existing_type=sa.Text(), nullable=False)
