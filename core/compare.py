"""What the Runs and Compare pages show, computed from the store: tables, charts, samples.

Everything here is plain pandas/Altair/torch so it can be tested without Streamlit:

- the Runs page's run table, per-run metrics (overall and per activity slice), epoch
  curves and artifact list;
- the Compare page's side-by-side table pinned to one teacher (metrics at K, % of the
  teacher kept per metric, overlap with the teacher, size, the latest stored latency),
  a "differences only" view of the configs, the Pareto frontier of quality vs latency,
  its charts and CSV/Markdown exports;
- live sample recommendations for one user (history, each model's top-K, agreement with
  the teacher, the held-out test item) and an on-demand PyTorch latency measurement
  that is written to the store so it survives restarts.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import torch
from pandas.io.formats.style import Styler

from core import paths
from core.dataset import SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.errors import ConfigError
from core.latency import benchmark_model, machine_info
from core.metrics import NO_ITEM, SLICES, topk_items
from core.models import Recommender
from core.runner import run_model
from core.store import (
    ArtifactRecord,
    DatasetRecord,
    EpochRecord,
    LatencyRecord,
    RunRecord,
    Store,
    parse_metric_key,
)

# Metrics shown side by side at the chosen K, and those whose share of the teacher is shown.
TABLE_METRICS = ("ndcg", "hr", "mrr", "recall", "coverage", "tail_recall")
KEPT_METRICS = ("ndcg", "hr", "mrr", "recall")
KS = (10, 20)
JACCARD_KEY = "jaccard_vs_teacher@10"
JACCARD_COLUMN = "jaccard@10 vs teacher"
# The latency shown per run: onnxruntime (what gets served) before PyTorch eager; int8 last
# because its quality is not the one in the table.
PREFERRED_RUNTIMES = ("onnxruntime", "torch", "onnxruntime-int8")
FP32_BYTES = 4
HISTORY_LENGTH = 10


def kept_column(metric: str, k: int) -> str:
    return f"{metric}@{k} kept %"


# --------------------------------------------------------------------------- run choices
def run_title(run: RunRecord) -> str:
    """A unique, readable name: ``#4 student-soft`` (names alone repeat across runs)."""
    return f"#{run.id} {run.name}" if run.name else run.label


def teacher_choices(store: Store) -> list[RunRecord]:
    """Succeeded teacher runs, newest first (the Compare page pins one of them)."""
    return sorted(store.list_runs(role="teacher", status="succeeded"), key=lambda r: -r.id)


def compare_candidates(store: Store, teacher: RunRecord) -> list[RunRecord]:
    """Every other succeeded run on the teacher's dataset (what can be added)."""
    runs = store.list_runs(dataset_id=teacher.dataset_id, status="succeeded")
    return [r for r in runs if r.id != teacher.id]


def default_selection(store: Store, teacher: RunRecord) -> list[int]:
    """The teacher's students and no-teacher baselines, plus the newest popularity run."""
    candidates = compare_candidates(store, teacher)
    chosen = [
        r.id
        for r in candidates
        if r.teacher_run_id == teacher.id and r.role in ("student", "baseline")
    ]
    popularity = [r.id for r in candidates if r.role == "popularity"]
    if popularity:
        chosen.append(max(popularity))
    return sorted(chosen)


