"""Tests for core.metrics: hand-computed cases and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.errors import ConfigError
from core.metrics import EvalResult, evaluate, jaccard_at_k, topk_items

TR, VA, TE = SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST


def make_data(n_users: int, n_items: int, rows: list[tuple[int, int, int]]) -> InteractionData:
    """An InteractionData from (user, item, split) rows, in the given order per user."""
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    order = np.argsort(arr[:, 0], kind="stable")
    arr = arr[order]
    n = len(arr)
    item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    return InteractionData(
        name="tiny",
        user_ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        item_ids=item_ids,
        users=arr[:, 0].copy(),
        items=arr[:, 1].copy(),
        timestamps=np.arange(n, dtype=np.int64),
        weights=np.ones(n, dtype=np.float32),
        split=arr[:, 2].astype(np.int8),
        has_timestamps=True,
        titles=item_ids.copy(),
        categories=np.array([""] * n_items, dtype=object),
        prices=np.full(n_items, np.nan),
        content_hash="test",
    )


def fixed_scores(table: np.ndarray):
    """A score function reading rows of a fixed [n_users, n_items] table."""
    tensor = torch.as_tensor(table)

    def score_fn(users: np.ndarray) -> torch.Tensor:
        return tensor[torch.as_tensor(users)]

    return score_fn


def ranking_scores(n_items: int, ranking: list[int]) -> np.ndarray:
    """One user's scores that rank ``ranking`` first (in order), the rest after, by index."""
    scores = np.zeros(n_items, dtype=np.float32)
    rest = [i for i in range(n_items) if i not in ranking]
    for pos, item in enumerate(list(ranking) + rest):
        scores[item] = n_items - pos
    return scores


# --------------------------------------------------------------------------- by hand


def single_target_result(rank: int, n_items: int = 30) -> EvalResult:
    """One user whose only test item (item 0) is ranked at ``rank`` (1-based)."""
    # Items 1..3 are training history; the ranking skips them so ranks are exact.
    rows = [(0, 1, TR), (0, 2, TR), (0, 3, TR), (0, 0, TE)]
    data = make_data(1, n_items, rows)
    others = [i for i in range(4, n_items)]
    ranking = others[: rank - 1] + [0] + others[rank - 1 :]
    table = ranking_scores(n_items, ranking)[None, :]
    return evaluate(fixed_scores(table), data, "test", ks=(10, 20))


def test_single_target_rank_one() -> None:
    m = single_target_result(1).metrics
    for k in (10, 20):
        assert m[f"ndcg@{k}"] == pytest.approx(1.0)
        assert m[f"recall@{k}"] == 1.0
        assert m[f"hr@{k}"] == 1.0
        assert m[f"mrr@{k}"] == 1.0
        assert m[f"precision@{k}"] == pytest.approx(1 / k)


def test_single_target_rank_three() -> None:
    m = single_target_result(3).metrics
    assert m["ndcg@10"] == pytest.approx(0.5)  # 1 / log2(3 + 1)
    assert m["mrr@10"] == pytest.approx(1 / 3)
    assert m["hr@10"] == 1.0
    assert m["recall@10"] == 1.0
    assert m["precision@10"] == pytest.approx(0.1)
    assert m["precision@20"] == pytest.approx(0.05)


def test_single_target_outside_top_k() -> None:
    m = single_target_result(15).metrics
    for name in ("ndcg", "recall", "hr", "mrr", "precision"):
        assert m[f"{name}@10"] == 0.0
    assert m["ndcg@20"] == pytest.approx(0.25)  # 1 / log2(16)
    assert m["mrr@20"] == pytest.approx(1 / 15)
    assert m["hr@20"] == 1.0
    assert m["recall@20"] == 1.0
    assert m["precision@20"] == pytest.approx(1 / 20)


