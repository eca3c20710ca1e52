"""What the Compare page shows: one teacher pinned as the reference and runs beside it.

- the runs that can be compared with a teacher and the default selection (its newest
  students, their no-teacher twins and the newest popularity run);
- :func:`comparison_table`: metrics at K, % of the teacher kept per metric
  (:func:`core.metrics.kept_fraction`), overlap with the teacher, size and latency;
- :func:`config_differences`: the flattened configs side by side, differences only;
- tidy frames for the charts in :mod:`core.views.charts`: the Pareto frontier of quality
  vs latency, % kept per metric, validation curves;
- honest latency: one :class:`LatencySetting` (runtime and threads) per comparison. Only
  the newest figure of that exact setting counts for a run (a re-measure replaces the older
  one), and a figure taken before the run's model files were last written is never shown
  beside fresh ones: the table says "re-measure" instead (:func:`latency_for`);
- :func:`measure_runs`: an on-demand measurement in that setting, written to the store so it
  survives restarts.

Sample recommendations live in :mod:`core.views.recommendations`, exports in
:mod:`core.views.text`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import paths
from core.dataset import InteractionData
from core.enums import Role, Status
from core.errors import ConfigError
from core.metrics import kept_fraction
from core.models import Recommender
from core.records import LatencyRecord, RunRecord, metric_key
from core.runner import run_model
from core.serving.latency import benchmark_model, machine_info, store_measurement
from core.store import Store
from core.views.text import run_title

# Metrics shown side by side at the chosen K, and those whose share of the teacher is shown.
TABLE_METRICS = ("ndcg", "hr", "mrr", "recall", "coverage", "tail_recall")
KEPT_METRICS = ("ndcg", "hr", "mrr", "recall")
KS = (10, 20)
JACCARD_KEY = "jaccard_vs_teacher@10"
JACCARD_COLUMN = "jaccard@10 vs teacher"
# A sweep can leave dozens of students under one teacher: the default view shows the newest
# few (plus popularity); any other can be added by hand.
MAX_DEFAULT_RUNS = 6
FP32_BYTES = 4
MISSING = "—"
# The runtimes a comparison can be timed in. int8 is left out: its quality is not the one in
# the table, so its latency would sit next to the wrong NDCG.
RUNTIME_LABELS = {"torch": "PyTorch eager", "onnxruntime": "onnxruntime"}
LATENCY_BATCH = 1
NOT_MEASURED = "not measured"
STALE = "re-measure"
NO_ONNX = "no ONNX export"


def kept_column(metric: str, k: int) -> str:
    return f"{metric_key(metric, k)} kept %"


# --------------------------------------------------------------------------- run choices
def compare_candidates(runs: Sequence[RunRecord], teacher: RunRecord) -> list[RunRecord]:
    """Every other succeeded run of ``runs`` on the teacher's dataset (what can be added).

    Takes the runs already read for the teacher choice: one store read per page run,
    whatever the number of runs.
    """
    return [
        r
        for r in runs
        if r.dataset_id == teacher.dataset_id
        and r.status == Status.SUCCEEDED
        and r.id != teacher.id
    ]


def default_selection(
    candidates: Sequence[RunRecord], teacher: RunRecord, limit: int = MAX_DEFAULT_RUNS
) -> list[int]:
    """The teacher's newest ``limit`` students and no-teacher baselines, plus the newest
    popularity run (``candidates`` from :func:`compare_candidates`)."""
    own = sorted(
        (
            r.id
            for r in candidates
            if r.teacher_run_id == teacher.id and r.role in (Role.STUDENT, Role.BASELINE)
        ),
        reverse=True,
    )
    chosen = own[:limit]
    popularity = [r.id for r in candidates if r.role == Role.POPULARITY]
    if popularity:
        chosen.append(max(popularity))
    return sorted(chosen)


# --------------------------------------------------------------------------- latency setting
@dataclass(frozen=True)
class LatencySetting:
    """The one runtime and intra-op thread count every latency figure of a comparison has.

    Figures in other runtimes or thread counts are not comparable (onnxruntime with 4
    threads vs PyTorch with 1 says nothing about the models), so they are never mixed.
    """

    runtime: str = "torch"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIME_LABELS:
            raise ConfigError(
                f"Latency runtime must be one of {', '.join(RUNTIME_LABELS)}; got {self.runtime!r}."
            )
        if int(self.threads) < 1:
            raise ConfigError(f"Latency needs at least one thread; got {self.threads}.")

    @property
    def label(self) -> str:
        """``onnxruntime, 2 threads``: what the chart and the table say the figures are."""
        plural = "" if self.threads == 1 else "s"
        return f"{RUNTIME_LABELS[self.runtime]}, {self.threads} thread{plural}"


def thread_choices() -> list[int]:
    """1 .. the cores this process may use: the thread counts a comparison can be timed at."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return list(range(1, max(1, usable) + 1))


