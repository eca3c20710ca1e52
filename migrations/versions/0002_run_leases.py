"""Run leases: several processes share one store (owner, heartbeat, lease, cancel, progress).

A job manager claims a queued run by writing its ``owner`` id and a ``lease_expires`` time,
renews the lease with every ``heartbeat``, and reads ``cancel_requested`` (set by a cancel
from any process). ``settled`` closes the cancel window once the owner has decided how the
run ends. ``progress`` holds the latest snapshot that every process's pages show.

Rows that exist before this revision get no owner and no lease: a run left ``running`` by
an older server is therefore recovered (marked interrupted) by the next process that starts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite recreates the table, PostgreSQL runs plain ALTER TABLEs.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(
            sa.Column("settled", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in (
            "progress",
            "settled",
            "cancel_requested",
            "lease_expires",
            "heartbeat",
            "owner",
        ):
            batch.drop_column(column)
