"""Big catalogs: sampled softmax (logQ), chunked cross-entropy, distillation on candidates,
bounded evaluation batches, and a million-item training + distillation step under 4 GB."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.distill import DistillConfig, distillation_loss
from core.errors import ConfigError
from core.metrics import SCORE_BUDGET_BYTES, eval_batch_size
from core.models import ModelConfig, build_model
from core.models.softmax import (
    NegativeSampler,
    SoftmaxLoss,
    chunk_items,
    chunked_softmax_ce,
    sampled_softmax_ce,
)
from core.teacher_cache import TeacherCache, candidate_rows, distill_mask, drawn_in
from core.train import TrainConfig, train_model
from tests.factories import sequences_dataset

ROOT = Path(__file__).resolve().parents[1]
FOUR_GB = 4 * 2**30


def _problem(n: int = 9, c: int = 13, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    table = torch.randn(c, d, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, c, (n,), generator=gen)
    return states, table, targets


# ----------------------------------------------------------------- the task losses, exactly


def test_sampled_softmax_over_every_item_with_uniform_q_is_the_full_cross_entropy():
    states, table, targets = _problem()
    c = table.shape[0]
    # Uniform q and M = C draws: the logQ correction log(M q_j) is log(C / C) = 0 for every
    # item, so with each item drawn once (and the positive's own draw dropped as an
    # accidental hit) the estimate of the partition is the partition itself.
    uniform = NegativeSampler(np.zeros(c), c, proposal="uniform")
    log_expected = uniform.log_q + np.log(c)
    assert torch.allclose(log_expected, torch.zeros(c, dtype=torch.float64), atol=1e-12)
    z = states @ table.T
    positive = z.gather(1, targets[:, None]).squeeze(1)
    sampled = sampled_softmax_ce(positive, z, targets, torch.arange(c), log_expected)
    full = F.cross_entropy(states @ table.T, targets)
    assert sampled.item() == pytest.approx(full.item(), rel=1e-12)
    grads_sampled = torch.autograd.grad(sampled, (states, table))
    grads_full = torch.autograd.grad(full, (states, table))
    for a, b in zip(grads_sampled, grads_full, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 4, 5, 13, 100])
def test_chunked_cross_entropy_equals_the_full_one(chunk: int):
    states, table, targets = _problem()
    states32, table32 = (
        states.detach().float().requires_grad_(),
        table.detach().float().requires_grad_(),
    )
    chunked = chunked_softmax_ce(states32, table32, targets, chunk=chunk)
    full = F.cross_entropy(states32 @ table32.T, targets)
    assert abs(chunked.item() - full.item()) < 1e-5
    grads_chunked = torch.autograd.grad(chunked, (states32, table32))
    grads_full = torch.autograd.grad(full, (states32, table32))
    for a, b in zip(grads_chunked, grads_full, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_chunks_follow_the_memory_bound():
    # 1,000 rows of a million-item catalog: 16,777 items a chunk = 64 MB of logits.
    chunk = chunk_items(1000, 1_000_000)
    assert 1000 * chunk * 4 <= 64 * 2**20 and chunk > 1000
    assert chunk_items(10, 50) == 50 and chunk_items(10**9, 50) == 1


def test_accidental_hits_of_the_positive_are_masked():
    states, table, targets = _problem(n=2, c=5)
    targets = torch.tensor([3, 1])
    negatives = torch.tensor([3, 0, 3, 2])  # row 0's positive drawn twice, row 1's never
    log_expected = torch.tensor([0.5, -0.2, 0.5, 0.1], dtype=torch.float64)
    scores = states @ table.T
    got = sampled_softmax_ce(
        scores.gather(1, targets[:, None]).squeeze(1),
        scores[:, negatives],
        targets,
        negatives,
        log_expected,
    )
    z = scores.detach()
    by_hand = []
    for row, pos in enumerate(targets.tolist()):
        kept = [
            z[row, j] - w
            for j, w in zip(negatives.tolist(), log_expected.tolist(), strict=True)
            if j != pos
        ]
        by_hand.append(-z[row, pos] + torch.logsumexp(torch.stack([z[row, pos], *kept]), 0))
    assert got.item() == pytest.approx(torch.stack(by_hand).mean().item(), rel=1e-12)


def test_logq_correction_makes_the_partition_estimate_unbiased():
    # E[sum_s exp(z_js) / (M q_js)] = sum_j exp(z_j) for draws from a skewed proposal; the
    # uncorrected sum (or a correction of the wrong sign) misses by a wide margin.
    popularity = np.array([50, 20, 5, 1, 0, 0, 2, 9], dtype=np.int64)
    z = torch.tensor([0.3, -1.0, 2.0, 0.5, 1.5, -0.5, 0.0, 1.0], dtype=torch.float64)
    sampler = NegativeSampler(popularity, 64, "popularity", torch.Generator().manual_seed(0))
    estimates, plain = [], []
    for _ in range(400):
        items, log_expected = sampler.draw()
        estimates.append(torch.exp(z[items] - log_expected.double()).sum())
        plain.append(torch.exp(z[items]).sum() / 64 * len(z))
    truth = z.exp().sum().item()
    assert torch.stack(estimates).mean().item() == pytest.approx(truth, rel=0.02)
    assert abs(torch.stack(plain).mean().item() - truth) / truth > 0.1


def test_sampler_follows_its_proposal_and_its_seed():
    popularity = np.array([0, 3, 80, 15], dtype=np.int64)
    draws = NegativeSampler(popularity, 40_000, "popularity", torch.Generator().manual_seed(1))
    items, log_expected = draws.draw()
    q = (popularity + 1.0) ** 0.75
    q /= q.sum()
    freq = np.bincount(items.numpy(), minlength=4) / len(items)
    assert np.allclose(freq, q, atol=0.01)
    assert torch.allclose(log_expected.double(), torch.log(torch.from_numpy(40_000 * q))[items])
    again = NegativeSampler(popularity, 40_000, "popularity", torch.Generator().manual_seed(1))
    assert torch.equal(again.draw()[0], items)
    uniform = NegativeSampler(popularity, 40_000, "uniform", torch.Generator().manual_seed(1))
    assert np.allclose(
        np.bincount(uniform.draw()[0].numpy(), minlength=4) / 40_000, 0.25, atol=0.01
    )
    with pytest.raises(ValueError, match="Sampled softmax needs"):
        SoftmaxLoss("sampled")


def test_drawn_in_marks_every_copy_by_hand():
    items = torch.tensor([7, 2, 7, 5, 9])
    query = torch.tensor([[7, -1, 4], [5, 9, 2], [-1, -1, -1]])
    assert drawn_in(items, query).tolist() == [
        [True, False, True, False, False],
        [False, True, False, True, True],
        [False, False, False, False, False],
    ]


# ------------------------------------------------------------ distillation on candidates


def _seq_data(n_items: int = 40, seed: int = 0, history_mask: str = "on"):
    rng = np.random.default_rng(seed)
    seqs = [list(rng.integers(0, n_items, size=int(rng.integers(4, 12)))) for _ in range(24)]
    return replace(sequences_dataset(seqs, n_items), history_mask=history_mask)


def _sasrec(data, dim: int, seed: int):
    torch.manual_seed(seed)
    config = ModelConfig(family="sasrec", dim=dim, layers=1, heads=2, max_len=6, dropout=0.0)
    return build_model(config, data.n_users, data.n_items).eval()


@pytest.mark.parametrize("history_mask", ["on", "off"])
def test_candidates_covering_the_catalog_reproduce_the_full_terms(history_mask: str):
    """With every item drawn once (log(M q) = 0), the candidates' partition and ranks are
    the catalog's: soft and ranking terms equal those on full-catalog scores."""
    data = _seq_data(history_mask=history_mask)
    student, teacher = _sasrec(data, 8, seed=1), _sasrec(data, 16, seed=2)
    n = data.n_items
    for method, dynamic in [("soft", False), ("ranking", True), ("ranking", False)]:
        distill = DistillConfig(method=method, top_k=4, dynamic=dynamic, temperature=2.0)
        cache = TeacherCache(teacher, student, data, distill, full_scores=False)
        assert cache.mode == "topk" and "sampled candidates" in cache.note
        batch = next(student.task_batches(data, 8, 1, np.random.default_rng(0)))
        full_step = student.training_step(batch)
        mask = distill_mask(data, batch, full_step, n)
        _, want = distillation_loss(
            full_step.task_loss,
            full_step.rows,
            cache.targets(batch, full_step, mask),
            distill,
            mask=mask,
        )
        every = SoftmaxLoss("sampled", torch.arange(n), torch.zeros(n))
        big = replace(batch, softmax=every)
        step = student.training_step(big)
        assert step.rows is None and step.sampled_scores.shape == (len(step.states), n)
        scores, cmask, targets, candidates = candidate_rows(
            student, big, step, cache.targets(big, step, None), data.masks_history
        )
        assert scores.shape == (len(step.states), cache.k + 1 + n)
        _, got = distillation_loss(
            step.task_loss, scores, targets, distill, mask=cmask, candidates=candidates
        )
        name = "soft" if method == "soft" else "ranking"
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-7), (method, dynamic)
        assert got["task"] == pytest.approx(want["task"], rel=1e-6)


