"""turn append sequence: each turn's place in the order its session's turns were appended

The live transcript's event ids (DESIGN.md, "Live transcript"). ``turn_index`` is the
transcript's order, which a worker may append out of; a reader resuming from an event id
needs the order the rows arrived in, so that "after this id" is exactly the rows it has not
seen. Each session counts its appends in ``last_append_seq``; each turn keeps its number.

Backfill: the turns already stored were appended in some order nobody kept, and no reader
has an id for them yet, so they are numbered 1..n in ``turn_index`` order and the session's
counter starts after them. The columns are added NOT NULL with a default of 0 (SQLite adds
such a column in place, keeping the table's CHECK constraints; batch mode would rebuild it
without them); the unique index then refuses a second turn of a session that came in
without a number.

Revision ID: a8e51c3d9b70
Revises: cc37002fa595
Create Date: 2026-12-02 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a8e51c3d9b70"
down_revision: str | None = "9b3e4d5a1c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("last_append_seq", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "turns", sa.Column("append_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    # UPDATE ... FROM: PostgreSQL, and SQLite from 3.33.
    op.execute(
        "UPDATE turns SET append_seq = r.seq"
        " FROM (SELECT session_pk, turn_index, row_number() OVER"
        " (PARTITION BY session_pk ORDER BY turn_index) AS seq FROM turns) AS r"
        " WHERE turns.session_pk = r.session_pk AND turns.turn_index = r.turn_index"
    )
    op.execute(
        "UPDATE sessions SET last_append_seq ="
        " (SELECT count(*) FROM turns t WHERE t.session_pk = sessions.id)"
    )
    op.create_index(
        "ix_turns_session_pk_append_seq", "turns", ["session_pk", "append_seq"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_turns_session_pk_append_seq", table_name="turns")
    with op.batch_alter_table("turns", schema=None) as batch_op:
        batch_op.drop_column("append_seq")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("last_append_seq")
