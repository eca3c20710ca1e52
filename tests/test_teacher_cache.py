"""The teacher's outputs computed once per run: exact prefixes, both cache forms, masks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from core.distill import DistillConfig, TeacherTargets, soft_target_kl, soft_target_kl_topk
from core.models import ModelConfig, build_model
from core.teacher_cache import (
    TeacherCache,
    distill_mask,
    forget_built,
    prefix_mask,
    teacher_prefix_scores,
)
from core.train import TrainConfig, train_model
from tests.factories import sequences_dataset


def _data(seed: int = 0, n_users: int = 24, n_items: int = 15):
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(0, n_items, size=int(rng.integers(3, 14)))) for _ in range(n_users)]
    return sequences_dataset(seqs, n_items)


def _sasrec(data, dim=8, max_len=6, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(family="sasrec", dim=dim, layers=1, heads=2, max_len=max_len, dropout=0.0)
    return build_model(config, data.n_users, data.n_items).eval()


def _batches(student, data):
    rng = np.random.default_rng(0)
    for batch in student.task_batches(data, 5, 1, rng):
        yield batch, student.training_step(batch)


def test_prefix_mask_by_hand() -> None:
    context = torch.tensor([[0, 3, 1, 3], [2, 4, 0, 0]])  # items + 1 (0 = padding)
    positions = torch.tensor([[False, True, True, True], [True, False, False, True]])
    mask = prefix_mask(context, positions, n_items=4)
    expected = [
        [False, False, True, False],  # prefix [3]       -> item 2
        [True, False, True, False],  # prefix [3, 1]     -> items 0, 2
        [True, False, True, False],  # prefix [3, 1, 3]  -> items 0, 2
        [False, True, False, False],  # prefix [2]       -> item 1
        [False, True, False, True],  # prefix [2, 4, 0, 0] -> items 1, 3
    ]
    assert mask.tolist() == expected


@pytest.mark.parametrize("teacher_len", [6, 10, 3])
def test_cache_holds_the_teacher_on_exactly_the_students_prefixes(teacher_len: int) -> None:
    data = replace(_data(), history_mask="off")
    student, teacher = _sasrec(data, max_len=6, seed=1), _sasrec(data, dim=16, max_len=teacher_len)
    cache = TeacherCache(teacher, student, data, DistillConfig(method="soft"))
    assert cache.mode == "full"
    for batch, step in _batches(student, data):
        got = cache.targets(batch, step, None).scores
        # Reference, row by row: the teacher alone on the student's window with everything
        # after the row's position replaced by junk (so only the prefix can matter), padded
        # on the left to the teacher's length; a teacher shorter than the window sees the
        # prefix's last max_len items, as when it is served.
        rows, cols = step.positions.nonzero(as_tuple=True)
        expected = []
        gen = torch.Generator().manual_seed(0)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            window = batch.context[r].clone()
            length = len(window)
            window[c + 1 :] = torch.randint(1, data.n_items + 1, (length - c - 1,), generator=gen)
            if teacher_len >= length:
                padded = torch.cat([torch.zeros(teacher_len - length, dtype=torch.long), window])
                expected.append(teacher.position_scores(padded[None])[0, c + teacher_len - length])
            else:
                prefix = [int(v) for v in window[: c + 1]][-teacher_len:]
                padded = torch.tensor([[0] * (teacher_len - len(prefix)) + prefix])
                expected.append(teacher(padded)[0])
        assert torch.allclose(got, torch.stack(expected), atol=1e-5)


def test_teacher_prefix_scores_short_teacher_matches_windows() -> None:
    data = _data(1)
    teacher = _sasrec(data, max_len=3)
    context = torch.tensor([[0, 2, 5, 7, 1, 9]])
    positions = torch.tensor([[False, True, True, True, True, True]])
    got = teacher_prefix_scores(teacher, context, positions)
    want = teacher(torch.tensor([[0, 0, 2], [0, 2, 5], [2, 5, 7], [5, 7, 1], [7, 1, 9]]))
    assert torch.allclose(got, want, atol=1e-6)


def test_topk_form_matches_full_form_when_k_covers_the_catalog() -> None:
    torch.manual_seed(0)
    z_s, z_t = torch.randn(6, 9), torch.randn(6, 9) * 2
    mask = torch.zeros(6, 9, dtype=torch.bool)
    mask[0, 3] = mask[2, :2] = True
    for temperature in (0.5, 1.0, 3.0):
        exact = soft_target_kl(z_s, z_t, temperature, mask=mask)
        full = TeacherTargets.from_scores(z_t, 9 - 2, temperature, mask=mask)
        # k = every unmasked item of the fullest row; other rows get a tiny 'rest' bin of 0.
        topk = TeacherTargets(full.topk, full.topk_scores, full.log_partition, temperature)
        coarse = soft_target_kl_topk(z_s, topk, mask=mask)
        assert coarse <= exact + 1e-6
        few = TeacherTargets.from_scores(z_t, 3, temperature, mask=mask)
        coarse3 = soft_target_kl_topk(
            z_s, TeacherTargets(few.topk, few.topk_scores, few.log_partition, temperature), mask
        )
        assert 0 <= coarse3 <= coarse + 1e-6  # fewer bins never measure more divergence
    # With no mask and K = C the two are the same number.
    t = TeacherTargets.from_scores(z_t, 9, 2.0)
    same = soft_target_kl_topk(z_s, TeacherTargets(t.topk, t.topk_scores, t.log_partition, 2.0))
    assert same == pytest.approx(float(soft_target_kl(z_s, z_t, 2.0)), abs=1e-5)


def test_topk_form_by_hand() -> None:
    # Two items kept of three; T = 1. Teacher p = softmax([2, 1, 0]); student q = softmax(0).
    z_t = torch.tensor([[2.0, 1.0, 0.0]])
    z_s = torch.zeros(1, 3, requires_grad=True)
    t = TeacherTargets.from_scores(z_t, 2, 1.0)
    p = torch.softmax(z_t, 1)[0]
    q = torch.full((3,), 1 / 3)
    by_hand = (
        p[0] * torch.log(p[0] / q[0])
        + p[1] * torch.log(p[1] / q[1])
        + p[2] * torch.log(p[2] / q[2])
    )
    value = soft_target_kl_topk(z_s, TeacherTargets(t.topk, t.topk_scores, t.log_partition, 1.0))
    assert float(value.detach()) == pytest.approx(float(by_hand), abs=1e-6)
    value.backward()
    assert z_s.grad is not None and torch.isfinite(z_s.grad).all()


def test_small_budget_takes_the_topk_form_and_says_so() -> None:
    data = _data(2)
    student, teacher = _sasrec(data, seed=1), _sasrec(data, dim=16)
    cache = TeacherCache(
        teacher, student, data, DistillConfig(method="combined", top_k=4), budget_bytes=64
    )
    assert cache.mode == "topk" and "budget" in cache.note and "top 15 items" in cache.note
    # A method that reads the teacher's top-K alone is not told about full scores it never needs.
    hard = TeacherCache(
        teacher, student, data, DistillConfig(method="hard", top_k=4), budget_bytes=64
    )
    assert hard.note.endswith("The hard term reads the teacher's top 4 items per row.")
    assert "budget" not in hard.note
    assert cache.topk.shape[1] == data.n_items  # min(catalog, SOFT_TOP_K)
    full = TeacherCache(teacher, student, data, DistillConfig(method="combined", top_k=4))
    for batch, step in _batches(student, data):
        mask = distill_mask(data, batch, step, data.n_items)
        a = full.targets(batch, step, mask)
        b = cache.targets(batch, step, mask)
        assert torch.equal(a.first(4), b.first(4))
        assert torch.allclose(a.log_partition, b.log_partition, atol=1e-5)


def test_mask_rule_follows_the_datasets_history_setting() -> None:
    data = _data(3)
    student = _sasrec(data)
    batch, step = next(_batches(student, data))
    assert distill_mask(replace(data, history_mask="off"), batch, step, data.n_items) is None
    on = distill_mask(replace(data, history_mask="on"), batch, step, data.n_items)
    assert on is not None
    assert torch.equal(on, prefix_mask(batch.context, step.positions, data.n_items))
    # The true next item is never masked unless it already sits in the prefix.
    targets = batch.targets[step.positions] - 1
    in_prefix = on.gather(1, targets[:, None]).squeeze(1)
    for row, (r, c) in enumerate(zip(*step.positions.nonzero(as_tuple=True), strict=True)):
        assert bool(in_prefix[row]) == bool((batch.context[r, : c + 1] == targets[row] + 1).any())


def test_distilled_training_never_runs_the_teacher_inside_an_epoch() -> None:
    data = _data(4, n_users=30)
    teacher, student = _sasrec(data, dim=16), _sasrec(data, seed=2)
    calls = {"n": 0}
    hidden = teacher.hidden

    def counted(seq, **kwargs):
        calls["n"] += 1
        return hidden(seq, **kwargs)

    teacher.hidden = counted  # every teacher pass (forward and position_scores) runs hidden
    calls_per_build = []
    for epochs in (1, 3):
        calls["n"] = 0
        forget_built()  # each run builds its own (a second one would reuse the first's)
        train_model(
            _sasrec(data, seed=2) if epochs == 3 else student,
            data,
            TrainConfig(epochs=epochs, min_epochs=epochs, batch_size=8, patience=5),
            teacher=teacher,
            distill=DistillConfig(method="combined", top_k=3),
        )
        calls_per_build.append(calls["n"])
    assert calls_per_build[0] == calls_per_build[1] > 0  # 3 epochs cost what 1 does


def test_small_chunks_build_the_same_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks are cut by training rows (a million-item catalog holds 16 rows at once); the
    cache must not depend on where the cuts fall."""
    import core.teacher_cache as teacher_cache

    data = replace(_data(5), history_mask="on")
    student, teacher = _sasrec(data, seed=1), _sasrec(data, dim=16)
    config = DistillConfig(method="ranking", top_k=3)
    whole = TeacherCache(teacher, student, data, config, budget_bytes=64)
    assert len(whole._chunks()) == 1
    monkeypatch.setattr(teacher_cache, "SCORE_CHUNK_BYTES", 4 * data.n_items * 7)  # 7 rows
    forget_built()  # build again, in small chunks, rather than reuse `whole`'s outputs
    cut = TeacherCache(teacher, student, data, config, budget_bytes=64)
    assert "computed once" in cut.note
    chunks = cut._chunks()
    # Every window exactly once, shortest first (a chunk's windows share their padding).
    assert len(chunks) > 1 and all(len(c) for c in chunks)
    order = np.concatenate(chunks)
    assert sorted(order.tolist()) == list(range(len(cut.inputs)))
    steps = (cut.inputs.shape[1] - cut.first_col).numpy()[order]
    assert (np.diff(steps) >= 0).all()
    assert torch.equal(cut.topk, whole.topk)
    assert torch.allclose(cut.log_partition, whole.log_partition)