def onnx_file(run: RunRecord) -> Path | None:
    """The run's ONNX export when it exists inside the data directory (else None)."""
    path = run.onnx_path
    if path is None or not path.exists() or not paths.is_inside_data_dir(path):
        return None
    return path


def model_written(run: RunRecord, runtime: str) -> datetime | None:
    """When the files a ``runtime`` figure times were last written: the checkpoint (and the
    run's finish, for a run trained again), plus the ONNX file for onnxruntime."""
    times = [run.finished] if run.finished is not None else []
    files = [run.checkpoint_path, run.onnx_path if runtime != "torch" else None]
    for path in files:
        if path is not None and path.exists():
            times.append(datetime.fromtimestamp(path.stat().st_mtime, UTC))
    return max(times, default=None)


def newest_latencies(
    records: Sequence[LatencyRecord],
) -> dict[tuple[str, int, int | None], LatencyRecord]:
    """The newest record per (runtime, batch, threads): a re-measure replaces the older one."""
    newest: dict[tuple[str, int, int | None], LatencyRecord] = {}
    for rec in records:
        key = (rec.runtime, rec.batch, rec.threads)
        if key not in newest or rec.id > newest[key].id:
            newest[key] = rec
    return newest


def latency_for(
    run: RunRecord, records: Sequence[LatencyRecord], setting: LatencySetting
) -> tuple[LatencyRecord | None, str]:
    """The run's single-request figure in ``setting``, or None and why there is none.

    The reason is :data:`NO_ONNX` (onnxruntime asked, no export), :data:`NOT_MEASURED` or
    :data:`STALE` (the newest figure predates the model files: it timed other weights).
    With a figure, the second value is the setting's label.
    """
    if setting.runtime != "torch" and onnx_file(run) is None:
        return None, NO_ONNX
    record = newest_latencies(records).get((setting.runtime, LATENCY_BATCH, setting.threads))
    if record is None:
        return None, NOT_MEASURED
    written = model_written(run, setting.runtime)
    if written is not None and record.created < written:
        return None, STALE
    return record, setting.label


# --------------------------------------------------------------------------- comparison table


def size_mb(run: RunRecord) -> float | None:
    """fp32 weight size (params x 4 bytes); the checkpoint's size when params are unknown."""
    if run.num_params is not None:
        return run.num_params * FP32_BYTES / 1e6
    if run.checkpoint_path is not None and run.checkpoint_path.exists():
        return run.checkpoint_path.stat().st_size / 1e6
    return None


def _kept_pct(value: float | None, reference: float | None) -> float | None:
    kept = kept_fraction(value, reference)
    return None if kept is None else 100.0 * kept


def test_results(store: Store, run_ids: Sequence[int]) -> dict[int, dict[str, float | None]]:
    """``{run_id: {"ndcg@10": value, ...}}`` of the test split, in one store read."""
    frame = store.results_frame(list(run_ids), "test")
    out: dict[int, dict[str, float | None]] = {int(i): {} for i in run_ids}
    for run_id, key, value in zip(frame["run_id"], frame["key"], frame["value"], strict=True):
        out[int(run_id)][key] = None if pd.isna(value) else float(value)
    return out


