"""What the Runs page shows, computed from the store, and the finished teachers to pick from.

- :func:`runs_frame` / :func:`filter_runs`: the table of every run, with its test NDCG@10
  and validation curve, filtered by dataset, role and status;
- :func:`metrics_frame`: one run's test metrics, overall and per user-activity slice;
- :func:`artifacts_frame`: a run's files;
- :func:`teacher_choices`: the succeeded teachers, newest first (the student form on the
  Train page and the Compare page both pick from this one list).

The per-epoch curves of a run are drawn by :func:`core.views.charts.training_chart`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from core import paths
from core.enums import Role, Status
from core.metrics import SLICES
from core.records import ArtifactRecord, DatasetRecord, RunRecord, metric_key, parse_metric_key
from core.store import Store

RUNS_COLUMNS = [
    "id",
    "status",
    "role",
    "model",
    "name",
    "dataset",
    "params",
    "ndcg@10",
    "val_ndcg",
    "created",
    "duration_s",
    "teacher",
    "tags",
]
# Statuses whose run has an error (or a reason) worth showing in red.
ENDED_BADLY = frozenset({Status.FAILED, Status.CANCELLED, Status.INTERRUPTED})


def teacher_choices(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The succeeded teachers among ``runs``, newest first."""
    return sorted(
        (r for r in runs if r.role == Role.TEACHER and r.status == Status.SUCCEEDED),
        key=lambda r: r.id,
        reverse=True,
    )


def runs_frame(
    store: Store, runs: Sequence[RunRecord], datasets: Iterable[DatasetRecord] = ()
) -> pd.DataFrame:
    """One row per run, newest first, with test NDCG@10 and the validation NDCG per epoch
    (a list, for a sparkline). Three queries whatever the number of runs."""
    names = {d.id: d.name for d in datasets}
    ids = [r.id for r in runs]
    results = store.results_frame(ids, split="test") if ids else pd.DataFrame()
    ndcg: dict[int, float] = {}
    if len(results):
        head = results[results["key"] == "ndcg@10"]
        ndcg = dict(zip(head["run_id"], head["value"], strict=True))
    epochs = store.epochs_frame(ids) if ids else pd.DataFrame(columns=["run_id", "val_ndcg"])
    curves = {
        int(run_id): [float(v) for v in group["val_ndcg"] if v is not None and not pd.isna(v)]
        for run_id, group in epochs.groupby("run_id")
    }
    rows = [
        {
            "id": r.id,
            "status": r.status,
            "role": r.role,
            "model": r.model,
            "name": r.name or "",
            "dataset": names.get(r.dataset_id, f"#{r.dataset_id}"),
            "params": r.num_params,
            "ndcg@10": ndcg.get(r.id),
            "val_ndcg": curves.get(r.id, []),
            "created": r.created,
            "duration_s": r.duration_seconds,
            "teacher": r.teacher_run_id,
            "tags": ", ".join(r.tags),
        }
        for r in sorted(runs, key=lambda r: -r.id)
    ]
    frame = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    for column in ("params", "teacher"):
        frame[column] = frame[column].astype("Int64")
    frame["ndcg@10"] = frame["ndcg@10"].astype("float64")
    frame["duration_s"] = frame["duration_s"].astype("float64")
    return frame


def filter_runs(
    runs: Sequence[RunRecord],
    dataset_ids: Iterable[int] = (),
    roles: Iterable[str] = (),
    statuses: Iterable[str] = (),
) -> list[RunRecord]:
    """Runs passing every non-empty filter (an empty filter keeps everything)."""
    dataset_ids, roles, statuses = set(dataset_ids), set(roles), set(statuses)
    return [
        r
        for r in runs
        if (not dataset_ids or r.dataset_id in dataset_ids)
        and (not roles or r.role in roles)
        and (not statuses or r.status in statuses)
    ]


_SLICE_KEY = re.compile(r"^(?P<metric>[a-z_]+)\[(?P<slice>[a-z]+)\]$")


def metrics_frame(results: Mapping[str, float | None]) -> pd.DataFrame:
    """Test results as a table: one row per metric@K, columns ``all`` and each user slice.

    Slice values are stored as ``"ndcg[cold]@10"``; run-level figures without a K (such as
    ``train_seconds``) keep their own row with only ``all`` filled.
    """
    table: dict[str, dict[str, float | None]] = {}
    for key, value in results.items():
        name, k = parse_metric_key(key)
        match = _SLICE_KEY.match(name)
        metric, column = (match["metric"], match["slice"]) if match else (name, "all")
        table.setdefault(metric_key(metric, k), {})[column] = value
    columns = ["all", *SLICES]
    frame = pd.DataFrame.from_dict(table, orient="index").reindex(columns=columns)
    frame.index.name = "metric"
    return frame.sort_index().astype("float64")


def artifacts_frame(artifacts: Sequence[ArtifactRecord]) -> pd.DataFrame:
    """Files of a run; paths relative to the data directory when they live inside it."""
    root = paths.data_dir()
    rows = []
    for a in artifacts:
        path = (
            a.path.relative_to(root).as_posix() if paths.is_inside_data_dir(a.path) else str(a.path)
        )
        rows.append({"kind": a.kind, "path": path, "bytes": a.bytes, "sha256": a.sha256})
    return pd.DataFrame(rows, columns=["kind", "path", "bytes", "sha256"])