def test_soft_items_stop_where_a_masked_row_runs_out() -> None:
    """A catalog hardly bigger than a history: the soft term keeps fewer extra items instead
    of failing; the asked top_k is never cut."""
    data = replace(_data(6, n_items=15), history_mask="on")
    student, teacher = _sasrec(data, seed=1), _sasrec(data, dim=16)
    cache = TeacherCache(
        teacher, student, data, DistillConfig(method="soft", top_k=2), full_scores=False
    )
    assert cache.mode == "topk" and 2 <= cache.k < data.n_items
    assert cache.k == data.n_items - cache._most_masked()


def test_a_later_student_reuses_the_outputs_only_while_they_would_be_the_same() -> None:
    """Students distilled in turn from one teacher share its outputs when their rows, K and
    temperature match; another K, temperature, window, dataset or teacher weights build
    them again, and reused outputs give the same targets as a fresh build."""
    forget_built()
    data = replace(_data(4), history_mask="on")
    teacher = _sasrec(data, dim=16)
    soft = DistillConfig(method="soft", top_k=3)

    def cache(config=soft, student=None, budget=64, of=teacher, on=data):
        student = student or _sasrec(on, seed=1)
        return TeacherCache(of, student, on, config, budget_bytes=budget)

    first = cache()
    assert "computed once" in first.note and first.mode == "topk"
    again = cache(replace(soft, method="combined", alpha=0.5))  # same K (soft's), same T
    assert "reused" in again.note and again.topk is first.topk
    assert "reused" in cache().note  # a fresh student model, the same windows
    student = _sasrec(data, seed=1)
    for batch, step in _batches(student, data):
        mask = distill_mask(data, batch, step, data.n_items)
        a, b = first.targets(batch, step, mask), again.targets(batch, step, mask)
        assert torch.equal(a.topk, b.topk) and torch.equal(a.log_partition, b.log_partition)

    rebuilt = {
        "another K": cache(DistillConfig(method="ranking", top_k=3)),
        "another temperature": cache(replace(soft, temperature=2.0)),
        "another window": cache(student=_sasrec(data, max_len=5, seed=1)),
        "the full form": cache(budget=2**30),
        "another dataset": cache(on=replace(data)),
    }
    for why, built in rebuilt.items():
        assert "computed once" in built.note, why
    # The last two builds are kept: the top-K forms of soft and of ranking, here.
    forget_built()
    ranking = DistillConfig(method="ranking", top_k=3)
    assert "computed once" in cache(ranking).note
    assert "computed once" in cache().note
    assert "reused" in cache(replace(ranking, method="listwise")).note
    assert "reused" in cache(replace(soft, method="combined")).note
    assert "computed once" in cache(replace(soft, temperature=3.0)).note  # a third form
    assert "computed once" in cache(ranking).note  # ranking's was the oldest build
    assert "reused" in cache(ranking).note
    with torch.no_grad():
        next(teacher.parameters()).add_(0.1)  # the teacher's weights change in place
    assert "computed once" in cache(ranking).note


def test_a_cache_bigger_than_the_keep_limit_is_not_held_after_its_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import core.teacher_cache as teacher_cache

    forget_built()
    data = _data(5)
    teacher = _sasrec(data, dim=16)
    config = DistillConfig(method="ranking", top_k=3)
    monkeypatch.setattr(teacher_cache, "KEEP_BUILT_BYTES", 16)
    for _ in range(2):
        built = TeacherCache(teacher, _sasrec(data, seed=1), data, config, budget_bytes=64)
        assert "computed once" in built.note
    assert teacher_cache._BUILT == []