def parse_ids(text: str | None) -> list[int]:
    """``"4,5,x,6"`` -> ``[4, 5, 6]``: query parameters are user input, bad parts are dropped."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isdigit() and int(part) not in out:
            out.append(int(part))
    return out


# --------------------------------------------------------------------------- runs page
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
        row = f"{metric}@{k}" if k else metric
        table.setdefault(row, {})[column] = value
    columns = ["all", *SLICES]
    frame = pd.DataFrame.from_dict(table, orient="index").reindex(columns=columns)
    frame.index.name = "metric"
    return frame.sort_index().astype("float64")


def epoch_frame(epochs: Sequence[EpochRecord]) -> pd.DataFrame:
    """Tidy per-epoch curves: ``epoch, panel ("loss" | "validation"), series, value``."""
    rows: list[tuple[int, str, str, float]] = []
    for e in epochs:
        if e.loss is not None:
            rows.append((e.epoch, "loss", "total", e.loss))
        rows += [
            (e.epoch, "loss", str(name), float(v)) for name, v in e.terms.items() if v is not None
        ]
        rows += [
            (e.epoch, "validation", str(n), float(v)) for n, v in e.val.items() if v is not None
        ]
    return pd.DataFrame(rows, columns=["epoch", "panel", "series", "value"])


def epoch_chart(epochs: Sequence[EpochRecord], panel: str) -> alt.Chart:
    """Loss terms (``panel="loss"``) or validation metrics per epoch, one line per series."""
    frame = epoch_frame(epochs)
    frame = frame[frame["panel"] == panel]
    title = "training loss" if panel == "loss" else "validation"
    return (
        alt.Chart(frame, title=title)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=title),
            color=alt.Color("series:N", title=None),
            tooltip=["epoch:Q", "series:N", alt.Tooltip("value:Q", format=".4f")],
        )
    )


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


# --------------------------------------------------------------------------- comparison table
def latest_latency(records: Sequence[LatencyRecord], batch: int = 1) -> LatencyRecord | None:
    """The newest single-request measurement of the most preferred runtime, if any."""
    by_runtime: dict[str, LatencyRecord] = {}
    for rec in records:
        if rec.batch == batch and (
            rec.runtime not in by_runtime or rec.id > by_runtime[rec.runtime].id
        ):
            by_runtime[rec.runtime] = rec
    for runtime in PREFERRED_RUNTIMES:
        if runtime in by_runtime:
            return by_runtime[runtime]
    return next(iter(sorted(by_runtime.values(), key=lambda r: -r.id)), None)


def size_mb(run: RunRecord) -> float | None:
    """fp32 weight size (params x 4 bytes); the checkpoint's size when params are unknown."""
    if run.num_params is not None:
        return run.num_params * FP32_BYTES / 1e6
    if run.checkpoint_path is not None and run.checkpoint_path.exists():
        return run.checkpoint_path.stat().st_size / 1e6
    return None


def _ratio_pct(value: float | None, reference: float | None) -> float:
    if value is None or reference is None or not math.isfinite(reference) or reference == 0:
        return float("nan")
    return 100.0 * value / reference


def comparison_table(
    store: Store, teacher: RunRecord, runs: Sequence[RunRecord], k: int = 10
) -> pd.DataFrame:
    """The side-by-side table: the teacher first, then ``runs`` (in the order given).

    ``<metric>@K kept %`` = 100 x run value / teacher value. Jaccard@10 vs the teacher is
    the stored overlap of runs distilled (or baselined) against *this* teacher; the
    teacher's own is 1.
    """
    if k not in KS:
        raise ConfigError(f"K must be one of {', '.join(map(str, KS))}; got {k}.")
    ordered = [teacher, *[r for r in runs if r.id != teacher.id]]
    reference = store.results(teacher.id, "test")
    rows = []
    for run in ordered:
        results = reference if run.id == teacher.id else store.results(run.id, "test")
        row: dict[str, Any] = {"run_id": run.id, "run": run_title(run), "role": run.role}
        row["model"] = run.model
        row["method"] = (
            (run.config.get("distill") or {}).get("method", "") if run.role == "student" else ""
        )
        for metric in TABLE_METRICS:
            row[f"{metric}@{k}"] = results.get(f"{metric}@{k}")
        for metric in KEPT_METRICS:
            key = f"{metric}@{k}"
            row[kept_column(metric, k)] = _ratio_pct(results.get(key), reference.get(key))
        if run.id == teacher.id:
            row[JACCARD_COLUMN] = 1.0
        elif run.teacher_run_id == teacher.id:
            row[JACCARD_COLUMN] = results.get(JACCARD_KEY)
        else:
            row[JACCARD_COLUMN] = None
        row["params"] = run.num_params
        row["size_mb"] = size_mb(run)
        latency = latest_latency(store.latencies(run.id))
        row["p50_ms"] = latency.p50 if latency else None
        row["runtime"] = latency.runtime if latency else ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if c not in ("run", "role", "model", "method", "runtime")]
    frame[numeric] = frame[numeric].astype("float64")
    frame["run_id"] = frame["run_id"].astype("int64")
    frame["params"] = frame["params"].astype("Int64")
    return frame


