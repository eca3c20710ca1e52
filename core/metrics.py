"""Full-ranking evaluation: one vectorised code path for every model.

A model is evaluated through a ``ScoreFn`` (dense user indices -> ``[B, n_items]`` scores).
Every evaluated user's scores over the whole catalog are masked (items the model saw as
history get ``-inf``) and the top-K items are taken with ``torch.topk``; the metrics below
are then computed for all users at once with numpy.

Definitions (binary relevance; ``T`` = the user's held-out items of the stage, ``h_r`` = 1
when the item at rank ``r`` (1-based) is in ``T``):

- ``ndcg@K``: ``sum_{r<=K} h_r / log2(r+1)`` divided by the ideal DCG over ``min(|T|, K)``
  positions, so a perfect list scores 1 with any number of held-out items.
- ``recall@K``: hits / ``|T|`` (the standard definition: it cannot reach 1 when
  ``|T| > K``). Targets that are also history items stay in ``|T|`` although masking makes
  them unreachable, so the number is honest about what the model cannot recommend.
- ``hr@K``: 1 when at least one hit is in the top K.
- ``mrr@K``: 1 / rank of the first hit within K, else 0.
- ``precision@K``: hits / K (the nominal K, also when fewer than K items are eligible).
- ``coverage@K``: distinct items in any evaluated user's top K, over ``n_items``.
- ``tail_recall@K``: micro-averaged: hits on long-tail items (``data.tail_items``) summed
  over all evaluated users, divided by all held-out tail items of those users; ``nan``
  when they have no tail targets. Micro, because most users hold out at most one item and
  a per-user average would be dominated by users with no tail target at all.

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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse

from core.dataset import SPLIT_TRAIN, InteractionData, stage_code
from core.errors import ConfigError

ScoreFn = Callable[[np.ndarray], torch.Tensor]

PER_USER_METRICS = ("ndcg", "recall", "hr", "mrr", "precision")
SLICES = ("cold", "warm", "heavy")
COLD_MAX_ACTIVITY = 5
HEAVY_PERCENTILE = 90.0
# Marks an empty top-K slot (fewer eligible items than K).
NO_ITEM = -1


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
                if key == "users":
                    rows.append((f"users[{slice_name}]", 0, float(value)))
                else:
                    name, k = _split_key(key)
                    rows.append((f"{name}[{slice_name}]", k, float(value)))
        return rows


def _split_key(key: str) -> tuple[str, int]:
    name, k = key.split("@")
    return name, int(k)


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


def _csr_rows(matrix: sparse.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position in ``rows``, column) of every stored entry of ``matrix[rows]``.

    Gathers straight from ``indptr`` because scipy's fancy row indexing builds a whole new
    matrix per batch, which dominates the cost for small batches.
    """
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    total = int(lengths.sum())
    positions = np.repeat(np.arange(len(rows)), lengths)
    # Offset of each entry inside its row: 0..len-1, built without a loop.
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = matrix.indices[np.repeat(starts, lengths) + offsets]
    return positions, cols.astype(np.int64, copy=False)


def _scores_tensor(scores: torch.Tensor | np.ndarray, n_rows: int, n_items: int) -> torch.Tensor:
    scores = torch.as_tensor(scores).detach()
    if tuple(scores.shape) != (n_rows, n_items):
        raise ConfigError(
            f"The model returned scores of shape {tuple(scores.shape)}; expected "
            f"({n_rows}, {n_items}) for {n_rows} users and {n_items} items."
        )
    dtype = torch.float64 if scores.dtype == torch.float64 else torch.float32
    # Always a private copy: masking writes in place, and a model may hand back a view of
    # its own buffers (e.g. one popularity vector expanded over the batch).
    scores = scores.to(dtype=dtype, copy=True)
    return scores.masked_fill_(torch.isnan(scores), float("-inf"))


def _iter_topk(
    score_fn: ScoreFn,
    data: InteractionData,
    users: np.ndarray,
    k: int,
    history: sparse.csr_matrix | None,
    batch_size: int,
) -> Iterator[np.ndarray]:
    """Yield ``[b, k]`` top-k item indices per batch of ``users`` (``-1`` = no item)."""
    n_items = data.n_items
    k_eff = min(k, n_items)
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        with torch.no_grad():
            scores = _scores_tensor(score_fn(batch), len(batch), n_items)
        if history is not None:
            rows, cols = _csr_rows(history, batch)
            if len(rows):
                device = scores.device
                scores[torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device)] = (
                    float("-inf")
                )
        values, indices = torch.topk(scores, k_eff, dim=1)
        indices = indices.masked_fill_(torch.isneginf(values), NO_ITEM).cpu().numpy()
        if k_eff < k:
            pad = np.full((len(batch), k - k_eff), NO_ITEM, dtype=np.int64)
            indices = np.concatenate([indices, pad], axis=1)
        yield indices.astype(np.int64, copy=False)


