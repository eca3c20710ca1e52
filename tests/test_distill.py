"""Tests for core.distill: golden values worked out by hand, brute-force references, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.distill import (
    HARD_NEGATIVES,
    LOSSES,
    DistillConfig,
    distillation_loss,
    dynamic_rank_weights,
    hard_target_bce,
    listwise_plackett_luce,
    position_weights,
    ranking_distillation,
    sample_items,
    shared_sample,
    soft_target_kl,
    teacher_top_k,
)
from core.enums import Method
from core.errors import ConfigError


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def idx(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ----------------------------------------------------------------------------- soft targets


def test_soft_kl_by_hand_t1():
    # B=1, C=3. z_t = [ln4, ln2, 0] -> p_t = [4, 2, 1] / 7; z_s = 0 -> p_s = [1/3] * 3.
    # KL = sum p_t * ln(p_t / p_s) = 4/7 ln(12/7) + 2/7 ln(6/7) + 1/7 ln(3/7); T^2 = 1.
    expected = 4 / 7 * math.log(12 / 7) + 2 / 7 * math.log(6 / 7) + 1 / 7 * math.log(3 / 7)
    got = soft_target_kl(t([0.0, 0.0, 0.0]), t([math.log(4), math.log(2), 0.0]), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.1429, abs=1e-4)  # sanity of the arithmetic itself


def test_soft_kl_by_hand_t2_includes_t_squared():
    # T=2: z_t/T = [ln2, ln sqrt2, 0] -> p_t = [2, sqrt2, 1] / (3 + sqrt2); p_s uniform.
    # loss = T^2 * sum p_t ln(3 p_t) = 4 * KL.
    s2 = math.sqrt(2)
    z = 3 + s2
    p_t = [2 / z, s2 / z, 1 / z]
    kl = sum(p * math.log(3 * p) for p in p_t)
    got = soft_target_kl(t([0.0, 0.0, 0.0]), t([math.log(4), math.log(2), 0.0]), 2.0)
    assert got.item() == pytest.approx(4 * kl, rel=1e-12)


def test_soft_kl_non_uniform_student_by_hand():
    # z_s = [0, ln2, 0] -> p_s = [1, 2, 1] / 4; z_t = [ln4, ln2, 0] -> p_t = [4, 2, 1] / 7 (T=1).
    # KL = 4/7 ln((4/7)/(1/4)) + 2/7 ln((2/7)/(1/2)) + 1/7 ln((1/7)/(1/4)).
    expected = 4 / 7 * math.log(16 / 7) + 2 / 7 * math.log(4 / 7) + 1 / 7 * math.log(4 / 7)
    got = soft_target_kl(t([0.0, math.log(2), 0.0]), t([math.log(4), math.log(2), 0.0]), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_soft_kl_mask_removes_items_from_both_sides():
    # Mask item 2: p_t over [ln4, ln2] = [2/3, 1/3]; p_s over [0, 0] = [1/2, 1/2] (item 2's
    # student score 9 must not matter). KL = 2/3 ln(4/3) + 1/3 ln(2/3).
    expected = 2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3)
    mask = torch.tensor([[False, False, True]])
    got = soft_target_kl(t([0.0, 0.0, 9.0]), t([math.log(4), math.log(2), 0.0]), 1.0, mask=mask)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_soft_kl_fully_masked_row_adds_zero_with_finite_gradient():
    # Row 0 is entirely masked (a user who has every item): it contributes 0 to the sum,
    # and the batch mean still divides by B = 2. Row 1 is the T=1 hand case from above.
    z_s = t([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]).requires_grad_(True)
    z_t = t([3.0, 2.0, 1.0], [math.log(4), math.log(2), 0.0])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    expected = 4 / 7 * math.log(12 / 7) + 2 / 7 * math.log(6 / 7) + 1 / 7 * math.log(3 / 7)
    loss = soft_target_kl(z_s, z_t, 1.0, mask=mask)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-12)
    loss.backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad[0].abs().sum() == 0


def test_soft_kl_matches_torch_kl_div_on_random_batch():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 30, generator=g), 3 * torch.randn(4, 30, generator=g)
    for temperature in (1.0, 2.0, 5.0):
        reference = temperature**2 * F.kl_div(
            F.log_softmax(z_s / temperature, 1),
            F.softmax(z_t / temperature, 1),
            reduction="batchmean",
        )
        got = soft_target_kl(z_s, z_t, temperature)
        assert got.item() == pytest.approx(reference.item(), rel=1e-5)


def test_soft_kl_zero_when_equal_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 20, generator=g)
    assert soft_target_kl(z, z.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_target_kl(z, z + 5.0, 2.0).item() == pytest.approx(0.0, abs=1e-5)  # shift-free
    assert soft_target_kl(z, torch.randn(3, 20, generator=g), 2.0).item() > 1e-3


def test_soft_kl_reuses_the_task_log_partition_at_t1():
    # At T=1 without a mask the student's log-partition is the task loss's logsumexp: passing
    # it gives the same value and the same gradient as computing it again.
    g = torch.Generator().manual_seed(3)
    z_t = torch.randn(4, 9, generator=g, dtype=torch.float64)
    z_s = torch.randn(4, 9, generator=g, dtype=torch.float64)
    a, b = z_s.clone().requires_grad_(), z_s.clone().requires_grad_()
    plain = soft_target_kl(a, z_t, 1.0)
    shared = soft_target_kl(b, z_t, 1.0, log_partition=torch.logsumexp(b, 1))
    reference = F.kl_div(F.log_softmax(z_s, 1), F.softmax(z_t, 1), reduction="batchmean")
    assert plain.item() == pytest.approx(reference.item(), rel=1e-12)
    assert shared.item() == pytest.approx(reference.item(), rel=1e-12)
    plain.backward()
    shared.backward()
    torch.testing.assert_close(a.grad, b.grad)
    # At another temperature the given log-partition is not the right one and is not used.
    other = soft_target_kl(z_s, z_t, 2.0, log_partition=torch.zeros(4, dtype=torch.float64))
    assert other.item() == pytest.approx(soft_target_kl(z_s, z_t, 2.0).item(), rel=1e-12)


def test_soft_kl_topk_reuses_the_task_log_partition_at_t1():
    from core.distill import TeacherTargets, soft_target_kl_topk

    g = torch.Generator().manual_seed(4)
    z_t = torch.randn(3, 12, generator=g, dtype=torch.float64)
    z_s = torch.randn(3, 12, generator=g, dtype=torch.float64)
    full = TeacherTargets.from_scores(z_t, 4, 1.0)
    targets = TeacherTargets(full.topk, full.topk_scores, full.log_partition, 1.0)
    a, b = z_s.clone().requires_grad_(), z_s.clone().requires_grad_()
    plain = soft_target_kl_topk(a, targets)
    shared = soft_target_kl_topk(b, targets, log_partition=torch.logsumexp(b, 1))
    assert shared.item() == pytest.approx(plain.item(), rel=1e-12)
    plain.backward()
    shared.backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_soft_kl_rejects_a_log_partition_of_the_wrong_shape():
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="log-partition"):
        soft_target_kl(z, z, 1.0, log_partition=torch.zeros(3))


def _soft_grad_norm(z_s: torch.Tensor, z_t: torch.Tensor, temperature: float, scale: float):
    z = z_s.clone().requires_grad_(True)
    (soft_target_kl(z, z_t, temperature) * scale).backward()
    return z.grad.norm().item(), z.grad


def test_t_squared_keeps_gradient_scale_across_temperatures():
    g = torch.Generator().manual_seed(2)
    c = 50
    z_s = 0.5 * torch.randn(1, c, generator=g, dtype=torch.float64)
    z_t = 0.5 * torch.randn(1, c, generator=g, dtype=torch.float64)
    with_t2 = _soft_grad_norm(z_s, z_t, 2.0, 1.0)[0] / _soft_grad_norm(z_s, z_t, 8.0, 1.0)[0]
    # Without the T^2 factor (divide it back out) the gradient shrinks like 1/T^2: (8/2)^2 = 16.
    without = _soft_grad_norm(z_s, z_t, 2.0, 1 / 4)[0] / _soft_grad_norm(z_s, z_t, 8.0, 1 / 64)[0]
    assert 0.5 < with_t2 < 2.0
    assert 8.0 < without < 32.0
    # Documented limit: for large T the gradient tends to (centred(z_s) - centred(z_t)) / C.
    _, grad = _soft_grad_norm(z_s, z_t, 200.0, 1.0)
    diff = z_s - z_t
    limit = (diff - diff.mean()) / c
    assert torch.allclose(grad, limit, rtol=0.05, atol=1e-4)


# ----------------------------------------------------------------------------- hard targets


def test_hard_bce_full_catalog_by_hand():
    # z_s = [2, 0, -1], teacher top-1 = item 0.
    # positives: mean BCE(2, 1) = softplus(-2); negatives (items 1, 2): mean of
    # BCE(0, 0) = ln 2 and BCE(-1, 0) = softplus(-1). Sum of the two means.
    expected = softplus(-2) + (math.log(2) + softplus(-1)) / 2
    got = hard_target_bce(t([2.0, 0.0, -1.0]), idx([0]))
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_hard_bce_sampled_negatives_drop_positives_and_masked():
    z_s = t([2.0, 0.0, -1.0])
    # negatives [2, 0]: item 0 is a teacher positive -> dropped; negative mean = softplus(-1).
    got = hard_target_bce(z_s, idx([0]), negatives=idx([2, 0]))
    assert got.item() == pytest.approx(softplus(-2) + softplus(-1), rel=1e-12)
    # full catalog with item 1 masked: only item 2 is a negative.
    mask = torch.tensor([[False, True, False]])
    got = hard_target_bce(z_s, idx([0]), mask=mask)
    assert got.item() == pytest.approx(softplus(-2) + softplus(-1), rel=1e-12)


def test_hard_bce_batch_mean_and_brute_force():
    g = torch.Generator().manual_seed(3)
    z_s = torch.randn(3, 12, generator=g, dtype=torch.float64)
    topk = idx([0, 5, 7], [11, 2, 3], [4, 6, 1])
    per_row = []
    for b in range(3):
        labels = torch.zeros(12, dtype=torch.float64)
        labels[topk[b]] = 1
        bce = F.binary_cross_entropy_with_logits(z_s[b], labels, reduction="none")
        per_row.append(bce[labels == 1].mean() + bce[labels == 0].mean())
    expected = torch.stack(per_row).mean()
    assert hard_target_bce(z_s, topk).item() == pytest.approx(expected.item(), rel=1e-12)


def test_hard_term_in_training_uses_one_uniform_draw_that_estimates_the_full_mean():
    # A catalog bigger than HARD_NEGATIVES: distillation_loss draws that many items once for
    # the batch (shared_sample, the given generator) as the label-0 items.
    c, k = HARD_NEGATIVES + 44, 4
    g = torch.Generator().manual_seed(5)
    z_s = torch.randn(3, c, generator=g, dtype=torch.float64)
    z_t = torch.randn(3, c, generator=g, dtype=torch.float64)
    mask = torch.zeros(3, c, dtype=torch.bool)
    mask[1, :30] = True
    config = DistillConfig("hard", top_k=k)
    _, terms = distillation_loss(
        torch.tensor(0.0), z_s, z_t, config, mask=mask, generator=torch.Generator().manual_seed(8)
    )
    draw = shared_sample(3, HARD_NEGATIVES, c, torch.Generator().manual_seed(8))
    topk = teacher_top_k(z_t, k, mask=mask)
    expected = hard_target_bce(z_s, topk, negatives=draw, mask=mask).item()
    assert terms["hard"] == pytest.approx(expected, rel=1e-12)
    # Unbiased: the mean over many draws is the exact mean over every other unmasked item.
    exact = hard_target_bce(z_s, topk, mask=mask).item()
    draws = torch.Generator().manual_seed(0)
    estimates = torch.tensor(
        [
            hard_target_bce(z_s, topk, shared_sample(3, HARD_NEGATIVES, c, draws), mask).item()
            for _ in range(400)
        ]
    )
    assert estimates.std() > 0  # a sample, not the catalog
    assert estimates.mean().item() == pytest.approx(exact, abs=4 * estimates.std().item() / 20)
    # A catalog no bigger than HARD_NEGATIVES is covered exactly.
    small = z_s[:, :40], z_t[:, :40]
    _, terms = distillation_loss(torch.tensor(0.0), *small, config)
    assert terms["hard"] == pytest.approx(
        hard_target_bce(small[0], teacher_top_k(small[1], k)).item(), rel=1e-12
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_combined_reads_its_columns_once_with_the_same_value_and_gradient(temperature: float):
    # Top-K' teacher targets (no full scores): combined reads the kept items and the hard
    # term's negatives in one gather; value and gradient equal the two terms computed apart.
    from core.distill import TeacherTargets, soft_target_kl_topk

    c, k = HARD_NEGATIVES + 20, 3
    g = torch.Generator().manual_seed(2)
    z_t = torch.randn(4, c, generator=g, dtype=torch.float64)
    mask = torch.zeros(4, c, dtype=torch.bool)
    mask[2, :50] = True
    full = TeacherTargets.from_scores(z_t, 12, temperature, mask=mask)
    targets = TeacherTargets(full.topk, full.topk_scores, full.log_partition, temperature)
    config = DistillConfig("combined", top_k=k, temperature=temperature, alpha=0.4, beta=0.7)
    base = torch.randn(4, c, generator=g, dtype=torch.float64)
    z_once, z_apart = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    total, terms = distillation_loss(
        torch.tensor(0.0, dtype=torch.float64),
        z_once,
        targets,
        config,
        mask=mask,
        generator=torch.Generator().manual_seed(4),
    )
    total.backward()
    draw = shared_sample(4, HARD_NEGATIVES, c, torch.Generator().manual_seed(4))
    soft = soft_target_kl_topk(z_apart, targets, mask=mask)
    hard = hard_target_bce(z_apart, targets.topk[:, :k], negatives=draw, mask=mask)
    (0.4 * soft + 0.7 * hard).backward()
    assert terms["soft"] == pytest.approx(soft.item(), rel=1e-12)
    assert terms["hard"] == pytest.approx(hard.item(), rel=1e-12)
    assert torch.allclose(z_once.grad, z_apart.grad, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------- ranking distillation


def test_position_weights_by_hand():
    # lam = 1, K = 3: w ∝ [e^-1, e^-2, e^-3]; normalised by their sum.
    e = [math.exp(-1), math.exp(-2), math.exp(-3)]
    expected = [x / sum(e) for x in e]
    got = position_weights(3, 1.0).tolist()
    assert got == pytest.approx(expected, rel=1e-6)
    assert sum(got) == pytest.approx(1.0)


def test_ranking_static_by_hand():
    # z_s = [1, 0, 3], teacher top-2 = [0, 1], lam = 1:
    # w = [e^-1, e^-2] / (e^-1 + e^-2) = [1, e^-1] / (1 + e^-1)
    # loss = w1 * -log sigmoid(1) + w2 * -log sigmoid(0) = w1 * softplus(-1) + w2 * ln 2.
    w1 = 1 / (1 + math.exp(-1))
    w2 = math.exp(-1) / (1 + math.exp(-1))
    expected = w1 * softplus(-1) + w2 * math.log(2)
    got = ranking_distillation(t([1.0, 0.0, 3.0]), idx([0, 1]), lam=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_dynamic_weights_by_hand():
    # z_s = [0, 1, 2, 3, 4]; teacher top-2 = [2, 0].
    # item 2 (teacher rank 1): the student ranks it 3rd (items 3, 4 above) -> tanh(mu*(3-1)).
    # item 0 (teacher rank 2): the student ranks it 5th -> tanh(mu*(5-2)). mu = 0.5.
    z_s = t([0.0, 1.0, 2.0, 3.0, 4.0])
    d = dynamic_rank_weights(z_s, idx([2, 0]), mu=0.5)
    assert d[0].tolist() == pytest.approx([math.tanh(1.0), math.tanh(1.5)], rel=1e-12)
    # Masking item 4 moves both student ranks up by one: tanh(0.5*1), tanh(0.5*2).
    mask = torch.tensor([[False, False, False, False, True]])
    d = dynamic_rank_weights(z_s, idx([2, 0]), mu=0.5, mask=mask)
    assert d[0].tolist() == pytest.approx([math.tanh(0.5), math.tanh(1.0)], rel=1e-12)
    # An item the student ranks higher than the teacher does gets 0 (clipped), not negative.
    d = dynamic_rank_weights(z_s, idx([1, 4]), mu=0.5)  # item 4: student 1st, teacher 2nd
    assert d[0, 1].item() == 0.0


def test_ranking_dynamic_by_hand():
    # Same case as above, lam = 1: a = [e^-1, e^-2], d = [tanh 1, tanh 1.5],
    # w = a*d / sum(a*d); loss = w1 * softplus(-z[2]) + w2 * softplus(-z[0])
    #                          = w1 * softplus(-2) + w2 * ln 2.
    a = [math.exp(-1), math.exp(-2)]
    d = [math.tanh(1.0), math.tanh(1.5)]
    ad = [a[0] * d[0], a[1] * d[1]]
    w = [x / sum(ad) for x in ad]
    expected = w[0] * softplus(-2) + w[1] * math.log(2)
    z_s = t([0.0, 1.0, 2.0, 3.0, 4.0])
    got = ranking_distillation(z_s, idx([2, 0]), lam=1.0, weights="dynamic", mu=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_ranking_rejects_unknown_weighting():
    with pytest.raises(ConfigError, match="'static' or 'dynamic'"):
        ranking_distillation(t([1.0, 0.0]), idx([0]), lam=1.0, weights="linear")


def test_ranking_dynamic_is_zero_when_student_already_agrees():
    z_s = t([0.0, 1.0, 2.0, 3.0, 4.0]).requires_grad_(True)
    loss = ranking_distillation(z_s, idx([4, 3]), lam=1.0, weights="dynamic")
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(z_s.grad).all()


# --------------------------------------------------------------------------- listwise (RRD)


def test_plackett_luce_by_hand_k2_m1():
    # z_s = [2, 1, 0]; teacher order [0, 1]; sampled rest {2} (unordered, never ranked).
    # r=1: 2 - ln(e^2 + e^1 + e^0); r=2: 1 - ln(e^1 + e^0); loss = -(sum)/K with K = 2.
    r1 = 2 - math.log(math.exp(2) + math.exp(1) + 1)
    r2 = 1 - math.log(math.exp(1) + 1)
    got = listwise_plackett_luce(t([2.0, 1.0, 0.0]), idx([0, 1]), idx([2]))
    assert got.item() == pytest.approx(-(r1 + r2) / 2, rel=1e-12)


def test_plackett_luce_drops_sampled_items_in_topk_or_masked():
    # Sampled item 1 is a teacher top-K item: dropped, leaving plain PL over the two items:
    # r=1: 2 - ln(e^2 + e^1); r=2: 1 - ln(e^1) = 0.
    expected = -(2 - math.log(math.exp(2) + math.exp(1))) / 2
    z_s = t([2.0, 1.0, 0.0])
    assert listwise_plackett_luce(z_s, idx([0, 1]), idx([1])).item() == pytest.approx(expected)
    mask = torch.tensor([[False, False, True]])
    got = listwise_plackett_luce(z_s, idx([0, 1]), idx([2]), mask=mask)
    assert got.item() == pytest.approx(expected)
    empty = torch.zeros(1, 0, dtype=torch.long)
    assert listwise_plackett_luce(z_s, idx([0, 1]), empty).item() == pytest.approx(expected)


def test_plackett_luce_matches_brute_force_loop():
    g = torch.Generator().manual_seed(4)
    z_s = torch.randn(3, 15, generator=g, dtype=torch.float64)
    topk = idx([3, 1, 4, 0], [14, 13, 2, 7], [5, 6, 8, 9])
    sampled = idx([10, 11, 12, 2, 6], [0, 1, 3, 4, 5], [10, 11, 12, 13, 14])
    per_row = []
    for b in range(3):
        rest = [z_s[b, j] for j in sampled[b]]
        terms = []
        for r in range(4):
            pool = [z_s[b, i] for i in topk[b, r:]] + rest
            terms.append(z_s[b, topk[b, r]] - torch.logsumexp(torch.stack(pool), 0))
        per_row.append(-torch.stack(terms).mean())
    expected = torch.stack(per_row).mean()
    got = listwise_plackett_luce(z_s, topk, sampled)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_listwise_decreases_as_student_agrees_with_teacher_order():
    # C = 8; teacher order [0..3]; sampled {4..7}. The student scores the teacher's items
    # in the teacher's order, spread `gap` apart, and the rest far below.
    topk, sampled = idx([0, 1, 2, 3]), idx([4, 5, 6, 7])
    losses = []
    for gap in (0.0, 0.5, 1.0, 2.0, 5.0, 20.0):
        scores = [gap * (4 - r) for r in range(4)] + [-gap] * 4
        losses.append(listwise_plackett_luce(t(scores), topk, sampled).item())
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 1e-6
    reversed_order = listwise_plackett_luce(t([1.0, 2.0, 3.0, 4.0, 0, 0, 0, 0]), topk, sampled)
    aligned = listwise_plackett_luce(t([4.0, 3.0, 2.0, 1.0, 0, 0, 0, 0]), topk, sampled)
    assert aligned.item() < reversed_order.item()


# --------------------------------------------------------------------- teacher / sampling


def test_teacher_top_k_respects_mask_and_errors():
    z_t = t([5.0, 4.0, 3.0, 2.0, 1.0])
    assert teacher_top_k(z_t, 2).tolist() == [[0, 1]]
    mask = torch.tensor([[True, False, True, False, False]])
    assert teacher_top_k(z_t, 2, mask=mask).tolist() == [[1, 3]]
    with pytest.raises(ConfigError, match="larger than the 3 items"):
        teacher_top_k(z_t, 4, mask=mask)
    with pytest.raises(ConfigError, match="between 1 and"):
        teacher_top_k(z_t, 6)


def test_sample_items_excludes_distinct_and_reproducible():
    exclude = torch.zeros(4, 30, dtype=torch.bool)
    exclude[:, :10] = True
    exclude[2, 10:20] = True
    a = sample_items(4, 8, 30, generator=torch.Generator().manual_seed(5), exclude=exclude)
    b = sample_items(4, 8, 30, generator=torch.Generator().manual_seed(5), exclude=exclude)
    assert a.shape == (4, 8) and torch.equal(a, b)
    assert not exclude.gather(1, a).any()
    assert all(len(set(row)) == 8 for row in a.tolist())
    # Row 2 has only 10 items left: M is clamped so every row stays distinct and allowed.
    c = sample_items(4, 50, 30, generator=torch.Generator().manual_seed(5), exclude=exclude)
    assert c.shape == (4, 10)
    assert not exclude.gather(1, c).any()
    assert sample_items(2, 3, 5).shape == (2, 3)


# ----------------------------------------------------------------------------- combiner


def _inputs(seed: int = 6, b: int = 4, c: int = 40):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(b, c, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = (3 * torch.randn(b, c, generator=g, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(b, c, generator=g) < 0.2
    return z_s, z_t, mask


EXPECTED_TERMS = {
    "none": {"task", "total"},
    "soft": {"task", "soft", "total"},
    "hard": {"task", "hard", "total"},
    "combined": {"task", "soft", "hard", "total"},
    "ranking": {"task", "ranking", "total"},
    "listwise": {"task", "listwise", "total"},
}


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("dynamic", [False, True])
def test_gradients_reach_student_never_teacher(method: str, dynamic: bool):
    z_s, z_t, mask = _inputs()
    task = -F.log_softmax(z_s, 1)[:, 0].mean()  # any task loss that depends on z_s
    config = DistillConfig(method=method, top_k=5, n_sampled=10, dynamic=dynamic)
    total, terms = distillation_loss(
        task, z_s, z_t, config, mask=mask, generator=torch.Generator().manual_seed(0)
    )
    total.backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0
    assert torch.isfinite(z_s.grad).all()
    assert z_t.grad is None
    assert set(terms) == EXPECTED_TERMS[method]
    assert all(isinstance(v, float) for v in terms.values())
    assert terms["total"] == pytest.approx(total.item())


def test_each_function_detaches_teacher_inputs():
    z_s, z_t, mask = _inputs()
    topk = z_t.topk(3, dim=1).indices
    loss = (
        soft_target_kl(z_s, z_t, 2.0, mask=mask)
        + hard_target_bce(z_s, topk)
        + ranking_distillation(z_s, topk, 5.0, "dynamic")
        + listwise_plackett_luce(z_s, topk, idx(*[[0, 1]] * 4))
    )
    loss.backward()
    assert z_t.grad is None and z_s.grad is not None


def test_totals_equal_documented_weighted_sums():
    z_s, z_t, mask = _inputs()
    task = torch.tensor(0.7, dtype=torch.float64)
    a, b, T, K, lam, weight = 0.3, 0.8, 3.0, 5, 4.0, 2.5
    topk = teacher_top_k(z_t, K, mask=mask)
    soft = soft_target_kl(z_s, z_t, T, mask=mask).item()
    hard = hard_target_bce(z_s, topk, mask=mask).item()
    rank = ranking_distillation(z_s, topk, lam, "dynamic", mu=0.2, mask=mask).item()
    sampled = sample_items(4, 10, 40, generator=torch.Generator().manual_seed(9))
    listwise = listwise_plackett_luce(z_s, topk, sampled, mask=mask).item()
    common = dict(temperature=T, alpha=a, beta=b, top_k=K, lam=lam, weight=weight, mu=0.2)
    expected = {
        "none": 0.7,
        "soft": (1 - a) * 0.7 + a * soft,
        "hard": 0.7 + b * hard,
        "combined": 0.7 + a * soft + b * hard,
        "ranking": 0.7 + weight * rank,
        "listwise": 0.7 + weight * listwise,
    }
    for method, value in expected.items():
        config = DistillConfig(method=method, dynamic=True, **common)
        total, terms = distillation_loss(task, z_s, z_t, config, mask=mask, sampled=sampled)
        assert total.item() == pytest.approx(value, rel=1e-12), method
        assert terms["task"] == pytest.approx(0.7)
    _, terms = distillation_loss(task, z_s, z_t, DistillConfig("combined", **common), mask=mask)
    assert terms["soft"] == pytest.approx(soft) and terms["hard"] == pytest.approx(hard)


def test_mask_keeps_items_out_of_teacher_targets():
    # The teacher's favourite item 0 is the user's own item: masked, it must not be a positive.
    z_s = t([3.0, 0.0, -1.0, -2.0]).requires_grad_(True)
    z_t = t([9.0, 5.0, 1.0, 0.0])
    mask = torch.tensor([[True, False, False, False]])
    task = torch.tensor(0.0, dtype=torch.float64)
    _, terms = distillation_loss(task, z_s, z_t, DistillConfig("hard", top_k=1), mask=mask)
    # positive = item 1: softplus(-0) = ln 2; negatives = items 2, 3 (item 0 is neither).
    assert terms["hard"] == pytest.approx(math.log(2) + (softplus(-1) + softplus(-2)) / 2)
    total, _ = distillation_loss(task, z_s, z_t, DistillConfig("ranking", top_k=1), mask=mask)
    total.backward()
    assert z_s.grad[0, 0].item() == 0.0 and z_s.grad[0, 1].item() < 0.0


def test_listwise_draws_samples_outside_topk_and_mask():
    z_s, z_t, mask = _inputs(c=12)
    mask[:] = False
    mask[:, :4] = True  # items 0..3 masked; top-3 from 4..11; 5 left to sample from.
    config = DistillConfig("listwise", top_k=3, n_sampled=50)
    topk = teacher_top_k(z_t, 3, mask=mask)
    rest = torch.ones(4, 12, dtype=torch.bool)
    rest[:, :4] = False
    rest.scatter_(1, topk, False)
    sampled = rest.nonzero()[:, 1].reshape(4, 5)  # every allowed item: the clamped draw
    _, terms = distillation_loss(torch.tensor(0.0), z_s, z_t, config, mask=mask)
    expected = listwise_plackett_luce(z_s, topk, sampled).item()
    assert terms["listwise"] == pytest.approx(expected, rel=1e-12)


def test_listwise_shares_one_uniform_draw_per_batch_and_drops_each_rows_own_items():
    z_s, z_t, mask = _inputs(c=12)
    mask[:] = False
    mask[0, 5] = True
    config = DistillConfig("listwise", top_k=3, n_sampled=6)
    draw = shared_sample(4, 6, 12, generator=torch.Generator().manual_seed(3))
    assert draw.shape == (4, 6) and (draw == draw[0]).all()  # one draw, every row
    assert len(set(draw[0].tolist())) == 6  # without replacement
    assert torch.equal(draw, shared_sample(4, 6, 12, torch.Generator().manual_seed(3)))
    assert shared_sample(2, 50, 12).shape == (2, 12)  # never more than the catalog
    # The loss uses that draw; a row's top-K or masked item in it leaves that row's
    # denominators only (listwise_plackett_luce's own rule, checked by hand above).
    _, terms = distillation_loss(
        torch.tensor(0.0), z_s, z_t, config, mask=mask, generator=torch.Generator().manual_seed(3)
    )
    topk = teacher_top_k(z_t, 3, mask=mask)
    expected = listwise_plackett_luce(z_s, topk, draw, mask=mask).item()
    assert terms["listwise"] == pytest.approx(expected, rel=1e-12)


def test_losses_table_is_explicit_and_complete():
    assert tuple(LOSSES) == tuple(Method)
    for name, method in LOSSES.items():
        assert method.description and method.formula, name
        assert callable(method.terms) and callable(method.combine)
    assert not LOSSES["none"].needs_teacher
    total, terms = distillation_loss(
        torch.tensor(1.5), torch.zeros(2, 3), None, DistillConfig("none")
    )
    assert total.item() == 1.5 and terms == {"task": 1.5, "total": 1.5}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "magic"}, "Unknown distillation method"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"temperature": -1.0}, "temperature must be positive"),
        ({"temperature": float("nan")}, "temperature must be positive"),
        ({"temperature": "2"}, "temperature must be positive"),
        ({"alpha": 1.5}, "alpha must be in"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"beta": -1.0}, "beta must be zero or more"),
        ({"top_k": 0}, "top-K must be an integer of 1 or more"),
        ({"top_k": 2.5}, "top-K must be an integer"),
        ({"lam": 0.0}, "lambda must be positive"),
        ({"mu": 0.0}, "mu must be positive"),
        ({"weight": -2.0}, "weight must be zero or more"),
        ({"n_sampled": 0}, "sampled items must be an integer"),
        ({"dynamic": "yes"}, "'dynamic' must be true or false"),
    ],
)
def test_bad_configs_raise_config_error(kwargs: dict, message: str):
    config = DistillConfig(**{"method": "soft", **kwargs})
    with pytest.raises(ConfigError, match=message):
        config.validate()
    z = torch.zeros(1, 20)
    with pytest.raises(ConfigError):
        distillation_loss(torch.tensor(0.0), z, z, config)


def test_config_errors_at_call_time():
    z = torch.zeros(1, 5)
    with pytest.raises(ConfigError, match="needs the teacher"):
        distillation_loss(torch.tensor(0.0), z, None, DistillConfig("soft"))
    with pytest.raises(ConfigError, match="top-K"):
        distillation_loss(torch.tensor(0.0), z, z, DistillConfig("hard", top_k=10))
    assert DistillConfig("ranking").validate() == DistillConfig("ranking")


def test_soft_keeps_the_task_loss_by_default():
    config = DistillConfig(method="soft")
    assert 0 < config.alpha < 1
    z_s = torch.zeros(2, 4, requires_grad=True)
    z_t = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    task = torch.tensor(3.0)
    total, terms = distillation_loss(task, z_s, z_t, config)
    expected = (1 - config.alpha) * 3.0 + config.alpha * terms["soft"]
    assert float(total.detach()) == pytest.approx(expected)
    assert terms["task"] == 3.0 and float(total.detach()) > config.alpha * terms["soft"]


# ----------------------------------------------------------------- big catalogs (candidates)


def test_losses_table_says_what_changes_in_sampled_mode():
    for name, method in LOSSES.items():
        if method.needs_teacher:
            assert "nothing: no term" not in method.sampled, name
            assert method.sampled.endswith("."), name


def test_unit_log_weights_change_nothing():
    from core.distill import TeacherTargets, soft_target_kl_topk

    z_s, z_t, mask = _inputs()
    zeros = torch.zeros(1, z_s.shape[1], dtype=z_s.dtype)
    targets = TeacherTargets.from_scores(z_t, 5, 2.0, mask=mask)
    kept = TeacherTargets(targets.topk, targets.topk_scores, targets.log_partition, 2.0)
    plain = soft_target_kl_topk(z_s, kept, mask=mask)
    weighted = soft_target_kl_topk(z_s, kept, mask=mask, log_weight=zeros)
    assert weighted.item() == pytest.approx(plain.item(), rel=1e-12)
    topk = targets.topk
    assert torch.allclose(
        dynamic_rank_weights(z_s, topk, 0.3, mask=mask),
        dynamic_rank_weights(z_s, topk, 0.3, mask=mask, log_weight=zeros),
    )


def test_weighted_rank_by_hand():
    # Column 3 is a sampled item standing for 4 catalog items (log_weight = log 4); the
    # teacher's item (column 0, score 1) has columns 1 (2.0) and 3 (5.0) above it:
    # rank = 1 + 1 + 4 = 6; its teacher rank is 1, so w = tanh(mu * 5).
    z_s = t([1.0, 2.0, 0.0, 5.0])
    log_weight = t([0.0, 0.0, 0.0, math.log(4)])
    w = dynamic_rank_weights(z_s, idx([0]), mu=0.1, log_weight=log_weight)
    assert w.item() == pytest.approx(math.tanh(0.5), rel=1e-12)


def test_soft_partition_estimate_by_hand():
    # Candidates: teacher item (col 0, exact), one sampled item (col 1) standing for 3
    # catalog items. Student log Z = log(e^1 + 3 e^0); p_s(item) = e / (e + 3).
    from core.distill import TeacherTargets, soft_target_kl_topk

    z_s = t([1.0, 0.0])
    pt = 0.7  # the teacher's probability of its top item, through its log-partition
    targets = TeacherTargets(idx([0]), t([math.log(pt)]).reshape(1, 1), t([0.0]).reshape(1), 1.0)
    got = soft_target_kl_topk(z_s, targets, log_weight=t([0.0, math.log(3)]))
    ps = math.e / (math.e + 3)
    expected = pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    assert got.item() == pytest.approx(expected, rel=1e-9)
