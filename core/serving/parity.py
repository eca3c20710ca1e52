"""Parity: the same requests through PyTorch (eager) and onnxruntime, compared.

Both sides rank with :meth:`Recommender.recommend`: PyTorch calls it, the ONNX file is its
trace (:mod:`core.serving.export`). Both get the same inputs, the model's
``make_context`` and :func:`core.ranking.history_mask`, so a difference can only come from
the runtimes themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.dataset import InteractionData
from core.models import Recommender
from core.ranking import history_mask
from core.serving.export import OnnxRecommender

# Two ranked items closer than this count as tied in the parity check (float32 noise
# between two runtimes is ~1e-7 relative; real score gaps are far larger).
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ParityResult:
    """PyTorch vs onnxruntime on the same requests (see ``check_parity``)."""

    max_abs_diff: float
    topk_agreement: float
    n_users: int
    k: int

    def passed(self, max_diff: float = 1e-4, min_agreement: float = 0.99) -> bool:
        return self.max_abs_diff < max_diff and self.topk_agreement >= min_agreement


def _agreement(items_a, scores_a, items_b, scores_b, tol: float) -> float:
    """Fraction of A's ranked items that B also ranks, or that tie with B's K-th score."""
    agree, total = 0, 0
    for ia, sa, ib, sb in zip(items_a, scores_a, items_b, scores_b, strict=True):
        finite_b = np.isfinite(sb)
        kth = sb[finite_b][-1] if finite_b.any() else -np.inf
        chosen_b = set(ib[finite_b].tolist())
        for item, score in zip(ia, sa, strict=True):
            if not np.isfinite(score):
                continue
            total += 1
            agree += item in chosen_b or abs(float(score) - float(kth)) <= tol
    return agree / total if total else 1.0


def check_parity(
    model: Recommender,
    onnx_path: str | Path,
    data: InteractionData,
    *,
    n_users: int = 256,
    k: int = 10,
    seed: int = 0,
    stage: str = "test",
    tie_tolerance: float = TIE_TOLERANCE,
) -> ParityResult:
    """Run the same test-stage requests through PyTorch (eager) and onnxruntime.

    A sample of ``n_users`` evaluation users (seeded) gets its ``stage`` context and its
    history as the exclusion mask. ``max_abs_diff``: the largest absolute difference of the
    top-K scores position by position (``inf`` if one side has an empty slot the other
    fills). ``topk_agreement``: the fraction of ranked items, counted from both sides
    (the lower of the two), that are in the other runtime's top-K, or whose score is within
    ``tie_tolerance`` of the other's K-th score (a tie at the cut-off that either runtime
    may break either way).
    """
    runner = OnnxRecommender(onnx_path)
    k = min(k, runner.k)
    pool = data.eval_users(stage)
    if len(pool) == 0:
        pool = np.arange(data.n_users)
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(pool, size=min(n_users, len(pool)), replace=False))
    context = model.make_context(data, users, stage)
    exclude = history_mask(data, users, stage)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            t_items, t_scores = model.recommend(
                context.to(model.device), k, exclude.to(model.device)
            )
    finally:
        model.train(was_training)
    t_items, t_scores = t_items.cpu().numpy(), t_scores.cpu().numpy()
    o_items, o_scores = runner.run(context.numpy(), exclude.numpy())
    o_items, o_scores = o_items[:, :k], o_scores[:, :k]

    both_empty = np.isneginf(t_scores) & np.isneginf(o_scores)
    with np.errstate(invalid="ignore"):
        diff = np.where(both_empty, 0.0, np.abs(t_scores.astype(np.float64) - o_scores))
    max_diff = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
    agreement = min(
        _agreement(t_items, t_scores, o_items, o_scores, tie_tolerance),
        _agreement(o_items, o_scores, t_items, t_scores, tie_tolerance),
    )
    return ParityResult(
        max_abs_diff=max_diff, topk_agreement=float(agreement), n_users=len(users), k=k
    )