def table_formats(table: pd.DataFrame, k: int) -> dict[str, tuple[str, str]]:
    """Column label and printf format of each numeric column of the comparison table."""
    formats = {c: (c, "%.1f%%") for c in table.columns if c.endswith(" kept %")}
    formats |= {f"{m}@{k}": (f"{m}@{k}", "%.4f") for m in TABLE_METRICS}
    formats[JACCARD_COLUMN] = (JACCARD_COLUMN, "%.3f")
    formats["params"] = ("parameters", "localized")
    formats["size_mb"] = ("size (MB, fp32)", "%.3f")
    formats["p50_ms"] = ("p50 latency (ms, 1 request)", "%.2f")
    return formats


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


MISSING = "—"


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


# --------------------------------------------------------------------------- pareto + charts
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


def unmeasured_runs(table: pd.DataFrame) -> list[str]:
    """Runs in the table with no stored latency (left off the Pareto chart)."""
    return table.loc[table["p50_ms"].isna(), "run"].tolist()


def pareto_chart(table: pd.DataFrame, k: int = 10) -> alt.LayerChart:
    """NDCG@K vs p50 latency (log x), bubble area = parameters, the frontier as a step line."""
    metric = f"ndcg@{k}"
    points = table[table["p50_ms"].notna() & (table["p50_ms"] > 0)]
    frame = pd.DataFrame(
        {
            "run": points["run"],
            "role": points["role"],
            "ndcg": points[metric],
            "latency_ms": points["p50_ms"],
            "runtime": points["runtime"],
            "params": points["params"].astype("float64").fillna(0.0),
            "size_mb": points["size_mb"],
        }
    )
    frame["frontier"] = pareto_frontier(frame, "ndcg", "latency_ms")
    x = alt.X(
        "latency_ms:Q", scale=alt.Scale(type="log"), title="p50 latency per request (ms, log)"
    )
    y = alt.Y("ndcg:Q", title=f"NDCG@{k}")
    base = alt.Chart(frame).encode(x=x, y=y)
    bubbles = base.mark_circle(opacity=0.7, stroke="black", strokeWidth=0.5).encode(
        size=alt.Size("params:Q", title="parameters", scale=alt.Scale(range=[40, 1200])),
        color=alt.Color("role:N"),
        tooltip=[
            "run:N",
            "role:N",
            alt.Tooltip("ndcg:Q", format=".4f", title=metric),
            alt.Tooltip("latency_ms:Q", format=".2f"),
            "runtime:N",
            alt.Tooltip("params:Q", format=","),
            alt.Tooltip("size_mb:Q", format=".2f"),
        ],
    )
    frontier = (
        alt.Chart(frame[frame["frontier"]].sort_values("latency_ms"))
        .mark_line(interpolate="step-after", strokeDash=[6, 3], color="gray")
        .encode(x=x, y=y)
    )
    labels = base.mark_text(dy=-14, fontSize=11).encode(text="run:N")
    return alt.layer(frontier, bubbles, labels)


def kept_frame(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Tidy ``run, metric, kept`` (% of the teacher) for every non-teacher row."""
    others = table.iloc[1:]
    rows = [
        (run, f"{metric}@{k}", value)
        for metric in KEPT_METRICS
        for run, value in zip(others["run"], others[kept_column(metric, k)], strict=True)
    ]
    return pd.DataFrame(rows, columns=["run", "metric", "kept"]).astype({"kept": "float64"})


def kept_chart(table: pd.DataFrame, k: int = 10) -> alt.LayerChart:
    """Grouped bars of % of the teacher kept per metric, with the teacher's 100% as a rule."""
    bars = (
        alt.Chart(kept_frame(table, k))
        .mark_bar()
        .encode(
            x=alt.X("metric:N", title=None),
            xOffset="run:N",
            y=alt.Y("kept:Q", title="% of the teacher kept"),
            color=alt.Color("run:N", title=None),
            tooltip=["run:N", "metric:N", alt.Tooltip("kept:Q", format=".1f")],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"kept": [100.0]})).mark_rule(strokeDash=[4, 4]).encode(y="kept:Q")
    )
    return alt.layer(bars, rule)


