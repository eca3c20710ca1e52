"""A student's item table started from its teacher's principal directions (core.embedding_init)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.distill import DistillConfig
from core.embedding_init import init_from_teacher, item_table, principal_projection
from core.errors import ConfigError
from core.models import ModelConfig, build_model
from core.train import TrainConfig, train_model
from tests.factories import sequences_dataset


def _data(n_users: int = 20, n_items: int = 12):
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, n_items, size=int(rng.integers(3, 10)))) for _ in range(n_users)]
    return sequences_dataset(seqs, n_items)


def _model(data, family: str = "sasrec", dim: int = 8, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(family=family, dim=dim, layers=1, heads=2, max_len=6, dropout=0.0)
    return build_model(config, data.n_users, data.n_items)


def test_projection_by_hand():
    # Centred rows (mean [1, 1] removed): [2, 0], [-2, 0], [0, 1], [0, -1]. The leading
    # principal direction is the first axis (variance 8 against 2): onto it, +-2, 0, 0.
    table = torch.tensor([[3.0, 1.0], [-1.0, 1.0], [1.0, 2.0], [1.0, 0.0]])
    projected, kept = principal_projection(table, 1)
    assert projected.abs().squeeze(1).tolist() == pytest.approx([2.0, 2.0, 0.0, 0.0])
    assert projected[0, 0] == pytest.approx(-projected[1, 0])
    assert kept == pytest.approx(8 / 10)
    # As wide as the table or wider: every centred dot product is kept, extra columns are 0.
    wide, kept = principal_projection(table, 3)
    centred = table - table.mean(dim=0)
    torch.testing.assert_close(wide @ wide.T, (centred @ centred.T).double())
    assert kept == pytest.approx(1.0) and torch.all(wide[:, 2] == 0)


def test_projection_is_the_best_low_rank_gram():
    # Eckart-Young: the projection's Gram matrix is the best rank-d approximation of the
    # centred table's Gram matrix, so no other d-wide table reproduces the dot products better.
    g = torch.Generator().manual_seed(0)
    table = torch.randn(30, 10, generator=g, dtype=torch.float64)
    centred = table - table.mean(dim=0)
    projected, _ = principal_projection(table, 3)
    error = torch.linalg.matrix_norm(centred @ centred.T - projected @ projected.T)
    for _ in range(5):
        other = centred @ torch.randn(10, 3, generator=g, dtype=torch.float64)
        other = other * (projected.norm() / other.norm())
        assert error < torch.linalg.matrix_norm(centred @ centred.T - other @ other.T)


def test_sasrec_student_gets_the_teachers_items_and_keeps_everything_else():
    data = _data()
    teacher, student = _model(data, dim=16, seed=1), _model(data, dim=4, seed=2)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    note = init_from_teacher(student, teacher)
    assert "4 leading principal directions" in note
    expected, _ = principal_projection(item_table(teacher), 4)
    torch.testing.assert_close(item_table(student), expected.float())
    assert torch.all(student.item_emb.weight[0] == 0)  # the padding row stays zero
    for name, value in student.state_dict().items():
        if name != "item_emb.weight":
            assert torch.equal(value, before[name]), name


def test_mf_student_from_a_sasrec_teacher_and_an_impossible_pair():
    data = _data()
    teacher = _model(data, dim=16)
    mf = _model(data, family="mf", dim=4)
    assert "principal directions" in init_from_teacher(mf, teacher)
    expected, _ = principal_projection(item_table(teacher), 4)
    torch.testing.assert_close(mf.item_emb.weight, expected.float())
    popularity = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    before = mf.item_emb.weight.clone()
    note = init_from_teacher(mf, popularity)
    assert "was not started from the teacher's" in note
    assert torch.equal(mf.item_emb.weight, before)


def test_training_with_teacher_init_says_so_in_the_runs_notes():
    data = _data()
    teacher = _model(data, dim=16, seed=1)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-3, min_epochs=1)
    student = _model(data, dim=4, seed=3)
    result = train_model(
        student,
        data,
        config,
        teacher=teacher,
        distill=DistillConfig(method="soft", alpha=0.9, teacher_init=True),
    )
    assert any("leading principal directions" in n for n in result.notes)
    plain = train_model(
        _model(data, dim=4, seed=3), data, config, teacher=teacher, distill=DistillConfig("soft")
    )
    assert not any("principal directions" in n for n in plain.notes)


def test_teacher_init_must_be_a_bool():
    with pytest.raises(ConfigError, match="teacher_init"):
        DistillConfig(method="soft", teacher_init="yes").validate()
