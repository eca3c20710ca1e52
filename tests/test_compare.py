"""core.views (compare, runs, recommendations, text): the Runs/Compare tables, % kept,
config diffs, Pareto frontier, the Compare charts, exports, sample recommendations and the
on-demand latency measurement."""

from __future__ import annotations

import io
import math
import os
import time
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from core.ingestion.registry import load_dataset
from core.models import ModelConfig, build_model
from core.records import RunRecord
from core.runner import run_model
from core.store import Store
from core.views import charts, compare, text
from core.views import recommendations as recs
from core.views import runs as runs_view
from tests.factories import sequences_dataset


@pytest.fixture
def seeded(seeded_home):
    _, ids = seeded_home
    store = Store()
    yield store, ids
    store.close()


def _record(
    run_id: int, name: str, role: str = "student", teacher_run_id: int | None = None
) -> RunRecord:
    return RunRecord(
        id=run_id, dataset_id=1, role=role, model="popularity", config={}, status="succeeded",
        name=name, teacher_run_id=teacher_run_id, error=None, notes=None,
        created=datetime.now(UTC), started=None, finished=None, num_params=0,
        checkpoint_path=None, onnx_path=None, tags=(),
    )  # fmt: skip


# --------------------------------------------------------------------------- choices
def test_default_selection_is_the_teachers_students_and_popularity(seeded):
    store, ids = seeded
    (teacher,) = runs_view.teacher_choices(store.list_runs())
    assert teacher.id == ids["teacher"]
    expected = sorted([ids["popularity"], ids["student-no-teacher"], ids["student-soft"]])
    candidates = compare.compare_candidates(store.list_runs(), teacher)
    assert compare.default_selection(candidates, teacher) == expected
    assert sorted(r.id for r in candidates) == expected


def test_default_selection_keeps_the_newest_students_of_a_sweep():
    teacher = _record(1, "teacher", "teacher")
    sweep = [_record(i, f"s{i}", "student", teacher_run_id=1) for i in range(2, 12)]
    others = [_record(20, "other teacher's", "student", teacher_run_id=99)]
    popularity = [_record(i, "pop", "popularity") for i in (30, 31)]
    runs = [teacher, *sweep, *others, *popularity]
    failed = replace(_record(40, "failed", "student", teacher_run_id=1), status="failed")
    elsewhere = replace(_record(41, "other dataset", "student", teacher_run_id=1), dataset_id=2)
    candidates = compare.compare_candidates([*runs, failed, elsewhere], teacher)
    assert [r.id for r in candidates] == [r.id for r in runs[1:]]
    assert compare.default_selection(candidates, teacher) == [6, 7, 8, 9, 10, 11, 31]
    assert compare.default_selection(candidates, teacher, limit=2) == [10, 11, 31]


def test_parse_ids_drops_bad_parts():
    assert text.parse_ids("4, 5,x,,5,-1,6") == [4, 5, 6]
    assert text.parse_ids(None) == []


# --------------------------------------------------------------------------- comparison table
@pytest.mark.parametrize("k", [10, 20])
def test_comparison_table_kept_by_hand(seeded, k):
    store, ids = seeded
    teacher = store.get_run(ids["teacher"])
    others = [store.get_run(ids[n]) for n in ("popularity", "student-no-teacher", "student-soft")]
    table = compare.comparison_table(store, teacher, others, k=k)

    assert table["run_id"].tolist() == [teacher.id, *(r.id for r in others)]
    ref = store.results(teacher.id, "test")
    for _, row in table.iterrows():
        results = store.results(int(row["run_id"]), "test")
        for metric in compare.TABLE_METRICS:
            assert row[f"{metric}@{k}"] == pytest.approx(results[f"{metric}@{k}"])
        for metric in compare.KEPT_METRICS:
            key = f"{metric}@{k}"
            assert row[compare.kept_column(metric, k)] == pytest.approx(
                100.0 * results[key] / ref[key]
            )
        run = store.get_run(int(row["run_id"]))
        assert row["params"] == run.num_params
        assert row["size_mb"] == pytest.approx(run.num_params * 4 / 1e6)
    teacher_row = table.iloc[0]
    assert teacher_row[compare.kept_column("ndcg", k)] == pytest.approx(100.0)
    assert teacher_row[compare.JACCARD_COLUMN] == 1.0
    by_id = table.set_index("run_id")
    soft = store.results(ids["student-soft"], "test")
    assert by_id.loc[ids["student-soft"], compare.JACCARD_COLUMN] == pytest.approx(
        soft["jaccard_vs_teacher@10"]
    )
    # Popularity was not trained against this teacher: no stored overlap.
    assert math.isnan(by_id.loc[ids["popularity"], compare.JACCARD_COLUMN])
    assert by_id.loc[ids["student-soft"], "method"] == "soft"
    assert table["p50_ms"].isna().all() and (table["latency"] == compare.NOT_MEASURED).all()


