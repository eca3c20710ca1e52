"""The full-softmax cross-entropy's two parts, and reads of a few more columns of its
``[rows, items]`` score matrix, with one gradient for all.

A training step reads a few columns of each row of the student's catalog-wide scores: the
task loss the row's log-partition and its target (one column), the distillation terms the
teacher's top-K and the sampled negatives. Written plainly, each consumer hands autograd a
gradient the size of the whole score matrix: the softmax for the log-partition, and for each
``gather`` a zero matrix with a few entries, which autograd then adds together, one more
catalog-sized pass per read.

:func:`softmax_parts` computes the log-partition and the targets' scores in one autograd
function, and the distillation terms' reads (:func:`read_columns`) leave their gradients with
it. Each read takes the targets' scores as an input (it passes them no gradient), so
autograd runs that function's backward after every read's; it writes the softmax's
gradient, ``softmax * grad``, and scatters the reads' gradients and the targets' into it in
place. One catalog-sized matrix, written once: the forward's normalised exponentials are the
softmax already, so the backward is one multiply, not a second exponential pass either.

Values are those of ``torch.logsumexp`` and ``gather``. Gradients are the same bit for bit
where a row's column is read once (tests/test_columns.py); where two reads (or a read and
the target) meet in one entry, their gradients are added to the softmax's one after the
other instead of first to each other, so that entry may differ in its last bit. On the demo
shop's 10% student (core.timing's side-by-side steps, all methods at once) a soft-target
step went from 1.35x its twin's to 1.16x, with both reads of combined and listwise targets
going into it: together with their own changes in core.distill, combined from 1.60x to
1.36x, hard from 1.53x to 1.24x, listwise from 1.54x to 1.28x; the twin's step stayed at
9.7 ms.

A matrix not made by :func:`softmax_parts` (a leaf in a test, another model's scores) is read
with a plain ``gather``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_RECORD = "_column_reads"


class _Reads:
    """The gradients the reads of one score matrix leave for :class:`_SoftmaxParts`."""

    def __init__(self) -> None:
        self.picked: Tensor | None = None  # the targets' scores, until the backward runs
        self.pending: list[tuple[Tensor, Tensor]] = []  # (index [N, K], grad [N, K])


def normalised_exp(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(x), logsumexp(x))`` over dim 1 of a ``[N, n]`` tensor, in one pass of
    exponentials (the max subtracted first; an all ``-inf`` row keeps ``-inf``)."""
    top = x.amax(dim=1, keepdim=True)
    top = top.masked_fill(~torch.isfinite(top), 0.0)
    probs = torch.sub(x, top).exp_()
    total = probs.sum(dim=1, keepdim=True)
    probs.div_(total)
    return probs, (top + total.log()).squeeze(1)


class _SoftmaxParts(torch.autograd.Function):
    """``(logsumexp(x, 1), x.gather(1, targets[:, None]).squeeze(1))`` with one dense
    gradient: ``softmax * grad_log_z``, into which the targets' and every read's gradients
    are scattered (see the module docstring). Not twice differentiable."""

    @staticmethod
    def forward(ctx, x: Tensor, targets: Tensor, record: _Reads) -> tuple[Tensor, Tensor]:
        x = x.detach()
        probs, log_z = normalised_exp(x)
        ctx.save_for_backward(probs, targets)
        ctx.record = record
        return log_z, x.gather(1, targets.unsqueeze(1)).squeeze(1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_log_z: Tensor, grad_picked: Tensor):
        probs, targets = ctx.saved_tensors
        record = ctx.record
        record.picked = None  # later reads are plain gathers; no reference cycle is left
        total = probs * grad_log_z.unsqueeze(1)
        # Every read's backward has run (each depends on the targets' scores): their
        # gradients in the order they came, then the targets', as autograd would add them.
        for index, read_grad in record.pending:
            total.scatter_add_(1, index, read_grad)
        record.pending.clear()
        return total.scatter_add_(1, targets.unsqueeze(1), grad_picked.unsqueeze(1)), None, None


def softmax_parts(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, n]`` scores, ``[N]`` 0-based targets -> ``(log_z, picked)``: each row's
    ``logsumexp`` and its target's score, equal to ``torch.logsumexp(scores, dim=1)`` and
    ``scores.gather(1, targets[:, None]).squeeze(1)`` in value and gradient (the full
    softmax's cross-entropy is ``log_z - picked``). Later :func:`read_columns` of ``scores``
    share its backward."""
    if scores.dim() != 2:
        raise ValueError(f"softmax_parts takes [rows, items] scores; got {tuple(scores.shape)}.")
    if not scores.requires_grad:
        return normalised_exp(scores)[1], scores.gather(1, targets.unsqueeze(1)).squeeze(1)
    record = _Reads()
    log_z, picked = _SoftmaxParts.apply(scores, targets, record)
    record.picked = picked
    setattr(scores, _RECORD, record)
    return log_z, picked


class _ReadColumns(torch.autograd.Function):
    """``x.gather(1, index)`` whose gradient waits for :class:`_SoftmaxParts` (see the
    module docstring)."""

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
    gradient; for scores made by :func:`softmax_parts`, the gradient is scattered into its
    one (see the module docstring)."""
    record = getattr(scores, _RECORD, None) if scores.requires_grad else None
    if record is None or record.picked is None:
        return scores.gather(1, index)
    return _ReadColumns.apply(scores, index, record, record.picked)
