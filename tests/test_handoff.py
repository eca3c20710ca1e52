"""Handoff: preparation of the seeded student, facts from the store, gates at their
thresholds, the model card (numbers equal the store's, user text escaped), the bundle."""

from __future__ import annotations

import io
import json
import math
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core import paths
from core.errors import ConfigError
from core.files import file_sha256
from core.ingestion.registry import load_dataset
from core.ranking import history_mask
from core.serving.bundle import (
    BUNDLE_FILES,
    CARD_JSON,
    CARD_MD,
    METRICS_JSON,
    bundle_bytes,
    bundle_path,
    missing_files,
    write_bundle,
)
from core.serving.card import latency_frame, latency_ratios, model_card, quality_frame
from core.serving.export import OnnxRecommender
from core.serving.facts import HandoffFacts, collect_facts
from core.serving.gates import NOT_MEASURED, Gates, evaluate_gates
from core.serving.latency import RUNTIMES
from core.serving.parity import TIE_TOLERANCE
from core.serving.prepare import (
    ARTIFACT_KINDS,
    INT8_FILE,
    ITEM_MAP_FILE,
    ONNX_FILE,
    SPLIT_INT8,
    SPLIT_ONNX,
    handoff_candidates,
    prepare_handoff,
)
from core.store import Store

FAST = {"iters": 15, "time_budget_s": 0.2, "parity_users": 64, "large_batch": 32}