def test_kept_is_empty_against_a_teacher_that_scores_zero(seeded):
    store, ids = seeded
    teacher = store.get_run(ids["teacher"])
    results = store.results(teacher.id, "test")
    store.set_results(teacher.id, "test", results | {"ndcg@10": 0.0})
    table = compare.comparison_table(store, teacher, [store.get_run(ids["student-soft"])])
    # A zero-NDCG teacher has nothing to keep: no "inf %" and no "0 %", just no figure.
    assert table[compare.kept_column("ndcg", 10)].isna().all()
    assert table[compare.kept_column("hr", 10)].iloc[0] == pytest.approx(100.0)


def test_comparison_table_rejects_other_k(seeded):
    store, ids = seeded
    with pytest.raises(ConfigError):
        compare.comparison_table(store, store.get_run(ids["teacher"]), [], k=5)


def test_table_shows_only_the_newest_figure_of_the_chosen_setting(seeded):
    store, ids = seeded
    teacher = store.get_run(ids["teacher"])
    soft = store.get_run(ids["student-soft"])
    store.add_latency(soft.id, "torch", 1, 5.0, 6.0, 7.0, 200.0, threads=1)
    store.add_latency(soft.id, "torch", 1, 4.0, 6.0, 7.0, 250.0, threads=1)  # a re-measure
    store.add_latency(soft.id, "torch", 1, 1.5, 2.0, 2.5, 600.0, threads=2)
    store.add_latency(soft.id, "torch", 256, 1.0, 1.0, 1.0, 9e4, threads=1)  # batched
    store.add_latency(soft.id, "torch", 1, 0.5, 0.5, 0.5, 9e3)  # threads unknown: never shown
    store.add_latency(teacher.id, "torch", 1, 30.0, 31.0, 32.0, 30.0, threads=2)
    one = compare.LatencySetting("torch", 1)
    table = compare.comparison_table(store, teacher, [soft], setting=one).set_index("run_id")
    assert table.loc[soft.id, "p50_ms"] == 4.0
    assert table.loc[soft.id, "latency"] == "PyTorch eager, 1 thread"
    # The teacher was only timed with 2 threads: not mixed into a 1-thread comparison.
    assert math.isnan(table.loc[teacher.id, "p50_ms"])
    assert table.loc[teacher.id, "latency"] == compare.NOT_MEASURED
    two = compare.LatencySetting("torch", 2)
    table = compare.comparison_table(store, teacher, [soft], setting=two).set_index("run_id")
    assert table["p50_ms"].tolist() == [30.0, 1.5]
    assert (table["latency"] == "PyTorch eager, 2 threads").all()
    assert compare.unmeasured_runs(table.reset_index()) == []
    # onnxruntime figures count only for runs with an export (the seeded runs have none).
    store.add_latency(soft.id, "onnxruntime", 1, 2.5, 3.0, 3.5, 400.0, threads=1)
    onnx = compare.LatencySetting("onnxruntime", 1)
    table = compare.comparison_table(store, teacher, [soft], setting=onnx)
    assert table["p50_ms"].isna().all() and (table["latency"] == compare.NO_ONNX).all()
    assert compare.missing_latency(table) == {compare.NO_ONNX: table["run"].tolist()}