def test_candidate_mask_drops_duplicates_and_prefix_items():
    data = _seq_data(n_items=30, history_mask="on")
    student, teacher = _sasrec(data, 8, seed=3), _sasrec(data, 16, seed=4)
    distill = DistillConfig(method="hard", top_k=3)
    cache = TeacherCache(teacher, student, data, distill, full_scores=False)
    batch = next(student.task_batches(data, 6, 1, np.random.default_rng(1)))
    negatives = torch.tensor([0, 5, 5, 11, 29, 17, 3])
    big = replace(batch, softmax=SoftmaxLoss("sampled", negatives, torch.zeros(7)))
    step = student.training_step(big)
    teacher_targets = cache.targets(big, step, None)
    _, mask, _, candidates = candidate_rows(student, big, step, teacher_targets, True)
    prefixes = distill_mask(data, big, step, data.n_items)  # [N, n_items] prefix items
    k = teacher_targets.topk.shape[1]
    for row in range(len(step.states)):
        teacher_items = set(teacher_targets.topk[row].tolist())
        positive = int(step.targets[row])
        excluded = teacher_items | {positive} | set(prefixes[row].nonzero().flatten().tolist())
        assert [bool(v) for v in mask[row, k + 1 :]] == [int(j) in excluded for j in negatives]
        in_prefix = bool(prefixes[row, positive])
        assert bool(mask[row, k]) == (positive in teacher_items or in_prefix)
        assert not mask[row, :k].any()
    assert candidates.negatives[0].tolist() == list(range(k + 1, k + 8))