@pytest.fixture(scope="module")
def prepared(seeded_template, tmp_path_factory):
    """One copy of the seeded data directory with the soft student prepared (once)."""
    template, ids = seeded_template
    root = tmp_path_factory.mktemp("handoff") / "home"
    shutil.copytree(template, root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILLERY_HOME", str(root))
        mp.delenv("DISTILLERY_DB_URL", raising=False)
        with Store() as store:
            before = store.results(ids["student-soft"], "test")
            steps: list[tuple[str, float]] = []
            result = prepare_handoff(
                store, ids["student-soft"], progress=lambda m, f: steps.append((m, f)), **FAST
            )
    return root, ids, result, before, steps


@pytest.fixture
def store(prepared, monkeypatch):
    root, *_ = prepared
    monkeypatch.setenv("DISTILLERY_HOME", str(root))
    monkeypatch.delenv("DISTILLERY_DB_URL", raising=False)
    with Store() as opened:
        yield opened


# --------------------------------------------------------------------------- preparation
def test_prepare_writes_files_and_records_them(prepared, store):
    _, ids, result, _, steps = prepared
    run = store.get_run(ids["student-soft"])
    folder = paths.run_dir(run.id)
    for name in (ONNX_FILE, INT8_FILE, ITEM_MAP_FILE):
        assert (folder / name).is_file()
    assert run.onnx_path == folder / ONNX_FILE
    recorded = {a.path.name: a for a in store.artifacts(run.id)}
    for name, kind in ARTIFACT_KINDS.items():
        assert recorded[name].kind == kind
        assert recorded[name].sha256 == file_sha256(folder / name)
        assert recorded[name].bytes == (folder / name).stat().st_size
    assert not list(folder.glob("*.tmp"))  # nothing half-written left behind
    assert [f for _, f in steps] == sorted(f for _, f in steps) and steps[-1] == ("done", 1.0)
    # the teacher is exported beside its own checkpoint, so its ratio is measured
    teacher = store.get_run(ids["teacher"])
    assert teacher.onnx_path == paths.run_dir(teacher.id) / ONNX_FILE
    assert teacher.onnx_path.is_file()


def test_parity_is_stored_and_within_tolerance(prepared, store):
    _, ids, result, _, _ = prepared
    (parity,) = store.parities(ids["student-soft"])
    assert parity.max_abs_diff == result.parity.max_abs_diff <= 1e-4
    assert parity.topk_agreement == result.parity.topk_agreement >= 0.99
    assert parity.n_users == FAST["parity_users"]


def test_latency_rows_for_three_runtimes_and_the_teacher(prepared, store):
    _, ids, result, _, _ = prepared
    rows = store.latencies(ids["student-soft"])
    assert sorted((r.runtime, r.batch) for r in rows) == sorted(
        (runtime, batch) for runtime in RUNTIMES for batch in (1, FAST["large_batch"])
    )
    for r in rows:
        assert r.env["handoff"] == result.token and r.threads == 1
        assert 0 < r.p50 <= r.p95 <= r.p99 and r.qps > 0
        assert r.env["cpu"] and r.env["onnxruntime"] and r.env["benchmark_threads"] == 1
    (teacher_row,) = store.latencies(ids["teacher"])
    assert (teacher_row.runtime, teacher_row.batch) == ("onnxruntime", 1)
    assert (
        teacher_row.env["handoff"] == result.token and teacher_row.id == result.teacher_latency.id
    )


def test_onnx_results_have_their_own_splits_and_torch_results_stay(prepared, store):
    _, ids, result, before, _ = prepared
    run_id = ids["student-soft"]
    assert store.results(run_id, "test") == before  # PyTorch's results untouched
    onnx = store.results(run_id, SPLIT_ONNX)
    int8 = store.results(run_id, SPLIT_INT8)
    assert set(onnx) == set(int8) and "ndcg@10" in onnx and "tail_recall@10" in onnx
    assert onnx == pytest.approx(result.onnx_metrics) and int8 == pytest.approx(result.int8_metrics)
    # fp32 through onnxruntime ranks like PyTorch (parity agreement is 1 here)
    assert onnx["ndcg@10"] == pytest.approx(before["ndcg@10"], abs=1e-6)
    assert onnx["hr@10"] == pytest.approx(before["hr@10"], abs=1e-6)
    assert 0.0 <= int8["ndcg@10"] <= 1.0


def test_int8_model_loads_and_ranks(prepared, store):
    _, ids, result, _, _ = prepared
    data = load_dataset(store, ids["dataset"])
    runner = OnnxRecommender(result.int8.path)
    assert runner.quantized == "int8" and runner.k == 10
    users = data.eval_users("test")[:20]
    items, scores = runner.recommend(data, users)
    assert items.shape == (20, 10)
    assert ((items >= 0) & (items < data.n_items)).all()
    assert all(len(set(row)) == 10 for row in items)
    assert not history_mask(data, users).numpy()[np.arange(20)[:, None], items].any()
    assert (np.diff(scores, axis=1) <= TIE_TOLERANCE).all()  # best first


def test_prepare_refuses_runs_that_cannot_be_handed_off(prepared, store):
    _, ids, *_ = prepared
    with pytest.raises(ConfigError, match="popularity"):
        prepare_handoff(store, ids["popularity"], **FAST)
    candidates = [r.id for r in handoff_candidates(store)]
    assert candidates == sorted([ids["student-soft"], ids["student-no-teacher"]], reverse=True)


def test_prepare_again_replaces_files_and_adds_fresh_rows(seeded_home):
    _, ids = seeded_home
    run_id = ids["student-soft"]
    with Store() as store:
        first = prepare_handoff(store, run_id, **FAST)
        teacher_onnx = store.get_run(ids["teacher"]).onnx_path
        exported_at = teacher_onnx.stat().st_mtime_ns
        second = prepare_handoff(store, run_id, **FAST)
        assert second.token != first.token
        assert len(store.latencies(run_id)) == 2 * len(first.latencies)
        assert len(store.parities(run_id)) == 2
        assert len(store.artifacts(run_id)) == len(ARTIFACT_KINDS) + 1  # + checkpoint
        assert store.results(run_id, SPLIT_ONNX) == pytest.approx(second.onnx_metrics)
        assert second.onnx.sha256 == first.onnx.sha256  # the export is deterministic
        assert teacher_onnx.stat().st_mtime_ns == exported_at  # teacher export reused
        facts = collect_facts(store, run_id)
        served = [r for r in second.latencies if r.runtime == "onnxruntime" and r.batch == 1]
        assert facts.p95_ms == served[0].p95  # the newest preparation's rows


# --------------------------------------------------------------------------- facts + card
def test_facts_come_from_the_store(prepared, store):
    _, ids, result, _, _ = prepared
    run_id = ids["student-soft"]
    for choice, split, file in (
        ("fp32", SPLIT_ONNX, ONNX_FILE),
        ("int8", SPLIT_INT8, INT8_FILE),
    ):
        facts = collect_facts(store, run_id, handoff=choice)
        assert facts.ndcg == store.results(run_id, split)["ndcg@10"]
        assert facts.size_bytes == (paths.run_dir(run_id) / file).stat().st_size
        runtime = facts.runtime
        (served,) = [r for r in result.latencies if r.runtime == runtime and r.batch == 1]
        assert facts.p95_ms == served.p95
    assert facts.teacher_ndcg == store.results(ids["teacher"])["ndcg@10"]
    assert facts.twin_id == ids["student-no-teacher"]
    assert facts.twin_ndcg == store.results(ids["student-no-teacher"])["ndcg@10"]
    assert facts.parity_max_diff == result.parity.max_abs_diff
    assert [m["row"] for m in facts.metrics] == [
        "this run",
        "this run",
        "this run",
        "teacher",
        "no-teacher twin",
        "popularity",
    ]
    assert facts.metrics[3]["ndcg@10 kept %"] == pytest.approx(100.0)
    assert len(latency_frame(facts)) == 2 * len(RUNTIMES) + 1
    assert quality_frame(facts)["ndcg@10"].iloc[1] == facts.metrics[1]["ndcg@10"]


def test_unprepared_run_fails_every_measured_gate(prepared, store):
    _, ids, *_ = prepared
    facts = collect_facts(store, ids["student-no-teacher"])
    assert not facts.is_prepared and facts.twin_id is None
    results = {g.name: g for g in evaluate_gates(facts, Gates())}
    assert not any(g.passed for g in results.values())
    assert "trained without a teacher" in results["beats_twin"].sentence
    for name in ("quality_kept", "p95_latency", "size", "parity", "topk_agreement"):
        assert NOT_MEASURED in results[name].sentence
    with pytest.raises(ConfigError, match="Prepare handoff"):
        write_bundle(store, ids["student-no-teacher"])
    assert missing_files(store, ids["student-no-teacher"]) == list(ARTIFACT_KINDS)


def _card_latency(card: dict, model: str, runtime: str, batch: int) -> dict:
    (row,) = [
        r
        for r in card["latency"]
        if (r["model"], r["runtime"], r["batch"]) == (model, runtime, batch)
    ]
    return row


def test_bundle_unzips_to_the_listed_files_and_the_card_equals_the_store(prepared, store):
    _, ids, result, _, _ = prepared
    run_id = ids["student-soft"]
    path = write_bundle(store, run_id, handoff="int8")
    assert path.parent == paths.bundles_dir() and path.suffix == ".zip"
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == list(BUNDLE_FILES)
        files = {name: archive.read(name) for name in archive.namelist()}
    folder = paths.run_dir(run_id)
    for name in (ONNX_FILE, INT8_FILE, ITEM_MAP_FILE):
        assert files[name] == (folder / name).read_bytes()
    card = json.loads(files[CARD_JSON])
    assert card["handoff"]["artifact"] == INT8_FILE

    metrics = {(m["row"], m["runtime"]): m for m in card["metrics"]}
    assert metrics[("this run", "torch")]["ndcg@10"] == store.results(run_id)["ndcg@10"]
    for runtime, split in (("onnxruntime", "test-onnx"), ("onnxruntime-int8", "test-int8")):
        stored = store.results(run_id, split)
        for key in ("ndcg@10", "hr@10", "mrr@10", "coverage@10", "tail_recall@10"):
            assert metrics[("this run", runtime)][key] == stored[key]
    teacher_ndcg = store.results(ids["teacher"])["ndcg@10"]
    assert metrics[("teacher", "torch")]["ndcg@10"] == teacher_ndcg
    twin = store.results(ids["student-no-teacher"])["ndcg@10"]
    assert metrics[("no-teacher twin", "torch")]["ndcg@10"] == twin
    assert (
        metrics[("popularity", "torch")]["ndcg@10"] == store.results(ids["popularity"])["ndcg@10"]
    )
    int8_ndcg = store.results(run_id, "test-int8")["ndcg@10"]
    assert metrics[("this run", "onnxruntime-int8")]["ndcg@10 kept %"] == pytest.approx(
        100 * int8_ndcg / teacher_ndcg
    )

    for rec in store.latencies(run_id):
        row = _card_latency(card, "this run", rec.runtime, rec.batch)
        assert (row["p50_ms"], row["p95_ms"], row["p99_ms"], row["qps"]) == (
            rec.p50,
            rec.p95,
            rec.p99,
            rec.qps,
        )
    (teacher_rec,) = store.latencies(ids["teacher"])
    assert _card_latency(card, "teacher", "onnxruntime", 1)["p50_ms"] == teacher_rec.p50
    served = _card_latency(card, "this run", "onnxruntime-int8", 1)
    assert card["latency_ratios"]["teacher_over_served_p50"] == pytest.approx(
        teacher_rec.p50 / served["p50_ms"]
    )

    (parity,) = store.parities(run_id)
    assert card["parity"] == {
        "max_abs_diff": parity.max_abs_diff,
        "topk_agreement": parity.topk_agreement,
        "n_users": parity.n_users,
    }
    sizes = {a.path.name: a.bytes for a in store.artifacts(run_id)}
    assert card["sizes"]["onnx_bytes"] == sizes[ONNX_FILE] == len(files[ONNX_FILE])
    assert card["sizes"]["int8_bytes"] == sizes[INT8_FILE]
    assert card["sizes"]["params"] == store.get_run(run_id).num_params
    assert card["dataset"]["content_hash"] == store.get_dataset(ids["dataset"]).content_hash
    assert card["environment"]["cpu"] == teacher_rec.env["cpu"]
    size_gate = next(g for g in card["gates"] if g["name"] == "size")
    assert size_gate["measured"] == sizes[INT8_FILE] / 1e6

    saved = json.loads(files[METRICS_JSON])
    assert saved["results"]["test-onnx"] == store.results(run_id, "test-onnx")
    assert saved["parity"][0]["max_abs_diff"] == parity.max_abs_diff

    markdown = files[CARD_MD].decode()
    assert f"{teacher_ndcg:.4f}" in markdown and f"{served['p50_ms']:.3f}" in markdown
    assert f"{parity.max_abs_diff:.2e}" in markdown and "## Known limits" in markdown
    # the same store state gives the same bytes
    assert write_bundle(store, run_id, handoff="int8").read_bytes() == path.read_bytes()
    assert not list(path.parent.glob("*.tmp"))


def test_card_escapes_user_text_and_survives_missing_numbers():
    name = "Shop *bold* <script>alert(1)</script> | [x](javascript:y)"
    facts = HandoffFacts(
        ndcg=float("nan"),
        run={
            "id": 7,
            "title": "#7 `evil` _name_",
            "role": "student",
            "model": "sasrec",
            "teacher_run_id": None,
            "twin_run_id": None,
            "num_params": None,
            "config": {"name": "```\n# injected heading"},
        },
        dataset={
            "name": name,
            "source": "upload <b>x</b>",
            "content_hash": "abc",
            "n_users": 3,
            "n_items": 4,
            "n_interactions": 5,
            "split": {"method": "loo"},
        },
        training={"train_seconds": None, "best_epoch": None, "val_ndcg@10": None},
        sizes={"params": None, "fp32_weights_bytes": None, "onnx_bytes": None, "int8_bytes": None},
        environment={"cpu": "CPU <i>x</i>"},
    )
    markdown, card = model_card(facts, Gates())
    json.dumps(card, allow_nan=False)  # NaN became null
    assert card["dataset"]["name"] == name  # JSON keeps the text as it is
    assert "<script>" not in markdown and "<b>" not in markdown and "<i>" not in markdown
    assert "\\*bold\\*" in markdown and "\\[x\\]\\(javascript:y\\)" in markdown
    assert "\\`evil\\`" in markdown
    # the config's own backticks cannot close the fence around it
    assert "````json" in markdown and "\n# " not in markdown  # JSON keeps "\n" escaped
    empty, _ = model_card(HandoffFacts(), Gates())  # nothing known still renders
    assert "Gates passed: 0 of 6" in empty


# --------------------------------------------------------------------------- gates
PASSING = HandoffFacts(
    ndcg=0.19,
    teacher_ndcg=0.2,
    twin_id=3,
    twin_ndcg=0.1,
    p95_ms=10.0,
    size_bytes=50 * 1_000_000,
    parity_max_diff=1e-4,
    topk_agreement=0.99,
)


def verdicts(facts: HandoffFacts, gates: Gates | None = None) -> dict[str, bool]:
    return {g.name: g.passed for g in evaluate_gates(facts, gates or Gates())}


def test_every_gate_passes_exactly_at_its_threshold():
    results = evaluate_gates(PASSING, Gates())
    assert [g.name for g in results] == [
        "quality_kept",
        "beats_twin",
        "p95_latency",
        "size",
        "parity",
        "topk_agreement",
    ]
    assert all(g.passed for g in results), [g.sentence for g in results if not g.passed]
    kept = results[0]
    assert kept.measured == pytest.approx(0.95) and kept.threshold == 0.95
    assert "95.0%" in kept.sentence and all(g.mark == "✅" for g in results)


@pytest.mark.parametrize(
    ("gate", "change"),
    [
        ("quality_kept", {"ndcg": 0.19 * (1 - 1e-9)}),
        ("beats_twin", {"twin_ndcg": 0.19}),  # a tie does not beat the twin
        ("p95_latency", {"p95_ms": 10.0 * (1 + 1e-9)}),
        ("size", {"size_bytes": 50 * 1_000_000 + 1}),
        ("parity", {"parity_max_diff": 1e-4 * (1 + 1e-9)}),
        ("topk_agreement", {"topk_agreement": 0.99 * (1 - 1e-9)}),
    ],
)
def test_just_beyond_a_threshold_fails_that_gate_only(gate, change):
    results = verdicts(replace(PASSING, **change))
    assert results.pop(gate) is False
    assert all(results.values())


@pytest.mark.parametrize(
    ("gate", "change"),
    [
        ("quality_kept", {"ndcg": 0.19 * (1 + 1e-9)}),
        ("beats_twin", {"twin_ndcg": 0.19 * (1 - 1e-9)}),
        ("p95_latency", {"p95_ms": 10.0 * (1 - 1e-9)}),
        ("size", {"size_bytes": 50 * 1_000_000 - 1}),
        ("parity", {"parity_max_diff": 1e-4 * (1 - 1e-9)}),
        ("topk_agreement", {"topk_agreement": 0.99 * (1 + 1e-9)}),
    ],
)
def test_just_inside_a_threshold_passes(gate, change):
    assert verdicts(replace(PASSING, **change))[gate] is True


def test_thresholds_are_editable():
    strict = Gates(min_kept=0.96, max_p95_ms=9.0, max_size_mb=49.0, max_parity_diff=1e-5)
    results = verdicts(PASSING, replace(strict, min_topk_agreement=0.995))
    assert results == {
        "quality_kept": False,
        "beats_twin": True,
        "p95_latency": False,
        "size": False,
        "parity": False,
        "topk_agreement": False,
    }
    assert "beats_twin" not in verdicts(PASSING, Gates(must_beat_baseline=False))


def test_missing_twin_and_teacher_fail_with_a_sentence():
    results = {
        g.name: g
        for g in evaluate_gates(
            replace(PASSING, twin_id=None, twin_ndcg=None, teacher_ndcg=None), Gates()
        )
    }
    assert not results["beats_twin"].passed
    assert "no no-teacher twin was trained" in results["beats_twin"].sentence
    assert not results["quality_kept"].passed and "teacher" in results["quality_kept"].sentence
    assert results["size"].passed and results["size"].measured == 50.0


def test_hand_built_card_numbers_match_the_facts():
    facts = replace(
        PASSING,
        latency=(
            {
                "model": "this run",
                "run_id": 1,
                "runtime": "onnxruntime",
                "batch": 1,
                "p50_ms": 0.5,
                "p95_ms": 10.0,
                "p99_ms": 12.0,
                "qps": 2000.0,
                "threads": 1,
            },
            {
                "model": "this run",
                "run_id": 1,
                "runtime": "torch",
                "batch": 1,
                "p50_ms": 1.5,
                "p95_ms": 2.0,
                "p99_ms": 3.0,
                "qps": 600.0,
                "threads": 1,
            },
            {
                "model": "teacher",
                "run_id": 2,
                "runtime": "onnxruntime",
                "batch": 1,
                "p50_ms": 4.0,
                "p95_ms": 5.0,
                "p99_ms": 6.0,
                "qps": 250.0,
                "threads": 1,
            },
        ),  # fmt: skip
    )
    ratios = latency_ratios(facts)
    assert ratios == {"teacher_over_served_p50": 8.0, "torch_over_onnxruntime_p50": 3.0}
    markdown, card = model_card(
        replace(facts, run={**handoff_run_stub()}, dataset=dataset_stub()), Gates()
    )
    assert card["all_gates_passed"] is True and "8.0x" in markdown and "3.00x" in markdown
    assert not math.isnan(card["gates"][0]["measured"])


def handoff_run_stub() -> dict:
    return {
        "id": 1,
        "title": "#1 student",
        "role": "student",
        "model": "mf",
        "input_kind": "user",
        "teacher_run_id": 2,
        "twin_run_id": 3,
        "num_params": 10,
        "config": {},
    }


def dataset_stub() -> dict:
    return {
        "name": "shop",
        "source": "demo",
        "content_hash": "h",
        "n_users": 9,
        "n_items": 4,
        "n_interactions": 30,
        "split": {"method": "loo"},
    }


def test_bundle_zip_is_readable_from_bytes(prepared, store):
    _, ids, *_ = prepared
    payload = write_bundle(store, ids["student-soft"]).read_bytes()
    assert bundle_bytes(store, ids["student-soft"]) == payload  # what the page downloads
    assert missing_files(store, ids["student-soft"]) == []
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        assert archive.testzip() is None
        card = json.loads(archive.read(CARD_JSON))
    assert card["handoff"]["artifact"] == ONNX_FILE
    assert Path(bundle_path(ids["student-soft"])).exists()