def test_a_figure_older_than_the_checkpoint_asks_for_a_re_measure(seeded):
    store, ids = seeded
    teacher = store.get_run(ids["teacher"])
    soft = store.get_run(ids["student-soft"])
    record = store.add_latency(soft.id, "torch", 1, 4.0, 5.0, 6.0, 250.0, threads=1)
    store.add_latency(teacher.id, "torch", 1, 9.0, 9.5, 9.9, 100.0, threads=1)
    fresh = compare.comparison_table(store, teacher, [soft]).set_index("run_id")
    assert fresh["p50_ms"].tolist() == [9.0, 4.0]
    # The student is trained again after it was timed: its checkpoint is newer than the figure.
    later = record.created.timestamp() + 0.05
    os.utime(soft.checkpoint_path, (later, later))
    assert compare.model_written(soft, "torch") > record.created
    table = compare.comparison_table(store, teacher, [soft]).set_index("run_id")
    assert math.isnan(table.loc[soft.id, "p50_ms"])
    assert table.loc[soft.id, "latency"] == compare.STALE
    assert table.loc[teacher.id, "p50_ms"] == 9.0
    assert compare.missing_latency(table.reset_index()) == {compare.STALE: [text.run_title(soft)]}
    spec = charts.pareto_chart(compare.pareto_frame(table.reset_index()), 10, "x").to_dict()
    _, bubbles, _ = spec["layer"]
    assert [p["run"] for p in spec["datasets"][bubbles["data"]["name"]]] == [
        text.run_title(teacher)
    ]
    # A re-measure after the retraining is fresh again.
    time.sleep(max(0.0, later - time.time()) + 0.01)
    store.add_latency(soft.id, "torch", 1, 3.0, 3.5, 4.0, 300.0, threads=1)
    record, label = compare.latency_for(soft, store.latencies(soft.id), compare.LatencySetting())
    assert record is not None and record.p50 == 3.0 and label == "PyTorch eager, 1 thread"


def test_latency_setting_validates_and_labels():
    assert compare.LatencySetting().label == "PyTorch eager, 1 thread"
    assert compare.LatencySetting("onnxruntime", 4).label == "onnxruntime, 4 threads"
    with pytest.raises(ConfigError, match="runtime"):
        compare.LatencySetting("onnxruntime-int8", 1)
    with pytest.raises(ConfigError, match="thread"):
        compare.LatencySetting("torch", 0)
    choices = compare.thread_choices()
    assert choices[0] == 1 and choices == list(range(1, len(choices) + 1))


def test_measure_latency_stores_the_setting_and_skips_runs_without_onnx(seeded):
    store, ids = seeded
    data = load_dataset(store, ids["dataset"])
    run = store.get_run(ids["student-soft"])
    setting = compare.LatencySetting("torch", 1)
    rec = compare.measure_latency(
        store, run, data, setting, model=run_model(store, run), iters=10, warmup=2,
        time_budget_s=0.2,
    )  # fmt: skip
    assert rec.p50 > 0 and rec.p95 >= rec.p50 and rec.qps > 0
    (stored,) = store.latencies(run.id)
    assert (stored.runtime, stored.batch, stored.threads, stored.p50) == ("torch", 1, 1, rec.p50)
    assert stored.env["iters"] >= 10 and stored.env["benchmark_threads"] == 1
    onnx = compare.LatencySetting("onnxruntime", 1)
    with pytest.raises(ConfigError, match="no ONNX export"):
        compare.measure_latency(store, run, data, onnx)
    records, skipped = compare.measure_runs(store, [run], data, onnx)
    assert records == [] and [r.id for r in skipped] == [run.id]
    assert len(store.latencies(run.id)) == 1


# --------------------------------------------------------------------------- runs page
def test_runs_frame_and_filters(seeded):
    store, ids = seeded
    runs = store.list_runs()
    frame = runs_view.runs_frame(store, runs, store.list_datasets())
    assert frame["id"].tolist() == sorted((r.id for r in runs), reverse=True)
    row = frame.set_index("id").loc[ids["teacher"]]
    assert row["ndcg@10"] == pytest.approx(store.results(ids["teacher"])["ndcg@10"])
    assert row["val_ndcg"] == pytest.approx([e.val_ndcg for e in store.epochs(ids["teacher"])])
    assert row["dataset"] == store.get_dataset(ids["dataset"]).name
    assert row["duration_s"] > 0
    assert [r.id for r in runs_view.filter_runs(runs, roles=["teacher"])] == [ids["teacher"]]
    assert len(runs_view.filter_runs(runs, [ids["dataset"]], (), ["succeeded"])) == 4
    assert runs_view.filter_runs(runs, statuses=["failed"]) == []
    assert runs_view.runs_frame(store, []).empty


def test_metrics_frame_splits_slices_by_hand():
    frame = runs_view.metrics_frame(
        {"ndcg@10": 0.1, "ndcg[cold]@10": 0.2, "ndcg[heavy]@10": 0.05, "coverage@10": 0.3}
        | {"users": 9.0, "users[cold]": 2.0, "train_seconds": 1.5}
    )
    assert list(frame.columns) == ["all", "cold", "warm", "heavy"]
    assert frame.loc["ndcg@10", "all"] == 0.1 and frame.loc["ndcg@10", "cold"] == 0.2
    assert frame.loc["ndcg@10", "heavy"] == 0.05 and math.isnan(frame.loc["ndcg@10", "warm"])
    assert frame.loc["users", "cold"] == 2.0 and frame.loc["train_seconds", "all"] == 1.5
    assert math.isnan(frame.loc["coverage@10", "cold"])