def test_multiple_targets() -> None:
    n_items = 30
    targets = [5, 6, 7]
    rows = [(0, 0, TR), (0, 1, TR)] + [(0, t, TE) for t in targets]
    data = make_data(1, n_items, rows)
    # Ranks (history items 0 and 1 masked): item 5 at 1, item 6 at 4, item 7 at 12.
    fillers = [i for i in range(2, n_items) if i not in targets]
    ranking = [5] + fillers[:2] + [6] + fillers[2:9] + [7] + fillers[9:]
    table = ranking_scores(n_items, [0, 1] + ranking)[None, :]
    res = evaluate(fixed_scores(table), data, ks=(2, 10, 20), return_topk=True)
    m = res.metrics
    assert res.topk is not None
    assert res.topk[0, 0] == 5 and res.topk[0, 3] == 6 and res.topk[0, 11] == 7
    ideal3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / ideal3)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(13)) / ideal3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["recall@20"] == pytest.approx(1.0)
    assert m["precision@10"] == pytest.approx(0.2)
    assert m["precision@20"] == pytest.approx(3 / 20)
    assert m["hr@10"] == 1.0 and m["mrr@10"] == 1.0
    # K=2: one hit at rank 1; the ideal over min(3, 2) = 2 positions.
    assert m["ndcg@2"] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert m["recall@2"] == pytest.approx(1 / 3)
    assert m["precision@2"] == pytest.approx(0.5)


def test_more_targets_than_k_perfect_list_scores_one() -> None:
    rows = [(0, 9, TR)] + [(0, t, TE) for t in (0, 1, 2)]
    data = make_data(1, 10, rows)
    table = ranking_scores(10, [0, 1, 2])[None, :]
    m = evaluate(fixed_scores(table), data, ks=(2,)).metrics
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["recall@2"] == pytest.approx(2 / 3)  # hits / |targets|, not / min(|T|, K)
    assert m["precision@2"] == 1.0


def test_metrics_average_over_users() -> None:
    # User 0 hits at rank 1, user 1 at rank 3: means are taken over users.
    rows = [(0, 9, TR), (0, 0, TE), (1, 9, TR), (1, 1, TE)]
    data = make_data(2, 10, rows)
    table = np.stack([ranking_scores(10, [0]), ranking_scores(10, [2, 3, 1])])
    m = evaluate(fixed_scores(table), data, ks=(10,)).metrics
    assert m["ndcg@10"] == pytest.approx((1 + 0.5) / 2)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2)
    assert m["hr@10"] == 1.0


# --------------------------------------------------------------------------- masking


def masking_data() -> tuple[InteractionData, np.ndarray]:
    # Item 0 is a training item, item 1 the validation item, item 2 the test item.
    rows = [(0, 0, TR), (0, 5, TR), (0, 1, VA), (0, 2, TE)]
    data = make_data(1, 10, rows)
    table = ranking_scores(10, [0, 1, 2])[None, :]
    return data, table


def test_history_is_masked_for_test() -> None:
    data, table = masking_data()
    res = evaluate(fixed_scores(table), data, "test", ks=(10,), return_topk=True)
    assert res.topk is not None
    assert 0 not in res.topk[0] and 1 not in res.topk[0] and 5 not in res.topk[0]
    assert res.topk[0, 0] == 2
    assert res.metrics["ndcg@10"] == pytest.approx(1.0)


def test_valid_stage_masks_train_only() -> None:
    data, table = masking_data()
    res = evaluate(fixed_scores(table), data, "valid", ks=(10,), return_topk=True)
    assert res.topk is not None
    assert res.topk[0, 0] == 1  # validation target, the train item 0 is masked
    assert 0 not in res.topk[0]
    assert 2 in res.topk[0]  # the test item is not history of the validation stage
    assert res.metrics["mrr@10"] == 1.0


