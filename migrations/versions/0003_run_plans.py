"""Run plans: named groups of runs with dependencies, and the ``waiting`` run status.

A plan (the one-click demo, a size sweep) is a row of ``plans``; its runs point at it with
``runs.plan_id``. A run that must wait for another (students for their teacher) names it in
``runs.depends_on_run_id`` and has status ``waiting`` until the store releases it (parent
succeeded: ``queued``) or ends it (parent failed, cancelled or interrupted: ``cancelled``).

Downgrading drops the plans; a run still waiting then can never be released, so it ends
``cancelled`` with a sentence saying why.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out, not read from core.enums: a migration describes the schema of its own day.
OLD_STATUSES = "'queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'"
NEW_STATUSES = "'queued', 'waiting', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted'"
DOWNGRADED_NOTE = (
    "Not started: the database was downgraded to a version without run plans while this "
    "run waited for its teacher; queue it again."
)


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('demo', 'sweep', 'custom')", name=op.f("ck_plans_kind")),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_plans_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
    )
    op.create_index(op.f("ix_plans_kind"), "plans", ["kind"])
    op.create_index(op.f("ix_plans_dataset_id"), "plans", ["dataset_id"])

    # Batch mode: SQLite recreates the table (its only way to change a CHECK constraint),
    # PostgreSQL runs plain ALTER TABLEs.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("plan_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("depends_on_run_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_runs_plan_id_plans"), "plans", ["plan_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_foreign_key(
            op.f("fk_runs_depends_on_run_id_runs"),
            "runs",
            ["depends_on_run_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_runs_plan_id"), ["plan_id"])
        batch.create_index(op.f("ix_runs_depends_on_run_id"), ["depends_on_run_id"])
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_status"), f"status IN ({NEW_STATUSES})")


def downgrade() -> None:
    runs = sa.table(
        "runs",
        sa.column("status", sa.String()),
        sa.column("error", sa.Text()),
        sa.column("finished", sa.DateTime(timezone=True)),
    )
    op.execute(
        runs.update()
        .where(runs.c.status == "waiting")
        .values(status="cancelled", error=DOWNGRADED_NOTE, finished=sa.func.current_timestamp())
    )
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_status"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_status"), f"status IN ({OLD_STATUSES})")
        batch.drop_index(op.f("ix_runs_depends_on_run_id"))
        batch.drop_index(op.f("ix_runs_plan_id"))
        batch.drop_constraint(op.f("fk_runs_depends_on_run_id_runs"), type_="foreignkey")
        batch.drop_constraint(op.f("fk_runs_plan_id_plans"), type_="foreignkey")
        batch.drop_column("depends_on_run_id")
        batch.drop_column("plan_id")
    op.drop_index(op.f("ix_plans_dataset_id"), table_name="plans")
    op.drop_index(op.f("ix_plans_kind"), table_name="plans")
    op.drop_table("plans")