def validation_curves(store: Store, runs: Sequence[RunRecord]) -> pd.DataFrame:
    """Tidy ``run, epoch, val_ndcg`` for the runs, for overlaid curves."""
    frame = store.epochs_frame([r.id for r in runs])
    titles = {r.id: run_title(r) for r in runs}
    frame = frame.assign(run=frame["run_id"].map(titles))
    return frame.loc[frame["val_ndcg"].notna(), ["run", "epoch", "val_ndcg"]].reset_index(drop=True)


def curves_chart(curves: pd.DataFrame) -> alt.Chart:
    """Validation NDCG per epoch, one line per run."""
    return (
        alt.Chart(curves)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("val_ndcg:Q", title="validation NDCG@10"),
            color=alt.Color("run:N", title=None),
            tooltip=["run:N", "epoch:Q", alt.Tooltip("val_ndcg:Q", format=".4f")],
        )
    )


# --------------------------------------------------------------------------- export
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse(value: Any) -> Any:
    """Text a spreadsheet would run as a formula gets a leading quote (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(table: pd.DataFrame) -> str:
    """The table as CSV; text cells are defused so opening it in Excel runs nothing."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(_defuse)
    return safe.to_csv(index=False)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: str) -> str:
    """Backslash-escape Markdown (and the ``$`` of LaTeX) so user text shows as typed."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _md_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 significant digits, pipes escaped)."""
    header = "| " + " | ".join(_md_cell(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    lines = [header, rule]
    for row in table.itertuples(index=False):
        values = [v.item() if isinstance(v, np.generic) else v for v in row]
        lines.append("| " + " | ".join(_md_cell(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- sample recommendations
def find_users(data: InteractionData, query: str = "", limit: int = 50) -> list[str]:
    """Raw ids of users with a test item whose id contains ``query`` (case-insensitive)."""
    users = data.eval_users("test")
    ids = np.asarray(data.user_ids[users]).astype(str)
    query = query.strip().lower()
    if query:
        ids = ids[np.char.find(np.char.lower(ids), query) >= 0]
    return ids[:limit].tolist()


def random_user(data: InteractionData, rng: np.random.Generator | None = None) -> str:
    """A raw user id drawn from the users that have a test item."""
    users = data.eval_users("test")
    if len(users) == 0:
        raise ConfigError("No user has a held-out test item in this dataset.")
    rng = rng or np.random.default_rng()
    return str(data.user_ids[int(rng.choice(users))])


def user_index(data: InteractionData, raw_id: str | None) -> int | None:
    """The dense index of a raw user id, or None when unknown."""
    return None if raw_id is None else data.user_index.get(str(raw_id))


def user_history(data: InteractionData, user: int, n: int = HISTORY_LENGTH) -> pd.DataFrame:
    """The user's last ``n`` train+valid interactions (what the test ranking sees), newest first."""
    lo, hi = np.searchsorted(data.users, [user, user + 1])
    seen = np.flatnonzero(np.isin(data.split[lo:hi], (SPLIT_TRAIN, SPLIT_VALID))) + lo
    recent = seen[-n:][::-1]
    frame = data.describe_items(data.items[recent])[["item_id", "title", "category"]]
    when = data.timestamps[recent]
    frame.insert(0, "when", pd.to_datetime(when, unit="s") if data.has_timestamps else pd.NaT)
    return frame.reset_index(drop=True)


def held_out_items(data: InteractionData, user: int) -> set[int]:
    target = data.target_matrix("test")
    return set(target.indices[target.indptr[user] : target.indptr[user + 1]].tolist())


@dataclass(frozen=True)
class RecommendationList:
    """One model's top-K for the sample user, as shown in a column of the Compare page."""

    run_id: int
    title: str
    items: pd.DataFrame  # rank, item_id, title, category, shared (with teacher), test_item
    item_indices: tuple[int, ...]
    jaccard: float | None  # vs the teacher's list; None for the teacher itself
    test_hit: bool
    ms: float


def recommend(
    model: Recommender, data: InteractionData, user: int, k: int = 10
) -> tuple[list[int], float]:
    """Top-``k`` item indices for one user at test time (train+valid history masked), and
    the wall time of the call in ms. Empty slots (``-1``) are dropped."""
    started = time.perf_counter()
    top = topk_items(lambda u: model.score_users(data, u, "test"), data, [user], k, "test")
    ms = (time.perf_counter() - started) * 1000.0
    return [int(i) for i in top[0] if i != NO_ITEM], ms


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    union = set(a) | set(b)
    return len(set(a) & set(b)) / len(union) if union else float("nan")


def sample_recommendations(
    data: InteractionData,
    user: int,
    models: Sequence[tuple[RunRecord, Recommender]],
    k: int = 10,
) -> list[RecommendationList]:
    """Top-``k`` of each model for ``user``; the first model is the teacher (the reference)."""
    if not models:
        return []
    held_out = held_out_items(data, user)
    lists: list[RecommendationList] = []
    reference: list[int] | None = None
    for run, model in models:
        # One untimed call first: a model's first forward pays one-off allocation costs
        # that would make whichever model happens to run first look slow.
        recommend(model, data, user, k)
        items, ms = recommend(model, data, user, k)
        if reference is None:
            reference = items
        frame = data.describe_items(items)[["item_id", "title", "category"]]
        frame.insert(0, "rank", np.arange(1, len(items) + 1))
        frame["shared"] = [i in reference for i in items]
        frame["test_item"] = [i in held_out for i in items]
        lists.append(
            RecommendationList(
                run_id=run.id,
                title=run_title(run),
                items=frame,
                item_indices=tuple(items),
                jaccard=None if not lists else jaccard(items, reference),
                test_hit=bool(held_out & set(items)),
                ms=ms,
            )
        )
    return lists


SHARED_COLOR = "#d7efdc"  # light green: also in the teacher's top K
TEST_ITEM_COLOR = "#ffe08a"  # amber: the user's held-out test item


def row_colors(items: pd.DataFrame, highlight_shared: bool = True) -> list[str | None]:
    """Background per recommended item: amber for the held-out test item, else green when
    the teacher recommends it too (not on the teacher's own list, where all would be)."""
    return [
        TEST_ITEM_COLOR if test else SHARED_COLOR if shared and highlight_shared else None
        for shared, test in zip(items["shared"], items["test_item"], strict=True)
    ]


def style_recommendations(items: pd.DataFrame, highlight_shared: bool = True) -> Styler:
    """The list with :func:`row_colors` as row backgrounds (the text itself is unchanged)."""
    colors = row_colors(items, highlight_shared)
    return items.style.apply(
        lambda row: (
            [f"background-color: {colors[row.name]}" if colors[row.name] else ""] * len(row)
        ),
        axis=1,
    )


def load_models(store: Store, runs: Sequence[RunRecord]) -> list[tuple[RunRecord, Recommender]]:
    """Each run with its trained model (cached by ``core.runner.run_model``)."""
    return [(run, run_model(store, run)) for run in runs]


# --------------------------------------------------------------------------- latency
def measure_torch_latency(
    store: Store,
    run: RunRecord,
    model: Recommender,
    data: InteractionData,
    *,
    iters: int = 100,
    warmup: int = 10,
    time_budget_s: float = 2.0,
    seed: int = 0,
) -> LatencyRecord:
    """Time single requests (score the catalog, mask the history, top-10) in PyTorch eager
    over seeded random test users, and store the percentiles (runtime "torch", batch 1).

    Uses the process's current torch thread count, so that measuring never changes the
    threads a training job running beside it gets.
    """
    threads = torch.get_num_threads()
    (result,) = benchmark_model(
        model,
        None,
        data,
        runtime="torch",
        batch_sizes=(1,),
        threads=threads,
        k=10,
        seed=seed,
        warmup=warmup,
        iters=iters,
        time_budget_s=time_budget_s,
    )
    env = {**machine_info(threads), "iters": result.iters, "device": result.device}
    return store.add_latency(
        run.id, "torch", 1, result.p50_ms, result.p95_ms, result.p99_ms, result.qps, threads, env
    )


def measure_runs(
    store: Store, runs: Sequence[RunRecord], data: InteractionData
) -> list[LatencyRecord]:
    """:func:`measure_torch_latency` for each run, one after the other (never concurrently,
    so that the runs do not slow each other down)."""
    return [measure_torch_latency(store, run, run_model(store, run), data) for run in runs]
