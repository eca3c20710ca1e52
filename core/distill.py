"""Distillation losses: pure torch functions that teach a student from a teacher's scores.

Every loss takes the student's item scores ``z_s`` ``[B, C]`` (with grad) and the teacher's
scores ``z_t`` ``[B, C]`` or the teacher's top-K item indices ``[B, K]``, over the full
catalog (C = n_items) or a candidate set, and returns a scalar: the mean over the batch.
The teacher side is always detached here, so no gradient reaches the teacher even when a
caller forgets ``torch.no_grad()``.

Formulas (per example; every loss is then averaged over the batch):

- soft (Hinton et al. 2015):   ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``
- hard (teacher top-K as labels):
  ``mean_{i in topK} BCE(z_s[i], 1) + mean_{j in negatives} BCE(z_s[j], 0)``, the
  negatives in training a uniform draw of ``HARD_NEGATIVES`` items shared by the batch
  (an unbiased estimate of the mean over every other item)
- ranking (Tang & Wang, KDD 2018): ``sum_{r=1..K} w_r * -log sigmoid(z_s[pi_r])``,
  ``w_r ∝ exp(-r / lam)``, optionally times the dynamic rank-discrepancy weight
- listwise (Plackett-Luce, Kang et al. CIKM 2020 "DE-RRD"):
  ``-(1/K) sum_{r=1..K} [z_s[pi_r] - logsumexp(z_s[{pi_r..pi_K} ∪ sampled])]``, the
  sampled items drawn uniformly once per batch (``shared_sample``), each row dropping its
  own top-K and masked items among them

``distillation_loss`` combines one of them with the task loss using ``DistillConfig`` and the
explicit ``LOSSES`` table (see the table for each method's total). The formulas printed in
the source article are not used: their "soft" term does not depend on the student.

Big catalogs (a student trained with sampled or chunked softmax, ``core.models.softmax``):
no ``[B, n_items]`` score row exists, so ``z_s`` covers a candidate set per row (the
teacher's kept top-K' items, the row's positive and the batch's shared sampled negatives)
described by :class:`Candidates`. The formulas stay the same; what changes is listed in
each ``LOSSES`` row's ``sampled`` field: where a term needs a sum over the whole catalog
(the student's softmax partition, the student's rank of an item), the sampled negatives
stand for the rest of the catalog with their logQ importance weights ``1 / (M q_j)``.

Why one module of ~700 lines: every loss, its formula checked by hand in the tests, the
teacher targets they read (``TeacherTargets``) and the ``LOSSES`` table that names each
method's total read together, as in torchdistill's loss modules; split apart, the table
would no longer show what each method computes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from core.columns import read_columns
from core.enums import Method, choice_list
from core.errors import ConfigError

__all__ = [
    "LOSSES",
    "Candidates",
    "DistillConfig",
    "TeacherTargets",
    "soft_target_kl_topk",
    "DistillMethod",
    "distillation_loss",
    "dynamic_rank_weights",
    "hard_target_bce",
    "listwise_plackett_luce",
    "shared_sample",
    "position_weights",
    "ranking_distillation",
    "sample_items",
    "soft_target_kl",
    "teacher_top_k",
]

# The hard term's label-0 items on a full-catalog student: this many drawn uniformly once
# per batch (shared_sample), not the whole catalog. The mean BCE over them estimates the
# mean over every negative without bias; a softplus over the whole catalog, forward and
# backward, made a hard-distilled epoch 1.9x its twin's on the demo shop (3,000 items).
# A catalog this size or smaller is covered exactly.
HARD_NEGATIVES = 256


def _check_scores(z_s: Tensor, other: Tensor, name: str) -> None:
    if z_s.dim() != 2:
        raise ValueError(f"Student scores must be [B, C]; got shape {tuple(z_s.shape)}.")
    if other.dim() != 2 or other.shape[0] != z_s.shape[0]:
        raise ValueError(
            f"{name} must be [B, ...] with B={z_s.shape[0]}; got shape {tuple(other.shape)}."
        )


def _check_mask(z_s: Tensor, mask: Tensor | None) -> Tensor | None:
    if mask is None:
        return None
    if mask.shape != z_s.shape:
        raise ValueError(
            f"The mask must have the scores' shape {tuple(z_s.shape)}; got {tuple(mask.shape)}."
        )
    return mask.to(device=z_s.device, dtype=torch.bool)


def _read_columns(z_s: Tensor, first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """``z_s.gather(1, first)`` and ``z_s.gather(1, second)``, each read with
    :func:`core.columns.read_columns`: in training their gradients go into the task loss's
    one catalog-sized gradient, so two reads cost no more than one (and no concatenated
    ``[B, K + M]`` index is built)."""
    return read_columns(z_s, first), read_columns(z_s, second)


def _among(items: Tensor, others: Tensor, n_items: int) -> Tensor:
    """Boolean ``[B, M]``: True where ``items[b, m]`` is one of ``others[b]`` (``[B, K]``).

    Items shared by every row (``shared_sample``'s expanded row, all distinct): a slot per
    catalog item says where each of the M items sits, and each row's K ``others`` mark
    their slots, ``[B, K]`` work. Otherwise through a ``[B, n_items]`` boolean membership
    matrix (one byte an item): ``[B, M, K]`` comparisons of int64 indices cost more at the
    sizes training uses (M = 256 and K = 10 on the demo shop: milliseconds a step).
    """
    m = items.shape[1]
    shared = items.shape[0] > 1 and items.stride(0) == 0
    if shared and torch.unique(items[0]).numel() == m:
        slot = torch.full((n_items,), m, dtype=torch.long, device=items.device)
        slot[items[0]] = torch.arange(m, device=items.device)
        hit = torch.zeros(others.shape[0], m + 1, dtype=torch.bool, device=items.device)
        return hit.scatter_(1, slot[others], True)[:, :m]  # column m: not among the items
    member = torch.zeros(others.shape[0], n_items, dtype=torch.bool, device=others.device)
    return member.scatter_(1, others, True).gather(1, items)


# --------------------------------------------------------------------------- soft targets


def soft_target_kl(
    z_s: Tensor,
    z_t: Tensor,
    temperature: float,
    mask: Tensor | None = None,
    log_partition: Tensor | None = None,
) -> Tensor:
    """Hinton et al. 2015 soft-target term: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))``.

    Args:
        z_s: ``[B, C]`` student scores (logits).
        z_t: ``[B, C]`` teacher scores; detached here.
        temperature: T > 0. The T^2 factor keeps the gradient w.r.t. ``z_s`` on the same
            scale across temperatures: ``d/dz_s = T * (softmax(z_s/T) - softmax(z_t/T))``,
            which tends to ``(centred(z_s) - centred(z_t)) / C`` as T grows, instead of
            shrinking like ``1/T^2``.
        mask: optional boolean ``[B, C]``; True items (e.g. the user's training items) are
            removed from both distributions before the softmax.
        log_partition: optional ``[B]`` ``logsumexp(z_s)`` already computed (with grad) by
            the task loss; used at T=1 without a mask, where it is the student's
            log-partition, so the catalog is not read a second time for it.

    Returns:
        Scalar: the KL summed over items, averaged over the batch. A row whose items are all
        masked contributes 0.
    """
    _check_scores(z_s, z_t, "Teacher scores")
    if z_t.shape != z_s.shape:
        raise ValueError(f"Teacher scores {tuple(z_t.shape)} differ from {tuple(z_s.shape)}.")
    if not temperature > 0:
        raise ConfigError(f"The distillation temperature must be positive (got {temperature}).")
    mask = _check_mask(z_s, mask)
    z_t = z_t.detach()
    s = _over_t(z_s, temperature)
    t = _over_t(z_t.to(z_s.dtype), temperature)
    if mask is None:
        # KL = sum p_t log p_t - sum p_t s + logsumexp(s), as sum p_t = 1: the student side
        # is one log-partition (shared with the task loss at T=1) and one row dot product.
        log_pt = F.log_softmax(t, dim=1)
        pt = log_pt.exp()
        log_z = _student_log_partition(s, temperature, log_partition)
        neg_entropy = (pt * log_pt).sum(dim=1)
        cross = torch.bmm(pt.unsqueeze(1), s.unsqueeze(2)).reshape(-1)
        return temperature**2 * (neg_entropy - cross + log_z).mean()
    # A finite fill (not -inf) keeps fully masked rows and their gradients free of NaN;
    # exp() of it is exactly 0, so the masked items leave both softmaxes.
    fill = torch.finfo(s.dtype).min
    s = s.masked_fill(mask, fill)
    t = t.masked_fill(mask, fill)
    log_ps = F.log_softmax(s, dim=1)
    log_pt = F.log_softmax(t, dim=1)
    terms = (log_pt.exp() * (log_pt - log_ps)).masked_fill(mask, 0.0)
    return temperature**2 * terms.sum(dim=1).mean()


def _over_t(scores: Tensor, temperature: float) -> Tensor:
    """``scores / T``; at T=1 the scores themselves (no catalog-sized copy, in either pass)."""
    return scores if temperature == 1 else scores / temperature


def _student_log_partition(s: Tensor, temperature: float, given: Tensor | None) -> Tensor:
    """``logsumexp(s)`` per row: the task loss's (``given``) when it is the same one (T=1)."""
    if given is not None and temperature == 1:
        if given.shape != s.shape[:1]:
            raise ValueError(
                f"The student's log-partition must be [B] with B={s.shape[0]}; got "
                f"{tuple(given.shape)}."
            )
        return given
    return torch.logsumexp(s, dim=1)


@dataclass(frozen=True)
class TeacherTargets:
    """What the distillation terms need from a frozen teacher, for ``N`` student rows.

    Built once per run by :mod:`core.teacher_cache` and sliced per batch, so a distilled
    epoch never re-runs the teacher. Two forms, chosen by the cache's memory budget:

    - ``scores`` ``[N, C]``: the teacher's full scores (exact soft term), when they fit;
    - otherwise ``topk``/``topk_scores`` ``[N, K']`` (masked items excluded) plus
      ``log_partition`` ``[N]`` = ``logsumexp(z_t / T)`` over the unmasked items: enough for
      every top-K term, and for the soft term's KL over the top-K' items and one "rest" bin.
    """

    topk: Tensor
    topk_scores: Tensor
    log_partition: Tensor
    temperature: float
    scores: Tensor | None = None

    @classmethod
    def from_scores(
        cls, z_t: Tensor, k: int, temperature: float, mask: Tensor | None = None
    ) -> TeacherTargets:
        """Targets from full teacher scores (``mask``: items the teacher may not name)."""
        z_t = z_t.detach()
        # One masked copy serves the top-K and the log-partition (a million-item row is 4 MB).
        masked = _masked_teacher(z_t, k, mask)
        topk = masked.topk(k, dim=1).indices
        log_z = torch.logsumexp(masked.float() / temperature, dim=1)
        return cls(topk, z_t.gather(1, topk), log_z, temperature, scores=z_t)

    def first(self, k: int) -> Tensor:
        """The teacher's ``k`` best items per row (``k`` <= the stored K')."""
        if k > self.topk.shape[1]:
            raise ConfigError(
                f"The teacher's top-K ({k}) is larger than the {self.topk.shape[1]} items "
                "kept per row; lower top_k."
            )
        return self.topk[:, :k]


def soft_target_kl_topk(
    z_s: Tensor,
    targets: TeacherTargets,
    mask: Tensor | None = None,
    log_weight: Tensor | None = None,
    log_partition: Tensor | None = None,
    picked: Tensor | None = None,
) -> Tensor:
    """The soft term from the teacher's top-K' and log-partition (no full teacher scores).

    ``T^2 * KL(P_t || P_s)`` between the two distributions coarsened to K'+1 bins: each of
    the teacher's top-K' items, and one bin holding the rest of the catalog. Both use the
    exact probabilities (the teacher's through its stored log-partition, the student's
    through its full softmax), so the value equals :func:`soft_target_kl` when K' covers
    every unmasked item and is a lower bound of it otherwise (coarse-graining never
    increases a KL divergence).

    ``log_weight`` (big catalogs, ``[B, C]`` or ``[1, C]``): ``z_s`` covers candidates, not
    the catalog, and column ``c`` stands for ``exp(log_weight[c])`` catalog items in the
    student's partition (1 for an exact column, ``1 / (M q_j)`` for a sampled one), so
    ``log Z_s ≈ logsumexp(z_s / T + log_weight)``: the sampled-softmax (logQ) estimate.

    ``log_partition``: as in :func:`soft_target_kl` (the task loss's ``logsumexp(z_s)``,
    used at T=1 when nothing is masked or weighted).

    ``picked``: ``z_s.gather(1, targets.topk)`` when the caller has read those columns
    already (``combined`` reads them once for its soft and hard terms).
    """
    temperature = targets.temperature
    mask = _check_mask(z_s, mask)
    s = _over_t(z_s, temperature)
    if mask is not None:
        s = s.masked_fill(mask, torch.finfo(s.dtype).min)
    topk = targets.topk.to(z_s.device, torch.long)
    # One pass over the catalog (the student's log-partition); everything else is [N, K'].
    if mask is None and log_weight is None:
        log_z = _student_log_partition(s, temperature, log_partition)
    else:
        partition_terms = s
        if log_weight is not None:
            partition_terms = s + log_weight.to(s)
            if mask is not None:
                partition_terms = partition_terms.masked_fill(mask, torch.finfo(s.dtype).min)
        log_z = torch.logsumexp(partition_terms, dim=1)
    if picked is None:
        picked = read_columns(s, topk)
    else:
        picked = _over_t(picked, temperature)
        if mask is not None:  # as if read from the masked scores
            picked = picked.masked_fill(mask.gather(1, topk), torch.finfo(s.dtype).min)
    log_ps = picked - log_z[:, None]
    log_pt = targets.topk_scores.to(s.dtype) / temperature - targets.log_partition.to(s)[:, None]
    pt = log_pt.exp()
    top_terms = (pt * (log_pt - log_ps)).sum(dim=1)
    # The rest bin: one minus the top-K' mass, on each side (in float64: the masses can sum
    # to within rounding of 1).
    rest_t = (1.0 - pt.double().sum(dim=1)).clamp_min(0.0)
    rest_s = (1.0 - log_ps.double().exp().sum(dim=1)).clamp_min(1e-12)
    n_allowed = s.shape[1] if mask is None else (~mask).sum(dim=1)
    # No item left outside the top-K' (K' covers the row): the rest bin does not exist.
    has_rest = (n_allowed > topk.shape[1]) & (rest_t > 0)
    rest_terms = torch.where(
        has_rest, rest_t * (torch.log(rest_t.clamp_min(1e-30)) - torch.log(rest_s)), 0.0
    ).to(s.dtype)
    return temperature**2 * (top_terms + rest_terms).mean()


# --------------------------------------------------------------------------- hard targets


def hard_target_bce(
    z_s: Tensor,
    teacher_topk: Tensor,
    negatives: Tensor | None = None,
    mask: Tensor | None = None,
    picked: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The teacher's top-K as binary labels: BCE-with-logits on the student's scores.

    Label 1 for the teacher's top-K items; label 0 for every other item of the row (the
    whole catalog or candidate set), or only for ``negatives`` when given. Negatives that
    are also teacher top-K items, and any masked item, are dropped.

    Normalisation (deliberate): per example, the BCE of the positives is averaged over the
    positives and the BCE of the negatives over the negatives, and the two means are
    *summed*; the result is then averaged over the batch::

        hard = mean_b [ mean_{i in topK} softplus(-z_s[i]) + mean_{j in neg} softplus(z_s[j]) ]

    A plain mean over all C labels would let ~3000 negatives drown 10 positives; this way
    both sides weigh the same whatever K and C are. A side with no valid items adds 0.

    Training passes ``negatives`` (``distillation_loss``: ``HARD_NEGATIVES`` items drawn
    uniformly once per batch): the mean over a uniform sample of the row's valid negatives is
    an unbiased estimate of the mean over all of them, at a fraction of the cost of a
    softplus over the whole catalog in both passes.

    Args:
        z_s: ``[B, C]`` student scores.
        teacher_topk: ``[B, K]`` item indices (no duplicates within a row).
        negatives: optional ``[B, M]`` sampled negative indices.
        mask: optional boolean ``[B, C]``; True items are neither positives nor negatives.
        picked: with ``negatives``, the scores ``(z_s[teacher_topk], z_s[negatives])`` when
            the caller has read those columns already (``combined``: one read of the scores
            for both of its terms).
    """
    _check_scores(z_s, teacher_topk, "teacher_topk")
    mask = _check_mask(z_s, mask)
    teacher_topk = teacher_topk.detach().to(z_s.device, torch.long)
    n_items = z_s.shape[1]

    pos_valid = torch.ones_like(teacher_topk, dtype=torch.bool)
    if mask is not None:
        pos_valid = ~mask.gather(1, teacher_topk)

    if negatives is None:
        if picked is not None:
            raise ValueError("picked scores come with the negatives they were read for.")
        z_pos = read_columns(z_s, teacher_topk)
        # Every unmasked item that is not a positive: the row's sum over the catalog minus
        # the positives' part, so no [B, C] label matrix is built.
        neg_bce = F.softplus(z_s)
        n_neg = torch.full_like(pos_valid[:, 0], n_items, dtype=torch.long)
        if mask is not None:
            neg_bce = neg_bce.masked_fill(mask, 0.0)
            n_neg = (~mask).sum(dim=1)
        pos_part = torch.where(pos_valid, F.softplus(z_pos), torch.zeros_like(z_pos)).sum(dim=1)
        n_neg = n_neg - pos_valid.sum(dim=1)
        neg_sum = neg_bce.sum(dim=1) - pos_part
        neg_mean = torch.where(n_neg > 0, neg_sum / n_neg.clamp(min=1), torch.zeros_like(neg_sum))
    else:
        _check_scores(z_s, negatives, "negatives")
        negatives = negatives.detach().to(z_s.device, torch.long)
        z_pos, z_neg = picked if picked is not None else _read_columns(z_s, teacher_topk, negatives)
        neg_valid = ~_among(negatives, teacher_topk, n_items)
        if mask is not None:
            neg_valid &= ~mask.gather(1, negatives)
        neg_mean = _masked_row_mean(F.softplus(z_neg), neg_valid)
    pos_mean = _masked_row_mean(F.softplus(-z_pos), pos_valid)
    return (pos_mean + neg_mean).mean()


def _masked_row_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of ``values`` over the valid entries of each row; 0 for a row with none."""
    count = valid.sum(dim=1).clamp(min=1)
    return torch.where(valid, values, torch.zeros_like(values)).sum(dim=1) / count


# --------------------------------------------------------------------- ranking distillation


def position_weights(
    k: int,
    lam: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Static position-importance weights ``w_r = exp(-r/lam) / sum_r' exp(-r'/lam)``, r=1..K."""
    if k < 1:
        raise ConfigError(f"The teacher's top-K must hold at least one item (got K={k}).")
    if not lam > 0:
        raise ConfigError(f"The ranking position decay lambda must be positive (got {lam}).")
    ranks = torch.arange(1, k + 1, dtype=dtype, device=device)
    return torch.softmax(-ranks / lam, dim=0)


@torch.no_grad()
def dynamic_rank_weights(
    z_s: Tensor,
    teacher_topk: Tensor,
    mu: float = 0.1,
    mask: Tensor | None = None,
    log_weight: Tensor | None = None,
) -> Tensor:
    """Tang & Wang's rank-discrepancy weight, with the student's exact rank (no gradient).

    ``w_dyn[r] = max(0, tanh(mu * (rank_s(pi_r) - r)))`` for r = 1..K, where ``rank_s(i)``
    is the 1-based rank of item i in the student's full score row (1 + the number of
    unmasked items the student scores strictly higher). The weight is 0 while the student
    ranks the item at least as high as the teacher does, and grows towards 1 the lower the
    student ranks it. (The authors estimate rank_s by sampling; with the scores of the
    whole row at hand we count exactly.)

    ``log_weight`` (big catalogs, ``[B, C]`` or ``[1, C]``): ``z_s`` covers candidates and
    column ``c`` counts for ``exp(log_weight[c])`` catalog items (``1 / (M q_j)`` for a
    sampled one), so the rank is the importance-sampling estimate, as the authors do.

    Returns:
        ``[B, K]`` float weights in [0, 1).
    """
    z_s = z_s.detach()
    if mask is not None:
        # -inf is never strictly greater than a score, so masked items never outrank one.
        z_s = z_s.masked_fill(mask, float("-inf"))
    item_scores = z_s.gather(1, teacher_topk)
    if log_weight is None:
        ascending = z_s.sort(dim=1).values
        not_above = torch.searchsorted(ascending.contiguous(), item_scores.contiguous(), right=True)
        student_rank = (z_s.shape[1] - not_above + 1).to(z_s.dtype)  # 1-based
    else:
        counts = log_weight.to(z_s).exp().expand_as(z_s)
        if mask is not None:
            counts = counts.masked_fill(mask, 0.0)
        ascending, order = z_s.sort(dim=1)
        # at_most[:, i] = catalog items standing behind the i lowest columns.
        at_most = F.pad(counts.gather(1, order).cumsum(dim=1), (1, 0))
        not_above = torch.searchsorted(ascending.contiguous(), item_scores.contiguous(), right=True)
        student_rank = 1 + at_most[:, -1:] - at_most.gather(1, not_above)
    teacher_rank = torch.arange(1, teacher_topk.shape[1] + 1, device=z_s.device, dtype=z_s.dtype)
    return torch.tanh(mu * (student_rank - teacher_rank)).clamp(min=0.0)


def ranking_distillation(
    z_s: Tensor,
    teacher_topk: Tensor,
    lam: float,
    weights: Literal["static", "dynamic"] = "static",
    *,
    mu: float = 0.1,
    mask: Tensor | None = None,
    log_weight: Tensor | None = None,
) -> Tensor:
    """Ranking distillation (Tang & Wang, KDD 2018): the teacher's top-K as extra positives.

    ``rank = mean_b sum_{r=1..K} w_r * -log sigmoid(z_s[pi_r])``, ``pi_r`` the teacher's r-th
    item (masked items must already be excluded from ``teacher_topk``: see
    ``teacher_top_k``).

    - ``weights="static"``: ``w_r = exp(-r/lam) / sum_{r'} exp(-r'/lam)``.
    - ``weights="dynamic"`` (the paper's hybrid weight):
      ``w_r = a_r * d_r / sum_{r'} a_{r'} * d_{r'}`` with ``a_r = exp(-r/lam)`` and
      ``d_r = max(0, tanh(mu * (rank_s(pi_r) - r)))`` from ``dynamic_rank_weights``. The
      weights carry no gradient. A row where the student already ranks every teacher item
      at least as high as the teacher (all ``d_r = 0``) gets zero weights and adds 0.

    Args:
        z_s: ``[B, C]`` student scores.
        teacher_topk: ``[B, K]`` teacher's top-K item indices, best first.
        lam: position decay lambda > 0 (small lambda: focus on the very top).
        weights: "static" or "dynamic".
        mu: sharpness of the dynamic weight (only for ``weights="dynamic"``).
        mask: optional boolean ``[B, C]``; masked items do not count in the student's rank.
        log_weight: big catalogs only: how many catalog items each column of ``z_s`` stands
            for in the student's rank (see :func:`dynamic_rank_weights`).
    """
    _check_scores(z_s, teacher_topk, "teacher_topk")
    mask = _check_mask(z_s, mask)
    teacher_topk = teacher_topk.detach().to(z_s.device, torch.long)
    w = position_weights(teacher_topk.shape[1], lam, device=z_s.device, dtype=z_s.dtype)
    w = w.expand(teacher_topk.shape[0], -1)
    if weights == "dynamic":
        if not mu > 0:
            raise ConfigError(f"The dynamic weight sharpness mu must be positive (got {mu}).")
        w = w * dynamic_rank_weights(z_s, teacher_topk, mu=mu, mask=mask, log_weight=log_weight)
        w = w / w.sum(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny)
    elif weights != "static":
        raise ConfigError(f"Ranking weights must be 'static' or 'dynamic' (got {weights!r}).")
    nll = F.softplus(-read_columns(z_s, teacher_topk))  # -log sigmoid(x), stable
    return (w * nll).sum(dim=1).mean()


# --------------------------------------------------------------------------- listwise (RRD)


def listwise_plackett_luce(
    z_s: Tensor, teacher_topk: Tensor, sampled: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Negative Plackett-Luce log-likelihood of the teacher's top-K order (DE-RRD, CIKM 2020).

    ``listwise = mean_b -(1/K) sum_{r=1..K} [ z_s[pi_r] - logsumexp(z_s[{pi_r, ..., pi_K}
    ∪ S]) ]`` where S is the set of ``sampled`` "uninteresting" items: they are appended
    after the K as one unordered block, so they sit in every denominator but are never
    ranked themselves. The sum over the K positions is *averaged* (divided by K) so the
    scale does not grow with K. Sampled items that are teacher top-K items or masked are
    dropped from S (duplicates within ``sampled`` count as many times as they appear:
    ``sample_items`` draws without replacement). With S empty this is plain Plackett-Luce
    over the K items.

    Args:
        z_s: ``[B, C]`` student scores.
        teacher_topk: ``[B, K]`` teacher's top-K indices, best first.
        sampled: ``[B, M]`` uniformly sampled item indices (M may be 0).
        mask: optional boolean ``[B, C]``; masked sampled items are dropped.
    """
    _check_scores(z_s, teacher_topk, "teacher_topk")
    _check_scores(z_s, sampled, "sampled")
    mask = _check_mask(z_s, mask)
    teacher_topk = teacher_topk.detach().to(z_s.device, torch.long)
    sampled = sampled.detach().to(z_s.device, torch.long)
    k = teacher_topk.shape[1]

    top, rest = _read_columns(z_s, teacher_topk, sampled)  # [B, K], [B, M]
    rest_valid = ~_among(sampled, teacher_topk, z_s.shape[1])
    if mask is not None:
        rest_valid &= ~mask.gather(1, sampled)

    # Denominator r = the top items from position r on, plus every valid sampled item:
    # logaddexp of a suffix logsumexp over the K top scores ([B, K, K], item pi_r always in,
    # so finite) and one logsumexp over the sampled block ([B, M], once per row, not once
    # per position: a [B, K, K+M] pattern cost a listwise step 1.5 ms more on the demo shop).
    # Dropped sampled items take the dtype's lowest finite value, not -inf: their exp is an
    # exact 0, and a row with none left gives a finite log that logaddexp ignores, with a
    # zero gradient instead of the NaN of a logsumexp over -inf alone.
    positions = torch.arange(k, device=z_s.device)
    suffix = positions.unsqueeze(0) >= positions.unsqueeze(1)  # [K, K]: j >= r
    log_top = top.unsqueeze(1).expand(-1, k, k).masked_fill(~suffix, float("-inf"))
    log_rest = rest.masked_fill(~rest_valid, torch.finfo(rest.dtype).min).logsumexp(dim=1)
    log_denominator = torch.logaddexp(log_top.logsumexp(dim=2), log_rest.unsqueeze(1))
    return -(top - log_denominator).mean(dim=1).mean()


# --------------------------------------------------------------------- teacher / sampling


def teacher_top_k(z_t: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """The teacher's ``k`` best unmasked items per row, best first: LongTensor ``[B, k]``.

    Masked items (the user's training items) are never teacher positives: the distillation
    targets are *unobserved* items. Raises ConfigError if a row has fewer than ``k`` items
    left, since padding it with masked items would teach the wrong thing.
    """
    return _masked_teacher(z_t.detach(), k, mask).topk(k, dim=1).indices


def _masked_teacher(z_t: Tensor, k: int, mask: Tensor | None) -> Tensor:
    """``z_t`` with masked items at -inf, once ``k`` is checked against what each row has."""
    n_items = z_t.shape[1]
    if not 1 <= k <= n_items:
        raise ConfigError(
            f"The teacher's top-K ({k}) must be between 1 and the number of scored items "
            f"({n_items}); lower top_k."
        )
    if mask is None:
        return z_t
    mask = _check_mask(z_t, mask)
    fewest = n_items - int(mask.sum(dim=1).max()) if len(mask) else n_items
    if fewest < k:
        raise ConfigError(
            f"The teacher's top-K ({k}) is larger than the {fewest} items left for some "
            "user once their own items are masked; lower top_k."
        )
    return z_t.masked_fill(mask, float("-inf"))


def sample_items(
    batch_size: int,
    n_sampled: int,
    n_items: int,
    generator: torch.Generator | None = None,
    exclude: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw items uniformly, without replacement within a row: LongTensor ``[B, M']``.

    Args:
        batch_size: B.
        n_sampled: M, the number of items wanted per row.
        n_items: C, the catalog size.
        generator: for reproducible draws; one on another device than the output (a seeded
            CPU generator in a CUDA run) works, at the cost of copying the ``[B, C]`` weights.
        exclude: optional boolean ``[B, C]``; True items are never drawn (e.g. the teacher's
            top-K and the user's own items).
        device: where to draw when ``exclude`` is not given.

    Returns:
        ``M' = min(M, fewest items allowed in any row)`` columns, so every row holds distinct,
        allowed items (M' = 0 when some row has nothing left to draw).
    """
    if n_sampled < 0 or n_items < 1 or batch_size < 0:
        raise ConfigError(
            f"Cannot sample {n_sampled} of {n_items} items for {batch_size} rows; "
            "the counts must be non-negative and the catalog non-empty."
        )
    if exclude is None:
        allowed = torch.ones(batch_size, n_items, device=device)
    else:
        if exclude.shape != (batch_size, n_items):
            raise ValueError(
                f"exclude must be [{batch_size}, {n_items}]; got {tuple(exclude.shape)}."
            )
        allowed = (~exclude.to(torch.bool)).float()
    available = int(allowed.sum(dim=1).min()) if batch_size else 0
    m = min(n_sampled, available)
    if m == 0:
        return torch.zeros(batch_size, 0, dtype=torch.long, device=allowed.device)
    # Uniform without replacement as the top-m of i.i.d. uniform keys (the Gumbel-top-k
    # trick with equal weights): one random draw and one top-k over [B, C], where
    # torch.multinomial without replacement costs a distillation epoch several times over.
    # Keys are drawn where the generator lives, so a seeded CPU generator stays usable
    # (and reproducible) for CUDA runs.
    where = generator.device if generator is not None else allowed.device
    keys = torch.rand(batch_size, n_items, generator=generator, device=where)
    keys = keys.to(allowed.device).masked_fill(allowed == 0, -1.0)
    return keys.topk(m, dim=1).indices


# ----------------------------------------------------------------------------- combiner


@dataclass(frozen=True)
class DistillConfig:
    """How a student learns from its teacher; saved with every student run."""

    method: str = Method.NONE  # a core.enums.Method; "none" is the no-teacher twin
    # T=1 keeps the teacher's ranking sharp. alpha < 1 by construction: "soft" is
    # (1-a)*task + a*soft, and a soft-only student (a=1) forgets the data; in "combined" the
    # soft term sits on top of the full task loss.
    temperature: float = 1.0  # T of the soft term; higher = flatter teacher distribution
    alpha: float = 0.5  # a: weight of the soft term ("soft": (1-a)*task + a*soft)
    beta: float = 0.1  # b: weight of the hard term
    top_k: int = 10  # K: teacher items used as targets by hard / ranking / listwise
    lam: float = 5.0  # ranking position decay: w_r ∝ exp(-r/lam)
    dynamic: bool = False  # ranking: multiply in the rank-discrepancy weight
    mu: float = 0.1  # ranking: sharpness of the dynamic weight tanh(mu * rank gap)
    weight: float = 1.0  # l: weight of the ranking / listwise term
    n_sampled: int = 50  # listwise: uninteresting items sampled into every denominator
    # Start the student's item table from the teacher's leading principal directions
    # (core.embedding_init) instead of random weights; any method.
    teacher_init: bool = False

    def validate(self) -> DistillConfig:
        """Raise ConfigError with one clear sentence for a bad value; return self if valid."""
        if not isinstance(self.method, str) or self.method not in LOSSES:
            raise ConfigError(
                f"Unknown distillation method {self.method!r}; choose one of {choice_list(Method)}."
            )
        _require(self.temperature, lambda v: v > 0, "The temperature must be positive")
        _require(self.alpha, lambda v: 0 <= v <= 1, "The soft weight alpha must be in [0, 1]")
        _require(self.beta, lambda v: v >= 0, "The hard weight beta must be zero or more")
        _require(self.lam, lambda v: v > 0, "The ranking position decay lambda must be positive")
        _require(self.mu, lambda v: v > 0, "The dynamic weight sharpness mu must be positive")
        _require(self.weight, lambda v: v >= 0, "The ranking/listwise weight must be zero or more")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ConfigError(
                f"The teacher's top-K must be an integer of 1 or more (got {self.top_k})."
            )
        if (
            isinstance(self.n_sampled, bool)
            or not isinstance(self.n_sampled, int)
            or self.n_sampled < 1
        ):
            raise ConfigError(
                f"The number of sampled items must be an integer of 1 or more (got {self.n_sampled})."
            )
        if not isinstance(self.dynamic, bool):
            raise ConfigError(f"'dynamic' must be true or false (got {self.dynamic!r}).")
        if not isinstance(self.teacher_init, bool):
            raise ConfigError(f"'teacher_init' must be true or false (got {self.teacher_init!r}).")
        return self


def _require(value: object, ok: Callable[[float], bool], sentence: str) -> None:
    """Raise ConfigError unless ``value`` is a finite real number (not a bool) passing ``ok``."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and ok(value)):
        raise ConfigError(f"{sentence} (got {value!r}).")


TermFn = Callable[..., dict[str, Tensor]]
CombineFn = Callable[[Tensor, dict[str, Tensor], DistillConfig], Tensor]


@dataclass(frozen=True)
class Candidates:
    """Big-catalog mode: the student's ``z_s`` ``[N, C]`` covers candidates, not the catalog.

    Built by :func:`core.teacher_cache.candidate_rows` for a student trained with sampled or
    chunked softmax. Columns: the teacher's K' kept items (best first, so the teacher's
    top-K are columns ``0..K-1``), the row's positive, then the batch's M shared negatives.

    log_weight: ``[N, C]`` or ``[1, C]``: log of how many catalog items each column stands
                for in the student's partition and rank: 0 for an exact column (a teacher
                item, the positive), ``-log(M q_j)`` for a sampled negative (its logQ
                correction), so sums over the catalog are importance-sampling estimates.
    negatives:  ``[N, M]`` the column indices of the sampled negatives.
    """

    log_weight: Tensor
    negatives: Tensor


@dataclass(frozen=True)
class DistillMethod:
    """One row of ``LOSSES``: what the method is, its terms, and how they make the total.

    ``sampled`` says what changes for a big-catalog student (:class:`Candidates`).
    """

    description: str
    formula: str
    needs_teacher: bool
    # (z_s, TeacherTargets, config, mask=, sampled=, generator=, candidates=, log_z=)
    #   -> {name: term}
    terms: TermFn
    combine: CombineFn  # (task, terms, config) -> total loss
    sampled: str = "nothing: no term reads the catalog."


def _no_terms(z_s, t, config, *, mask, sampled, generator, candidates, log_z) -> dict[str, Tensor]:
    return {}


def _soft(
    z_s: Tensor,
    t: TeacherTargets,
    mask: Tensor | None,
    candidates: Candidates | None,
    log_z: Tensor | None,
    picked: Tensor | None = None,
) -> Tensor:
    if candidates is not None:
        return soft_target_kl_topk(
            z_s, t, mask=mask, log_weight=candidates.log_weight, picked=picked
        )
    if t.scores is not None:
        return soft_target_kl(z_s, t.scores, t.temperature, mask=mask, log_partition=log_z)
    return soft_target_kl_topk(z_s, t, mask=mask, log_partition=log_z, picked=picked)


def _hard_negatives(z_s: Tensor, candidates: Candidates | None, generator) -> Tensor:
    """The hard term's label-0 items: the candidates' shared negatives, or a uniform draw."""
    if candidates is not None:
        return candidates.negatives
    return shared_sample(z_s.shape[0], HARD_NEGATIVES, z_s.shape[1], generator, z_s.device)


def _soft_terms(
    z_s, t, config, *, mask, sampled, generator, candidates, log_z
) -> dict[str, Tensor]:
    return {"soft": _soft(z_s, t, mask, candidates, log_z)}


def _hard_terms(
    z_s, t, config, *, mask, sampled, generator, candidates, log_z
) -> dict[str, Tensor]:
    negatives = _hard_negatives(z_s, candidates, generator)
    return {"hard": hard_target_bce(z_s, t.first(config.top_k), negatives, mask)}


def _combined_terms(
    z_s, t, config, *, mask, sampled, generator, candidates, log_z
) -> dict[str, Tensor]:
    negatives = _hard_negatives(z_s, candidates, generator)
    topk = t.first(config.top_k)
    if t.scores is not None and candidates is None:  # the soft term reads every column
        return {
            "soft": _soft(z_s, t, mask, candidates, log_z),
            "hard": hard_target_bce(z_s, topk, negatives, mask),
        }
    # Both terms read the teacher's kept items (the hard term its first K): one read of the
    # scores, so one catalog-sized gradient in the backward instead of two.
    kept, negative_scores = _read_columns(z_s, t.topk.to(z_s.device, torch.long), negatives)
    return {
        "soft": _soft(z_s, t, mask, candidates, log_z, picked=kept),
        "hard": hard_target_bce(
            z_s, topk, negatives, mask, picked=(kept[:, : topk.shape[1]], negative_scores)
        ),
    }


def _ranking_terms(
    z_s, t, config, *, mask, sampled, generator, candidates, log_z
) -> dict[str, Tensor]:
    mode = "dynamic" if config.dynamic else "static"
    topk = t.first(config.top_k)
    log_weight = None if candidates is None else candidates.log_weight
    return {
        "ranking": ranking_distillation(
            z_s, topk, config.lam, mode, mu=config.mu, mask=mask, log_weight=log_weight
        )
    }


def _listwise_terms(
    z_s, t, config, *, mask, sampled, generator, candidates, log_z
) -> dict[str, Tensor]:
    topk = t.first(config.top_k).to(z_s.device, torch.long)
    if sampled is None and candidates is not None:
        # The shared negatives were drawn i.i.d.: their first n_sampled are a random subset.
        sampled = candidates.negatives[:, : config.n_sampled]
    if sampled is None:
        sampled = shared_sample(z_s.shape[0], config.n_sampled, z_s.shape[1], generator, z_s.device)
    return {"listwise": listwise_plackett_luce(z_s, topk, sampled, mask=mask)}


def shared_sample(
    rows: int,
    n_sampled: int,
    n_items: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``min(n_sampled, n_items)`` items drawn uniformly without replacement, once for the
    whole batch: LongTensor ``[rows, M]``, the same items in every row.

    The listwise term's uninteresting items. A draw per row (:func:`sample_items`) costs a
    ``[rows, n_items]`` random matrix and its top-k every step: on the demo shop that made a
    listwise epoch 2.5x its twin's. Shared, as the sampled softmax shares its negatives, it is
    one permutation; each row's own teacher top-K and masked items among them are dropped by
    :func:`listwise_plackett_luce`, so every row still sees uniform items outside its top-K.
    """
    where = generator.device if generator is not None else device
    order = torch.randperm(n_items, generator=generator, device=where)[:n_sampled]
    return order.to(device).unsqueeze(0).expand(rows, -1)


LOSSES: dict[str, DistillMethod] = {
    Method.NONE: DistillMethod(
        description="Baseline: the student trained on the task alone, no teacher.",
        formula="task",
        needs_teacher=False,
        terms=_no_terms,
        combine=lambda task, terms, c: task,
    ),
    Method.SOFT: DistillMethod(
        description="Soft targets (Hinton et al. 2015): match the teacher's softened scores.",
        formula="(1-a)*task + a*T^2*KL(softmax(z_t/T) || softmax(z_s/T))",
        needs_teacher=True,
        terms=_soft_terms,
        combine=lambda task, terms, c: (1 - c.alpha) * task + c.alpha * terms["soft"],
        sampled=(
            "the KL over the teacher's top-K' items and one rest bin (as with the top-K "
            "cache); the student's log-partition is estimated from its exact top-K' and "
            "positive scores plus the sampled negatives with logQ correction."
        ),
    ),
    Method.HARD: DistillMethod(
        description="Hard targets: the teacher's top-K as binary labels (BCE).",
        formula="task + b*hard",
        needs_teacher=True,
        terms=_hard_terms,
        combine=lambda task, terms, c: task + c.beta * terms["hard"],
        sampled=(
            "label 0 goes to the batch's shared negatives, drawn from the proposal q (minus "
            "accidental hits of the teacher's items or the positive), instead of a uniform "
            "draw of HARD_NEGATIVES catalog items."
        ),
    ),
    Method.COMBINED: DistillMethod(
        description="Soft and hard targets together.",
        formula="task + a*soft + b*hard",
        needs_teacher=True,
        terms=_combined_terms,
        combine=lambda task, terms, c: task + c.alpha * terms["soft"] + c.beta * terms["hard"],
        sampled="the soft and hard terms change as in their own rows.",
    ),
    Method.RANKING: DistillMethod(
        description="Ranking distillation (Tang & Wang 2018): teacher top-K as extra positives.",
        formula="task + l * sum_r w_r * -log sigmoid(z_s[pi_r]),  w_r ∝ exp(-r/lam)",
        needs_teacher=True,
        terms=_ranking_terms,
        combine=lambda task, terms, c: task + c.weight * terms["ranking"],
        sampled=(
            "static weights: nothing; dynamic weights: the student's rank of each teacher "
            "item is estimated from the candidates, a sampled negative counting 1/(M q_j) "
            "catalog items (the authors' own sampled estimate)."
        ),
    ),
    Method.LISTWISE: DistillMethod(
        description="Listwise (DE-RRD 2020): Plackett-Luce likelihood of the teacher's top-K order.",
        formula="task + l * -(1/K) sum_r [z_s[pi_r] - logsumexp(z_s[pi_r..pi_K] ∪ sampled)]",
        needs_teacher=True,
        terms=_listwise_terms,
        combine=lambda task, terms, c: task + c.weight * terms["listwise"],
        sampled=(
            "the n_sampled uninteresting items are the first n_sampled of the batch's shared "
            "negatives (drawn from the proposal q, not uniformly), accidental hits dropped."
        ),
    ),
}
assert tuple(LOSSES) == tuple(Method)


def distillation_loss(
    task_loss: Tensor,
    z_s: Tensor,
    z_t: Tensor | TeacherTargets | None,
    config: DistillConfig,
    *,
    mask: Tensor | None = None,
    sampled: Tensor | None = None,
    generator: torch.Generator | None = None,
    candidates: Candidates | None = None,
    log_partition: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Total training loss of a student and each of its named terms, for logging.

    Totals (a = alpha, b = beta, l = weight; each term as defined by its function above):

    ======== ==============================================
    none     task
    soft     (1-a)*task + a*soft            (soft already includes T^2)
    hard     task + b*hard
    combined task + a*soft + b*hard
    ranking  task + l*ranking
    listwise task + l*listwise
    ======== ==============================================

    Args:
        task_loss: scalar task loss (BPR, cross-entropy, ...) of the student.
        z_s: ``[B, C]`` student scores over the catalog or a candidate set.
        z_t: ``[B, C]`` teacher scores over the same items (detached here), or the
            precomputed :class:`TeacherTargets` of these rows (what training passes: the
            teacher's outputs are computed once per run); may be None for method "none".
        config: the distillation config (validated here).
        mask: optional boolean ``[B, C]`` of items excluded from the distillation: never
            teacher top-K positives, never sampled, and removed from the soft distributions.
            Training passes the row's own context (its prefix, for a sequence student) when
            the dataset masks history at evaluation, and nothing otherwise: see
            ``core.teacher_cache.distill_mask``. Never the user's *later* items, which
            include the true next item.
        sampled: listwise only: ``[B, M]`` uninteresting items. When None, ``config.n_sampled``
            items are drawn uniformly once for the batch (``shared_sample`` with
            ``generator``); each row's teacher top-K and masked items among them are
            dropped.
        generator: random generator for that draw.
        candidates: big-catalog mode (see :class:`Candidates` and each ``LOSSES`` row's
            ``sampled`` field): ``z_s`` holds candidate scores, ``z_t`` must be the
            :class:`TeacherTargets` whose ``topk`` are candidate *columns*, ``mask`` marks
            masked or duplicate columns.
        log_partition: optional ``[B]`` ``logsumexp(z_s)`` with grad, from a full-softmax
            task loss: the soft term reuses it at T=1 when nothing is masked (the same
            value, one catalog pass fewer).

    Returns:
        ``(total, terms)``; ``terms`` holds ``"task"``, each method's unweighted term(s)
        (``"soft"``, ``"hard"``, ``"ranking"``, ``"listwise"``) and ``"total"``, as floats.
    """
    config.validate()
    method = LOSSES[config.method]
    if method.needs_teacher:
        if z_t is None:
            raise ConfigError(f"Distillation method {config.method!r} needs the teacher's scores.")
        if isinstance(z_t, Tensor) and candidates is not None:
            raise ValueError("With candidates, pass the teacher as TeacherTargets over columns.")
        if isinstance(z_t, Tensor):
            if z_t.shape != z_s.shape:
                raise ValueError(
                    f"Teacher scores {tuple(z_t.shape)} and student scores {tuple(z_s.shape)} "
                    "must cover the same items."
                )
            # The soft term alone needs no top-K (it reads the full scores): ask for one item
            # so a tiny catalog never trips the top-K size check.
            k = 1 if config.method == Method.SOFT else config.top_k
            z_t = TeacherTargets.from_scores(z_t, k, config.temperature, mask=mask)
    mask = _check_mask(z_s, mask)
    terms = method.terms(
        z_s,
        z_t,
        config,
        mask=mask,
        sampled=sampled,
        generator=generator,
        candidates=candidates,
        log_z=log_partition,
    )
    total = method.combine(task_loss, terms, config)
    named = {"task": task_loss, **terms, "total": total}
    # One device sync for all logged values rather than one per term.
    dtype = functools.reduce(torch.promote_types, (v.dtype for v in named.values()))
    values = torch.stack([v.detach().reshape(()).to(dtype) for v in named.values()]).tolist()
    return total, dict(zip(named, values, strict=True))