def test_masked_repeat_target_is_reported_apart_never_scored_zero() -> None:
    # Repeat purchase: the test item was also bought in training.
    rows = [(0, 0, TR), (0, 4, TR), (0, 0, TE), (1, 1, TR), (1, 2, TE)]
    data = make_data(2, 6, rows)
    table = np.stack([ranking_scores(6, [0]), ranking_scores(6, [3, 2])])
    res = evaluate(fixed_scores(table), data, ks=(3,), exclude_history=True, return_topk=True)
    assert res.topk is not None
    # User 0's only target is unreachable under the mask: left out of the averages, counted.
    assert list(res.users) == [1]
    assert res.metrics["repeat_targets"] == 1.0
    assert res.metrics["repeat_targets_masked"] == 1.0
    assert res.metrics["history_masked"] == 1.0
    assert res.metrics["hr@3"] == 1.0
    assert res.metrics["ndcg@3"] == pytest.approx(1 / math.log2(3))
    assert res.slices["repeat"]["targets"] == 0.0  # user 1 has no repeat target
    assert res.slices["new"]["ndcg@3"] == pytest.approx(1 / math.log2(3))

    kept = evaluate(fixed_scores(table), data, ks=(3,), exclude_history=False, return_topk=True)
    assert kept.topk is not None
    assert kept.topk[0, 0] == 0
    assert list(kept.users) == [0, 1]
    assert kept.metrics["hr@3"] == 1.0
    assert kept.metrics["repeat_targets_masked"] == 0.0
    assert kept.slices["repeat"]["ndcg@3"] == pytest.approx(1.0)
    assert kept.slices["repeat"]["users"] == 1.0
    assert kept.slices["new"]["ndcg@3"] == pytest.approx(1 / math.log2(3))


def test_masked_history_items_never_recommended() -> None:
    # User 0 has every item in history but one; user 1 is normal.
    rows = [(0, i, TR) for i in range(3)] + [(0, 3, TE), (1, 0, TR), (1, 3, TE)]
    data = make_data(2, 4, rows)
    table = np.stack([ranking_scores(4, [2]), ranking_scores(4, [3])])
    res = evaluate(fixed_scores(table), data, ks=(2, 10), exclude_history=True, return_topk=True)
    assert res.topk is not None
    assert list(res.topk[0, :2]) == [3, -1] and (res.topk[0, 1:] == -1).all()
    assert list(res.topk[1, :3]) == [3, 1, 2] and (res.topk[1, 3:] == -1).all()
    assert res.metrics["hr@2"] == pytest.approx(1.0)
    assert res.metrics["precision@10"] == pytest.approx((1 / 10 + 1 / 10) / 2)
    assert res.metrics["coverage@2"] == pytest.approx(2 / 4)  # items 3 and 1
    assert res.metrics["coverage@10"] == pytest.approx(3 / 4)
    assert all(np.isfinite(v) for v in res.metrics.values())


def _oracle(data: InteractionData, stage: str) -> np.ndarray:
    """Scores that put every held-out target of ``stage`` first."""
    table = np.zeros((data.n_users, data.n_items))
    targets = data.target_matrix(stage).tocoo()
    table[targets.row, targets.col] = 1.0
    return table


@pytest.mark.parametrize("setting", ["auto", "on", "off"])
@pytest.mark.parametrize("stage", ["valid", "test"])
@pytest.mark.parametrize("seed", [0, 1])
def test_oracle_reaches_one_under_every_setting(setting: str, stage: str, seed: int) -> None:
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    data = replace(random_data(rng, n_users=30, n_items=20), history_mask=setting)
    assert data.repeat_targets("test").nnz > 0  # the fixture has repeats to get wrong
    res = evaluate(fixed_scores(_oracle(data, stage)), data, stage, ks=(5, 10))
    for k in (5, 10):
        for name in ("ndcg", "hr", "mrr"):
            assert res.metrics[f"{name}@{k}"] == pytest.approx(1.0), (name, k)
            assert res.slices["new"][f"{name}@{k}"] == pytest.approx(1.0), (name, k)
            if not data.masks_history and res.slices["repeat"]["targets"]:
                assert res.slices["repeat"][f"{name}@{k}"] == pytest.approx(1.0), (name, k)
            elif data.masks_history:
                assert math.isnan(res.slices["repeat"][f"{name}@{k}"])


