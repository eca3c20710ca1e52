"""Column reads of the student's score matrix (core.columns): the same values and gradients,
bit for bit, as plain gathers, whatever reads a step makes and whichever parts of the loss
reach the backward."""

from __future__ import annotations

import pytest
import torch

from core.columns import read_columns, target_scores
from core.models.softmax import log_partition


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(7, 5, generator=g)
    table = torch.randn(11, 5, generator=g)
    targets = torch.randint(0, 11, (7,), generator=g)
    topk = torch.stack([torch.randperm(11, generator=g)[:4] for _ in range(7)])
    # The target among the read columns in some rows: three gradients meet there.
    topk[:3, 0] = targets[:3]
    negatives = torch.randperm(11, generator=g)[:5].unsqueeze(0).expand(7, -1)
    weights = torch.randn(7, 9, generator=g)
    return states, table, targets, topk, negatives, weights


def _grads(read, pick, terms: str):
    """Gradients of the weights for a loss made of ``terms``: the task (log-partition minus
    the target's score), two column reads (one with repeats in a row), or both."""
    states, table, targets, topk, negatives, weights = _problem()
    s, t = states.clone().requires_grad_(True), table.clone().requires_grad_(True)
    scores = s @ t.T * 3
    z = log_partition(scores)
    task = (z - pick(scores, targets)).mean()
    first = read(scores, topk)
    both = read(scores, torch.cat([topk, negatives], dim=1))
    reads = (first * weights[:, :4]).sum() + (both * weights).sum()
    loss = {"task+reads": task + reads + z.sum() * 0.25, "task": task, "reads": reads}[terms]
    return torch.autograd.grad(loss, (s, t))


def _plain_pick(scores, targets):
    return scores.gather(1, targets[:, None]).squeeze(1)


def _plain_read(scores, index):
    return scores.gather(1, index)


@pytest.mark.parametrize("terms", ["task+reads", "task", "reads"])
def test_reads_give_the_plain_gathers_gradients_bit_for_bit(terms: str):
    ours = _grads(read_columns, target_scores, terms)
    plain = _grads(_plain_read, _plain_pick, terms)
    for a, b in zip(ours, plain, strict=True):
        assert not a.is_sparse and torch.equal(a, b)


def test_reads_return_the_gathered_values_and_leave_nothing_behind():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    scores = x * 1.0  # computed scores, as in training
    picked = target_scores(scores, torch.tensor([2, 0]))
    cols = read_columns(scores, torch.tensor([[0, 2], [1, 1]]))
    assert picked.tolist() == [3.0, 4.0] and cols.tolist() == [[1.0, 3.0], [5.0, 5.0]]
    (grad,) = torch.autograd.grad(picked.sum() * 10 + cols.sum(), x)
    assert grad.tolist() == [[1.0, 0.0, 11.0], [10.0, 2.0, 0.0]]
    record = scores._column_reads
    assert record.pending == [] and record.picked is None
    # After the backward, a read is a plain gather again.
    assert read_columns(scores, torch.tensor([[1], [2]])).grad_fn.name() == "GatherBackward0"


def test_a_leaf_or_unpicked_matrix_is_read_with_a_plain_gather():
    leaf = torch.randn(3, 4, requires_grad=True)
    index = torch.tensor([[1, 2], [0, 0], [3, 1]])
    (grad,) = torch.autograd.grad(read_columns(leaf, index).sum(), leaf)
    assert torch.equal(grad, torch.zeros(3, 4).scatter_add_(1, index, torch.ones(3, 2)))
    unpicked = leaf * 2
    assert read_columns(unpicked, index).grad_fn.name() == "GatherBackward0"
    assert torch.equal(read_columns(leaf.detach(), index), leaf.detach().gather(1, index))
