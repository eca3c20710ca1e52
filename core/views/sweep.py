"""What the Sweep page shows: "how small can the student get?", from a size sweep's runs.

A sweep (:func:`core.plans.submit_sweep`) trains, per size and seed, a distilled student
and its no-teacher twin. This module turns a sweep plan into:

- :func:`size_options`: the sizes a sweep offers for one teacher, with the width and the
  parameter count each one gives (and whether it is smaller than the teacher at all);
  :func:`default_sizes` and :func:`plan_caption` for the form;
- :func:`sweep_results` / :func:`run_rows`: one row per run (size, seed, distilled or twin,
  test NDCG@10, % of the teacher kept, latency), the rows of the CSV download;
- :func:`summary_frame` / :func:`results_table`: per size and variant, the mean and sample
  standard deviation over seeds (the band is mean ± std), and the table a person reads
  (mean ± std, gain, % kept);
- :func:`chart_frame`: the tidy frame :func:`core.views.charts.sweep_chart` and
  :func:`core.views.charts.sweep_latency_chart` draw (a mean line and a mean ± std band per
  variant, the teacher as a rule);
- :func:`latency_targets` / :func:`measure_latency`: the runs to time when latency is
  missing, timed as the Compare page times them (:func:`core.views.compare.measure_runs`,
  PyTorch eager, one thread, single requests); the seeds of a size share one architecture,
  so one run per size and variant is timed, not every seed;
- :func:`progress_line`: how far a sweep is, with its ETA (core.plans).

A gain is claimed over seeds: the table says how many seeds each figure averages.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from core.enums import Role, Status
from core.errors import StoreError
from core.ingestion.registry import load_dataset
from core.metrics import kept_fraction
from core.models import ModelConfig, count_parameters
from core.plans import PlanView
from core.recipe import SIZE_FRACTIONS, student_width
from core.records import RunRecord
from core.store import Store
from core.views.charts import (
    SWEEP_DISTILLED,
    SWEEP_KEPT,
    SWEEP_LATENCY,
    SWEEP_NDCG,
    SWEEP_TWIN,
)
from core.views.compare import LatencySetting, latency_for, measure_runs, test_results
from core.views.text import format_duration, run_title, to_csv

METRIC = "ndcg@10"
NDCG_PANEL, KEPT_PANEL, LATENCY_PANEL = SWEEP_NDCG, SWEEP_KEPT, SWEEP_LATENCY
# The one setting a sweep's latency is timed and shown in: the Compare page's default.
SETTING = LatencySetting()
ROW_COLUMNS = [
    "run_id", "run", "variant", "status", "size", "fraction", "width", "seed", "params",
    "params_pct", METRIC, "kept_pct", "latency_ms", "latency",
]  # fmt: skip
VARIANTS = {Role.STUDENT: SWEEP_DISTILLED, Role.BASELINE: SWEEP_TWIN}


# --------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class SizeOption:
    """One offered student size for a teacher: the share asked and what it gives."""

    fraction: float
    width: int
    params: int
    teacher_params: int

    @property
    def fits(self) -> bool:
        """Smaller than the teacher (a sweep refuses a size that is not)."""
        return self.params < self.teacher_params

    @property
    def label(self) -> str:
        share = self.params / max(1, self.teacher_params)
        head = f"{self.fraction:.0%} · width {self.width} · {self.params:,} params ({share:.1%})"
        return head if self.fits else f"{head}: not smaller than the teacher"


def size_options(
    teacher: ModelConfig, n_users: int, n_items: int, fractions: Iterable[float] = SIZE_FRACTIONS
) -> list[SizeOption]:
    """The sweep's preset sizes for ``teacher`` on a dataset of this shape, smallest first:
    the width :func:`core.recipe.student_width` picks (one block, as the sweep trains it)
    and the parameter count that width gives."""
    teacher_params = count_parameters(teacher, n_users, n_items)
    options = []
    for fraction in sorted({float(f) for f in fractions}):
        width = student_width(teacher, n_users, n_items, fraction)
        params = count_parameters(replace(teacher, dim=width, layers=1), n_users, n_items)
        options.append(SizeOption(fraction, width, params, teacher_params))
    return options


def default_sizes(options: Sequence[SizeOption]) -> list[float]:
    """The sizes a sweep starts with: every one below the teacher, one per width (on a
    small teacher two shares can round to one width, and a sweep trains it once)."""
    widths: set[int] = set()
    chosen = []
    for option in options:
        if option.fits and option.width not in widths:
            widths.add(option.width)
            chosen.append(option.fraction)
    return chosen


def plan_caption(options: Sequence[SizeOption], fractions: Iterable[float], seeds: int) -> str:
    """What one click queues: distinct sizes x seeds, two runs each."""
    asked = set(fractions)
    sizes = len({o.width for o in options if o.fraction in asked})
    return (
        f"{sizes} sizes x {seeds} seeds: {2 * sizes * seeds} runs, each distilled student with "
        "its twin (the same student trained without a teacher)."
    )


# --------------------------------------------------------------------------- per-run rows
@dataclass(frozen=True)
class SweepResults:
    """A sweep's runs as rows, and the teacher's figures they are measured against."""

    rows: pd.DataFrame  # ROW_COLUMNS, one row per student or twin, in plan order
    teacher: RunRecord | None  # None when the teacher was deleted
    teacher_ndcg: float | None
    teacher_latency_ms: float | None

    @property
    def finished(self) -> pd.DataFrame:
        """The rows of succeeded runs with a test NDCG@10."""
        rows = self.rows
        return rows[(rows["status"] == Status.SUCCEEDED) & rows[METRIC].notna()]

    @property
    def latency_missing(self) -> bool:
        """Some finished size and variant (or the teacher) has no usable latency figure."""
        finished = self.finished
        if finished.empty:
            return False
        measured = finished.groupby(["width", "variant"])["latency_ms"].count()
        teacher_missing = self.teacher is not None and self.teacher_latency_ms is None
        return bool((measured == 0).any()) or teacher_missing


def plan_teacher(store: Store, view: PlanView) -> RunRecord | None:
    """The teacher a sweep plan distils from, or None when it was deleted."""
    teacher_id = view.plan.config.get("teacher_run_id")
    if teacher_id is None:
        return None
    try:
        return store.get_run(int(teacher_id))
    except StoreError:
        return None


def _latency_ms(store: Store, run: RunRecord, setting: LatencySetting) -> tuple[float | None, str]:
    record, note = latency_for(run, store.latencies(run.id), setting)
    return (None if record is None else float(record.p50)), note


def run_rows(
    view: PlanView,
    teacher: RunRecord | None,
    results: dict[int, dict[str, float | None]],
    latencies: dict[int, tuple[float | None, str]],
) -> pd.DataFrame:
    """One row per student and twin of the sweep (:data:`ROW_COLUMNS`), in plan order.

    ``results``: test metrics per run id; ``latencies``: ``(p50 ms or None, note)`` per run
    id. ``params_pct`` and ``kept_pct`` are shares of the teacher (empty without it).
    """
    config = view.plan.config
    fraction_of = dict(zip(config.get("widths", []), config.get("fractions", []), strict=False))
    teacher_params = teacher.num_params if teacher is not None else None
    teacher_ndcg = results.get(teacher.id, {}).get(METRIC) if teacher is not None else None
    rows = []
    for run in view.runs:
        if run.role not in VARIANTS:
            continue
        width = int((run.config.get("model") or {}).get("dim") or 0)
        fraction = fraction_of.get(width)
        value = results.get(run.id, {}).get(METRIC)
        kept = kept_fraction(value, teacher_ndcg)
        share = (
            run.num_params / teacher_params
            if run.num_params is not None and teacher_params
            else None
        )
        latency_ms, note = latencies.get(run.id, (None, ""))
        rows.append(
            {
                "run_id": run.id,
                "run": run_title(run),
                "variant": VARIANTS[run.role],
                "status": run.status,
                "size": "-" if fraction is None else f"{fraction:.0%}",
                "fraction": fraction,
                "width": width,
                "seed": (run.config.get("train") or {}).get("seed"),
                "params": run.num_params,
                "params_pct": None if share is None else 100.0 * share,
                METRIC: value,
                "kept_pct": None if kept is None else 100.0 * kept,
                "latency_ms": latency_ms,
                "latency": note,
            }
        )
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    floats = ["fraction", "params_pct", METRIC, "kept_pct", "latency_ms"]
    frame[floats] = frame[floats].astype("float64")
    for column in ("run_id", "width", "seed", "params"):
        frame[column] = frame[column].astype("Int64")
    return frame


def sweep_results(store: Store, view: PlanView, setting: LatencySetting = SETTING) -> SweepResults:
    """Read a sweep's test results and latencies (and its teacher's) from the store."""
    teacher = plan_teacher(store, view)
    finished = [r for r in view.runs if r.role in VARIANTS and r.status == Status.SUCCEEDED]
    timed = finished + ([teacher] if teacher is not None else [])
    results = test_results(store, [r.id for r in timed]) if timed else {}
    latencies = {r.id: _latency_ms(store, r, setting) for r in timed}
    rows = run_rows(view, teacher, results, latencies)
    teacher_ndcg = results.get(teacher.id, {}).get(METRIC) if teacher is not None else None
    teacher_ms = latencies[teacher.id][0] if teacher is not None else None
    return SweepResults(rows, teacher, teacher_ndcg, teacher_ms)


def latency_targets(results: SweepResults, runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs to time so every finished size and variant (and the teacher) has a figure:
    the first finished run of each group without one (its seeds share the architecture)."""
    by_id = {r.id: r for r in runs}
    finished = results.finished
    targets = []
    if results.teacher is not None and results.teacher_latency_ms is None:
        targets.append(results.teacher)
    for _, group in finished.groupby(["width", "variant"], sort=True):
        if group["latency_ms"].notna().any():
            continue
        run = by_id.get(int(group["run_id"].iloc[0]))
        if run is not None:
            targets.append(run)
    return targets