def test_auto_mask_follows_the_repeat_share() -> None:
    from dataclasses import replace

    from core.dataset import AUTO_MASK_MAX_REPEAT_SHARE

    # 20 users: each with a new test item; two valid targets are repeats -> 2/40 = 5%.
    rows = []
    for u in range(20):
        rows += [(u, 0, TR), (u, 1, TR), (u, 2 + u % 3, VA), (u, 6, TE)]
    data = make_data(20, 8, rows)
    assert data.repeat_share == 0.0 and data.masks_history
    repeats = [(u, 0, VA) if u < 2 else (u, 2 + u % 3, VA) for u in range(20)]
    rows2 = []
    for u in range(20):
        rows2 += [(u, 0, TR), (u, 1, TR), repeats[u], (u, 6, TE)]
    data2 = make_data(20, 8, rows2)
    assert data2.repeat_share == pytest.approx(2 / 40)
    assert data2.repeat_share <= AUTO_MASK_MAX_REPEAT_SHARE and data2.masks_history
    rows3 = [(u, 0, TR) for u in range(20)] + [(u, 0 if u < 5 else 7, TE) for u in range(20)]
    data3 = make_data(20, 8, rows3)
    assert data3.repeat_share == pytest.approx(5 / 20)
    assert not data3.masks_history  # auto: too many repeats to mask
    assert replace(data3, history_mask="on").masks_history
    assert not replace(data, history_mask="off").masks_history
    with pytest.raises(ValueError, match="history_mask"):
        replace(data, history_mask="sometimes")


