"""Next-item softmax losses that scale to big catalogs: full, sampled (logQ) and chunked.

A softmax model's task loss is the cross-entropy of the true next item against the whole
catalog. Written plainly that is one ``[rows, n_items]`` logit matrix per batch (and about
three more of the same size in the backward pass): 25 GB of logits for 128 users x 50
positions at 10^6 items. Two ways round it, chosen by ``TrainConfig.loss``:

- ``sampled``: sampled softmax with logQ correction (Bengio & Senecal 2008; Jean et al.
  2015; Yi et al. 2019). ``M`` items are drawn i.i.d. from a proposal ``q`` (popularity^0.75
  or uniform) once per batch and shared by every row. Each row's partition function is
  estimated by importance sampling::

      loss = -z_pos + log( exp(z_pos) + sum_{s=1..M, j_s != pos} exp(z_{j_s} - log(M q_{j_s})) )

  ``M q_j`` is the expected number of times item ``j`` is drawn, so the sum is an unbiased
  estimate of ``sum_{j != pos} exp(z_j)``; a draw of the row's own positive (an accidental
  hit) is dropped, since the positive already sits in the partition exactly. With every item
  as a "negative" once (``log(M q_j) = 0``) this is the full cross-entropy exactly. Memory:
  ``[rows, M]``.
- ``chunked``: the exact full cross-entropy, computed over catalog chunks with a streaming
  logsumexp; the backward pass recomputes each chunk's logits instead of keeping them, so
  no ``[rows, n_items]`` tensor ever exists. Same value and gradient as ``full``; costs a
  second matmul over the catalog.

The ``full`` loss's log-partition and target scores come from
:func:`core.columns.softmax_parts`, whose forward keeps the softmax it computes anyway, so
the backward is one multiply instead of a second exponential over ``[rows, n_items]`` (the
epoch's largest tensor).

``SoftmaxLoss`` travels on the batch (``Batch.softmax``), so ``training_step(batch)`` keeps
its one-argument signature; ``NegativeSampler`` draws the shared items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

LOSS_MODES = ("full", "sampled", "chunked")
PROPOSALS = ("popularity", "uniform")
# q ∝ (training count + 1)^0.75: the word2vec exponent, between popularity (hard negatives,
# where the softmax gradient is) and uniform (coverage of the tail). The +1 keeps an item
# never seen in training drawable, since logQ needs q > 0 everywhere.
POPULARITY_EXPONENT = 0.75
# Bytes of one chunk's float32 logits in the chunked loss: big enough that the matmul, not
# the Python loop, dominates; small next to any model's own memory.
CHUNK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class SoftmaxLoss:
    """How one batch's next-item softmax covers the catalog.

    mode:          "full", "sampled" or "chunked" (see the module docstring).
    items:         ``[M]`` 0-based items drawn from the proposal, shared by every row, in
                   draw order (with repeats); None in "full" mode. In "chunked" mode they
                   are drawn only for a distilled student's candidate set.
    log_expected:  ``[M]`` ``log(M q_item)``, the logQ correction of each drawn item.
    """

    mode: str = "full"
    items: Tensor | None = None
    log_expected: Tensor | None = None

    def __post_init__(self) -> None:
        if self.mode not in LOSS_MODES:
            raise ValueError(f"Unknown softmax mode {self.mode!r}; choose one of {LOSS_MODES}.")
        if self.mode == "sampled" and (self.items is None or self.log_expected is None):
            raise ValueError("Sampled softmax needs the batch's drawn items and their logQ.")

    def to(self, device: torch.device) -> SoftmaxLoss:
        if self.items is None or self.log_expected is None:
            return self
        return SoftmaxLoss(self.mode, self.items.to(device), self.log_expected.to(device))


class NegativeSampler:
    """Draws ``n`` items i.i.d. from the proposal ``q``, with their log expected counts.

    Inverse-CDF sampling over a cumulative table built once: one ``[n]`` uniform draw and a
    binary search per batch, whatever the catalog size.
    """

    def __init__(
        self,
        popularity: np.ndarray,
        n: int,
        proposal: str = "popularity",
        generator: torch.Generator | None = None,
    ):
        if proposal not in PROPOSALS:
            raise ValueError(f"Unknown proposal {proposal!r}; choose one of {PROPOSALS}.")
        counts = np.asarray(popularity, dtype=np.float64)
        weights = (
            (counts + 1.0) ** POPULARITY_EXPONENT
            if proposal == "popularity"
            else np.ones_like(counts)
        )
        q = weights / weights.sum()
        self.n = int(n)
        self.log_q = torch.from_numpy(np.log(q))
        self.cdf = torch.from_numpy(np.cumsum(q))
        self.generator = generator

    def draw(self) -> tuple[Tensor, Tensor]:
        """``(items [n], log_expected [n])``: the shared negatives of one batch."""
        u = torch.rand(self.n, generator=self.generator, dtype=torch.float64) * self.cdf[-1]
        items = torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1)
        log_expected = (self.log_q[items] + np.log(self.n)).float()
        return items, log_expected

    def softmax_loss(self, mode: str) -> SoftmaxLoss:
        items, log_expected = self.draw()
        return SoftmaxLoss(mode, items, log_expected)


def sampled_softmax_ce(
    positive_scores: Tensor,
    negative_scores: Tensor,
    targets: Tensor,
    negatives: Tensor,
    log_expected: Tensor,
) -> Tensor:
    """Sampled softmax cross-entropy with logQ correction, averaged over rows.

    Args:
        positive_scores: ``[N]`` each row's score of its true next item ``targets``.
        negative_scores: ``[N, M]`` each row's scores of the shared ``negatives``.
        targets: ``[N]`` each row's true next item (to drop its accidental hits).
        negatives: ``[M]`` items shared by every row (repeats allowed).
        log_expected: ``[M]`` ``log(M q_j)``, subtracted from each negative's logit.
    """
    corrected = negative_scores - log_expected.to(negative_scores.dtype)[None, :]
    hits = negatives[None, :] == targets[:, None]  # accidental hits of the row's positive
    corrected = corrected.masked_fill(hits, float("-inf"))
    logits = torch.cat([positive_scores[:, None], corrected], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive_scores).mean()


def chunk_items(n_rows: int, n_items: int) -> int:
    """Items per chunk so that one chunk's ``[n_rows, chunk]`` logits take ``CHUNK_BYTES``."""
    return max(1, min(n_items, CHUNK_BYTES // (4 * max(1, n_rows))))


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean full-catalog cross-entropy with O(rows x chunk) memory in both passes."""

    @staticmethod
    def forward(ctx, states: Tensor, table: Tensor, targets: Tensor, chunk: int) -> Tensor:
        n_items = table.shape[0]
        log_partition = torch.full(
            (states.shape[0],), float("-inf"), dtype=states.dtype, device=states.device
        )
        for lo in range(0, n_items, chunk):
            logits = states @ table[lo : lo + chunk].T
            log_partition = torch.logaddexp(log_partition, logits.logsumexp(dim=1))
        positive = (states * table[targets]).sum(dim=1)
        ctx.save_for_backward(states, table, targets, log_partition)
        ctx.chunk = chunk
        return (log_partition - positive).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        states, table, targets, log_partition = ctx.saved_tensors
        scale = grad / states.shape[0]
        grad_states = -scale * table[targets]
        grad_table = torch.zeros_like(table) if ctx.needs_input_grad[1] else None
        for lo in range(0, table.shape[0], ctx.chunk):
            block = table[lo : lo + ctx.chunk]
            probs = torch.exp(states @ block.T - log_partition[:, None]) * scale  # [N, chunk]
            grad_states = grad_states + probs @ block
            if grad_table is not None:
                grad_table[lo : lo + ctx.chunk] = probs.T @ states
        if grad_table is not None:
            grad_table.index_add_(0, targets, -scale * states)
        return grad_states, grad_table, None, None


def chunked_softmax_ce(
    states: Tensor, table: Tensor, targets: Tensor, chunk: int | None = None
) -> Tensor:
    """The full cross-entropy of ``states @ table.T`` against ``targets``, chunk by chunk.

    ``chunk`` items per step (default: :func:`chunk_items`); equal to
    ``F.cross_entropy(states @ table.T, targets)`` up to float rounding, value and gradient.
    """
    if chunk is None:
        chunk = chunk_items(states.shape[0], table.shape[0])
    return _ChunkedCrossEntropy.apply(states, table, targets, int(chunk))
