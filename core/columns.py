"""Reads of a few columns of a ``[rows, items]`` score matrix, with one gradient for all.

A training step reads a few columns of each row of the student's catalog-wide scores: the
task loss its target (one per row), the distillation terms the teacher's top-K and the
sampled negatives. A plain ``gather`` gives autograd a gradient the size of the whole score
matrix for each read (a zero matrix with a few entries), which autograd then adds to the
others'. The target's read has a sparse gradient (:func:`target_scores`), but autograd adds
a sparse gradient that comes after a dense one out of place: one more copy of the matrix
in every distilled step.

So when the targets of a matrix were picked with :func:`target_scores`, the distillation
terms' reads (:func:`read_columns`) leave their gradients with the pick instead. Each read
also takes the pick's output as an input (it passes it no gradient): autograd therefore runs
the pick's backward after every read's, and the pick scatters their gradients and its own
into one zero matrix, in the order autograd would have added them. The weights come out the
same bit for bit (tests/test_columns.py; bench/distill.py's figures are unchanged). A
distilled epoch of the demo shop's 10% student took 4-10% less time with combined targets
and 0-10% less with soft ones (four pairs of bench-like runs, the old and the new code at
once on one core each; hard targets: no clear change).

A matrix whose targets were not picked here (a leaf in a test, or another model's scores)
is read with a plain ``gather``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RECORD = "_column_reads"


class _Reads:
    """The pick of one score matrix, and the gradients its other reads leave for it."""

    def __init__(self) -> None:
        self.picked: Tensor | None = None  # the pick's output, until its backward runs
        self.pending: list[tuple[Tensor, Tensor]] = []  # (index [N, K], grad [N, K])


class _PickTargets(torch.autograd.Function):
    """``x.gather(1, targets[:, None]).squeeze(1)`` with a sparse gradient.

    The dense gather's backward writes a zero ``[N, n]`` matrix, scatters the N gradients
    into it, and autograd then adds that matrix to the log-partition's gradient: three passes
    over the catalog scores for N numbers. A sparse gradient is added at those N places
    alone, to the same values in the same order (float addition commutes), so training
    ends with the same weights bit for bit. When other columns of the matrix were read
    (:func:`read_columns`), their gradients and this one are summed into one dense matrix.
    """

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, record: _Reads) -> Tensor:
        ctx.save_for_backward(targets)
        ctx.shape = x.shape
        ctx.record = record
        return x.detach().gather(1, targets.unsqueeze(1)).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (targets,) = ctx.saved_tensors
        record = ctx.record
        record.picked = None  # later reads are plain gathers; no reference cycle is left
        if record.pending:
            # Every read's backward has run (each depends on this pick): their gradients
            # first, in the order they came, then the targets', as autograd would add them.
            total = grad.new_zeros(ctx.shape)
            for index, read_grad in record.pending:
                total.scatter_add_(1, index, read_grad)
            record.pending.clear()
            return total.scatter_add_(1, targets.unsqueeze(1), grad.unsqueeze(1)), None, None
        rows = torch.arange(len(targets), device=targets.device)
        index = torch.stack([rows, targets])
        # One entry per row, rows in order: coalesced by construction.
        sparse = torch.sparse_coo_tensor(
            index, grad, ctx.shape, is_coalesced=True, check_invariants=False
        )
        return sparse, None, None


def target_scores(scores: Tensor, targets: Tensor) -> Tensor:
    """``[N, n]`` scores, ``[N]`` 0-based targets -> ``[N]`` each row's target score: equal to
    ``scores.gather(1, targets[:, None]).squeeze(1)`` in value and gradient, with a sparse
    gradient (see :class:`_PickTargets`)."""
    if not scores.requires_grad:
        return scores.gather(1, targets.unsqueeze(1)).squeeze(1)
    record = _Reads()
    picked = _PickTargets.apply(scores, targets, record)
    record.picked = picked
    setattr(scores, _RECORD, record)
    return picked


class _ReadColumns(torch.autograd.Function):
    """``x.gather(1, index)`` whose gradient waits for the pick (see the module docstring)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor, record: _Reads, picked: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.record = record
        return x.detach().gather(1, index)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        ctx.record.pending.append((index, grad))
        return None, None, None, None


def read_columns(scores: Tensor, index: Tensor) -> Tensor:
    """``scores.gather(1, index)`` (``[N, n]``, ``[N, K]`` -> ``[N, K]``) in value and
    gradient; for scores whose targets :func:`target_scores` picked, the gradient is summed
    with the pick's (see the module docstring)."""
    record = getattr(scores, _RECORD, None) if scores.requires_grad else None
    if record is None or record.picked is None:
        return scores.gather(1, index)
    return _ReadColumns.apply(scores, index, record, record.picked)