@pytest.mark.parametrize("loss", ["sampled", "chunked"])
def test_every_method_trains_on_a_big_catalog_path(loss: str):
    data = _seq_data(n_items=200, seed=5)
    config = TrainConfig(
        epochs=1, batch_size=8, lr=0.01, patience=1, loss=loss, softmax_negatives=32
    )
    teacher = _sasrec(data, 16, seed=0)
    result = train_model(teacher, data, config)
    assert any("Task loss" in note for note in result.notes)
    for method in ["soft", "hard", "combined", "ranking", "listwise"]:
        student = _sasrec(data, 8, seed=1)
        distill = DistillConfig(method=method, top_k=3, n_sampled=5, dynamic=True)
        result = train_model(student, data, config, teacher=teacher, distill=distill)
        report = result.history[-1]
        assert np.isfinite(report.loss) and set(report.terms) > {"task"}, method
        assert any("sampled candidates" in note for note in result.notes)


def test_full_is_the_default_and_other_families_keep_their_loss():
    assert TrainConfig().loss == "full"
    data = _seq_data(n_items=30, seed=6)
    mf = build_model(ModelConfig(family="mf", dim=4), data.n_users, data.n_items)
    result = train_model(mf, data, TrainConfig(epochs=1, batch_size=16, loss="sampled"))
    assert any("own loss" in note for note in result.notes)


@pytest.mark.parametrize(
    ("change", "knob"),
    [
        ({"loss": "approximate"}, "loss must be one of full, sampled, chunked"),
        ({"softmax_negatives": 0}, "softmax_negatives must be an integer from 1 to 65,536"),
        ({"softmax_negatives": 10**6}, "softmax_negatives must be an integer from 1"),
        ({"softmax_negatives": 3.5}, "softmax_negatives must be an integer"),
        ({"softmax_proposal": "zipf"}, "softmax_proposal must be popularity or uniform"),
    ],
)
def test_bad_loss_knobs_get_one_sentence(change: dict, knob: str):
    with pytest.raises(ConfigError, match=knob):
        TrainConfig(**change).validate()


# ---------------------------------------------------------------------------- evaluation


def test_eval_batches_stay_within_the_score_budget():
    assert eval_batch_size(512, 3000) == 512  # small catalogs: unchanged
    users = eval_batch_size(512, 1_000_000)
    assert 1 <= users < 512 and users * 1_000_000 * 4 <= SCORE_BUDGET_BYTES
    assert eval_batch_size(512, 10**10) == 1


