"""SQLAlchemy ORM models of the run store (the schema; no sessions, no queries).

Only `core.store` opens sessions and reads or writes these rows; everything outside it gets
plain frozen records. The schema itself is created and upgraded by the Alembic migrations
in ``migrations/``, never by ``metadata.create_all``; a test checks that these models and
the migrated schema agree, so a change here needs a new migration.

Run children (epoch metrics, results, latency, parity, artifacts, tags) are deleted by the
database (``ON DELETE CASCADE``), which SQLite only honours with ``PRAGMA foreign_keys=ON``
(set by the store's engine).

Run plans (migration 0003) group runs: a run of a plan may wait for a parent run
(``depends_on_run_id``) and is released or ended by the store when that parent ends.

The closed vocabularies (run roles, statuses and plan kinds) come from `core.enums`; the check
constraints are generated from those enums, so the lists are spelled out nowhere else.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from core.enums import PlanKind, Role, Status, values

# Explicit constraint names: PostgreSQL needs them to alter or drop constraints, and
# Alembic's batch mode on SQLite needs them to recreate tables.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def one_of(column: str, enum: type[StrEnum]) -> str:
    """``column IN ('a', 'b')``: the SQL of a check constraint, generated from an enum."""
    quoted = ", ".join(f"'{value}'" for value in values(enum))
    return f"{column} IN ({quoted})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSON,
        datetime: DateTime(timezone=True),
    }


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(500))
    content_hash: Mapped[str] = mapped_column(String(128), unique=True)
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_users: Mapped[int] = mapped_column(Integer)
    n_items: Mapped[int] = mapped_column(Integer)
    n_interactions: Mapped[int] = mapped_column(Integer)
    split: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parquet_path: Mapped[str | None] = mapped_column(String(1000))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Plan(Base):
    """A named group of runs with dependencies (the demo, a size sweep); see core.plans."""

    __tablename__ = "plans"
    __table_args__ = (CheckConstraint(one_of("kind", PlanKind), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), index=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    # What the plan was asked for (a sweep's method, sizes and seeds; the demo's epoch cap).
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(one_of("role", Role), name="role"),
        CheckConstraint(one_of("status", Status), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(20))
    # A student outlives its teacher's deletion; its config still says what the teacher was.
    teacher_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default=Status.QUEUED.value, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    started: Mapped[datetime | None] = mapped_column()
    finished: Mapped[datetime | None] = mapped_column()
    num_params: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_path: Mapped[str | None] = mapped_column(String(1000))
    onnx_path: Mapped[str | None] = mapped_column(String(1000))
    # Work sharing between processes (migration 0002). A running run belongs to one job
    # manager (`owner`), which renews `lease_expires` with every heartbeat; only when the
    # lease has run out may another process mark the run interrupted.
    owner: Mapped[str | None] = mapped_column(String(200))
    heartbeat: Mapped[datetime | None] = mapped_column()
    lease_expires: Mapped[datetime | None] = mapped_column()
    # Set by a cancel from any process; the owner's heartbeat turns it into its cancel Event.
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Set by the owner once it has decided how the run ends: later cancels are refused, so
    # "cancel() said yes" and "the run ended cancelled" never disagree.
    settled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The latest progress snapshot (epoch, ETA, loss, message), read by every process's pages.
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Run plans (migration 0003). A run stays `waiting` until `depends_on_run_id` succeeds;
    # a deleted plan leaves its runs, a deleted parent leaves the dependent's record.
    plan_id: Mapped[int | None] = mapped_column(
        ForeignKey("plans.id", ondelete="SET NULL"), index=True
    )
    depends_on_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("runs.id", ondelete="SET NULL"), index=True
    )

    tags: Mapped[list[Tag]] = relationship(
        lazy="selectin", passive_deletes=True, order_by="Tag.tag"
    )


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    # NULL when the loss was not finite (SQLite cannot store NaN).
    loss: Mapped[float | None] = mapped_column(Float)
    terms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    val_ndcg: Mapped[float | None] = mapped_column(Float)
    val_recall: Mapped[float | None] = mapped_column(Float)
    val: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (UniqueConstraint("run_id", "split", "metric", "k"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(20))
    metric: Mapped[str] = mapped_column(String(50))
    # 0 for metrics without a cut-off: NULL would defeat the unique constraint.
    k: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float)


class Latency(Base):
    __tablename__ = "latency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    runtime: Mapped[str] = mapped_column(String(50))
    batch: Mapped[int] = mapped_column(Integer)
    p50: Mapped[float] = mapped_column(Float)
    p95: Mapped[float] = mapped_column(Float)
    p99: Mapped[float] = mapped_column(Float)
    qps: Mapped[float] = mapped_column(Float)
    threads: Mapped[int | None] = mapped_column(Integer)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Parity(Base):
    __tablename__ = "parity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    max_abs_diff: Mapped[float] = mapped_column(Float)
    topk_agreement: Mapped[float] = mapped_column(Float)
    n_users: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    path: Mapped[str] = mapped_column(String(1000))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Tag(Base):
    __tablename__ = "tags"

    run_id: Mapped[int] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)
