"""Tests of core/views/sweep.py (the Sweep page's frames, table and CSV) and of the sweep
charts in core/views/charts.py, on hand-built plans and results: no store, no training."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pytest

from core.models import ModelConfig, count_parameters
from core.plans import PlanView
from core.records import PlanRecord, RunRecord
from core.views import charts, sweep
from core.views.charts import SWEEP_DISTILLED as DISTILLED
from core.views.charts import SWEEP_TWIN as TWIN

NOW = datetime(2025, 1, 1, tzinfo=UTC)
TEACHER_PARAMS = 10_000
WIDTHS = {0.01: 4, 0.10: 16}
PARAMS = {4: 150, 16: 1_000}


def run(run_id: int, role: str, width: int, seed: int, status: str = "succeeded") -> RunRecord:
    config = {"model": {"family": "sasrec", "dim": width}, "train": {"seed": seed}}
    return RunRecord(run_id, 1, role, "sasrec", config, status, f"{role} d{width} s{seed}",
                     1, None, None, NOW, NOW, NOW, PARAMS.get(width, TEACHER_PARAMS), None, None,
                     (), plan_id=7)  # fmt: skip


TEACHER = replace(run(1, "teacher", 64, 0), plan_id=None, num_params=TEACHER_PARAMS)


def plan_view(runs: list[RunRecord]) -> PlanView:
    config = {
        "teacher_run_id": 1,
        "fractions": list(WIDTHS),
        "widths": list(WIDTHS.values()),
        "seeds": [0, 1],
    }
    plan = PlanRecord(7, "Sweep of teacher", "sweep", 1, config, NOW)
    return PlanView(plan, tuple(runs), None, False)


def two_sizes_two_seeds() -> tuple[PlanView, dict[int, dict[str, float | None]]]:
    """Sizes 1% and 10%, seeds 0 and 1, a student and its twin each (runs 10..17)."""
    runs, ndcg = [], {}
    values = {  # (width, role) -> NDCG@10 per seed
        (4, "student"): (0.20, 0.22),
        (4, "baseline"): (0.10, 0.12),
        (16, "student"): (0.30, 0.34),
        (16, "baseline"): (0.26, 0.26),
    }
    run_id = 10
    for width in (4, 16):
        for seed in (0, 1):
            for role in ("student", "baseline"):
                runs.append(run(run_id, role, width, seed))
                ndcg[run_id] = {"ndcg@10": values[(width, role)][seed]}
                run_id += 1
    ndcg[TEACHER.id] = {"ndcg@10": 0.40}
    return plan_view(runs), ndcg


def results_of(view, ndcg, latencies=None, teacher_ms=None) -> sweep.SweepResults:
    rows = sweep.run_rows(view, TEACHER, ndcg, latencies or {})
    return sweep.SweepResults(rows, TEACHER, ndcg[TEACHER.id]["ndcg@10"], teacher_ms)


# --------------------------------------------------------------------------- rows
def test_run_rows_name_size_seed_variant_and_share_of_the_teacher():
    view, ndcg = two_sizes_two_seeds()
    rows = sweep.run_rows(view, TEACHER, ndcg, {10: (1.5, "PyTorch eager, 1 thread")})
    assert list(rows.columns) == sweep.ROW_COLUMNS
    assert rows["run_id"].tolist() == list(range(10, 18))
    first = rows.iloc[0]
    assert (first["variant"], first["size"], first["width"], first["seed"]) == (
        DISTILLED,
        "1%",
        4,
        0,
    )
    assert first["fraction"] == pytest.approx(0.01)
    assert first["params_pct"] == pytest.approx(1.5)  # 150 of 10,000
    assert first["kept_pct"] == pytest.approx(50.0)  # 0.20 of 0.40
    assert first["latency_ms"] == pytest.approx(1.5)
    assert rows.iloc[1]["variant"] == TWIN and math.isnan(rows.iloc[1]["latency_ms"])
    assert rows["run"].iloc[0] == "#10 student d4 s0"


def test_rows_without_a_teacher_have_no_shares_and_unfinished_runs_no_figures():
    view, ndcg = two_sizes_two_seeds()
    running = replace(view.runs[0], status="running")
    view = replace(view, runs=(running, *view.runs[1:]))
    del ndcg[running.id]
    rows = sweep.run_rows(view, None, ndcg, {})
    assert rows["kept_pct"].isna().all() and rows["params_pct"].isna().all()
    assert rows.iloc[0]["status"] == "running" and math.isnan(rows.iloc[0]["ndcg@10"])
    summary = sweep.summary_frame(rows, "ndcg@10")
    small = summary[(summary["width"] == 4) & (summary["variant"] == DISTILLED)].iloc[0]
    assert small["seeds"] == 1 and small["mean"] == pytest.approx(0.22)


# --------------------------------------------------------------------------- mean / std bands
def test_summary_is_mean_and_sample_std_over_seeds_with_a_band():
    view, ndcg = two_sizes_two_seeds()
    rows = sweep.run_rows(view, TEACHER, ndcg, {})
    summary = sweep.summary_frame(rows, "ndcg@10", "NDCG@10")
    assert summary[["width", "variant"]].values.tolist() == [
        [4, DISTILLED], [4, TWIN], [16, DISTILLED], [16, TWIN],
    ]  # fmt: skip
    small = summary.iloc[0]
    assert small["seeds"] == 2 and small["params"] == 150
    assert small["mean"] == pytest.approx(0.21)
    assert small["std"] == pytest.approx(pd.Series([0.20, 0.22]).std())  # ddof=1
    assert small["lo"] == pytest.approx(0.21 - small["std"])
    assert small["hi"] == pytest.approx(0.21 + small["std"])
    flat = summary.iloc[3]  # identical seeds: a band of zero width
    assert flat["std"] == pytest.approx(0.0) and flat["lo"] == flat["hi"] == pytest.approx(0.26)


def test_one_seed_has_zero_std_and_reads_without_plus_minus():
    view, ndcg = two_sizes_two_seeds()
    one_seed = [r for r in view.runs if r.config["train"]["seed"] == 0]
    rows = sweep.run_rows(replace(view, runs=tuple(one_seed)), TEACHER, ndcg, {})
    summary = sweep.summary_frame(rows, "ndcg@10")
    assert (summary["seeds"] == 1).all() and (summary["std"] == 0).all()
    table = sweep.results_table(rows)
    assert table["distilled NDCG@10"].tolist() == ["0.2000", "0.3000"]


def test_results_table_has_gain_and_share_kept_per_size():
    view, ndcg = two_sizes_two_seeds()
    table = sweep.results_table(sweep.run_rows(view, TEACHER, ndcg, {}))
    assert list(table.columns) == sweep.TABLE_COLUMNS
    assert table["size"].tolist() == ["1%", "10%"]
    assert table["params"].tolist() == [150, 1_000]
    assert table["params %"].tolist() == pytest.approx([1.5, 10.0])
    assert table["seeds"].tolist() == [2, 2]
    assert table["distilled NDCG@10"].iloc[0] == "0.2100 ± 0.0141"
    assert table["twin NDCG@10"].iloc[1] == "0.2600 ± 0.0000"  # two seeds, no spread
    assert table["gain"].tolist() == pytest.approx([0.21 - 0.11, 0.32 - 0.26])
    assert table["% kept"].tolist() == pytest.approx([52.5, 80.0])
    assert set(sweep.table_formats()) <= set(table.columns)


def test_mean_std_text():
    assert sweep.mean_std(0.12345, 0.001, 3) == "0.1235 ± 0.0010"
    assert sweep.mean_std(0.12345, 0.001, 1) == "0.1235"
    assert sweep.mean_std(None, None, 0) == "-"
    assert sweep.mean_std(float("nan"), 0.1, 2) == "-"


# --------------------------------------------------------------------------- chart frame
def test_chart_frame_has_three_panels_with_the_teachers_figure():
    view, ndcg = two_sizes_two_seeds()
    latencies = {r.id: (2.0 if r.config["model"]["dim"] == 4 else 3.0, "") for r in view.runs}
    frame = sweep.chart_frame(results_of(view, ndcg, latencies, teacher_ms=9.0))
    assert set(frame["panel"]) == {sweep.NDCG_PANEL, sweep.KEPT_PANEL, sweep.LATENCY_PANEL}
    by_panel = frame.groupby("panel")["teacher"].first()
    assert by_panel[sweep.NDCG_PANEL] == pytest.approx(0.40)
    assert by_panel[sweep.KEPT_PANEL] == pytest.approx(100.0)
    assert by_panel[sweep.LATENCY_PANEL] == pytest.approx(9.0)
    kept = frame[(frame["panel"] == sweep.KEPT_PANEL) & (frame["variant"] == DISTILLED)]
    assert kept["mean"].tolist() == pytest.approx([52.5, 80.0])
    assert kept["params"].tolist() == [150, 1_000]


def test_missing_latency_leaves_the_panel_empty_and_names_what_to_time():
    view, ndcg = two_sizes_two_seeds()
    results = results_of(view, ndcg)
    frame = sweep.chart_frame(results)
    assert not (frame["panel"] == sweep.LATENCY_PANEL).any()
    assert results.latency_missing
    targets = sweep.latency_targets(results, [TEACHER, *view.runs])
    # The teacher, then one run per size and variant (not every seed).
    assert [t.id for t in targets] == [1, 10, 11, 14, 15]
    timed = {r.id: (1.0, "") for r in view.runs if r.config["train"]["seed"] == 1}
    done = results_of(view, ndcg, timed, teacher_ms=5.0)
    assert not done.latency_missing and sweep.latency_targets(done, view.runs) == []


# --------------------------------------------------------------------------- CSV
def test_csv_has_one_row_per_run_and_defuses_formulas():
    view, ndcg = two_sizes_two_seeds()
    evil = replace(view.runs[0], name="=HYPERLINK(1)")
    view = replace(view, runs=(evil, *view.runs[1:]))
    rows = sweep.run_rows(view, TEACHER, ndcg, {})
    frame = pd.read_csv(io.StringIO(sweep.rows_csv(rows)))
    assert len(frame) == len(view.runs) and list(frame.columns) == sweep.ROW_COLUMNS
    assert frame["ndcg@10"].tolist() == pytest.approx(rows["ndcg@10"].tolist())
    assert not frame["run"].iloc[0].startswith("=")


# --------------------------------------------------------------------------- sizes
def test_size_options_give_widths_and_parameters_below_the_teacher():
    teacher = ModelConfig(family="sasrec", dim=64, layers=2, heads=2, max_len=20, dropout=0.3)
    options = sweep.size_options(teacher, 40, 300)
    assert [o.fraction for o in options] == [0.01, 0.03, 0.10, 0.25]
    full = count_parameters(teacher, 40, 300)
    for option in options:
        assert option.teacher_params == full and option.fits
        assert option.params == count_parameters(
            replace(teacher, dim=option.width, layers=1), 40, 300
        )
        assert f"width {option.width}" in option.label and f"{option.params:,}" in option.label
    assert [o.params for o in options] == sorted(o.params for o in options)


def test_a_size_not_below_a_tiny_teacher_says_so():
    teacher = ModelConfig(family="mf", dim=4)
    (option,) = sweep.size_options(teacher, 40, 300, (0.99,))
    assert not option.fits and option.label.endswith("not smaller than the teacher")


def test_default_sizes_skip_sizes_above_the_teacher_and_repeated_widths():
    def option(fraction: float, width: int, params: int) -> sweep.SizeOption:
        return sweep.SizeOption(fraction, width, params, teacher_params=1_000)

    options = [
        option(0.01, 2, 40),
        option(0.03, 2, 40),
        option(0.10, 6, 110),
        option(0.25, 40, 1_000),
    ]
    assert sweep.default_sizes(options) == [0.01, 0.10]  # 3% is 1%'s width; 25% is too big
    assert sweep.plan_caption(options, [0.01, 0.03, 0.10], 2).startswith(
        "2 sizes x 2 seeds: 8 runs"
    )
    assert sweep.plan_caption(options, [], 1).startswith("0 sizes x 1 seeds: 0 runs")


# --------------------------------------------------------------------------- progress
def test_progress_line_counts_the_runs():
    view, _ = two_sizes_two_seeds()
    runs = list(view.runs)
    runs[0], runs[1] = replace(runs[0], status="running"), replace(runs[1], status="waiting")
    fraction, line = sweep.progress_line(replace(view, runs=tuple(runs), eta_seconds=90.0))
    assert fraction == pytest.approx(6 / 8)
    assert line.startswith("6 of 8 runs ended · 1 running · 1 waiting for the teacher")
    assert "left (from measured epoch times)" in line


# --------------------------------------------------------------------------- charts
def _layers(panel: dict) -> list[dict]:
    return panel["layer"]


def _rows(spec: dict, layer: dict) -> list[dict]:
    """The rows a layer draws (Altair moves every data set to the top-level ``datasets``)."""
    return spec["datasets"][layer["data"]["name"]]


def test_sweep_chart_has_log_x_two_colours_bands_and_a_teacher_rule():
    view, ndcg = two_sizes_two_seeds()
    frame = sweep.chart_frame(results_of(view, ndcg))
    spec = charts.sweep_chart(frame).to_dict()
    ndcg_panel, kept_panel = spec["hconcat"]
    assert ndcg_panel["title"] == sweep.NDCG_PANEL and kept_panel["title"] == sweep.KEPT_PANEL
    marks = [layer["mark"]["type"] for layer in _layers(ndcg_panel)]
    assert marks[:2] == ["area", "line"] and "rule" in marks
    band, line = _layers(ndcg_panel)[:2]
    for layer in (band, line):
        assert layer["encoding"]["x"]["field"] == "params"
        assert layer["encoding"]["x"]["scale"]["type"] == "log"
        color = layer["encoding"]["color"]
        assert color["field"] == "variant"
        assert color["scale"]["domain"] == [DISTILLED, TWIN] and len(color["scale"]["range"]) == 2
    assert band["encoding"]["y"]["field"] == "lo" and band["encoding"]["y2"]["field"] == "hi"
    assert line["encoding"]["y"]["field"] == "mean"
    rule = next(layer for layer in _layers(ndcg_panel) if layer["mark"]["type"] == "rule")
    assert [r["teacher"] for r in _rows(spec, rule)] == pytest.approx([0.40])
    # Each panel embeds only its own rows: both variants of both sizes.
    line_rows = _rows(spec, line)
    assert {r["panel"] for r in line_rows} == {sweep.NDCG_PANEL}
    assert sorted((r["variant"], r["params"]) for r in line_rows) == [
        (DISTILLED, 150), (DISTILLED, 1_000), (TWIN, 150), (TWIN, 1_000),
    ]  # fmt: skip
    kept_rule = next(layer for layer in _layers(kept_panel) if layer["mark"]["type"] == "rule")
    assert [r["teacher"] for r in _rows(spec, kept_rule)] == pytest.approx([100.0])


def test_latency_chart_is_one_panel_on_a_log_axis():
    view, ndcg = two_sizes_two_seeds()
    latencies = {r.id: (2.0, "") for r in view.runs}
    frame = sweep.chart_frame(results_of(view, ndcg, latencies, teacher_ms=9.0))
    spec = charts.sweep_latency_chart(frame).to_dict()
    (panel,) = spec["hconcat"]
    assert panel["title"] == sweep.LATENCY_PANEL
    line = _layers(panel)[1]
    assert line["encoding"]["x"]["scale"]["type"] == "log"
    assert line["encoding"]["y"]["title"] == "p50 ms per list"
    rule = next(layer for layer in _layers(panel) if layer["mark"]["type"] == "rule")
    assert [r["teacher"] for r in _rows(spec, rule)] == pytest.approx([9.0])
