"""The training loop: determinism, early stopping, cancellation, divergence, distillation."""

from __future__ import annotations

import threading
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from core.distill import DistillConfig
from core.errors import ConfigError, TrainingCancelled, TrainingDiverged
from core.models import ModelConfig, build_model
from core.train import TrainConfig, train_model
from tests.factories import checkerboard, sasrec_teacher

SASREC = ModelConfig(family="sasrec", dim=16, layers=1, heads=2, max_len=8, dropout=0.0)
MF = ModelConfig(family="mf", dim=8)
FAST = TrainConfig(epochs=6, batch_size=16, lr=0.02, patience=6, seed=3)


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def teacher(data):
    return sasrec_teacher(data)


def fresh(config, data, seed=0):
    torch.manual_seed(seed)
    return build_model(config, data.n_users, data.n_items)


def test_same_seed_same_weights_and_history(data):
    a, b = fresh(SASREC, data), fresh(SASREC, data)
    ra, rb = train_model(a, data, FAST), train_model(b, data, FAST)
    assert [r.loss for r in ra.history] == [r.loss for r in rb.history]
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_progress_callback_reports_every_epoch(data):
    reports = []
    result = train_model(fresh(MF, data), data, FAST, progress=reports.append)
    assert [r.epoch for r in reports] == list(range(1, result.epochs_run + 1))
    assert all(
        r.epochs == FAST.epochs and "task" in r.terms and "ndcg@10" in r.val for r in reports
    )
    assert reports[-1].eta_seconds == 0.0 or result.stopped_early


def test_early_stopping_restores_best_weights(data):
    # lr=0 never improves after epoch 1, so patience 2 stops at epoch 3 with epoch 1's weights.
    model = fresh(MF, data)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(model, data, TrainConfig(epochs=10, lr=1e-12, patience=2, batch_size=16))
    assert result.best_epoch == 1 and result.epochs_run == 3 and result.stopped_early
    assert all(torch.allclose(initial[k], v, atol=1e-6) for k, v in model.state_dict().items())


def test_anneal_restarts_from_the_best_weights_at_a_falling_rate(data, monkeypatch):
    # Phase one at a constant rate, then the anneal: a fresh Adam whose rate falls linearly
    # from lr to lr / anneal_epochs, one value per epoch.
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append((id(self), self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.02, patience=3, anneal_epochs=4, seed=1)
    reports = []
    model = fresh(SASREC, data)
    result = train_model(model, data, config, progress=reports.append)
    assert result.epochs_run == len(reports) == 7 and not result.stopped_early
    assert [r.epoch for r in reports] == list(range(1, 8))
    assert {r.epochs for r in reports} == {7} and reports[-1].eta_seconds == 0.0
    per_step = len(seen) // 7
    rates = [seen[i * per_step][1] for i in range(7)]
    assert rates == pytest.approx([0.02] * 3 + [0.02, 0.015, 0.01, 0.005])
    assert seen[0][0] != seen[-1][0]  # a fresh optimizer for the anneal
    # Validation still picks the best epoch, over both phases.
    from core.train import validation_metrics

    assert result.best_val_ndcg == max(r.val["ndcg@10"] for r in reports)
    assert validation_metrics(model, data)["ndcg@10"] == pytest.approx(result.best_val_ndcg)


def test_anneal_starts_where_early_stopping_kept_the_weights(data):
    # At a vanishing rate nothing improves after epoch 1: early stopping ends phase one at
    # epoch 3, and the anneal's two epochs follow from epoch 1's weights.
    model = fresh(MF, data)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=10, lr=1e-12, patience=2, batch_size=16, anneal_epochs=2)
    result = train_model(model, data, config)
    assert result.epochs_run == 5 and result.stopped_early and result.best_epoch == 1
    assert all(torch.allclose(initial[k], v, atol=1e-6) for k, v in model.state_dict().items())


def test_capped_covers_the_anneal():
    train = TrainConfig(epochs=60, min_epochs=10, anneal_epochs=5)
    assert train.capped(1) == replace(train, epochs=1, min_epochs=1, anneal_epochs=0)
    assert train.capped(3) == replace(train, epochs=2, min_epochs=2, anneal_epochs=1)
    assert train.capped(12) == replace(train, epochs=7, min_epochs=7, anneal_epochs=5)
    assert train.capped(100) == train
    plain = TrainConfig(epochs=20, min_epochs=10)
    assert plain.capped(4) == replace(plain, epochs=4, min_epochs=4)


def test_best_epoch_weights_are_the_ones_returned(data):
    model = fresh(SASREC, data)
    result = train_model(model, data, FAST)
    from core.train import validation_metrics

    assert validation_metrics(model, data)["ndcg@10"] == pytest.approx(result.best_val_ndcg)


def test_cancel_event_stops_between_batches(data):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled):
        train_model(fresh(MF, data), data, FAST, cancel=cancel)


def test_nan_loss_raises_training_diverged(data):
    model = fresh(MF, data)
    with torch.no_grad():
        model.item_emb.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train_model(model, data, FAST)


@pytest.mark.parametrize("method", ["soft", "hard", "combined", "ranking", "listwise"])
def test_distillation_trains_and_logs_each_term(method, data, teacher):
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    reports = []
    student = fresh(SASREC, data)
    train_model(
        student,
        data,
        FAST,
        teacher=teacher,
        distill=DistillConfig(method=method, top_k=3, n_sampled=4),
        progress=reports.append,
    )
    expected = {
        "soft": {"soft"},
        "hard": {"hard"},
        "combined": {"soft", "hard"},
        "ranking": {"ranking"},
        "listwise": {"listwise"},
    }[method]
    assert expected | {"task"} <= set(reports[0].terms)
    assert all(torch.equal(teacher_before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_user_model_student_distills_from_sequence_teacher(data, teacher):
    reports = []
    train_model(
        fresh(MF, data),
        data,
        FAST,
        teacher=teacher,
        distill=DistillConfig(method="soft"),
        progress=reports.append,
    )
    assert reports[0].terms["soft"] > 0


def test_distillation_without_teacher_is_a_config_error(data):
    with pytest.raises(ConfigError, match="needs a teacher"):
        train_model(fresh(MF, data), data, FAST, distill=DistillConfig(method="soft"))


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": 0},
        {"lr": 0.0},
        {"patience": 0},
        {"device": "tpu"},
        {"loss": "sampled-ish"},
        {"softmax_negatives": 0},
        {"softmax_proposal": "zipf"},
        {"anneal_epochs": -1},
        {"anneal_epochs": 101},
        {"anneal_epochs": 2, "lr_schedule": "linear"},
    ],
)
def test_bad_train_config(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


def test_sampled_loss_trains_the_checkerboard_and_round_trips_its_config(data):
    config = replace(FAST, loss="sampled", softmax_negatives=8, softmax_proposal="uniform")
    assert TrainConfig.from_dict(asdict(config)) == config
    result = train_model(fresh(SASREC, data), data, config)
    assert all(np.isfinite(r.loss) for r in result.history)
    assert result.best_val_ndcg > 0.3  # learns the structure from 8 of 12 items per batch