def test_bounded_eval_batches_give_the_same_metrics(monkeypatch: pytest.MonkeyPatch):
    import core.metrics as metrics

    data = _seq_data(n_items=50, seed=7)
    model = _sasrec(data, 8, seed=0)
    seen: list[int] = []

    def score(users):
        seen.append(len(users))
        return model.score_users(data, users, "test")

    whole = metrics.evaluate(score, data, "test", ks=(5, 10))
    assert max(seen) == whole.n_users
    seen.clear()
    monkeypatch.setattr(metrics, "SCORE_BUDGET_BYTES", 4 * data.n_items * 3)  # 3 users
    small = metrics.evaluate(score, data, "test", ks=(5, 10))
    assert max(seen) == 3 and sum(seen) == whole.n_users
    assert small.metrics == pytest.approx(whole.metrics, nan_ok=True)


# ---------------------------------------------------------------- a million items, measured

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from tests.test_big_catalog import million_item_step
    print(json.dumps(million_item_step()))
    """
)


def million_item_dataset(n_users: int = 64, n_items: int = 1_000_000) -> InteractionData:
    """Five events per user over a million-item catalog, built without per-item Python objects."""
    rng = np.random.default_rng(0)
    per_user = 5
    users = np.repeat(np.arange(n_users, dtype=np.int64), per_user)
    items = (n_items * rng.random(len(users)) ** 3).astype(np.int64)  # a long-tailed catalog
    position = np.tile(np.arange(per_user), n_users)
    split = np.where(
        position == per_user - 1,
        SPLIT_TEST,
        np.where(position == per_user - 2, SPLIT_VALID, SPLIT_TRAIN),
    ).astype(np.int8)
    item_ids = np.arange(n_items).astype("U7")
    return InteractionData(
        name="million",
        user_ids=np.arange(n_users).astype("U4"),
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=1_700_000_000 + 60 * position.astype(np.int64),
        weights=np.ones(len(users), dtype=np.float32),
        split=split,
        has_timestamps=True,
        titles=item_ids,
        categories=np.full(n_items, "", dtype="U1"),
        prices=np.full(n_items, np.nan),
        content_hash="million",
    )


def million_item_step() -> dict:
    """Run in a fresh process: the recipe's teacher step, a distillation step, an eval batch."""
    import resource

    from core.metrics import evaluate
    from core.recipe import recipe_for
    from core.train import Objective

    data = million_item_dataset()
    plan = recipe_for(data)
    out: dict = {"loss_mode": plan.teacher_train.loss, "reasons": list(plan.reasons)}
    torch.manual_seed(0)

    def one_step(model, config, **kwargs):
        objective = Objective(model, data, config, **kwargs)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        batch = next(
            model.task_batches(data, config.batch_size, config.negatives, np.random.default_rng(0))
        )
        model.train()
        loss, terms = objective(batch)
        loss.backward()
        grad = model.item_emb.weight.grad
        touched = int((grad.abs().sum(dim=1) > 0).sum())
        optimizer.step()
        return {
            "loss": float(loss.detach()),
            "terms": terms,
            "rows_with_grad": touched,
            "grad_finite": bool(torch.isfinite(grad).all()),
            "notes": objective.notes,
        }

    teacher = build_model(plan.teacher, data.n_users, data.n_items)
    out["teacher"] = one_step(teacher, plan.teacher_train)
    teacher.zero_grad(set_to_none=True)
    student = build_model(plan.student, data.n_users, data.n_items)
    # "combined" (the recipe's soft term plus the hard one): both big-catalog terms at once.
    both = replace(plan.distill, method="combined")
    out["student"] = one_step(student, plan.student_train, teacher=teacher, distill=both)
    users = data.eval_users("test")[: eval_batch_size(512, data.n_items)]
    result = evaluate(lambda u: teacher.score_users(data, u, "test"), data, "test", users=users)
    out["eval_users"] = result.n_users
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def test_a_million_item_catalog_trains_distills_and_evaluates_in_4_gb():
    """One training step with the recipe's loss, one distilled step and one evaluation batch,
    in a fresh process whose peak resident memory (ru_maxrss) is read at the end."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["loss_mode"] == "sampled"
    assert any("1,000,000 items" in r and "sampled softmax" in r for r in out["reasons"])
    for role in ("teacher", "student"):
        step = out[role]
        assert np.isfinite(step["loss"]) and step["grad_finite"], role
        # The gradient reaches the positives' and the sampled negatives' rows of the table.
        assert step["rows_with_grad"] > 500, role
    assert set(out["student"]["terms"]) >= {"task", "soft", "hard"}
    assert out["eval_users"] == eval_batch_size(512, 1_000_000)  # one bounded batch
    print(f"peak RSS {out['peak_rss_bytes'] / 2**30:.2f} GiB")
    assert out["peak_rss_bytes"] < FOUR_GB
