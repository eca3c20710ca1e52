"""Full-ranking evaluation: one vectorised code path for every model.

A model is evaluated through a ``ScoreFn`` (dense user indices -> ``[B, n_items]`` scores).
Every evaluated user's scores over the whole catalog are ranked through the one serving
path (:mod:`core.ranking`: history mask + top-K); the metrics below are then computed for
all users at once with numpy.

Repeat-aware protocol. E-commerce targets repeat (view -> cart -> purchase of one item,
re-orders), so the history mask is a per-dataset setting (``data.masks_history``: auto, on
or off; see :class:`core.dataset.InteractionData`). With the mask on, a target already in
the user's history could never be ranked: it is left out of the scored set and counted
(``repeat_targets_masked``), never scored zero. Whatever the setting, the ``new`` and
``repeat`` target slices score each kind of target on its own, with the other kind's items
removed from the list first (neither hit nor miss), so an oracle scores 1 everywhere.

Definitions (binary relevance; ``T`` = the user's held-out items of the stage, ``h_r`` = 1
when the item at rank ``r`` (1-based) is in ``T``):

- ``ndcg@K``: ``sum_{r<=K} h_r / log2(r+1)`` divided by the ideal DCG over ``min(|T|, K)``
  positions, so a perfect list scores 1 with any number of held-out items.
- ``recall@K``: hits / ``|T|`` (the standard definition: it cannot reach 1 when
  ``|T| > K``).
- ``hr@K``: 1 when at least one hit is in the top K.
- ``mrr@K``: 1 / rank of the first hit within K, else 0.
- ``precision@K``: hits / K (the nominal K, also when fewer than K items are eligible).
- ``coverage@K``: distinct items in any evaluated user's top K, over ``n_items``.
- ``tail_recall@K``: micro-averaged: hits on long-tail items (``data.tail_items``) summed
  over all evaluated users, divided by all held-out tail items of those users; ``nan``
  when they have no tail targets. Micro, because most users hold out at most one item and
  a per-user average would be dominated by users with no tail target at all.

Memory: users are scored in batches of at most ``batch_size`` and at most
``SCORE_BUDGET_BYTES`` of float32 scores (:func:`eval_batch_size`): 512 users for a
3,000-item catalog, 33 at a million items, so one batch's ``[users, n_items]`` matrix (and
the few same-sized copies the mask and top-K make) stays bounded whatever the catalog.

Per-user metrics are averaged over users. Users are also sliced by training activity
(``data.user_activity``): "cold" (<= 5 training interactions), "heavy" (not cold and
activity >= the 90th percentile of the evaluated users' activity), "warm" (the rest).

Ties: the ranking is whatever ``torch.topk`` returns, so among exactly equal scores the
order is unspecified (deterministic for a given device and build, not across them).
A ``-inf`` score (masked history, or the model's own ``-inf``) means "never recommend":
such items never count as hits, never count for coverage, and are returned as ``-1`` in
top-K arrays, e.g. for a user whose whole catalog is masked. NaN scores are treated as
``-inf`` so that a broken model scores zero rather than crashing the evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from core.dataset import SPLIT_TRAIN, InteractionData, stage_code
from core.errors import ConfigError
from core.ranking import history_mask, top_k

ScoreFn = Callable[[np.ndarray], torch.Tensor]

PER_USER_METRICS = ("ndcg", "recall", "hr", "mrr", "precision")
SLICES = ("cold", "warm", "heavy")
# Target slices of the repeat-aware evaluation: targets new to the user, and repeats.
TARGET_SLICES = ("new", "repeat")
COLD_MAX_ACTIVITY = 5
HEAVY_PERCENTILE = 90.0
# Marks an empty top-K slot (fewer eligible items than K).
NO_ITEM = -1
# float32 scores of one evaluation batch: ranking makes about three more same-sized
# tensors (NaN and history masks, the masked copy), so a batch peaks near 0.5 GB.
SCORE_BUDGET_BYTES = 128 * 2**20


def eval_batch_size(batch_size: int, n_items: int) -> int:
    """Users per evaluation batch: ``batch_size``, fewer when their scores pass the budget."""
    return max(1, min(int(batch_size), SCORE_BUDGET_BYTES // (4 * max(1, n_items))))


@dataclass(frozen=True, eq=False)
class EvalResult:
    """The outcome of one full-ranking evaluation.

    ``metrics``: e.g. ``{"ndcg@10": 0.31, "coverage@10": 0.4, ...}`` for every K.
    ``slices``: slice name ("cold", "warm", "heavy") -> metric name -> value, with the
    per-user metrics and ``tail_recall@K`` of that slice plus ``"users"`` (its user count);
    metrics of an empty slice are ``nan``.
    ``users``: the evaluated dense user indices, in evaluation order.
    ``topk``: ``[n_users, max(ks)]`` recommended item indices (``-1`` = no item) when asked.
    """

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]]
    n_users: int
    users: np.ndarray
    ks: tuple[int, ...]
    topk: np.ndarray | None = None

    def get(self, metric: str, k: int) -> float:
        """One overall metric, e.g. ``result.get("ndcg", 10)``."""
        return self.metrics[f"{metric}@{k}"]

    def to_rows(self) -> list[tuple[str, int, float]]:
        """Flat ``(metric, k, value)`` rows for the results table.

        Overall metrics are ``("ndcg", 10, v)``; slice metrics put the slice in brackets,
        ``("ndcg[cold]", 10, v)``. Counts that have no K use ``k = 0``: ``("users", 0, n)``
        and ``("users[cold]", 0, n)``.
        """
        rows: list[tuple[str, int, float]] = [("users", 0, float(self.n_users))]
        for key, value in self.metrics.items():
            name, k = _split_key(key)
            rows.append((name, k, float(value)))
        for slice_name, values in self.slices.items():
            for key, value in values.items():
                name, k = _split_key(key)
                rows.append((f"{name}[{slice_name}]", k, float(value)))
        return rows


def kept_fraction(value: float | None, reference: float | None) -> float | None:
    """How much of a reference (the teacher's) metric a model keeps: ``value / reference``.

    None when either side is missing or not finite, or the reference is not positive (a
    zero-NDCG teacher has nothing to keep). The one definition of "% of the teacher kept".
    """
    if value is None or reference is None:
        return None
    value, reference = float(value), float(reference)
    if not (np.isfinite(value) and np.isfinite(reference)) or reference <= 0:
        return None
    return value / reference


def _split_key(key: str) -> tuple[str, int]:
    """``"ndcg@10"`` -> ``("ndcg", 10)``; a count without K (``"repeat_targets"``) gets 0."""
    name, _, k = key.partition("@")
    return name, int(k) if k else 0


# --------------------------------------------------------------------------- scoring


def _check_stage(data: InteractionData, stage: str | int, exclude_history: bool) -> int:
    try:
        code = stage_code(stage)
    except KeyError:
        raise ConfigError(f"Unknown evaluation stage {stage!r}; use 'valid' or 'test'.") from None
    if code == SPLIT_TRAIN and exclude_history:
        # The history of 'train' is train itself: every target would be masked.
        raise ConfigError(
            "Evaluating on the training split with history masked leaves nothing to "
            "find; evaluate 'valid' or 'test', or set exclude_history=False."
        )
    return code


def _check_users(data: InteractionData, users: np.ndarray | Sequence[int]) -> np.ndarray:
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if len(users) and (users.min() < 0 or users.max() >= data.n_users):
        raise ConfigError(
            f"User indices must lie in [0, {data.n_users}); got values from "
            f"{users.min()} to {users.max()}."
        )
    return users


def _scores_tensor(scores: torch.Tensor | np.ndarray, n_rows: int, n_items: int) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach()
    if tuple(scores.shape) != (n_rows, n_items):
        raise ConfigError(
            f"The model returned scores of shape {tuple(scores.shape)}; expected "
            f"({n_rows}, {n_items}) for {n_rows} users and {n_items} items."
        )
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    return scores.to(dtype=dtype)


def _ranked(
    score_fn: ScoreFn,
    data: InteractionData,
    users: np.ndarray,
    k: int,
    stage: str | int,
    exclude_history: bool,
    batch_size: int,
) -> np.ndarray:
    """``[len(users), k]`` top-k item indices of ``users``, in their order (``-1`` = no item).

    Ranks through :func:`core.ranking.top_k` with :func:`core.ranking.history_mask`: the
    same path as ``Recommender.recommend`` and the ONNX export.
    """
    n_items = data.n_items
    k_eff = min(k, n_items)
    batch_size = eval_batch_size(batch_size, n_items)
    # Users of similar history length share a batch, so a sequence model scores each batch
    # over its longest history, not the full window (core.models.base.trim_padding); the
    # rows come back in the order of ``users``.
    order = np.argsort(data.user_activity[users], kind="stable")
    restore = np.empty_like(order)
    restore[order] = np.arange(len(order))
    parts = []
    for start in range(0, len(users), batch_size):
        batch = users[order[start : start + batch_size]]
        with torch.no_grad():
            scores = _scores_tensor(score_fn(batch), len(batch), n_items)
            exclude = history_mask(data, batch, stage, scores.device) if exclude_history else None
            indices, values = top_k(scores, k_eff, exclude)
        indices = indices.masked_fill_(torch.isneginf(values), NO_ITEM).cpu().numpy()
        if k_eff < k:
            pad = np.full((len(batch), k - k_eff), NO_ITEM, dtype=np.int64)
            indices = np.concatenate([indices, pad], axis=1)
        parts.append(indices.astype(np.int64, copy=False))
    if not parts:
        return np.empty((0, k), dtype=np.int64)
    return np.concatenate(parts)[restore]


def topk_items(
    score_fn: ScoreFn,
    data: InteractionData,
    users: np.ndarray | Sequence[int],
    k: int,
    stage: str = "test",
    exclude_history: bool | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """``[B, k]`` top-k item indices for ``users``, best first.

    The history of ``stage`` is masked per the dataset's setting (``exclude_history=None``)
    or as given. Slots with no eligible item hold ``-1``.
    """
    if k < 1:
        raise ConfigError(f"K must be a positive integer; got {k}.")
    if exclude_history is None:
        exclude_history = data.masks_history
    _check_stage(data, stage, exclude_history)
    users = _check_users(data, users)
    return _ranked(score_fn, data, users, k, stage, exclude_history, batch_size)


# --------------------------------------------------------------------------- metrics


def _nan_mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def _slice_masks(activity: np.ndarray) -> dict[str, np.ndarray]:
    cold = activity <= COLD_MAX_ACTIVITY
    if len(activity):
        threshold = np.percentile(activity, HEAVY_PERCENTILE)
        heavy = ~cold & (activity >= threshold)
    else:
        heavy = np.zeros(0, dtype=bool)
    return {"cold": cold, "warm": ~cold & ~heavy, "heavy": heavy}


class _Targets:
    """A set of (user, item) targets, looked up by sorted keys: no dense matrix."""

    def __init__(self, matrix: sparse.csr_matrix, tail_items: np.ndarray):
        n_users, self.n_items = matrix.shape
        self.counts = np.diff(matrix.indptr).astype(np.int64)
        rows = np.repeat(np.arange(n_users, dtype=np.int64), self.counts)
        keys = rows * self.n_items + matrix.indices.astype(np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.is_tail = tail_items[matrix.indices[order]]
        self.tail_counts = np.bincount(rows[tail_items[matrix.indices]], minlength=n_users)

    def hits(self, users: np.ndarray, topk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bool ``[B, K]`` hits and tail hits of the ranked lists ``topk``."""
        valid = topk != NO_ITEM
        if not len(self.keys):
            none = np.zeros_like(valid)
            return none, none
        query = users[:, None] * self.n_items + topk
        pos = np.minimum(np.searchsorted(self.keys, query), len(self.keys) - 1)
        hits = valid & (self.keys[pos] == query)
        return hits, hits & self.is_tail[pos]


def _per_user(
    hits: np.ndarray, skip: np.ndarray, n_targets: np.ndarray, ks: tuple[int, ...]
) -> dict[str, np.ndarray]:
    """Per-user metrics at each K from ``[B, L]`` hits; ``skip`` positions are removed first.

    Skipped positions hold targets of the other kind (a repeat target when scoring new
    ones, and vice versa): they are neither a hit nor a miss, so an oracle scores 1.
    """
    keep = ~skip
    rank = np.cumsum(keep, axis=1)  # 1-based rank among kept positions
    discounts = 1.0 / np.log2(np.arange(2, ks[-1] + 2, dtype=np.float64))
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    out: dict[str, np.ndarray] = {}
    for k in ks:
        in_k = hits & keep & (rank <= k)
        n_hits = in_k.sum(axis=1).astype(np.float64)
        gains = np.where(in_k, 1.0 / np.log2(np.maximum(rank, 1) + 1.0), 0.0)
        idcg = ideal[np.minimum(n_targets, k).astype(np.int64)]
        any_hit = in_k.any(axis=1)
        first_rank = np.where(in_k, rank, np.iinfo(np.int64).max).min(
            axis=1, initial=np.iinfo(np.int64).max
        )
        out[f"ndcg@{k}"] = np.divide(
            gains.sum(axis=1), idcg, out=np.zeros(len(hits)), where=idcg > 0
        )
        out[f"recall@{k}"] = n_hits / np.maximum(n_targets, 1.0)
        out[f"hr@{k}"] = any_hit.astype(np.float64)
        out[f"mrr@{k}"] = np.where(any_hit, 1.0 / np.maximum(first_rank, 1), 0.0)
        out[f"precision@{k}"] = n_hits / k
        out[f"_tail_hits@{k}"] = in_k  # per position; summed with the tail flags by callers
    return out


def evaluate(
    score_fn: ScoreFn,
    data: InteractionData,
    stage: str = "test",
    ks: Sequence[int] = (10, 20),
    exclude_history: bool | None = None,
    batch_size: int = 512,
    users: np.ndarray | None = None,
    return_topk: bool = False,
) -> EvalResult:
    """Full-ranking evaluation of ``score_fn`` on ``stage`` (see the module docstring).

    ``exclude_history=None`` follows the dataset's history-mask setting
    (``data.masks_history``); True/False force it. With the mask on, targets already in the
    user's history are left out of every metric and counted (``repeat_targets_masked``),
    never scored zero. The ``new`` and ``repeat`` slices score each kind of target apart.
    ``users`` restricts the evaluation to a subset (users without held-out items in
    ``stage`` are dropped); by default every user in ``data.eval_users(stage)`` counts.
    """
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ConfigError(f"K values must be positive integers; got {ks}.")
    if batch_size < 1:
        raise ConfigError(f"The evaluation batch size must be positive; got {batch_size}.")
    if exclude_history is None:
        exclude_history = data.masks_history
    code = _check_stage(data, stage, exclude_history)
    all_targets = data.target_matrix(stage)
    repeat_matrix = (
        data.repeat_targets(stage) if code != SPLIT_TRAIN else sparse.csr_matrix(all_targets.shape)
    )
    new_matrix = (all_targets - repeat_matrix).tocsr()
    new_matrix.eliminate_zeros()
    # With the mask on a repeat target can never be ranked: it leaves the scored set.
    scored_matrix = new_matrix if exclude_history else all_targets
    n_scored = np.diff(scored_matrix.indptr)
    if users is None:
        users = np.flatnonzero(n_scored > 0)
    else:
        users = _check_users(data, users)
        users = users[n_scored[users] > 0]
    users = users.astype(np.int64, copy=False)

    # Scoring one kind of target skips the positions the other kind holds, so fetch enough
    # extra items to still fill K after the skips.
    repeat_counts = np.diff(repeat_matrix.indptr)
    extra = (
        0 if exclude_history or not len(users) else int(np.diff(all_targets.indptr)[users].max())
    )
    max_k = ks[-1]
    ranked = _ranked(score_fn, data, users, max_k + extra, stage, exclude_history, batch_size)
    topk = ranked[:, :max_k]

    scored = _Targets(scored_matrix, data.tail_items)
    hits, tail_hits = scored.hits(users, ranked)
    no_skip = np.zeros_like(hits)
    per_user = _per_user(hits, no_skip, scored.counts[users].astype(np.float64), ks)
    n_tail_targets = scored.tail_counts[users].astype(np.float64)

    metrics: dict[str, float] = {}
    tail_hits_at: dict[int, np.ndarray] = {}
    for k in ks:
        tail_hits_at[k] = (per_user.pop(f"_tail_hits@{k}") & tail_hits).sum(axis=1)
        for name in PER_USER_METRICS:
            metrics[f"{name}@{k}"] = _nan_mean(per_user[f"{name}@{k}"])
        top = topk[:, :k]
        metrics[f"coverage@{k}"] = len(np.unique(top[top != NO_ITEM])) / data.n_items
        metrics[f"tail_recall@{k}"] = _ratio(tail_hits_at[k].sum(), n_tail_targets.sum())

    slices: dict[str, dict[str, float]] = {}
    for slice_name, mask in _slice_masks(data.user_activity[users]).items():
        values: dict[str, float] = {"users": float(mask.sum())}
        for k in ks:
            for name in PER_USER_METRICS:
                values[f"{name}@{k}"] = _nan_mean(per_user[f"{name}@{k}"][mask])
            values[f"tail_recall@{k}"] = _ratio(
                tail_hits_at[k][mask].sum(), n_tail_targets[mask].sum()
            )
        slices[slice_name] = values

    # Repeat-aware slices: each kind of target scored on its own.
    kinds = {
        "new": _Targets(new_matrix, data.tail_items),
        "repeat": _Targets(repeat_matrix, data.tail_items),
    }
    for kind, targets in kinds.items():
        other = kinds["repeat" if kind == "new" else "new"]
        counts = targets.counts[users].astype(np.float64)
        has = counts > 0
        values = {"users": float(has.sum()), "targets": float(counts.sum())}
        if kind == "repeat" and exclude_history:
            # Masked: these targets cannot be ranked; reported as a count, never scored.
            for k in ks:
                for name in PER_USER_METRICS:
                    values[f"{name}@{k}"] = float("nan")
        else:
            kind_hits, _ = targets.hits(users[has], ranked[has])
            skip, _ = other.hits(users[has], ranked[has])
            kind_metrics = _per_user(kind_hits, skip, counts[has], ks)
            for k in ks:
                for name in PER_USER_METRICS:
                    values[f"{name}@{k}"] = _nan_mean(kind_metrics[f"{name}@{k}"])
        slices[kind] = values

    metrics["repeat_targets"] = (
        float(repeat_counts[data.eval_users(stage)].sum()) if code != SPLIT_TRAIN else 0.0
    )
    metrics["repeat_targets_masked"] = metrics["repeat_targets"] if exclude_history else 0.0
    metrics["history_masked"] = float(bool(exclude_history))

    return EvalResult(
        metrics=metrics,
        slices=slices,
        n_users=len(users),
        users=users,
        ks=ks,
        topk=topk if return_topk else None,
    )


# --------------------------------------------------------------------------- overlap


def _dedupe_rows(top: np.ndarray) -> np.ndarray:
    """Rows sorted, with repeated items and padding replaced by ``-1``."""
    top = np.sort(np.asarray(top, dtype=np.int64), axis=1)
    repeated = np.zeros_like(top, dtype=bool)
    repeated[:, 1:] = top[:, 1:] == top[:, :-1]
    top[repeated] = NO_ITEM
    return top


def jaccard_at_k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Jaccard overlap ``|A & B| / |A | B|`` of two ``[B, K]`` top-K index arrays.

    ``-1`` entries (empty slots) are ignored; a row where both lists are empty is ``nan``.
    The two arrays may have different K.
    """
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    if a.shape[0] != b.shape[0]:
        raise ConfigError(
            f"Top-K lists must cover the same users; got {a.shape[0]} and {b.shape[0]} rows."
        )
    a, b = _dedupe_rows(a), _dedupe_rows(b)
    valid_a = a != NO_ITEM
    # K is small (10-50), so the [B, K, K] comparison is cheaper than any set logic.
    inter = ((a[:, :, None] == b[:, None, :]) & valid_a[:, :, None]).sum(axis=(1, 2))
    union = valid_a.sum(axis=1) + (b != NO_ITEM).sum(axis=1) - inter
    out = np.full(len(a), np.nan)
    np.divide(inter, union, out=out, where=union > 0)
    return out
