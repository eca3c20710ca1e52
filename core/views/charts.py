"""Every Altair chart of the app (Data, Train, Sweep, Runs and Compare pages), from tidy frames.

Each chart has two halves: a ``*_frame`` function that turns a dataset, a run's epoch
records or the comparison table into a tidy DataFrame (tested by hand; the Compare page's
frames live in core/views/compare.py), and a ``*_chart`` function that maps that frame onto
an Altair chart (tested through ``chart.to_dict()``). Frames are reduced before they reach
the chart because Altair embeds every row in the page: a 100k-item catalog must not become
100k points in the browser.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import altair as alt
import numpy as np
import pandas as pd

from core.dataset import InteractionData
from core.records import EpochRecord

# Enough points to draw a smooth long-tail curve at any catalog size.
MAX_TAIL_POINTS = 1500
# Per-day bars become unreadable past about four months; switch to weeks then.
DAILY_MAX_DAYS = 120
LOSS_PANEL = "loss"
VAL_PANEL = "validation NDCG@10"


# --------------------------------------------------------------------------- data stats
def popularity_frame(
    counts: np.ndarray | Sequence[int], max_points: int = MAX_TAIL_POINTS
) -> pd.DataFrame:
    """Items ranked by interaction count: columns ``rank`` (1 = most popular), ``interactions``.

    Items without interactions are left out (they cannot be drawn on a log scale). Above
    ``max_points`` items only log-spaced ranks are kept, always including the first and the
    last, so the head and the tail of the curve keep their shape.
    """
    values = np.sort(np.asarray(counts, dtype=np.int64))[::-1]
    values = values[values > 0]
    n = len(values)
    if n > max_points:
        ranks = np.unique(np.geomspace(1, n, max_points).round().astype(np.int64))
    else:
        ranks = np.arange(1, n + 1, dtype=np.int64)
    return pd.DataFrame({"rank": ranks, "interactions": values[ranks - 1]})


def popularity_chart(frame: pd.DataFrame) -> alt.Chart:
    """The long tail: interactions per item (log scale) against popularity rank."""
    return (
        alt.Chart(frame, title="Item popularity (long tail)")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("rank:Q", title="items ranked by popularity"),
            y=alt.Y("interactions:Q", title="interactions", scale=alt.Scale(type="log")),
            tooltip=[alt.Tooltip("rank:Q"), alt.Tooltip("interactions:Q", format=",")],
        )
    )


def timeline_frame(
    data: InteractionData, freq: Literal["auto", "day", "week"] = "auto"
) -> pd.DataFrame:
    """Interactions per day or week: columns ``period`` (start, datetime) and ``interactions``.

    Empty when the log has no timestamps (its "time" is the file order). Periods without
    interactions appear with 0 so gaps in the log are visible.
    """
    columns = ["period", "interactions"]
    if not data.has_timestamps or data.n_interactions == 0:
        return pd.DataFrame(columns=columns)
    stamps = pd.to_datetime(pd.Series(data.timestamps), unit="s")
    if freq == "auto":
        span_days = (stamps.max() - stamps.min()).total_seconds() / 86400
        freq = "day" if span_days <= DAILY_MAX_DAYS else "week"
    # Weeks start on Monday, as in most shop reports.
    rule = "D" if freq == "day" else "W-MON"
    periods = stamps.dt.floor("D") if freq == "day" else stamps.dt.to_period("W-SUN").dt.start_time
    counts = periods.value_counts().sort_index()
    full = pd.date_range(counts.index.min(), counts.index.max(), freq=rule)
    counts = counts.reindex(full, fill_value=0)
    return pd.DataFrame({"period": counts.index, "interactions": counts.to_numpy(np.int64)})


def timeline_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame, title="Interactions over time")
        .mark_bar()
        .encode(
            x=alt.X("period:T", title=None),
            y=alt.Y("interactions:Q", title="interactions"),
            tooltip=[alt.Tooltip("period:T"), alt.Tooltip("interactions:Q", format=",")],
        )
    )


def activity_frame(counts: np.ndarray | Sequence[int], bins: int = 30) -> pd.DataFrame:
    """Histogram of interactions per user with integer bins ``[low, high)``.

    Columns: ``low``, ``high`` (bin edges) and ``users`` (how many users fall in the bin).
    The bin width is the smallest integer giving at most ``bins`` bins.
    """
    values = np.asarray(counts, dtype=np.int64)
    if len(values) == 0:
        return pd.DataFrame(columns=["low", "high", "users"])
    lo, hi = int(values.min()), int(values.max())
    width = max(1, -(-(hi - lo + 1) // bins))
    edges = np.arange(lo, hi + width + 1, width, dtype=np.int64)
    hist = np.bincount((values - lo) // width, minlength=len(edges) - 1)[: len(edges) - 1]
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "users": hist.astype(np.int64)})


def activity_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame, title="User activity")
        .mark_bar()
        .encode(
            x=alt.X("low:Q", bin="binned", title="interactions per user"),
            x2="high:Q",
            y=alt.Y("users:Q", title="users"),
            tooltip=[alt.Tooltip("low:Q", title="from"), alt.Tooltip("high:Q", title="below"),
                     alt.Tooltip("users:Q")],
        )
    )  # fmt: skip


def item_counts(data: InteractionData) -> np.ndarray:
    """[n_items] interactions per item over the whole log (every split)."""
    return np.bincount(data.items, minlength=data.n_items)


def user_counts(data: InteractionData) -> np.ndarray:
    """[n_users] interactions per user over the whole log (every split)."""
    return np.bincount(data.users, minlength=data.n_users)


# --------------------------------------------------------------------------- training
def training_frame(epochs: Sequence[EpochRecord]) -> pd.DataFrame:
    """Per-epoch curves of one run, tidy: ``epoch``, ``panel``, ``series``, ``value``.

    The loss panel holds the total loss and each logged term (task, soft, hard, ...); the
    validation panel holds NDCG@10. Missing values (a NaN loss stored as null) are dropped.
    """
    rows: list[tuple[int, str, str, float]] = []
    for record in epochs:
        if record.loss is not None:
            rows.append((record.epoch, LOSS_PANEL, "total", float(record.loss)))
        for term, value in sorted(record.terms.items()):
            if isinstance(value, int | float) and np.isfinite(value):
                rows.append((record.epoch, LOSS_PANEL, str(term), float(value)))
        if record.val_ndcg is not None:
            rows.append((record.epoch, VAL_PANEL, "NDCG@10", float(record.val_ndcg)))
    return pd.DataFrame(rows, columns=["epoch", "panel", "series", "value"])


def training_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """Loss terms and validation NDCG@10 per epoch, side by side."""

    def panel(name: str, title: str) -> alt.Chart:
        return (
            alt.Chart(frame[frame["panel"] == name], title=title, width=260, height=160)
            .mark_line(point=True)
            .encode(
                x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
                y=alt.Y(
                    "value:Q", title=None, scale=alt.Scale(zero=False), axis=alt.Axis(format=".3~g")
                ),
                color=alt.Color("series:N", title=None),
                tooltip=["epoch:Q", "series:N", alt.Tooltip("value:Q", format=".4f")],
            )
        )

    # Each panel keeps its own colours and legend: loss terms and NDCG are different things.
    return alt.hconcat(
        panel(LOSS_PANEL, "Loss"), panel(VAL_PANEL, "Validation NDCG@10")
    ).resolve_scale(color="independent")


# --------------------------------------------------------------------------- compare
def pareto_chart(frame: pd.DataFrame, k: int = 10, setting: str = "") -> alt.LayerChart:
    """NDCG@K vs p50 latency (log x), bubble area = parameters, the frontier as a step line.

    ``frame`` is :func:`core.views.compare.pareto_frame` of the comparison table; ``setting``
    (e.g. "onnxruntime, 1 thread") names the one runtime and thread count every point was
    timed in, on the axis, so a screenshot of the chart still says what was measured.
    """
    timed_in = f", {setting}" if setting else ""
    x = alt.X(
        "latency_ms:Q",
        scale=alt.Scale(type="log"),
        title=f"p50 latency per request (ms, log{timed_in})",
    )
    y = alt.Y("ndcg:Q", title=f"NDCG@{k}")
    base = alt.Chart(frame).encode(x=x, y=y)
    bubbles = base.mark_circle(opacity=0.7, stroke="black", strokeWidth=0.5).encode(
        size=alt.Size("params:Q", title="parameters", scale=alt.Scale(range=[40, 1200])),
        color=alt.Color("role:N"),
        tooltip=[
            "run:N",
            "role:N",
            alt.Tooltip("ndcg:Q", format=".4f", title=f"ndcg@{k}"),
            alt.Tooltip("latency_ms:Q", format=".2f"),
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
    title = f"Quality vs latency ({setting}, 1 request)" if setting else "Quality vs latency"
    return alt.layer(frontier, bubbles, labels, title=title)


def kept_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Grouped bars of % of the teacher kept per metric, with the teacher's 100% as a rule.

    ``frame`` is :func:`core.views.compare.kept_frame` (``run, metric, kept``).
    """
    bars = (
        alt.Chart(frame)
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


def curves_chart(curves: pd.DataFrame) -> alt.Chart:
    """Validation NDCG per epoch, one line per run (:func:`core.views.compare.validation_curves`)."""
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


# --------------------------------------------------------------------------- stats
def dataset_metrics(data: InteractionData) -> list[tuple[str, str]]:
    """The Data page's headline numbers as (label, formatted value) pairs."""
    stats = data.stats()
    per_day = stats["interactions_per_day"]
    return [
        ("Users", f"{stats['users']:,}"),
        ("Items", f"{stats['items']:,}"),
        ("Interactions", f"{stats['interactions']:,}"),
        ("Density", f"{stats['density']:.3%}"),
        ("Gini (item popularity)", f"{stats['gini_item_popularity']:.2f}"),
        ("Span", _span(stats["span_days"]) if data.has_timestamps else "-"),
        ("Interactions/day", f"{per_day:,.1f}" if np.isfinite(per_day) else "-"),
        ("Train / valid / test", f"{stats['train']:,} / {stats['valid']:,} / {stats['test']:,}"),
        (
            "Held-out repeats",
            f"{stats['repeat_share']:.1%}: history mask "
            f"{'on' if stats['masks_history'] else 'off'} ({stats['history_mask']})",
        ),
    ]


def _span(days: float) -> str:
    return f"{days * 24:.1f} hours" if days < 2 else f"{days:,.0f} days"


SPLIT_NAMES = {0: "train", 1: "valid", 2: "test"}


def preview_frame(data: InteractionData, rows: int = 20) -> pd.DataFrame:
    """The first cleaned interactions as a person reads them: dates, titles, split names."""
    frame = data.interactions_frame().head(rows)
    items = data.item_index
    titles = [str(data.titles[items[i]]) for i in frame["item_id"]]
    out = pd.DataFrame({"user_id": frame["user_id"], "item_id": frame["item_id"], "title": titles})
    if data.has_timestamps:
        out["when"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.strftime(
            "%Y-%m-%d %H:%M"
        )
    else:
        out["order"] = frame["timestamp"]
    if "event" in frame:
        out["event"] = frame["event"]
    out["weight"] = frame["weight"]
    out["split"] = frame["split"].map(SPLIT_NAMES)
    return out


# --------------------------------------------------------------------------- sweep
# The two lines of a size sweep, always in these colours: distilled students and their
# no-teacher twins (same architecture and training, no teacher).
SWEEP_DISTILLED, SWEEP_TWIN = "distilled", "no teacher (twin)"
SWEEP_NDCG, SWEEP_KEPT, SWEEP_LATENCY = "NDCG@10", "% of teacher kept", "latency (ms per list)"
SWEEP_COLORS = alt.Scale(domain=[SWEEP_DISTILLED, SWEEP_TWIN], range=["#1f77b4", "#ff7f0e"])


def _sweep_panel(frame: pd.DataFrame, panel: str, y_title: str, y_format: str) -> alt.LayerChart:
    """One panel of a sweep: per variant a mean line over a mean ± std band, against the
    parameter count on a log scale; the teacher's figure as a dashed rule."""
    data = frame[frame["panel"] == panel]
    x = alt.X(
        "params:Q",
        scale=alt.Scale(type="log"),
        title="student parameters (log scale)",
        axis=alt.Axis(format="~s"),
    )
    color = alt.Color(
        "variant:N",
        scale=SWEEP_COLORS,
        title=None,
        legend=alt.Legend(orient="bottom", symbolOpacity=1),
    )

    def y(field: str) -> alt.Y:  # every layer shares one y axis: same title, scale, format
        return alt.Y(
            field, title=y_title, scale=alt.Scale(zero=False), axis=alt.Axis(format=y_format)
        )

    base = alt.Chart(data).encode(x=x, color=color)
    band = base.mark_area(opacity=0.2).encode(y=y("lo:Q"), y2="hi:Q")
    line = base.mark_line(point=True).encode(
        y=y("mean:Q"),
        tooltip=[
            "variant:N",
            alt.Tooltip("size:N", title="size"),
            alt.Tooltip("params:Q", format=","),
            alt.Tooltip("seeds:Q"),
            alt.Tooltip("mean:Q", format=".4~f"),
            alt.Tooltip("std:Q", format=".4~f"),
        ],
    )
    layers = [band, line]
    reference = data["teacher"].dropna()
    if len(reference):
        rule_data = pd.DataFrame({"teacher": [float(reference.iloc[0])], "label": ["teacher"]})
        rule = alt.Chart(rule_data).encode(y=y("teacher:Q"))
        layers += [
            rule.mark_rule(strokeDash=[4, 4], color="gray"),
            # Below the rule, inside the plot: the teacher is usually the top of the axis.
            rule.mark_text(align="left", baseline="top", dx=4, dy=3, color="gray").encode(
                text="label:N", x=alt.value(0)
            ),
        ]
    return alt.layer(*layers, title=panel).properties(width=300, height=220)


def sweep_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """A size sweep's quality: NDCG@10 and % of the teacher kept against parameters (log x),
    distilled students and their twins as two lines with mean ± std bands over seeds.

    ``frame`` is :func:`core.views.sweep.chart_frame` (panels ``NDCG@10`` and
    ``% of teacher kept``; other panels are ignored).
    """
    return alt.hconcat(
        _sweep_panel(frame, SWEEP_NDCG, "test NDCG@10", ".3~f"),
        _sweep_panel(frame, SWEEP_KEPT, "% of the teacher's NDCG@10", ".0f"),
    )


def sweep_latency_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """A size sweep's cost: p50 milliseconds per list (one request) against parameters,
    the teacher's as a rule (the ``latency (ms per list)`` panel of the chart frame).

    A concatenation of one panel, like :func:`sweep_chart`: Streamlit sizes a top-level
    layer chart's whole canvas (axes and title too) to the panel's height."""
    return alt.hconcat(_sweep_panel(frame, SWEEP_LATENCY, "p50 ms per list", ".2~f"))