def topk_items(
    score_fn: ScoreFn,
    data: InteractionData,
    users: np.ndarray | Sequence[int],
    k: int,
    stage: str = "test",
    exclude_history: bool = True,
    batch_size: int = 512,
) -> np.ndarray:
    """``[B, k]`` top-k item indices for ``users``, best first, history of ``stage`` masked.

    Slots with no eligible item (the user's history covers the catalog) hold ``-1``.
    """
    if k < 1:
        raise ConfigError(f"K must be a positive integer; got {k}.")
    _check_stage(data, stage, exclude_history)
    users = _check_users(data, users)
    history = data.history_matrix(stage) if exclude_history else None
    parts = list(_iter_topk(score_fn, data, users, k, history, batch_size))
    if not parts:
        return np.empty((0, k), dtype=np.int64)
    return np.concatenate(parts, axis=0)


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


def evaluate(
    score_fn: ScoreFn,
    data: InteractionData,
    stage: str = "test",
    ks: Sequence[int] = (10, 20),
    exclude_history: bool = True,
    batch_size: int = 512,
    users: np.ndarray | None = None,
    return_topk: bool = False,
) -> EvalResult:
    """Full-ranking evaluation of ``score_fn`` on ``stage`` (see the module docstring).

    ``users`` restricts the evaluation to a subset (users without held-out items in
    ``stage`` are dropped); by default every user in ``data.eval_users(stage)`` counts.
    ``exclude_history=False`` keeps history items rankable (repeat-purchase data).
    """
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ConfigError(f"K values must be positive integers; got {ks}.")
    if batch_size < 1:
        raise ConfigError(f"The evaluation batch size must be positive; got {batch_size}.")
    _check_stage(data, stage, exclude_history)
    targets = data.target_matrix(stage)
    n_targets_all = np.diff(targets.indptr)
    if users is None:
        users = data.eval_users(stage)
    else:
        users = _check_users(data, users)
        users = users[n_targets_all[users] > 0]
    users = users.astype(np.int64, copy=False)
    max_k = ks[-1]
    history = data.history_matrix(stage) if exclude_history else None

    parts = list(_iter_topk(score_fn, data, users, max_k, history, batch_size))
    topk = np.concatenate(parts) if parts else np.empty((0, max_k), dtype=np.int64)

    # Hits by looking up (user, item) keys in the target matrix's sorted keys: no dense
    # [users, n_items] matrix, so memory stays at the size of the top-K array.
    n_items = data.n_items
    target_rows = np.repeat(np.arange(data.n_users, dtype=np.int64), n_targets_all)
    target_keys = target_rows * n_items + targets.indices.astype(np.int64)
    order = np.argsort(target_keys, kind="stable")
    target_keys = target_keys[order]
    target_is_tail = data.tail_items[targets.indices[order]]
    query = users[:, None] * n_items + topk
    pos = np.searchsorted(target_keys, query)
    pos_clipped = np.minimum(pos, max(len(target_keys) - 1, 0))
    valid = topk != NO_ITEM
    if len(target_keys):
        hits = valid & (target_keys[pos_clipped] == query)
        tail_hits = hits & target_is_tail[pos_clipped]
    else:
        hits = np.zeros_like(valid)
        tail_hits = hits

    n_targets = n_targets_all[users].astype(np.float64)
    tail_counts_all = np.bincount(
        target_rows[data.tail_items[targets.indices]], minlength=data.n_users
    )
    n_tail_targets = tail_counts_all[users].astype(np.float64)

    discounts = 1.0 / np.log2(np.arange(2, max_k + 2, dtype=np.float64))
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])

    per_user: dict[str, np.ndarray] = {}
    tail_hits_at: dict[int, np.ndarray] = {}
    metrics: dict[str, float] = {}
    for k in ks:
        hits_k = hits[:, :k]
        n_hits = hits_k.sum(axis=1).astype(np.float64)
        dcg = (hits_k * discounts[:k]).sum(axis=1)
        idcg = ideal_cumulative[np.minimum(n_targets, k).astype(np.int64)]
        any_hit = hits_k.any(axis=1)
        first = hits_k.argmax(axis=1)
        per_user[f"ndcg@{k}"] = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
        per_user[f"recall@{k}"] = n_hits / np.maximum(n_targets, 1.0)
        per_user[f"hr@{k}"] = any_hit.astype(np.float64)
        per_user[f"mrr@{k}"] = np.where(any_hit, 1.0 / (first + 1.0), 0.0)
        per_user[f"precision@{k}"] = n_hits / k
        tail_hits_at[k] = tail_hits[:, :k].sum(axis=1)

        for name in PER_USER_METRICS:
            metrics[f"{name}@{k}"] = _nan_mean(per_user[f"{name}@{k}"])
        top = topk[:, :k]
        metrics[f"coverage@{k}"] = len(np.unique(top[top != NO_ITEM])) / n_items
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


def mean_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Mean row-wise Jaccard@K over rows where at least one list is non-empty (else ``nan``)."""
    values = jaccard_at_k(a, b)
    values = values[~np.isnan(values)]
    return _nan_mean(values)