def test_neg_inf_and_nan_scores_are_never_recommended() -> None:
    rows = [(0, 3, TR), (0, 1, TE)]
    data = make_data(1, 5, rows)
    table = np.array([[np.nan, 1.0, -np.inf, 0.0, 2.0]], dtype=np.float32)
    res = evaluate(fixed_scores(table), data, ks=(5,), return_topk=True)
    assert res.topk is not None
    assert list(res.topk[0]) == [4, 1, -1, -1, -1]
    assert res.metrics["mrr@5"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- coverage, tail


def test_coverage_and_tail_recall_by_hand() -> None:
    n_items = 10
    # Training popularity: item 0 x4, item 1 x3, everything else 0 or 1 -> head = {0, 1}
    # (top 20% of 10 items = 2 items), tail = items 2..9.
    rows = []
    for u in range(4):
        rows.append((u, 0, TR))
    for u in range(3):
        rows.append((u, 1, TR))
    rows += [(0, 2, TE), (1, 3, TE), (2, 1, TE), (3, 4, TE), (3, 5, TE)]
    rows = [r for r in rows if not (r[0] == 2 and r[1] == 1 and r[2] == TR)]  # item 1 x2
    data = make_data(4, n_items, rows)
    assert list(np.flatnonzero(~data.tail_items)) == [0, 1]
    table = np.stack(
        [
            ranking_scores(n_items, [2, 6]),  # tail hit at 1
            ranking_scores(n_items, [6, 7]),  # tail target 3 missed at K=2
            ranking_scores(n_items, [1, 6]),  # head hit
            ranking_scores(n_items, [4, 8]),  # one of two tail targets
        ]
    )
    res = evaluate(fixed_scores(table), data, ks=(2,), return_topk=True)
    assert res.topk is not None
    # Recommended at K=2: {2, 6} + {6, 7} + {1, 6} + {4, 8} = {1, 2, 4, 6, 7, 8}
    assert res.metrics["coverage@2"] == pytest.approx(6 / 10)
    # Tail targets: 2, 3, 4, 5 (item 1 is head); tail hits: 2 and 4.
    assert res.metrics["tail_recall@2"] == pytest.approx(2 / 4)
    assert res.metrics["recall@2"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)


def test_tail_recall_is_nan_without_tail_targets() -> None:
    rows = [(0, 0, TR), (1, 0, TR), (0, 1, TR), (0, 0, TE), (1, 0, TE)]
    data = make_data(2, 5, rows)  # head = the top ceil(20% of 5) = 1 item: item 0
    assert list(np.flatnonzero(~data.tail_items)) == [0]
    table = np.stack([ranking_scores(5, [0]), ranking_scores(5, [0])])
    m = evaluate(fixed_scores(table), data, ks=(1,), exclude_history=False).metrics
    assert math.isnan(m["tail_recall@1"])
    assert m["hr@1"] == 1.0


# --------------------------------------------------------------------------- slices


def test_slices_by_activity() -> None:
    n_items = 60
    # Training activity per user: 2, 5 (cold), 6, 7, 8, 9, 10, 11, 12 (warm), 40 (heavy).
    activity = [2, 5, 6, 7, 8, 9, 10, 11, 12, 40]
    rows = []
    for u, a in enumerate(activity):
        rows += [(u, 10 + i, TR) for i in range(a)]
        rows.append((u, u, TE))
    data = make_data(len(activity), n_items, rows)
    # The first 4 users and the heavy user hit at rank 1; the rest miss (item 59 first).
    table = np.stack(
        [
            ranking_scores(n_items, [u] if u in (0, 1, 2, 3, 9) else [59])
            for u in range(len(activity))
        ]
    )
    res = evaluate(fixed_scores(table), data, ks=(1,))
    # 90th percentile of [2, 5, ..., 12, 40] = 12 + 0.1 * 28 = 14.8 -> only the 40 is heavy.
    assert res.slices["cold"]["users"] == 2
    assert res.slices["warm"]["users"] == 7
    assert res.slices["heavy"]["users"] == 1
    assert res.slices["cold"]["hr@1"] == 1.0
    assert res.slices["warm"]["hr@1"] == pytest.approx(2 / 7)
    assert res.slices["warm"]["precision@1"] == pytest.approx(2 / 7)
    assert res.slices["heavy"]["ndcg@1"] == 1.0
    assert res.metrics["hr@1"] == pytest.approx(5 / 10)
    assert res.n_users == 10


def test_empty_slice_is_nan_with_zero_users() -> None:
    rows = [(0, 0, TR), (0, 1, TE), (1, 0, TR), (1, 2, TE)]
    data = make_data(2, 5, rows)
    table = np.stack([ranking_scores(5, [1]), ranking_scores(5, [3])])
    res = evaluate(fixed_scores(table), data, ks=(1,))
    assert res.slices["cold"]["users"] == 2
    assert res.slices["cold"]["hr@1"] == pytest.approx(0.5)
    assert res.slices["heavy"]["users"] == 0
    assert math.isnan(res.slices["heavy"]["ndcg@1"])
    assert res.slices["warm"]["users"] == 0


# --------------------------------------------------------------------------- brute force


def random_data(rng: np.random.Generator, n_users: int, n_items: int) -> InteractionData:
    rows = []
    for u in range(n_users):
        # Some users get many training items (heavy), some almost none (cold), a few
        # nothing held out; multiple test items per user, like a random 80/10/10 split.
        n_train = int(rng.choice([1, 3, 8, 15, n_items - 2]))
        items = rng.permutation(n_items)
        for i in items[:n_train]:
            rows.append((u, int(i), TR))
        if rng.random() < 0.3:
            rows.append((u, int(items[n_train]), VA))
        n_test = int(rng.integers(0, 5))
        # Test items sometimes repeat a training item (repeat purchase).
        for i in rng.choice(n_items, size=n_test, replace=False):
            rows.append((u, int(i), TE))
    return make_data(n_users, n_items, rows)


def _list_metrics(ranked: list[int], targets: set, skip: set, k: int) -> dict[str, float]:
    """One user's metrics at K: ``skip`` items are removed from the list first."""
    kept = [i for i in ranked if i not in skip][:k]
    rel = [1 if i in targets else 0 for i in kept]
    dcg = sum(r / math.log2(p + 2) for p, r in enumerate(rel))
    idcg = sum(1 / math.log2(p + 2) for p in range(min(len(targets), k)))
    first = next((p for p, r in enumerate(rel) if r), None)
    return {
        f"ndcg@{k}": dcg / idcg,
        f"recall@{k}": sum(rel) / len(targets),
        f"hr@{k}": 1.0 if sum(rel) else 0.0,
        f"mrr@{k}": 0.0 if first is None else 1 / (first + 1),
        f"precision@{k}": sum(rel) / k,
    }


def reference(
    table: np.ndarray, data: InteractionData, stage: str, ks: tuple[int, ...], exclude: bool
) -> dict:
    """Pure-Python repeat-aware evaluation: loop over users, sort lists.

    With ``exclude`` the user's history is masked and targets already in it are left out of
    the scored set (counted apart); the ``new``/``repeat`` slices score each kind of target
    with the other kind's items removed from the list.
    """
    targets_m = data.target_matrix(stage)
    history_m = data.history_matrix(stage)
    tail = data.tail_items
    per_user = {f"{n}@{k}": [] for k in ks for n in ("ndcg", "recall", "hr", "mrr", "precision")}
    kinds = {kind: {key: [] for key in per_user} for kind in ("new", "repeat")}
    kind_counts = {"new": [0, 0], "repeat": [0, 0]}  # users, targets
    recommended = {k: set() for k in ks}
    tail_hits = dict.fromkeys(ks, 0)
    tail_total = 0
    tops = []
    users = []
    n_repeats = 0
    for u in range(data.n_users):
        all_targets = set(targets_m[u].indices.tolist())
        history = set(history_m[u].indices.tolist())
        repeats, new = all_targets & history, all_targets - history
        n_repeats += len(repeats)
        scored = new if exclude else all_targets
        if not scored:
            continue
        users.append(u)
        masked = history if exclude else set()
        eligible = [i for i in range(data.n_items) if i not in masked]
        ranked = sorted(eligible, key=lambda i: -table[u, i])
        tops.append(ranked)
        tail_total += sum(1 for t in scored if tail[t])
        for k in ks:
            top = ranked[:k]
            recommended[k].update(top)
            for key, value in _list_metrics(ranked, scored, set(), k).items():
                per_user[key].append(value)
            tail_hits[k] += sum(1 for i in top if i in scored and tail[i])
        for kind, targets, other in (("new", new, repeats), ("repeat", repeats, new)):
            if not targets:
                continue
            kind_counts[kind][0] += 1
            kind_counts[kind][1] += len(targets)
            for k in ks:
                values = (
                    dict.fromkeys(_list_metrics(ranked, targets, other, k), float("nan"))
                    if exclude and kind == "repeat"
                    else _list_metrics(ranked, targets, other, k)
                )
                for key, value in values.items():
                    kinds[kind][key].append(value)
    mean = lambda vals: float(np.mean(vals)) if vals else float("nan")  # noqa: E731
    out = {key: mean(vals) for key, vals in per_user.items()}
    for k in ks:
        out[f"coverage@{k}"] = len(recommended[k]) / data.n_items
        out[f"tail_recall@{k}"] = tail_hits[k] / tail_total if tail_total else float("nan")
    out["repeat_targets"] = float(n_repeats)
    out["repeat_targets_masked"] = float(n_repeats) if exclude else 0.0
    out["history_masked"] = float(exclude)
    activity = data.user_activity[users]
    threshold = np.percentile(activity, 90) if users else 0
    slice_of = [
        "cold" if a <= 5 else ("heavy" if a >= threshold else "warm") for a in activity.tolist()
    ]
    slices = {}
    for name in ("cold", "warm", "heavy"):
        idx = [j for j, s in enumerate(slice_of) if s == name]
        slices[name] = {"users": len(idx)}
        for key, vals in per_user.items():
            slices[name][key] = mean([vals[j] for j in idx])
    for kind, values in kinds.items():
        slices[kind] = {"users": kind_counts[kind][0], "targets": kind_counts[kind][1]}
        for key, vals in values.items():
            slices[kind][key] = mean(vals)
    return {"metrics": out, "slices": slices, "users": users, "tops": tops}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("stage", ["test", "valid"])
def test_matches_brute_force_reference(seed: int, stage: str) -> None:
    rng = np.random.default_rng(seed)
    data = random_data(rng, n_users=40, n_items=25)
    table = rng.standard_normal((data.n_users, data.n_items))  # continuous: no ties
    exclude = seed != 4
    ks = (1, 5, 10, 30)  # 30 > n_items exercises padding
    res = evaluate(
        fixed_scores(table),
        data,
        stage,
        ks=ks,
        exclude_history=exclude,
        batch_size=7,
        return_topk=True,
    )
    ref = reference(table, data, stage, ks, exclude)
    assert list(res.users) == ref["users"]
    assert res.n_users == len(ref["users"])
    assert set(res.metrics) == set(ref["metrics"])
    for key, value in ref["metrics"].items():
        if math.isnan(value):
            assert math.isnan(res.metrics[key]), key
        else:
            assert res.metrics[key] == pytest.approx(value, abs=1e-12), key
    for name, values in ref["slices"].items():
        for key, value in values.items():
            got = res.slices[name][key]
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got), (name, key)
            else:
                assert got == pytest.approx(value, abs=1e-12), (name, key)
    assert res.topk is not None
    for row, ranked in zip(res.topk, ref["tops"], strict=True):
        expected = ranked[:30] + [-1] * (30 - len(ranked[:30]))
        assert list(row) == expected