def comparison_table(
    store: Store,
    teacher: RunRecord,
    runs: Sequence[RunRecord],
    k: int = 10,
    setting: LatencySetting | None = None,
) -> pd.DataFrame:
    """The side-by-side table: the teacher first, then ``runs`` (in the order given).

    ``<metric>@K kept %`` = 100 x :func:`core.metrics.kept_fraction` (run value / teacher
    value; empty when the teacher's value is missing or zero). Jaccard@10 vs the teacher is
    the stored overlap of runs distilled (or baselined) against *this* teacher; the
    teacher's own is 1. ``p50_ms`` is the single-request figure in ``setting`` (default:
    PyTorch, 1 thread) and ``latency`` says which setting it is, or why it is missing
    (:func:`latency_for`).
    """
    if k not in KS:
        raise ConfigError(f"K must be one of {', '.join(map(str, KS))}; got {k}.")
    setting = setting or LatencySetting()
    ordered = [teacher, *[r for r in runs if r.id != teacher.id]]
    stored = test_results(store, [r.id for r in ordered])
    reference = stored[teacher.id]
    rows = []
    for run in ordered:
        results = stored[run.id]
        row: dict[str, Any] = {"run_id": run.id, "run": run_title(run), "role": run.role}
        row["model"] = run.model
        row["method"] = (
            (run.config.get("distill") or {}).get("method", "") if run.role == Role.STUDENT else ""
        )
        for metric in TABLE_METRICS:
            row[metric_key(metric, k)] = results.get(metric_key(metric, k))
        for metric in KEPT_METRICS:
            key = metric_key(metric, k)
            row[kept_column(metric, k)] = _kept_pct(results.get(key), reference.get(key))
        if run.id == teacher.id:
            row[JACCARD_COLUMN] = 1.0
        elif run.teacher_run_id == teacher.id:
            row[JACCARD_COLUMN] = results.get(JACCARD_KEY)
        else:
            row[JACCARD_COLUMN] = None
        row["params"] = run.num_params
        row["size_mb"] = size_mb(run)
        latency, note = latency_for(run, store.latencies(run.id), setting)
        row["p50_ms"] = latency.p50 if latency else None
        row["latency"] = note
        rows.append(row)
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if c not in ("run", "role", "model", "method", "latency")]
    frame[numeric] = frame[numeric].astype("float64")
    frame["run_id"] = frame["run_id"].astype("int64")
    frame["params"] = frame["params"].astype("Int64")
    return frame


def table_formats(table: pd.DataFrame, k: int) -> dict[str, tuple[str, str]]:
    """Column label and printf format of each numeric column of the comparison table."""
    formats = {c: (c, "%.1f%%") for c in table.columns if c.endswith(" kept %")}
    formats |= {metric_key(m, k): (metric_key(m, k), "%.4f") for m in TABLE_METRICS}
    formats[JACCARD_COLUMN] = (JACCARD_COLUMN, "%.3f")
    formats["params"] = ("parameters", "localized")
    formats["size_mb"] = ("size (MB, fp32)", "%.3f")
    formats["p50_ms"] = ("p50 latency (ms, 1 request)", "%.2f")
    return formats


def unmeasured_runs(table: pd.DataFrame) -> list[str]:
    """Runs in the table without a usable latency figure (left off the Pareto chart)."""
    return table.loc[table["p50_ms"].isna(), "run"].tolist()


def missing_latency(table: pd.DataFrame) -> dict[str, list[str]]:
    """The runs left off the Pareto chart, grouped by why (:data:`NOT_MEASURED`,
    :data:`STALE`, :data:`NO_ONNX`), in table order."""
    missing = table[table["p50_ms"].isna()]
    groups: dict[str, list[str]] = {}
    for run, note in zip(missing["run"], missing["latency"], strict=True):
        groups.setdefault(note, []).append(run)
    return groups


# --------------------------------------------------------------------------- config differences
def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"model": {"dim": 8}}`` -> ``{"model.dim": 8}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def config_differences(
    configs: Mapping[str, Mapping[str, Any]], only_differences: bool = True
) -> pd.DataFrame:
    """Flattened configs side by side (one column per run, one row per key), as text.

    With ``only_differences`` only the keys whose values are not the same for every run
    are kept (a key missing from some runs counts as different); missing cells read "—".
    """
    flat = {name: flatten_config(cfg) for name, cfg in configs.items()}
    keys = sorted({key for cfg in flat.values() for key in cfg})
    rows = {}
    for key in keys:
        cells = [MISSING if key not in cfg else _cell(cfg[key]) for cfg in flat.values()]
        present = [cfg[key] for cfg in flat.values() if key in cfg]
        differs = len(present) < len(flat) or any(v != present[0] for v in present[1:])
        if differs or not only_differences:
            rows[key] = cells
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(flat))
    frame.index.name = "setting"
    return frame


