"""Chart builders of core/views/charts.py: frames checked by hand, chart specs via to_dict()."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.records import EpochRecord
from core.views import charts
from tests.factories import sequences_dataset

DAY = 86_400
# 2024-01-01 was a Monday.
MONDAY = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())


def mark_type(spec: dict) -> str:
    mark = spec["mark"]
    return mark["type"] if isinstance(mark, dict) else mark


def with_timestamps(stamps: list[int], has_timestamps: bool = True):
    """A one-user dataset whose interactions happen at ``stamps``."""
    data = sequences_dataset([list(range(len(stamps)))], n_items=len(stamps))
    return replace(data, timestamps=np.array(stamps, dtype=np.int64), has_timestamps=has_timestamps)


# --------------------------------------------------------------------------- popularity
def test_popularity_frame_ranks_items_and_drops_unused_ones():
    frame = charts.popularity_frame([3, 0, 5, 1, 3])
    assert frame["rank"].tolist() == [1, 2, 3, 4]
    assert frame["interactions"].tolist() == [5, 3, 3, 1]


def test_popularity_frame_keeps_log_spaced_ranks_of_a_large_catalog():
    counts = np.arange(10_000, 0, -1)  # the item at rank r has 10_001 - r interactions
    frame = charts.popularity_frame(counts, max_points=100)
    assert len(frame) <= 100
    assert frame["rank"].iloc[0] == 1 and frame["rank"].iloc[-1] == 10_000
    assert frame["rank"].is_monotonic_increasing and frame["rank"].is_unique
    assert (frame["interactions"] == 10_001 - frame["rank"]).all()
    # log spacing: the head is dense (ranks 1..10 all kept), the tail sparse
    assert frame["rank"].iloc[:10].tolist() == list(range(1, 11))


def test_popularity_chart_uses_a_log_scale():
    spec = charts.popularity_chart(charts.popularity_frame([4, 2, 1])).to_dict()
    assert mark_type(spec) == "line"
    assert spec["encoding"]["x"]["field"] == "rank"
    assert spec["encoding"]["y"]["field"] == "interactions"
    assert spec["encoding"]["y"]["scale"]["type"] == "log"
    (rows,) = spec["datasets"].values()
    assert [r["interactions"] for r in rows] == [4, 2, 1]


# --------------------------------------------------------------------------- timeline
def test_timeline_per_day_fills_empty_days_with_zero():
    data = with_timestamps([MONDAY + 10, MONDAY + 20, MONDAY + 2 * DAY + 5])
    frame = charts.timeline_frame(data, "day")
    assert frame["interactions"].tolist() == [2, 0, 1]
    assert frame["period"].tolist() == list(pd.date_range("2024-01-01", periods=3, freq="D"))


def test_timeline_per_week_starts_on_monday():
    # Sunday 2024-01-07 still belongs to the week of Monday 2024-01-01.
    data = with_timestamps([MONDAY, MONDAY + 6 * DAY + 3600, MONDAY + 7 * DAY, MONDAY + 21 * DAY])
    frame = charts.timeline_frame(data, "week")
    assert frame["period"].dt.strftime("%Y-%m-%d").tolist() == [
        "2024-01-01",
        "2024-01-08",
        "2024-01-15",
        "2024-01-22",
    ]
    assert frame["interactions"].tolist() == [2, 1, 0, 1]


def test_timeline_auto_switches_to_weeks_for_long_logs():
    short = with_timestamps([MONDAY, MONDAY + 30 * DAY])
    long = with_timestamps([MONDAY, MONDAY + 200 * DAY])
    assert len(charts.timeline_frame(short)) == 31  # days
    assert len(charts.timeline_frame(long)) == 29  # weeks: 200 days span 29 Monday weeks


def test_timeline_is_empty_without_timestamps():
    data = with_timestamps([0, 1, 2], has_timestamps=False)
    assert charts.timeline_frame(data).empty


def test_timeline_chart_is_bars_over_time():
    frame = charts.timeline_frame(with_timestamps([MONDAY, MONDAY + DAY]), "day")
    spec = charts.timeline_chart(frame).to_dict()
    assert mark_type(spec) == "bar"
    assert spec["encoding"]["x"]["type"] == "temporal"
    assert spec["encoding"]["y"]["field"] == "interactions"


# --------------------------------------------------------------------------- activity
def test_activity_histogram_with_unit_bins():
    frame = charts.activity_frame([1, 1, 2, 5], bins=30)
    assert frame["low"].tolist() == [1, 2, 3, 4, 5]
    assert frame["high"].tolist() == [2, 3, 4, 5, 6]
    assert frame["users"].tolist() == [2, 1, 0, 0, 1]


def test_activity_histogram_widens_bins_to_fit_the_limit():
    # values 1..5 in at most 2 bins -> width ceil(5 / 2) = 3: [1, 4) and [4, 7)
    frame = charts.activity_frame([1, 1, 2, 5, 3, 4], bins=2)
    assert frame["low"].tolist() == [1, 4]
    assert frame["high"].tolist() == [4, 7]
    assert frame["users"].tolist() == [4, 2]
    assert frame["users"].sum() == 6


def test_activity_chart_is_a_prebinned_histogram():
    spec = charts.activity_chart(charts.activity_frame([1, 2, 2, 3])).to_dict()
    assert mark_type(spec) == "bar"
    assert spec["encoding"]["x"]["bin"] == "binned"
    assert spec["encoding"]["x2"]["field"] == "high"
    assert spec["encoding"]["y"]["field"] == "users"


def test_counts_cover_every_split():
    data = sequences_dataset([[0, 1, 2, 1], [1, 3]], n_items=5)
    assert charts.item_counts(data).tolist() == [1, 3, 1, 1, 0]
    assert charts.user_counts(data).tolist() == [4, 2]


def test_dataset_metrics_by_hand():
    data = sequences_dataset([[0, 1, 2], [1, 2, 3]], n_items=4)
    metrics = dict(charts.dataset_metrics(data))
    assert metrics["Users"] == "2"
    assert metrics["Items"] == "4"
    assert metrics["Interactions"] == "6"
    assert metrics["Density"] == "75.000%"  # 6 / (2 * 4)
    # item counts [1, 2, 2, 1]: sorted [1, 1, 2, 2], Gini = (5 - 2 * (1/6 + 2/6 + 4/6 + 1)) / 4
    assert metrics["Gini (item popularity)"] == f"{(5 - 2 * (13 / 6)) / 4:.2f}"
    # timestamps 2 hours apart per user: span 2 h = 1/12 day, 6 / (1/12) = 72 per day
    assert metrics["Span"] == "2.0 hours"
    assert metrics["Interactions/day"] == "72.0"
    assert metrics["Train / valid / test"] == "2 / 2 / 2"


# --------------------------------------------------------------------------- training
def epoch(n: int, loss, terms, val) -> EpochRecord:
    now = datetime.now(UTC)
    return EpochRecord(1, n, loss, terms, val, None, {}, 0.1, now)


def test_training_frame_is_tidy_and_skips_missing_values():
    records = [
        epoch(1, 0.9, {"task": 0.7, "soft": 0.4}, 0.10),
        epoch(2, None, {"task": 0.6, "soft": math.nan}, 0.12),
    ]
    frame = charts.training_frame(records)
    rows = set(frame.itertuples(index=False, name=None))
    assert rows == {
        (1, "loss", "total", 0.9),
        (1, "loss", "soft", 0.4),
        (1, "loss", "task", 0.7),
        (1, "validation NDCG@10", "NDCG@10", 0.10),
        (2, "loss", "task", 0.6),
        (2, "validation NDCG@10", "NDCG@10", 0.12),
    }
    assert charts.training_frame([]).empty


def test_training_chart_puts_loss_and_validation_side_by_side():
    frame = charts.training_frame([epoch(1, 0.9, {"task": 0.9}, 0.1), epoch(2, 0.8, {}, 0.2)])
    spec = charts.training_chart(frame).to_dict()
    loss, val = spec["hconcat"]
    assert mark_type(loss) == mark_type(val) == "line"
    assert loss["title"] == "Loss" and val["title"] == "Validation NDCG@10"
    for panel in (loss, val):
        assert panel["encoding"]["x"]["field"] == "epoch"
        assert panel["encoding"]["color"]["field"] == "series"
    loss_rows = spec["datasets"][loss["data"]["name"]]
    val_rows = spec["datasets"][val["data"]["name"]]
    assert {r["series"] for r in loss_rows} == {"total", "task"}
    assert [r["value"] for r in val_rows] == [0.1, 0.2]
    assert spec["resolve"]["scale"]["color"] == "independent"


def test_preview_frame_reads_like_a_log():
    from core.views.charts import preview_frame
    from tests.factories import sequences_dataset

    data = sequences_dataset([[0, 1, 2], [2, 1]], n_items=3)
    frame = preview_frame(data, rows=3)
    assert list(frame["title"]) == ["Item 0", "Item 1", "Item 2"]
    assert list(frame["split"]) == ["train", "valid", "test"]
    assert frame["when"].iloc[0] == "2020-09-13 12:26"