# --------------------------------------------------------------------------- API details


def test_subset_of_users_keeps_order_and_drops_users_without_targets() -> None:
    rows = [(u, 0, TR) for u in range(4)] + [(0, 1, TE), (2, 2, TE), (3, 3, TE)]
    data = make_data(4, 6, rows)
    # User 0's first choice (item 5) misses; user 3's (item 3) hits.
    table = np.stack([ranking_scores(6, [5 if u == 0 else u]) for u in range(4)])
    res = evaluate(fixed_scores(table), data, users=np.array([3, 1, 0]), ks=(1,), return_topk=True)
    assert list(res.users) == [3, 0]  # user 1 has no test item
    assert res.topk is not None and list(res.topk[:, 0]) == [3, 5]
    assert res.metrics["hr@1"] == pytest.approx(0.5)


def test_topk_items_masks_history_and_pads() -> None:
    rows = [(0, 0, TR), (0, 1, VA), (0, 2, TE), (1, 3, TR)]
    data = make_data(2, 5, rows)
    table = np.stack([ranking_scores(5, [0, 1, 2, 3, 4]), ranking_scores(5, [3, 4])])
    top = topk_items(fixed_scores(table), data, [1, 0], k=6)
    assert top.shape == (2, 6)
    assert list(top[0]) == [4, 0, 1, 2, -1, -1]
    assert list(top[1]) == [2, 3, 4, -1, -1, -1]
    assert list(topk_items(fixed_scores(table), data, [0], k=2, exclude_history=False)[0]) == [
        0,
        1,
    ]
    assert topk_items(fixed_scores(table), data, [], k=3).shape == (0, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64])
