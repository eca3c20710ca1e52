"""core.compare: the Runs/Compare tables, % kept, config diffs, Pareto frontier, charts,
exports, sample recommendations and the on-demand latency measurement."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from core import compare
from core.errors import ConfigError
from core.models import ModelConfig, build_model
from core.registry import load_dataset
from core.runner import run_model
from core.store import RunRecord, Store
from tests.factories import sequences_dataset


@pytest.fixture
def seeded(seeded_home):
    _, ids = seeded_home
    store = Store()
    yield store, ids
    store.close()


def _record(run_id: int, name: str, role: str = "student") -> RunRecord:
    return RunRecord(
        id=run_id, dataset_id=1, role=role, model="popularity", config={}, status="succeeded",
        name=name, teacher_run_id=None, error=None, notes=None, created=datetime.now(UTC),
        started=None, finished=None, num_params=0, checkpoint_path=None, onnx_path=None, tags=(),
    )  # fmt: skip


# --------------------------------------------------------------------------- choices
def test_default_selection_is_the_teachers_students_and_popularity(seeded):
    store, ids = seeded
    (teacher,) = compare.teacher_choices(store)
    assert teacher.id == ids["teacher"]
    expected = sorted([ids["popularity"], ids["student-no-teacher"], ids["student-soft"]])
    assert compare.default_selection(store, teacher) == expected
    assert sorted(r.id for r in compare.compare_candidates(store, teacher)) == expected


def test_parse_ids_drops_bad_parts():
    assert compare.parse_ids("4, 5,x,,5,-1,6") == [4, 5, 6]
    assert compare.parse_ids(None) == []


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
    assert table["p50_ms"].isna().all() and (table["runtime"] == "").all()


def test_comparison_table_rejects_other_k(seeded):
    store, ids = seeded
    with pytest.raises(ConfigError):
        compare.comparison_table(store, store.get_run(ids["teacher"]), [], k=5)


def test_table_prefers_onnxruntime_and_the_newest_single_request_latency(seeded):
    store, ids = seeded
    teacher = store.get_run(ids["teacher"])
    soft = store.get_run(ids["student-soft"])
    store.add_latency(soft.id, "torch", 1, 5.0, 6.0, 7.0, 200.0)
    store.add_latency(soft.id, "torch", 1, 4.0, 6.0, 7.0, 250.0)  # newer torch figure
    store.add_latency(soft.id, "torch", 256, 1.0, 1.0, 1.0, 9e4)  # batched: not a request
    store.add_latency(teacher.id, "torch", 1, 30.0, 31.0, 32.0, 30.0)
    table = compare.comparison_table(store, teacher, [soft]).set_index("run_id")
    assert table.loc[soft.id, "p50_ms"] == 4.0 and table.loc[soft.id, "runtime"] == "torch"
    store.add_latency(soft.id, "onnxruntime", 1, 2.5, 3.0, 3.5, 400.0)
    table = compare.comparison_table(store, teacher, [soft]).set_index("run_id")
    assert table.loc[soft.id, "p50_ms"] == 2.5 and table.loc[soft.id, "runtime"] == "onnxruntime"
    assert compare.unmeasured_runs(table.reset_index()) == []


def test_measure_torch_latency_returns_positive_p50_and_stores_it(seeded):
    store, ids = seeded
    data = load_dataset(store, ids["dataset"])
    run = store.get_run(ids["student-soft"])
    rec = compare.measure_torch_latency(
        store, run, run_model(store, run), data, iters=10, warmup=2, time_budget_s=0.2
    )
    assert rec.p50 > 0 and rec.p95 >= rec.p50 and rec.qps > 0
    (stored,) = store.latencies(run.id)
    assert (stored.runtime, stored.batch, stored.p50) == ("torch", 1, rec.p50)
    assert stored.env["iters"] >= 10


# --------------------------------------------------------------------------- runs page
def test_runs_frame_and_filters(seeded):
    store, ids = seeded
    runs = store.list_runs()
    frame = compare.runs_frame(store, runs, store.list_datasets())
    assert frame["id"].tolist() == sorted((r.id for r in runs), reverse=True)
    row = frame.set_index("id").loc[ids["teacher"]]
    assert row["ndcg@10"] == pytest.approx(store.results(ids["teacher"])["ndcg@10"])
    assert row["val_ndcg"] == pytest.approx([e.val_ndcg for e in store.epochs(ids["teacher"])])
    assert row["dataset"] == store.get_dataset(ids["dataset"]).name
    assert row["duration_s"] > 0
    assert [r.id for r in compare.filter_runs(runs, roles=["teacher"])] == [ids["teacher"]]
    assert len(compare.filter_runs(runs, [ids["dataset"]], (), ["succeeded"])) == 4
    assert compare.filter_runs(runs, statuses=["failed"]) == []
    assert compare.runs_frame(store, []).empty


def test_metrics_frame_splits_slices_by_hand():
    frame = compare.metrics_frame(
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
    tidy = compare.epoch_frame(epochs)
    loss = tidy[tidy["panel"] == "loss"]
    assert set(loss["series"]) == {"total", "task", "soft"}
    assert len(tidy[(tidy["panel"] == "validation") & (tidy["series"] == "ndcg@10")]) == len(epochs)
    spec = compare.epoch_chart(epochs, "validation").to_dict()
    assert spec["mark"]["type"] == "line" and spec["encoding"]["color"]["field"] == "series"
    (artifact,) = store.artifacts(ids["teacher"])
    files = compare.artifacts_frame([artifact])
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
    store.add_latency(ids["teacher"], "torch", 1, 20.0, 21.0, 22.0, 50.0)
    store.add_latency(ids["student-soft"], "torch", 1, 2.0, 2.5, 3.0, 500.0)
    store.add_latency(ids["popularity"], "torch", 1, 0.5, 0.6, 0.7, 2000.0)
    table = _table(store, ids)
    assert compare.unmeasured_runs(table) == [f"#{ids['student-no-teacher']} student-no-teacher"]
    spec = compare.pareto_chart(table).to_dict()
    frontier, bubbles, labels = spec["layer"]
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
    assert compare.run_title(store.get_run(ids["teacher"])) not in set(kept["run"])
    soft = kept[
        (kept["run"] == f"#{ids['student-soft']} student-soft") & (kept["metric"] == "hr@10")
    ]
    assert soft["kept"].item() == pytest.approx(
        table.set_index("run_id").loc[ids["student-soft"], compare.kept_column("hr", 10)]
    )
    spec = compare.kept_chart(table).to_dict()
    bars, rule = spec["layer"]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["xOffset"]["field"] == "run"
    assert rule["mark"]["type"] == "rule"
    runs = [store.get_run(i) for i in (ids["teacher"], ids["student-soft"])]
    curves = compare.validation_curves(store, runs)
    assert len(curves) == sum(len(store.epochs(r.id)) for r in runs)
    spec = compare.curves_chart(curves).to_dict()
    assert spec["mark"]["type"] == "line" and spec["encoding"]["y"]["field"] == "val_ndcg"


# --------------------------------------------------------------------------- export
def test_csv_and_markdown_export():
    table = pd.DataFrame(
        {"run": ["#1 a|b", "#2 c"], "ndcg@10": [0.123456, np.nan], "params": [10, 20]}
    )
    assert pd.read_csv(io.StringIO(compare.to_csv(table)))["run"].tolist() == ["#1 a|b", "#2 c"]
    lines = compare.to_markdown(table).splitlines()
    assert lines == [
        "| run | ndcg@10 | params |",
        "|---|---|---|",
        "| #1 a\\|b | 0.1235 | 10 |",
        "| #2 c |  | 20 |",
    ]


def test_md_escape():
    assert compare.md_escape("**x** [y](z) $a$") == r"\*\*x\*\* \[y\]\(z\) \$a\$"


# --------------------------------------------------------------------------- samples
def test_sample_recommendations_on_real_runs(seeded):
    store, ids = seeded
    data = load_dataset(store, ids["dataset"])
    runs = [store.get_run(ids[n]) for n in ("teacher", "student-soft", "popularity")]
    models = compare.load_models(store, runs)
    for raw in compare.find_users(data, limit=5):
        user = compare.user_index(data, raw)
        lists = compare.sample_recommendations(data, user, models, k=10)
        assert [r.run_id for r in lists] == [r.id for r in runs]
        teacher_items = lists[0].item_indices
        held_out = set(np.flatnonzero(data.target_matrix("test")[user].toarray()[0]))
        seen = set(data.items[(data.users == user) & (data.split != 2)].tolist())
        for rec in lists:
            assert len(rec.items) == 10 and len(rec.item_indices) == 10
            assert all(i >= 0 for i in rec.item_indices)
            assert not seen & set(rec.item_indices)  # history is masked
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
    user = compare.user_index(data, compare.find_users(data, limit=1)[0])
    history = compare.user_history(data, user)
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
    data = sequences_dataset([[0, 1, 2, 3], [1, 2, 3, 0]], n_items=4)
    model = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    model.fit_statistics(data)
    runs = [(_record(1, "teacher", "teacher"), model), (_record(2, "copy"), model)]
    teacher, copy = compare.sample_recommendations(data, 0, runs, k=10)
    # Items 0, 1, 2 are user 0's train+valid history: only the test item 3 is left.
    assert teacher.item_indices == (3,) and copy.item_indices == (3,)
    assert teacher.test_hit and copy.jaccard == 1.0
    assert compare.user_history(data, 0)["item_id"].tolist() == ["i2", "i1", "i0"]


def test_find_and_random_users():
    data = sequences_dataset([[0, 1, 2], [1, 2, 0], [0, 1], [2, 1, 0]], n_items=3)
    assert compare.find_users(data) == ["u0", "u1", "u3"]  # u2 has no test item
    assert compare.find_users(data, " U3 ") == ["u3"]
    assert compare.find_users(data, "zz") == []
    rng = np.random.default_rng(0)
    assert {compare.random_user(data, rng) for _ in range(30)} <= {"u0", "u1", "u3"}
    assert compare.user_index(data, "u3") == 3 and compare.user_index(data, "nobody") is None


def test_row_colors_mark_shared_items_and_the_test_item():
    items = pd.DataFrame(
        {"title": ["a", "b", "c"], "shared": [True, False, True], "test_item": [False, True, True]}
    )
    assert compare.row_colors(items) == [
        compare.SHARED_COLOR,
        compare.TEST_ITEM_COLOR,
        compare.TEST_ITEM_COLOR,
    ]
    assert compare.row_colors(items, highlight_shared=False) == [
        None,
        compare.TEST_ITEM_COLOR,
        compare.TEST_ITEM_COLOR,
    ]
    html = compare.style_recommendations(items).to_html()
    shared_rule = html.split(f"background-color: {compare.SHARED_COLOR}")[0].rsplit("}", 1)[-1]
    assert "row0_col0" in shared_rule and "row1" not in shared_rule
    assert f"background-color: {compare.TEST_ITEM_COLOR}" in html


def test_csv_export_defuses_formula_text():
    import pandas as pd

    from core.compare import to_csv

    table = pd.DataFrame(
        {"run": ["=cmd|' /C calc'!A0", "@SUM(1)", "teacher"], "ndcg@10": [-0.5, 0.2, 0.3]}
    )
    lines = to_csv(table).splitlines()
    assert lines[1].startswith("'=cmd") and lines[2].startswith("'@SUM")
    assert lines[1].endswith(",-0.5") and lines[3] == "teacher,0.3"
