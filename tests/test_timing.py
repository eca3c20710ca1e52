"""Paired step timing (core/timing.py) and the training loop's own step (core/train.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.models import ModelConfig, build_model
from core.pipeline import student_specs
from core.timing import _Runner, paired_step_seconds
from core.train import Objective, TrainConfig, make_optimizer, optimizer_step
from tests.factories import checkerboard, sasrec_teacher

STUDENT = ModelConfig(family="sasrec", dim=8, layers=1, heads=1, max_len=8, dropout=0.1)
TRAIN = TrainConfig(epochs=1, batch_size=16, lr=0.01, patience=1, seed=2)


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def teacher(data):
    return sasrec_teacher(data, dim=16, epochs=2)


def test_every_run_is_timed_interleaved_with_the_order_rotating(data, teacher, monkeypatch):
    specs = student_specs(STUDENT, TRAIN, ("soft", "listwise"), top_k=3, n_sampled=4)
    calls: list[str] = []
    steps = _Runner.steps

    def record(self, n):
        calls.append(self.name)
        return steps(self, n)

    init = _Runner.__init__

    def named(self, spec, *args):
        init(self, spec, *args)
        self.name = spec.name

    monkeypatch.setattr(_Runner, "steps", record)
    monkeypatch.setattr(_Runner, "__init__", named)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    timings = paired_step_seconds(data, specs, teacher, rounds=3, block=2)

    names = [s.name for s in specs]
    assert [t.name for t in timings] == names
    assert all(t.steps == 6 and t.step_seconds > 0 for t in timings)
    # One untimed block each, then three rounds, each starting one run later.
    assert calls[:3] == names
    assert calls[3:] == names + names[1:] + names[:1] + names[2:] + names[:2]
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_a_distilled_run_steps_through_its_batches_and_trains_its_own_copy(data, teacher):
    spec = student_specs(STUDENT, TRAIN, ("hard",), top_k=3)[1]
    runner = _Runner(spec, data, teacher)
    weights = {k: v.clone() for k, v in runner.model.state_dict().items()}
    assert runner.objective.cache is not None  # distilled: the teacher's outputs are read
    n = len(runner.batches)
    assert runner.steps(n + 1) > 0
    assert runner.next == 1  # wrapped around the epoch's batches
    assert any(not torch.equal(v, runner.model.state_dict()[k]) for k, v in weights.items())


def test_bad_rounds_or_block_and_no_runs(data, teacher):
    specs = student_specs(STUDENT, TRAIN, ())
    with pytest.raises(ValueError, match="at least 1"):
        paired_step_seconds(data, specs, teacher, rounds=0)
    with pytest.raises(ValueError, match="at least 1"):
        paired_step_seconds(data, specs, teacher, block=0)
    assert paired_step_seconds(data, [], teacher) == []


def test_optimizer_step_updates_on_a_finite_loss_and_leaves_a_nan_one_alone(data):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="mf", dim=8), data.n_users, data.n_items)
    objective = Objective(model, data, TRAIN)
    optimizer = make_optimizer(model, TRAIN)
    batch = next(iter(model.task_batches(data, 16, TRAIN.negatives, np.random.default_rng(0))))
    before = model.item_emb.weight.detach().clone()
    loss, terms = optimizer_step(objective, optimizer, batch)
    assert loss is not None and terms["task"] == pytest.approx(float(loss.detach()))
    assert not torch.equal(before, model.item_emb.weight)

    with torch.no_grad():
        model.item_emb.weight[:] = float("nan")
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    loss, terms = optimizer_step(objective, optimizer, batch)
    assert loss is None and terms["total"] != terms["total"]  # NaN, reported
    assert all(
        torch.allclose(v, model.state_dict()[k], rtol=0, atol=0, equal_nan=True)
        for k, v in frozen.items()
    )