def measure_latency(store: Store, view: PlanView, results: SweepResults) -> int:
    """Time the :func:`latency_targets` of a sweep as Compare does (:data:`SETTING`) and
    store the figures; returns how many runs were timed."""
    targets = latency_targets(results, view.runs)
    if targets:
        measure_runs(store, targets, load_dataset(store, view.plan.dataset_id), SETTING)
    return len(targets)


LATENCY_NOTE = (
    f"Latency not measured yet for every size ({SETTING.label}, one request per list, as on "
    "Compare); one run per size and variant is timed."
)


# --------------------------------------------------------------------------- summaries
SUMMARY_COLUMNS = [
    "panel", "variant", "size", "fraction", "width", "params", "seeds", "mean", "std", "lo", "hi",
]  # fmt: skip


def summary_frame(rows: pd.DataFrame, value: str, panel: str = "") -> pd.DataFrame:
    """Per size and variant over the seeds with a figure: ``mean``, ``std`` (0 with one
    seed), the band ``lo``/``hi`` (mean ± std) and how many ``seeds``; smallest size first.
    ``params`` is the size's parameter count (every seed has the same)."""
    finished = rows[(rows["status"] == Status.SUCCEEDED) & rows[value].notna()]
    out = []
    for (width, variant), group in finished.groupby(["width", "variant"], sort=True):
        values = group[value].to_numpy(dtype=np.float64)
        mean = float(values.mean())
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        params = group["params"].dropna()
        out.append(
            {
                "panel": panel,
                "variant": variant,
                "size": group["size"].iloc[0],
                "fraction": group["fraction"].iloc[0],
                "width": int(width),
                "params": float(params.iloc[0]) if len(params) else math.nan,
                "seeds": len(values),
                "mean": mean,
                "std": std,
                "lo": mean - std,
                "hi": mean + std,
            }
        )
    frame = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    return frame.sort_values(["params", "variant"], kind="stable").reset_index(drop=True)


