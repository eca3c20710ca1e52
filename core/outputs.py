"""What runs produce, in the store: epoch metrics, results, latency, parity checks, files.

A run's children are written while it trains (epochs), when it ends (results, the
checkpoint) and later from the Compare and Handoff pages (latency, parity, ONNX files);
each has its own table, deleted with the run by the database (``ON DELETE CASCADE``).

`RunOutputs` is mixed into `core.store.Store`: these are Store methods, each one unit of
work, kept in their own module so that the store's module stays readable (as
`core.leases` is for the run queue).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import paths
from core.db import Artifact, EpochMetric, Latency, Parity, Result, Run, utcnow
from core.errors import ConfigError, TrainingCancelled
from core.records import (
    ArtifactRecord,
    EpochRecord,
    LatencyRecord,
    ParityRecord,
    ResultRecord,
    RunRecord,
    finite_or_none,
    jsonable,
    metric_key,
    parse_metric_key,
    pick_metric,
    to_record,
)

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

log = logging.getLogger(__name__)


def remove_paths(candidates: Iterable[Path | None]) -> None:
    """Delete files and folders, but only those inside the data directory."""
    for path in candidates:
        if path is None or not paths.is_inside_data_dir(path):
            continue
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:  # a file we cannot delete must not undo the DB delete
            log.warning("could not remove %s: %s", path, exc)


class RunOutputs:
    """Store methods for what runs produce (see the module docstring)."""

    if TYPE_CHECKING:

        def _unit(self, action: str, *, write: bool = False) -> AbstractContextManager[Session]: ...

        @staticmethod
        def _run_row(session: Session, run_id: int, *, lock: bool = False) -> Run: ...

        def _held(self, session: Session, run_id: int, owner: str) -> Run: ...

    # ------------------------------------------------------------ epoch metrics
    def add_epoch(
        self,
        run_id: int,
        epoch: int,
        loss: float | None,
        terms: Mapping[str, Any] | None = None,
        val: Mapping[str, Any] | None = None,
        seconds: float = 0.0,
        *,
        owner: str | None = None,
        progress: Mapping[str, Any] | None = None,
    ) -> EpochRecord:
        """Record one epoch. ``val`` holds validation metrics such as ``{"ndcg@10": ...}``;
        its NDCG and recall (at 10 when present) also go to their own columns.

        A job manager passes its ``owner`` id and progress snapshot: then the epoch is only
        stored while that owner still holds the run and nobody asked to cancel it
        (`LeaseLost` / `TrainingCancelled` otherwise), so no epoch lands after a cancel.
        """
        val = jsonable(dict(val or {}))
        with self._unit(f"save epoch {epoch} of run {run_id}", write=True) as session:
            if owner is None:
                self._run_row(session, run_id)
            else:
                run = self._held(session, run_id, owner)
                if run.cancel_requested:
                    raise TrainingCancelled(f"Run {run_id} was cancelled.")
                if progress is not None:
                    run.progress = jsonable(dict(progress))
            row = EpochMetric(
                run_id=run_id,
                epoch=int(epoch),
                loss=finite_or_none(loss),
                terms=jsonable(dict(terms or {})),
                val_ndcg=pick_metric(val, "ndcg"),
                val_recall=pick_metric(val, "recall"),
                val=val,
                seconds=float(seconds),
            )
            session.add(row)
            session.flush()
            return to_record(EpochRecord, row)

    def epochs(self, run_id: int) -> list[EpochRecord]:
        with self._unit(f"read the epochs of run {run_id}") as session:
            rows = session.scalars(
                select(EpochMetric).where(EpochMetric.run_id == run_id).order_by(EpochMetric.epoch)
            ).all()
            return [to_record(EpochRecord, r) for r in rows]

    def epochs_frame(self, run_ids: Sequence[int]) -> pd.DataFrame:
        """Tidy per-epoch metrics of several runs (one row per run and epoch)."""
        columns = ["run_id", "epoch", "loss", "val_ndcg", "val_recall", "seconds"]
        with self._unit("read epoch metrics") as session:
            rows = session.execute(
                select(*(getattr(EpochMetric, c) for c in columns))
                .where(EpochMetric.run_id.in_(list(run_ids)))
                .order_by(EpochMetric.run_id, EpochMetric.epoch)
            ).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=columns)

    # ------------------------------------------------------------ results
    def set_results(
        self,
        run_id: int,
        split: str,
        rows: Iterable[tuple[str, int, float | None]] | Mapping[str, float | None],
    ) -> None:
        """Replace the results of ``split`` with ``rows``: ``(metric, k, value)`` tuples or a
        mapping such as ``{"ndcg@10": 0.31, "coverage": 0.4}`` (k = 0 without ``@``)."""
        if isinstance(rows, Mapping):
            items = [(*parse_metric_key(key), value) for key, value in rows.items()]
        else:
            items = [(metric, int(k), value) for metric, k, value in rows]
        with self._unit(f"save the {split} results of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            session.execute(delete(Result).where(Result.run_id == run_id, Result.split == split))
            session.add_all(
                Result(run_id=run_id, split=split, metric=m, k=int(k), value=finite_or_none(v))
                for m, k, v in items
            )

    def results(self, run_id: int, split: str = "test") -> dict[str, float | None]:
        """``{"ndcg@10": value, ...}`` for one run and split."""
        return {r.key: r.value for r in self.result_records(run_id, split)}

    def result_records(self, run_id: int, split: str | None = None) -> list[ResultRecord]:
        query = select(Result).where(Result.run_id == run_id)
        if split is not None:
            query = query.where(Result.split == split)
        with self._unit(f"read the results of run {run_id}") as session:
            rows = session.scalars(query.order_by(Result.split, Result.metric, Result.k)).all()
            return [to_record(ResultRecord, r) for r in rows]

    def results_frame(self, run_ids: Sequence[int], split: str | None = None) -> pd.DataFrame:
        """Tidy results of several runs: one row per (run, split, metric, k), with the run's
        name, role and model for charts and tables."""
        columns = ["run_id", "name", "role", "model", "split", "metric", "k", "key", "value"]
        query = (
            select(
                Run.id,
                Run.name,
                Run.role,
                Run.model,
                Result.split,
                Result.metric,
                Result.k,
                Result.value,
            )
            .join(Result, Result.run_id == Run.id)
            .where(Run.id.in_(list(run_ids)))
            .order_by(Run.id, Result.split, Result.metric, Result.k)
        )
        if split is not None:
            query = query.where(Result.split == split)
        with self._unit("read results") as session:
            rows = session.execute(query).all()
        records = [
            (rid, name, role, model, sp, metric, k, metric_key(metric, k), value)
            for rid, name, role, model, sp, metric, k, value in rows
        ]
        frame = pd.DataFrame(records, columns=columns)
        frame["value"] = frame["value"].astype("float64")
        return frame

    # ------------------------------------------------------------ latency, parity
    def add_latency(
        self,
        run_id: int,
        runtime: str,
        batch: int,
        p50: float,
        p95: float,
        p99: float,
        qps: float,
        threads: int | None = None,
        env: Mapping[str, Any] | None = None,
    ) -> LatencyRecord:
        """Record one latency measurement (milliseconds for the percentiles)."""
        with self._unit(f"save a latency measurement of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = Latency(
                run_id=run_id,
                runtime=runtime,
                batch=int(batch),
                p50=float(p50),
                p95=float(p95),
                p99=float(p99),
                qps=float(qps),
                threads=None if threads is None else int(threads),
                env=jsonable(dict(env or {})),
            )
            session.add(row)
            session.flush()
            return to_record(LatencyRecord, row)

    def latencies(self, run_id: int) -> list[LatencyRecord]:
        with self._unit(f"read the latency of run {run_id}") as session:
            rows = session.scalars(
                select(Latency).where(Latency.run_id == run_id).order_by(Latency.id)
            ).all()
            return [to_record(LatencyRecord, r) for r in rows]

    def add_parity(
        self, run_id: int, max_abs_diff: float, topk_agreement: float, n_users: int
    ) -> ParityRecord:
        with self._unit(f"save a parity check of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = Parity(
                run_id=run_id,
                max_abs_diff=float(max_abs_diff),
                topk_agreement=float(topk_agreement),
                n_users=int(n_users),
            )
            session.add(row)
            session.flush()
            return to_record(ParityRecord, row)

    def parities(self, run_id: int) -> list[ParityRecord]:
        with self._unit(f"read the parity checks of run {run_id}") as session:
            rows = session.scalars(
                select(Parity).where(Parity.run_id == run_id).order_by(Parity.id)
            ).all()
            return [to_record(ParityRecord, r) for r in rows]

    # ------------------------------------------------------------ artifacts
    def add_artifact(
        self,
        run_id: int,
        kind: str,
        path: str | os.PathLike[str],
        bytes: int,  # noqa: A002 - the column's name
        sha256: str,
    ) -> ArtifactRecord:
        """Record a finished file of a run; writing the same path again updates its row."""
        stored = paths.to_stored(path)
        with self._unit(f"record an artifact of run {run_id}", write=True) as session:
            self._run_row(session, run_id)
            row = session.scalars(
                select(Artifact).where(Artifact.run_id == run_id, Artifact.path == stored)
            ).one_or_none()
            if row is None:
                row = Artifact(run_id=run_id, path=stored)
                session.add(row)
            row.kind, row.bytes, row.sha256, row.created = kind, int(bytes), sha256, utcnow()
            session.flush()
            return to_record(ArtifactRecord, row)

    def artifacts(self, run_id: int) -> list[ArtifactRecord]:
        with self._unit(f"read the artifacts of run {run_id}") as session:
            rows = session.scalars(
                select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.id)
            ).all()
            return [to_record(ArtifactRecord, r) for r in rows]

    def listed_checkpoint(self, run: RunRecord) -> Path | None:
        """The run's checkpoint path, if the store lists it as an artifact of that run inside
        the data directory; anything else is refused with a sentence (never loaded)."""
        path = run.checkpoint_path
        if path is None:
            return None
        listed = {a.path.resolve() for a in self.artifacts(run.id)}
        if not paths.is_inside_data_dir(path) or path.resolve() not in listed:
            raise ConfigError(
                f"The checkpoint of run #{run.id} is not a file this run store recorded in "
                "the data directory, so it is not loaded; train that run again."
            )
        return path

    def delete_artifacts(self, run_id: int) -> None:
        """Forget every artifact of a run and delete the files (inside the data directory)."""
        with self._unit(f"delete the artifacts of run {run_id}", write=True) as session:
            stored = session.scalars(select(Artifact.path).where(Artifact.run_id == run_id)).all()
            session.execute(delete(Artifact).where(Artifact.run_id == run_id))
        remove_paths(paths.from_stored(p) for p in stored)
