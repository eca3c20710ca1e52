"""The one serving path: a user's history mask and masked top-K, shared by every consumer.

Evaluation (core.metrics), the ONNX export (which traces :meth:`Recommender.recommend`),
latency measurement and the Compare page's sample lists all rank through these two
functions, so parity and latency checks measure the same computation the metrics score.

- :func:`history_mask`: dense bool ``[B, n_items]``, True where the item is in the user's
  history before ``stage`` (what a serving team would filter as "already bought").
- :func:`top_k`: scores -> ``(items, scores)`` of the best ``k`` items, with excluded items
  (and NaN scores) treated as ``-inf``. Export-friendly: tensors only, no data-dependent
  Python branches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import sparse

from core.dataset import InteractionData

NEG_INF = float("-inf")


def csr_entries(matrix: sparse.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, column) of every stored entry of ``matrix[rows]``.

    Gathers straight from ``indptr`` because scipy's fancy row indexing builds a whole new
    matrix per batch, which dominates the cost for small batches.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    total = int(lengths.sum())
    positions = np.repeat(np.arange(len(rows)), lengths)
    # Offset of each entry inside its row: 0..len-1, built without a loop.
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = matrix.indices[np.repeat(starts, lengths) + offsets]
    return positions, cols.astype(np.int64, copy=False)


def history_mask(
    data: InteractionData,
    users: np.ndarray | Sequence[int] | torch.Tensor,
    stage: str | int = "test",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Dense bool ``[B, n_items]``: True where the item is in the user's history of ``stage``.

    The history of ``valid`` is the training split; of ``test``, training + validation; of
    ``train``, the training split itself (what distillation masks).
    """
    if isinstance(users, torch.Tensor):
        users = users.detach().cpu().numpy()
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    matrix = data.train_matrix if stage in ("train", 0) else data.history_matrix(stage)
    rows, cols = csr_entries(matrix, users)
    mask = torch.zeros((len(users), data.n_items), dtype=torch.bool)
    if len(rows):
        mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return mask if device is None else mask.to(device)


def top_k(
    scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(items [B, k'], scores [B, k'])`` best first, ``k' = min(k, n_items)``.

    ``exclude`` (bool ``[B, n_items]``) items get ``-inf``, as do NaN scores, so they sort
    last; callers that need "no item" markers check ``scores == -inf``.
    """
    scores = scores.masked_fill(torch.isnan(scores), NEG_INF)
    if exclude is not None:
        scores = scores.masked_fill(exclude, NEG_INF)
    values, items = torch.topk(scores, min(int(k), scores.shape[-1]), dim=-1)
    return items, values