# --------------------------------------------------------------------------- chart frames
def pareto_frontier(
    frame: pd.DataFrame, quality: str = "ndcg@10", cost: str = "p50_ms"
) -> pd.Series:
    """True for rows no other row dominates (quality >= and cost <=, one of them strictly).

    Identical points do not dominate each other, so both stay on the frontier. Rows
    without a finite quality and cost are never on it.
    """
    q = frame[quality].to_numpy(dtype=np.float64)
    c = frame[cost].to_numpy(dtype=np.float64)
    valid = np.isfinite(q) & np.isfinite(c)
    on = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid & (q >= q[i]) & (c <= c[i]) & ((q > q[i]) | (c < c[i]))
        on[i] = not others.any()
    return pd.Series(on, index=frame.index, name="frontier")


def pareto_frame(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The measured rows of the table as ``run, role, ndcg, latency_ms, params, size_mb,
    frontier``: what :func:`core.views.charts.pareto_chart` draws."""
    points = table[table["p50_ms"].notna() & (table["p50_ms"] > 0)]
    frame = pd.DataFrame(
        {
            "run": points["run"],
            "role": points["role"],
            "ndcg": points[metric_key("ndcg", k)],
            "latency_ms": points["p50_ms"],
            "params": points["params"].astype("float64").fillna(0.0),
            "size_mb": points["size_mb"],
        }
    )
    frame["frontier"] = pareto_frontier(frame, "ndcg", "latency_ms")
    return frame


def kept_frame(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Tidy ``run, metric, kept`` (% of the teacher) for every non-teacher row."""
    others = table.iloc[1:]
    rows = [
        (run, metric_key(metric, k), value)
        for metric in KEPT_METRICS
        for run, value in zip(others["run"], others[kept_column(metric, k)], strict=True)
    ]
    return pd.DataFrame(rows, columns=["run", "metric", "kept"]).astype({"kept": "float64"})


def validation_curves(store: Store, runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Tidy ``run, epoch, val_ndcg`` for the runs, for overlaid curves."""
    frame = store.epochs_frame([r.id for r in runs])
    titles = {r.id: run_title(r) for r in runs}
    frame = frame.assign(run=frame["run_id"].map(titles))
    return frame.loc[frame["val_ndcg"].notna(), ["run", "epoch", "val_ndcg"]].reset_index(drop=True)


# --------------------------------------------------------------------------- measuring
def measure_latency(
    store: Store,
    run: RunRecord,
    data: InteractionData,
    setting: LatencySetting,
    *,
    model: Recommender | None = None,
    iters: int = 100,
    warmup: int = 10,
    time_budget_s: float = 2.0,
    seed: int = 0,
) -> LatencyRecord:
    """Time single requests of ``run`` in ``setting`` over seeded random test users and store
    the percentiles (batch 1, the setting's runtime and threads).

    The timing is the serving benchmark's own (:func:`core.serving.latency.benchmark_model`):
    the user's context, history masked, top-10, as the ONNX graph does it. PyTorch's thread
    count is process-wide: while it is measured, a training job in this process runs with
    the chosen count too (for a few seconds), and gets its own back afterwards.
    """
    onnx = None
    if setting.runtime == "torch":
        model = model if model is not None else run_model(store, run)
    else:
        onnx = onnx_file(run)
        if onnx is None:
            raise ConfigError(
                f"Run {run_title(run)} has no ONNX export; prepare its handoff first, "
                "or time it in PyTorch."
            )
    (result,) = benchmark_model(
        model if setting.runtime == "torch" else None,
        onnx,
        data,
        runtime=setting.runtime,
        batch_sizes=(LATENCY_BATCH,),
        threads=setting.threads,
        k=10,
        seed=seed,
        warmup=warmup,
        iters=iters,
        time_budget_s=time_budget_s,
    )
    return store_measurement(store, run.id, result, machine_info(setting.threads))


def measure_runs(
    store: Store, runs: Sequence[RunRecord], data: InteractionData, setting: LatencySetting
) -> tuple[list[LatencyRecord], list[RunRecord]]:
    """:func:`measure_latency` for each run that can be timed in ``setting``, one after the
    other (never concurrently, so that the runs do not slow each other down). Returns the
    new records and the runs skipped for want of an ONNX export."""
    timeable = [r for r in runs if setting.runtime == "torch" or onnx_file(r) is not None]
    records = [measure_latency(store, run, data, setting) for run in timeable]
    timed = {r.id for r in timeable}
    return records, [r for r in runs if r.id not in timed]