def test_epoch_charts_and_artifacts(seeded_home, seeded):
    root, _ = seeded_home
    store, ids = seeded
    epochs = store.epochs(ids["student-soft"])
    # The Runs page draws a stored run's curves with the Train page's chart.
    tidy = charts.training_frame(epochs)
    loss = tidy[tidy["panel"] == charts.LOSS_PANEL]
    assert set(loss["series"]) == {"total", "task", "soft"}
    validation = tidy[(tidy["panel"] == charts.VAL_PANEL) & (tidy["series"] == "NDCG@10")]
    assert validation["value"].tolist() == pytest.approx([e.val_ndcg for e in epochs])
    spec = charts.training_chart(tidy).to_dict()
    for panel in spec["hconcat"]:
        assert panel["mark"]["type"] == "line" and panel["encoding"]["color"]["field"] == "series"
    (artifact,) = store.artifacts(ids["teacher"])
    files = runs_view.artifacts_frame([artifact])
    assert files.loc[0, "path"] == artifact.path.relative_to(root.resolve()).as_posix()
    assert not files.loc[0, "path"].startswith("/")
    assert files.loc[0, "bytes"] == artifact.path.stat().st_size


# --------------------------------------------------------------------------- config diff
def test_flatten_and_config_differences_by_hand():
    a = {"model": {"dim": 8, "layers": 1}, "train": {"lr": 0.003, "epochs": 2}, "name": "a"}
    b = {"model": {"dim": 32, "layers": 1}, "train": {"lr": 0.003, "epochs": 2}, "name": "b"}
    c = {"model": {"dim": 8, "layers": 1}, "train": {"lr": 0.003}, "name": "c", "tags": [1]}
    assert compare.flatten_config(a) == {
        "model.dim": 8, "model.layers": 1, "train.lr": 0.003, "train.epochs": 2, "name": "a"
    }  # fmt: skip
    diff = compare.config_differences({"A": a, "B": b, "C": c})
    assert list(diff.columns) == ["A", "B", "C"]
    assert list(diff.index) == ["model.dim", "name", "tags", "train.epochs"]
    assert diff.loc["model.dim"].tolist() == ["8", "32", "8"]
    assert diff.loc["train.epochs"].tolist() == ["2", "2", compare.MISSING]
    assert diff.loc["tags"].tolist() == [compare.MISSING, compare.MISSING, "[1]"]
    full = compare.config_differences({"A": a, "B": b}, only_differences=False)
    assert set(full.index) == {"model.dim", "model.layers", "train.lr", "train.epochs", "name"}
    same = compare.config_differences({"A": a, "A2": dict(a)})
    assert same.empty


# --------------------------------------------------------------------------- pareto
def test_pareto_frontier_by_hand():
    frame = pd.DataFrame(
        {
            "run": ["A", "A-twin", "B", "C", "D", "E", "F"],
            "ndcg@10": [0.30, 0.30, 0.20, 0.20, 0.35, 0.10, 0.25],
            "p50_ms": [10.0, 10.0, 1.0, 5.0, 100.0, np.nan, 1.0],
        }
    )
    on = compare.pareto_frontier(frame)
    # B is dominated by F (same latency, better NDCG); C by B and F; the twins tie, so both
    # stay; E has no latency.
    assert dict(zip(frame["run"], on, strict=True)) == {
        "A": True, "A-twin": True, "B": False, "C": False, "D": True, "E": False, "F": True,
    }  # fmt: skip


def _table(store, ids) -> pd.DataFrame:
    teacher = store.get_run(ids["teacher"])
    others = [store.get_run(ids[n]) for n in ("popularity", "student-no-teacher", "student-soft")]
    return compare.comparison_table(store, teacher, others)