def test_score_dtypes_and_views(dtype: torch.dtype) -> None:
    rows = [(0, 0, TR), (0, 2, TE), (1, 1, TR), (1, 2, TE)]
    data = make_data(2, 5, rows)
    popularity = torch.tensor([50, 40, 30, 20, 10], dtype=dtype)

    def score_fn(users: np.ndarray) -> torch.Tensor:
        # An expanded view of one shared vector: masking must not write into it.
        return popularity.expand(len(users), -1)

    res = evaluate(score_fn, data, ks=(1, 2), return_topk=True)
    assert res.topk is not None
    assert list(res.topk[0, :2]) == [1, 2] and list(res.topk[1, :2]) == [0, 2]
    assert res.metrics["hr@1"] == 0.0
    assert res.metrics["mrr@2"] == pytest.approx(0.5)
    assert popularity.tolist() == [50, 40, 30, 20, 10]


def test_numpy_scores_are_accepted() -> None:
    rows = [(0, 0, TR), (0, 1, TE)]
    data = make_data(1, 3, rows)
    res = evaluate(lambda users: np.array([[0.0, 1.0, 0.5]]), data, ks=(1,))
    assert res.metrics["ndcg@1"] == 1.0


def test_to_rows() -> None:
    res = single_target_result(3)
    rows = res.to_rows()
    assert ("users", 0, 1.0) in rows
    assert ("ndcg", 10, pytest.approx(0.5)) in rows
    assert ("mrr", 20, pytest.approx(1 / 3)) in rows
    assert ("coverage", 10, pytest.approx(10 / 30)) in rows
    assert ("users[cold]", 0, 1.0) in rows
    assert ("ndcg[cold]", 10, pytest.approx(0.5)) in rows
    assert ("users[heavy]", 0, 0.0) in rows
    names = {name for name, _, _ in rows}
    assert {"ndcg", "recall", "hr", "mrr", "precision", "coverage", "tail_recall"} <= names
    assert all(isinstance(k, int) and isinstance(v, float) for _, k, v in rows)
    assert res.get("ndcg", 10) == pytest.approx(0.5)