def chart_frame(results: SweepResults) -> pd.DataFrame:
    """Tidy ``panel, variant, size, params, seeds, mean, std, lo, hi, teacher`` for the
    sweep charts: NDCG@10, % of the teacher kept and latency, each per size and variant.
    ``teacher`` is the teacher's figure of that panel (100 for % kept; empty if unknown).
    Rows without a parameter count cannot sit on a log axis and are left out."""
    rows = results.rows
    panels = [
        (NDCG_PANEL, METRIC, results.teacher_ndcg),
        (KEPT_PANEL, "kept_pct", 100.0 if results.teacher_ndcg else None),
        (LATENCY_PANEL, "latency_ms", results.teacher_latency_ms),
    ]
    parts = []
    for panel, column, reference in panels:
        part = summary_frame(rows, column, panel)
        part["teacher"] = math.nan if reference is None else float(reference)
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame = frame[frame["params"].notna() & (frame["params"] > 0)]
    return frame.drop(columns=["fraction", "width"]).reset_index(drop=True)


def mean_std(mean: float | None, std: float | None, seeds: int, digits: int = 4) -> str:
    """``0.1234 ± 0.0056`` (``0.1234`` with one seed; ``-`` without a figure)."""
    if mean is None or not math.isfinite(mean):
        return "-"
    if seeds < 2 or std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