def test_pareto_chart_spec(seeded):
    store, ids = seeded
    store.add_latency(ids["teacher"], "torch", 1, 20.0, 21.0, 22.0, 50.0, threads=1)
    store.add_latency(ids["student-soft"], "torch", 1, 2.0, 2.5, 3.0, 500.0, threads=1)
    store.add_latency(ids["popularity"], "torch", 1, 0.5, 0.6, 0.7, 2000.0, threads=1)
    table = _table(store, ids)
    assert compare.unmeasured_runs(table) == [f"#{ids['student-no-teacher']} student-no-teacher"]
    label = compare.LatencySetting().label
    spec = charts.pareto_chart(compare.pareto_frame(table), 10, label).to_dict()
    assert spec["title"] == "Quality vs latency (PyTorch eager, 1 thread, 1 request)"
    frontier, bubbles, labels = spec["layer"]
    assert bubbles["encoding"]["x"]["title"].endswith("PyTorch eager, 1 thread)")
    assert frontier["mark"]["type"] == "line" and frontier["mark"]["interpolate"] == "step-after"
    assert bubbles["mark"]["type"] == "circle" and labels["mark"]["type"] == "text"
    assert bubbles["encoding"]["size"]["field"] == "params"
    assert bubbles["encoding"]["x"]["scale"]["type"] == "log"
    assert frontier["encoding"]["x"]["scale"]["type"] == "log"
    points = spec["datasets"][bubbles["data"]["name"]]
    assert sorted(p["run"] for p in points) == sorted(
        r for r in table["run"] if not r.endswith("student-no-teacher")
    )
    frontier_rows = spec["datasets"][frontier["data"]["name"]]
    expected = table[compare.pareto_frontier(table)]["run"]
    assert [p["run"] for p in frontier_rows] == list(
        table.loc[expected.index].sort_values("p50_ms")["run"]
    )


def test_kept_and_curve_chart_specs(seeded):
    store, ids = seeded
    table = _table(store, ids)
    kept = compare.kept_frame(table)
    assert len(kept) == 3 * len(compare.KEPT_METRICS)
    assert text.run_title(store.get_run(ids["teacher"])) not in set(kept["run"])
    soft = kept[
        (kept["run"] == f"#{ids['student-soft']} student-soft") & (kept["metric"] == "hr@10")
    ]
    assert soft["kept"].item() == pytest.approx(
        table.set_index("run_id").loc[ids["student-soft"], compare.kept_column("hr", 10)]
    )
    spec = charts.kept_chart(compare.kept_frame(table)).to_dict()
    bars, rule = spec["layer"]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["xOffset"]["field"] == "run"
    assert rule["mark"]["type"] == "rule"
    runs = [store.get_run(i) for i in (ids["teacher"], ids["student-soft"])]
    curves = compare.validation_curves(store, runs)
    assert len(curves) == sum(len(store.epochs(r.id)) for r in runs)
    spec = charts.curves_chart(curves).to_dict()
    assert spec["mark"]["type"] == "line" and spec["encoding"]["y"]["field"] == "val_ndcg"


# --------------------------------------------------------------------------- export
def test_csv_and_markdown_export():
    table = pd.DataFrame(
        {"run": ["#1 a|b", "#2 c"], "ndcg@10": [0.123456, np.nan], "params": [10, 20]}
    )
    assert pd.read_csv(io.StringIO(text.to_csv(table)))["run"].tolist() == ["#1 a|b", "#2 c"]
    lines = text.to_markdown(table).splitlines()
    assert lines == [
        "| run | ndcg@10 | params |",
        "|---|---|---|",
        "| #1 a\\|b | 0.1235 | 10 |",
        "| #2 c |  | 20 |",
    ]


def test_md_escape():
    assert text.md_escape("**x** [y](z) $a$") == r"\*\*x\*\* \[y\]\(z\) \$a\$"


# --------------------------------------------------------------------------- samples
def test_sample_recommendations_on_real_runs(seeded):
    store, ids = seeded
    data = load_dataset(store, ids["dataset"])
    runs = [store.get_run(ids[n]) for n in ("teacher", "student-soft", "popularity")]
    models = recs.load_models(store, runs)
    for raw in recs.find_users(data, limit=5):
        user = recs.user_index(data, raw)
        lists = recs.sample_recommendations(data, user, models, k=10)
        assert [r.run_id for r in lists] == [r.id for r in runs]
        teacher_items = lists[0].item_indices
        held_out = set(np.flatnonzero(data.target_matrix("test")[user].toarray()[0]))
        seen = set(data.items[(data.users == user) & (data.split != 2)].tolist())
        for rec in lists:
            assert len(rec.items) == 10 and len(rec.item_indices) == 10
            assert all(i >= 0 for i in rec.item_indices)
            if data.masks_history:  # the dataset's evaluation setting decides
                assert not seen & set(rec.item_indices)
            assert rec.items["title"].tolist() == [str(data.titles[i]) for i in rec.item_indices]
            assert rec.items["shared"].tolist() == [i in teacher_items for i in rec.item_indices]
            assert rec.items["test_item"].tolist() == [i in held_out for i in rec.item_indices]
            assert rec.test_hit == bool(held_out & set(rec.item_indices))
            assert rec.ms >= 0
        assert lists[0].jaccard is None and lists[0].items["shared"].all()
        for rec in lists[1:]:
            a, b = set(rec.item_indices), set(teacher_items)
            assert rec.jaccard == pytest.approx(len(a & b) / len(a | b))