def test_no_eval_users_gives_nan_metrics() -> None:
    data = make_data(2, 4, [(0, 0, TR), (1, 1, TR), (0, 2, VA)])
    res = evaluate(fixed_scores(np.zeros((2, 4))), data, "test", ks=(10,), return_topk=True)
    assert res.n_users == 0
    assert res.topk is not None and res.topk.shape == (0, 10)
    assert math.isnan(res.metrics["ndcg@10"])
    assert res.metrics["coverage@10"] == 0.0


def test_bad_inputs_raise_config_error() -> None:
    data, table = masking_data()
    with pytest.raises(ConfigError, match="shape"):
        evaluate(lambda users: torch.zeros(len(users), 3), data)
    with pytest.raises(ConfigError):
        evaluate(fixed_scores(table), data, ks=(0,))
    with pytest.raises(ConfigError):
        evaluate(fixed_scores(table), data, stage="train")
    with pytest.raises(ConfigError):
        evaluate(fixed_scores(table), data, stage="holdout")
    with pytest.raises(ConfigError):
        evaluate(fixed_scores(table), data, users=np.array([5]))
    with pytest.raises(ConfigError):
        topk_items(fixed_scores(table), data, [0], k=0)


# --------------------------------------------------------------------------- jaccard


def test_jaccard_by_hand() -> None:
    a = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8], [1, 2, -1, -1], [-1, -1, -1, -1]])
    b = np.array([[4, 3, 2, 1], [3, 4, 5, 6], [1, 2, 3, 4], [2, 9, -1, -1], [-1, -1, -1, -1]])
    got = jaccard_at_k(a, b)
    assert got[:4] == pytest.approx([1.0, 2 / 6, 0.0, 1 / 3])
    assert math.isnan(got[4])


def test_jaccard_shape_mismatch_raises() -> None:
    with pytest.raises(ConfigError):
        jaccard_at_k(np.zeros((2, 3), dtype=int), np.zeros((3, 3), dtype=int))