TABLE_COLUMNS = [
    "size", "params", "params %", "seeds", "distilled NDCG@10", "twin NDCG@10", "gain",
    "% kept",
]  # fmt: skip


def results_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per size, smallest first: parameters (and their share of the teacher), the
    seeds finished, distilled and twin NDCG@10 as mean ± std over seeds, the ``gain`` of
    distillation (distilled mean - twin mean, in NDCG@10) and the distilled students'
    mean % of the teacher's NDCG@10 kept."""
    ndcg = summary_frame(rows, METRIC)
    kept = summary_frame(rows, "kept_pct")
    finished = rows[rows["status"] == Status.SUCCEEDED]
    out = []
    for width in sorted(ndcg["width"].unique(), key=lambda w: _params_of(ndcg, w)):
        of_size = ndcg[ndcg["width"] == width]
        distilled = _variant(of_size, SWEEP_DISTILLED)
        twin = _variant(of_size, SWEEP_TWIN)
        share = finished.loc[finished["width"] == width, "params_pct"].dropna()
        kept_row = _variant(kept[kept["width"] == width], SWEEP_DISTILLED)
        gain = (
            distilled["mean"] - twin["mean"] if distilled is not None and twin is not None else None
        )
        out.append(
            {
                "size": of_size["size"].iloc[0],
                "params": _params_of(ndcg, width),
                "params %": float(share.iloc[0]) if len(share) else None,
                "seeds": int(of_size["seeds"].max()),
                "distilled NDCG@10": _mean_std(distilled),
                "twin NDCG@10": _mean_std(twin),
                "gain": gain,
                "% kept": None if kept_row is None else kept_row["mean"],
            }
        )
    frame = pd.DataFrame(out, columns=TABLE_COLUMNS)
    frame["params"] = frame["params"].astype("Int64")
    for column in ("params %", "gain", "% kept"):
        frame[column] = frame[column].astype("float64")
    return frame


def table_formats() -> dict[str, tuple[str, str]]:
    """Column label and printf format of the numeric columns of :func:`results_table`."""
    return {
        "params": ("parameters", "localized"),
        "params %": ("% of teacher's parameters", "%.1f%%"),
        "gain": ("gain (distilled - twin)", "%+.4f"),
        "% kept": ("% of teacher kept", "%.1f%%"),
    }


def _params_of(summary: pd.DataFrame, width: int) -> float:
    values = summary.loc[summary["width"] == width, "params"].dropna()
    return float(values.iloc[0]) if len(values) else math.inf


def _variant(summary: pd.DataFrame, variant: str) -> dict[str, Any] | None:
    found = summary[summary["variant"] == variant]
    return None if found.empty else found.iloc[0].to_dict()


def _mean_std(row: dict[str, Any] | None) -> str:
    return "-" if row is None else mean_std(row["mean"], row["std"], int(row["seeds"]))


def rows_csv(rows: pd.DataFrame) -> str:
    """The per-run rows as CSV (text cells defused for spreadsheets)."""
    return to_csv(rows)


# --------------------------------------------------------------------------- progress
def progress_line(view: PlanView) -> tuple[float, str]:
    """The share of the sweep's runs that have ended, and one line saying where it is
    (with the time left while it runs, once an epoch has been measured)."""
    total = len(view.runs)
    ended = sum(r.is_terminal for r in view.runs)
    parts = [f"{ended} of {total} runs ended"]
    for status, word in (
        (Status.RUNNING, "running"),
        (Status.QUEUED, "queued"),
        (Status.WAITING, "waiting for the teacher"),
        (Status.FAILED, "failed"),
        (Status.CANCELLED, "cancelled"),
        (Status.INTERRUPTED, "interrupted"),
    ):
        count = view.count(status)
        if count:
            parts.append(f"{count} {word}")
    if not view.done and view.eta_seconds:
        how = "estimated" if view.eta_estimated else "from measured epoch times"
        parts.append(f"about {format_duration(view.eta_seconds)} left ({how})")
    return (ended / total if total else 1.0), " · ".join(parts)