def test_user_history_newest_first_with_catalog_titles(seeded):
    store, ids = seeded
    data = load_dataset(store, ids["dataset"])
    user = recs.user_index(data, recs.find_users(data, limit=1)[0])
    history = recs.user_history(data, user)
    rows = [
        (int(t), int(i))
        for u, i, t, s in zip(data.users, data.items, data.timestamps, data.split, strict=True)
        if u == user and s != 2
    ]
    newest = [i for _, i in rows][::-1][:10]  # rows are in time order
    assert history["title"].tolist() == [str(data.titles[i]) for i in newest]
    assert history["category"].tolist() == [str(data.categories[i]) for i in newest]
    assert history["when"].is_monotonic_decreasing


def test_short_lists_drop_empty_slots():
    data = replace(sequences_dataset([[0, 1, 2, 3], [1, 2, 3, 0]], n_items=4), history_mask="on")
    model = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    model.fit_statistics(data)
    runs = [(_record(1, "teacher", "teacher"), model), (_record(2, "copy"), model)]
    teacher, copy = recs.sample_recommendations(data, 0, runs, k=10)
    # Items 0, 1, 2 are user 0's train+valid history: only the test item 3 is left.
    assert teacher.item_indices == (3,) and copy.item_indices == (3,)
    assert teacher.test_hit and copy.jaccard == 1.0
    assert recs.user_history(data, 0)["item_id"].tolist() == ["i2", "i1", "i0"]
    # With the dataset's mask off, the history may be offered again ("buy again").
    unmasked = recs.sample_recommendations(replace(data, history_mask="off"), 0, runs, k=10)
    assert len(unmasked[0].item_indices) == 4


def test_find_and_random_users():
    data = sequences_dataset([[0, 1, 2], [1, 2, 0], [0, 1], [2, 1, 0]], n_items=3)
    assert recs.find_users(data) == ["u0", "u1", "u3"]  # u2 has no test item
    assert recs.find_users(data, " U3 ") == ["u3"]
    assert recs.find_users(data, "zz") == []
    rng = np.random.default_rng(0)
    assert {recs.random_user(data, rng) for _ in range(30)} <= {"u0", "u1", "u3"}
    assert recs.user_index(data, "u3") == 3 and recs.user_index(data, "nobody") is None


def test_row_colors_mark_shared_items_and_the_test_item():
    items = pd.DataFrame(
        {"title": ["a", "b", "c"], "shared": [True, False, True], "test_item": [False, True, True]}
    )
    assert recs.row_colors(items) == [
        recs.SHARED_COLOR,
        recs.TEST_ITEM_COLOR,
        recs.TEST_ITEM_COLOR,
    ]
    assert recs.row_colors(items, highlight_shared=False) == [
        None,
        recs.TEST_ITEM_COLOR,
        recs.TEST_ITEM_COLOR,
    ]
    html = recs.style_recommendations(items).to_html()
    shared_rule = html.split(f"background-color: {recs.SHARED_COLOR}")[0].rsplit("}", 1)[-1]
    assert "row0_col0" in shared_rule and "row1" not in shared_rule
    assert f"background-color: {recs.TEST_ITEM_COLOR}" in html
    # Only the shown columns are styled (a what-if list has no test item at all).
    styled = recs.style_recommendations(items.drop(columns="test_item"), columns=["title"])
    assert list(styled.data.columns) == ["title"]
    assert recs.row_colors(items.drop(columns="test_item")) == [
        recs.SHARED_COLOR,
        None,
        recs.SHARED_COLOR,
    ]


def test_csv_export_defuses_formula_text():
    import pandas as pd

    from core.views.text import to_csv

    table = pd.DataFrame(
        {"run": ["=cmd|' /C calc'!A0", "@SUM(1)", "teacher"], "ndcg@10": [-0.5, 0.2, 0.3]}
    )
    lines = to_csv(table).splitlines()
    assert lines[1].startswith("'=cmd") and lines[2].startswith("'@SUM")
    assert lines[1].endswith(",-0.5") and lines[3] == "teacher,0.3"
