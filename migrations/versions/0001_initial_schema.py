"""Initial schema: datasets, runs and their children (metrics, results, latency, parity,
artifacts, tags).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_fk() -> sa.Column:
    return sa.Column("run_id", sa.Integer(), nullable=False)


def _fk_to_runs(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"], ["runs.id"], name=op.f(f"fk_{table}_run_id_runs"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("content_hash", sa.String(length=128), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.Column("n_items", sa.Integer(), nullable=False),
        sa.Column("n_interactions", sa.Integer(), nullable=False),
        sa.Column("split", sa.JSON(), nullable=False),
        sa.Column("parquet_path", sa.String(length=1000), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_datasets_content_hash")),
    )

    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("teacher_run_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("model", sa.String(length=50), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=True),
        sa.Column("num_params", sa.BigInteger(), nullable=True),
        sa.Column("checkpoint_path", sa.String(length=1000), nullable=True),
        sa.Column("onnx_path", sa.String(length=1000), nullable=True),
        sa.CheckConstraint(
            "role IN ('teacher', 'student', 'baseline', 'popularity')",
            name=op.f("ck_runs_role"),
        ),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')",
            name=op.f("ck_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_runs_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["teacher_run_id"],
            ["runs.id"],
            name=op.f("fk_runs_teacher_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_dataset_id"), "runs", ["dataset_id"])
    op.create_index(op.f("ix_runs_status"), "runs", ["status"])
    op.create_index(op.f("ix_runs_teacher_run_id"), "runs", ["teacher_run_id"])

    op.create_table(
        "epoch_metrics",
        sa.Column("id", sa.Integer(), nullable=False),
        _run_fk(),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("loss", sa.Float(), nullable=True),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("val_ndcg", sa.Float(), nullable=True),
        sa.Column("val_recall", sa.Float(), nullable=True),
        sa.Column("val", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        _fk_to_runs("epoch_metrics"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_epoch_metrics")),
        sa.UniqueConstraint("run_id", "epoch", name=op.f("uq_epoch_metrics_run_id_epoch")),
    )
    op.create_index(op.f("ix_epoch_metrics_run_id"), "epoch_metrics", ["run_id"])

    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), nullable=False),
        _run_fk(),
        sa.Column("split", sa.String(length=20), nullable=False),
        sa.Column("metric", sa.String(length=50), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        _fk_to_runs("results"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint(
            "run_id", "split", "metric", "k", name=op.f("uq_results_run_id_split_metric_k")
        ),
    )
    op.create_index(op.f("ix_results_run_id"), "results", ["run_id"])

    op.create_table(
        "latency",
        sa.Column("id", sa.Integer(), nullable=False),
        _run_fk(),
        sa.Column("runtime", sa.String(length=50), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("p50", sa.Float(), nullable=False),
        sa.Column("p95", sa.Float(), nullable=False),
        sa.Column("p99", sa.Float(), nullable=False),
        sa.Column("qps", sa.Float(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=True),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        _fk_to_runs("latency"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_latency")),
    )
    op.create_index(op.f("ix_latency_run_id"), "latency", ["run_id"])

    op.create_table(
        "parity",
        sa.Column("id", sa.Integer(), nullable=False),
        _run_fk(),
        sa.Column("max_abs_diff", sa.Float(), nullable=False),
        sa.Column("topk_agreement", sa.Float(), nullable=False),
        sa.Column("n_users", sa.Integer(), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        _fk_to_runs("parity"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_parity")),
    )
    op.create_index(op.f("ix_parity_run_id"), "parity", ["run_id"])

    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), nullable=False),
        _run_fk(),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        _fk_to_runs("artifacts"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("run_id", "path", name=op.f("uq_artifacts_run_id_path")),
    )
    op.create_index(op.f("ix_artifacts_run_id"), "artifacts", ["run_id"])

    op.create_table(
        "tags",
        _run_fk(),
        sa.Column("tag", sa.String(length=100), nullable=False),
        _fk_to_runs("tags"),
        sa.PrimaryKeyConstraint("run_id", "tag", name=op.f("pk_tags")),
    )
    op.create_index(op.f("ix_tags_run_id"), "tags", ["run_id"])
    op.create_index(op.f("ix_tags_tag"), "tags", ["tag"])


def downgrade() -> None:
    # Children first; dropping a table drops its indices.
    for table in ("tags", "artifacts", "parity", "latency", "results", "epoch_metrics"):
        op.drop_table(table)
    op.drop_table("runs")
    op.drop_table("datasets")
