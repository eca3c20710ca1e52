"""The app's job runner end to end: registered dataset -> queued runs -> stored results."""

from __future__ import annotations

import numpy as np

from core.ingestion.registry import fingerprint, load_dataset, register_dataset
from core.runner import run_model
from core.store import Store


def test_seeded_runs_store_metrics_checkpoints_and_overlap(seeded_home):
    _, ids = seeded_home
    store = Store()
    teacher = store.get_run(ids["teacher"])
    student = store.get_run(ids["student-soft"])
    assert student.teacher_run_id == teacher.id and student.role == "student"
    results = store.results(student.id)
    assert 0.0 <= results["ndcg@10"] <= 1.0
    assert 0.0 <= results["jaccard_vs_teacher@10"] <= 1.0
    assert len(store.epochs(student.id)) >= 1
    notes = student.progress["training_notes"]
    assert any("computed once" in note for note in notes), notes
    assert teacher.progress["training_notes"] == []  # nothing to note for a plain run
    model = run_model(store, teacher)
    assert model.num_parameters() == teacher.num_params
    assert store.get_run(ids["popularity"]).num_params == 0


def test_stored_dataset_round_trips_exactly(seeded_home):
    _, ids = seeded_home
    store = Store()
    data = load_dataset(store, ids["dataset"])
    again = register_dataset(store, data, source="demo shop")
    assert again.id == ids["dataset"]  # same content -> the existing dataset, not a copy
    assert fingerprint(data) == store.get_dataset(ids["dataset"]).content_hash
    assert np.array_equal(
        data.train_matrix.indices, load_dataset(store, ids["dataset"]).train_matrix.indices
    )


def test_headless_pipeline_reproduces_the_apps_numbers(seeded_home):
    """Same data, same spec, same seed: the CLI path gives exactly what the app stored."""
    from core.pipeline import load_demo_dataset, train_and_evaluate
    from tests.conftest import TINY_SCALE, TINY_TEACHER

    _, ids = seeded_home
    store = Store()
    stored = store.results(ids["teacher"])
    data = load_demo_dataset(scale=TINY_SCALE)
    outcome = train_and_evaluate(data, TINY_TEACHER)
    for key in ("ndcg@10", "hr@10", "mrr@10", "coverage@10"):
        assert outcome.test.metrics[key] == stored[key], key
