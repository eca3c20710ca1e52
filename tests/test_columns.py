"""The full softmax's parts and the column reads that share its backward (core.columns):
by hand, against ``torch.logsumexp`` and plain gathers, bit for bit where no entry of the
score matrix is read twice, and to rounding where reads meet."""

from __future__ import annotations

import math

import pytest
import torch

from core.columns import normalised_exp, read_columns, softmax_parts


def test_softmax_parts_by_hand():
    # Row [0, ln 3], target 1: log(1 + 3) = ln 4, the target's score ln 3; the gradient of
    # the cross-entropy log_z - picked is softmax - one-hot = [1/4, 3/4 - 1].
    x = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64, requires_grad=True)
    scores = x * 1.0  # computed scores, as in training
    log_z, picked = softmax_parts(scores, torch.tensor([1]))
    assert log_z.item() == pytest.approx(math.log(4.0), abs=1e-12)
    assert picked.item() == pytest.approx(math.log(3.0), abs=1e-12)
    (grad,) = torch.autograd.grad((log_z - picked).sum(), x)
    assert grad[0].tolist() == pytest.approx([0.25, -0.25], abs=1e-12)
    # Without a gradient: the same values, no autograd function.
    z, p = softmax_parts(scores.detach(), torch.tensor([0]))
    assert z.item() == pytest.approx(math.log(4.0)) and p.item() == 0.0
    # An all -inf row keeps -inf (no NaN from subtracting its max).
    assert normalised_exp(torch.full((1, 3), float("-inf")))[1].item() == float("-inf")
    with pytest.raises(ValueError, match="rows, items"):
        softmax_parts(torch.zeros(3), torch.tensor([0]))


def _problem(overlap: bool, seed: int = 0):
    """Scores of 7 rows over 11 items (states x table), targets, each row's top 4 and 5
    shared negatives. ``overlap``: the target among the top 4 in some rows, and negatives
    that are top items of some rows (entries read twice); otherwise every entry is read
    at most once."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(7, 5, generator=g)
    table = torch.randn(11, 5, generator=g)
    if overlap:
        targets = torch.randint(0, 11, (7,), generator=g)
        topk = torch.stack([torch.randperm(11, generator=g)[:4] for _ in range(7)])
        topk[:3, 0] = targets[:3]
        negatives = torch.randperm(11, generator=g)[:5]
    else:  # items 0..1: targets, 2..5: top, 6..10: negatives
        targets = torch.randint(0, 2, (7,), generator=g)
        topk = torch.stack([2 + torch.randperm(4, generator=g) for _ in range(7)])
        negatives = 6 + torch.randperm(5, generator=g)
    weights = torch.randn(7, 9, generator=g)
    return states, table, targets, topk, negatives.unsqueeze(0).expand(7, -1), weights


class _ReferenceLogPartition(torch.autograd.Function):
    """logsumexp whose backward is softmax * grad, from the same forward (what autograd
    would add the plain gathers' gradients to)."""

    @staticmethod
    def forward(ctx, x):
        probs, log_z = normalised_exp(x)
        ctx.save_for_backward(probs)
        return log_z

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved_tensors
        return probs * grad.unsqueeze(1)


def _grads(ours: bool, terms: str, overlap: bool, dtype=torch.float32):
    """Gradients of the weights for a loss made of ``terms``: the task (log-partition minus
    the target's score, plus a second use of the log-partition as the soft term makes),
    and two column reads (top items; shared negatives)."""
    states, table, targets, topk, negatives, weights = _problem(overlap)
    s = states.to(dtype).requires_grad_(True)
    t = table.to(dtype).requires_grad_(True)
    scores = s @ t.T * 3
    if ours:
        z, picked = softmax_parts(scores, targets)
        read = read_columns
    else:
        z = _ReferenceLogPartition.apply(scores)
        picked = scores.gather(1, targets[:, None]).squeeze(1)

        def read(x, index):
            return x.gather(1, index)

    task = (z - picked).mean() + z.sum() * 0.25
    first = read(scores, topk)
    second = read(scores, negatives)
    reads = (first * weights[:, :4].to(dtype)).sum() + (second * weights[:, 4:].to(dtype)).sum()
    loss = {"task+reads": task + reads, "task": task}[terms]
    return torch.autograd.grad(loss, (s, t))


@pytest.mark.parametrize("terms", ["task+reads", "task"])
def test_entries_read_once_get_the_plain_gradients_bit_for_bit(terms: str):
    ours = _grads(True, terms, overlap=False)
    plain = _grads(False, terms, overlap=False)
    for a, b in zip(ours, plain, strict=True):
        assert torch.equal(a, b)


def test_entries_read_twice_get_the_sum_of_their_gradients():
    """Where a row reads one entry twice (its target among its top items, a negative among
    them), both gradients reach it: against float64 plain gathers, to float32 rounding."""
    ours = _grads(True, "task+reads", overlap=True)
    exact = _grads(False, "task+reads", overlap=True, dtype=torch.float64)
    for a, b in zip(ours, exact, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)
    # And the same in float64 against torch.logsumexp's own backward.
    states, table, targets, topk, negatives, weights = _problem(overlap=True)
    s, t = states.double().requires_grad_(True), table.double().requires_grad_(True)
    scores = s @ t.T
    z = torch.logsumexp(scores, dim=1)
    plain = (z - scores.gather(1, targets[:, None]).squeeze(1)).sum()
    plain = plain + (scores.gather(1, topk) * weights[:, :4].double()).sum()
    theirs = torch.autograd.grad(plain, (s, t))
    s2, t2 = states.double().requires_grad_(True), table.double().requires_grad_(True)
    scores = s2 @ t2.T
    z, picked = softmax_parts(scores, targets)
    mine = (z - picked).sum() + (read_columns(scores, topk) * weights[:, :4].double()).sum()
    for a, b in zip(torch.autograd.grad(mine, (s2, t2)), theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reads_return_the_gathered_values_and_leave_nothing_behind():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    scores = x * 1.0  # computed scores, as in training
    log_z, picked = softmax_parts(scores, torch.tensor([2, 0]))
    cols = read_columns(scores, torch.tensor([[0, 2], [1, 1]]))
    assert picked.tolist() == [3.0, 4.0] and cols.tolist() == [[1.0, 3.0], [5.0, 5.0]]
    (grad,) = torch.autograd.grad(picked.sum() * 10 + cols.sum() + 0 * log_z.sum(), x)
    assert grad.tolist() == [[1.0, 0.0, 11.0], [10.0, 2.0, 0.0]]
    record = scores._column_reads
    assert record.pending == [] and record.picked is None
    # After the backward, a read is a plain gather again.
    assert read_columns(scores, torch.tensor([[1], [2]])).grad_fn.name() == "GatherBackward0"


def test_a_leaf_or_other_matrix_is_read_with_a_plain_gather():
    leaf = torch.randn(3, 4, requires_grad=True)
    index = torch.tensor([[1, 2], [0, 0], [3, 1]])
    (grad,) = torch.autograd.grad(read_columns(leaf, index).sum(), leaf)
    assert torch.equal(grad, torch.zeros(3, 4).scatter_add_(1, index, torch.ones(3, 2)))
    other = leaf * 2
    assert read_columns(other, index).grad_fn.name() == "GatherBackward0"
    assert torch.equal(read_columns(leaf.detach(), index), leaf.detach().gather(1, index))
