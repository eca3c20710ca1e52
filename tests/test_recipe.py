"""Presets from a dataset's statistics, and the generated log shapes they are checked on."""

from __future__ import annotations

import pytest

from core.enums import Family
from core.errors import ConfigError
from core.models import count_parameters
from core.recipe import (
    FULL_SOFTMAX_BUDGET_BYTES,
    DataProfile,
    full_softmax_bytes,
    recipe,
    student_width,
)


def profile(**changes) -> DataProfile:
    base = dict(
        users=5000,
        items=3000,
        interactions=150_000,
        median_history=17.0,
        p90_history=68.0,
        repeat_share=0.0,
    )
    return DataProfile(**(base | changes))


def test_recipe_follows_the_data_not_one_shop():
    dense = recipe(profile(interactions=3_000_000))
    sparse = recipe(profile(interactions=30_000))
    assert dense.teacher.dim > sparse.teacher.dim
    assert dense.teacher.dropout < sparse.teacher.dropout
    assert recipe(profile(p90_history=140.0)).teacher.max_len == 140
    assert recipe(profile(p90_history=3.0)).teacher.max_len == 10  # at least 10
    assert recipe(profile(p90_history=900.0)).teacher.max_len == 200  # at most 200
    short = recipe(profile(median_history=2.0))
    assert short.teacher.family == Family.MF and short.teacher_train.weight_decay > 0
    assert recipe(profile()).teacher.family == Family.SASREC
    # Early stopping never cuts a curve at its first dip.
    train = recipe(profile()).teacher_train
    assert train.min_epochs >= 5 and train.patience >= 3
    assert any("repeat" in r for r in recipe(profile(repeat_share=0.3)).reasons)


@pytest.mark.parametrize("fraction", [0.01, 0.03, 0.10, 0.25])
def test_student_width_hits_the_asked_share_of_parameters(fraction):
    plan = recipe(profile(), student_fraction=fraction)
    teacher = count_parameters(plan.teacher, 5000, 3000)
    student = count_parameters(plan.student, 5000, 3000)
    assert student / teacher == pytest.approx(fraction, rel=0.5)
    assert plan.student.layers == 1 and plan.student.family == plan.teacher.family


def test_students_train_without_dropout_at_a_falling_rate():
    from core.recipe import STUDENT_DROPOUT, STUDENT_EPOCHS

    plan = recipe(profile(interactions=30_000))  # sparse: the teacher's dropout is 0.5
    assert plan.teacher.dropout == 0.5 and plan.teacher_train.lr_schedule == "constant"
    assert plan.student.dropout == STUDENT_DROPOUT == 0.0
    assert plan.student_train.lr_schedule == "linear"
    assert plan.student_train.epochs == STUDENT_EPOCHS
    assert plan.student_train.min_epochs <= STUDENT_EPOCHS
    assert plan.student_train.lr == pytest.approx(3 * plan.teacher_train.lr)
    assert any("no dropout" in r for r in plan.reasons)
    # The teacher ends on a falling rate too: an anneal after early stopping.
    from core.recipe import ANNEAL_EPOCHS, live

    assert plan.teacher_train.anneal_epochs == ANNEAL_EPOCHS > 0
    assert plan.student_train.anneal_epochs == 0
    assert live(plan).teacher_train.anneal_epochs == 0  # a fixed, falling-rate demo
    # MF students keep the teacher's schedule (the rule was measured on SASRec only).
    mf = recipe(profile(median_history=2.0))
    assert mf.student_train.lr_schedule == "constant"
    assert mf.student_train.epochs == mf.teacher_train.epochs
    assert not any("no dropout" in r for r in mf.reasons)


def test_repeat_heavy_logs_keep_the_history_the_teacher_copies_from():
    from core.recipe import REPEAT_HEAVY_MAX_DROPOUT, REPEAT_HEAVY_SHARE

    sparse = dict(interactions=30_000)  # 10 interactions per item: dropout 0.5
    assert recipe(profile(**sparse, repeat_share=0.14)).teacher.dropout == 0.5
    heavy = recipe(profile(**sparse, repeat_share=REPEAT_HEAVY_SHARE))
    assert heavy.teacher.dropout == REPEAT_HEAVY_MAX_DROPOUT == 0.2
    assert any("repeats: dropout 0.2 at most" in r for r in heavy.reasons)
    # Dense logs already at or below the cap keep their own dropout.
    dense = recipe(profile(interactions=3_000_000, repeat_share=0.8))
    assert dense.teacher.dropout == 0.2
    assert not any("dropout 0.2 at most" in r for r in dense.reasons)


def test_bad_fraction_gets_one_sentence():
    with pytest.raises(ConfigError, match="share"):
        student_width(recipe(profile()).teacher, 10, 10, 1.5)


def test_profile_from_stats_needs_the_recipe_fields():
    with pytest.raises(KeyError):
        DataProfile.from_stats({"users": 1, "items": 1, "interactions": 1})


def test_generated_shapes_differ_from_the_demo_and_are_deterministic():
    from core.ingestion.build import build_dataset
    from core.ingestion.options import ColumnMapping
    from core.ingestion.shapes import generate_shape

    mapping = ColumnMapping(user="user_id", item="item_id", timestamp="timestamp")
    long, catalog = generate_shape("long_no_repeat", scale=0.04, seed=1)
    again, _ = generate_shape("long_no_repeat", scale=0.04, seed=1)
    assert long.equals(again)
    data = build_dataset(long, mapping, catalog=catalog, name="long")
    assert data.repeat_share == 0.0 and data.masks_history
    assert DataProfile.of(data).median_history >= 30
    heavy, catalog = generate_shape("repeat_longtail", scale=0.05, seed=1)
    data = build_dataset(heavy, mapping, catalog=catalog, name="heavy")
    assert data.repeat_share > 0.3 and not data.masks_history
    with pytest.raises(ConfigError, match="shape"):
        generate_shape("tiny", 1.0)


def test_small_catalogs_keep_the_full_softmax_and_big_ones_sample():
    # The demo shop (3,000 items) stays exact even at the recipe's largest batch and window.
    for changes in ({}, {"interactions": 3_000_000, "p90_history": 900.0}):
        plan = recipe(profile(**changes))
        assert plan.teacher_train.loss == plan.student_train.loss == "full"
        assert not any("sampled softmax" in r for r in plan.reasons)
    assert full_softmax_bytes(256, 200, 3000) <= FULL_SOFTMAX_BUDGET_BYTES
    big = recipe(profile(items=3_000_000, interactions=6_000_000))
    assert big.teacher_train.loss == big.student_train.loss == "sampled"
    assert big.teacher_train.softmax_negatives == 1024
    reason = next(r for r in big.reasons if "sampled softmax" in r)
    assert reason.startswith("3,000,000 items: full-catalog logits")
    assert "GB per batch" in reason and "1,024 negatives and logQ correction" in reason
    # MF trains with BPR (already sampled): no softmax to change.
    short = recipe(profile(items=3_000_000, median_history=2.0))
    assert short.teacher_train.loss == "full"


def test_batch_size_gives_small_shops_enough_steps_an_epoch():
    from core.recipe import MIN_STEPS_PER_EPOCH, batch_size_for

    assert batch_size_for(5_000) == 32  # the demo shop: 156 steps, not 39
    assert 5_000 / batch_size_for(5_000) >= MIN_STEPS_PER_EPOCH
    assert batch_size_for(20) == 32  # never below 32
    assert batch_size_for(40_000) == 256  # 40,000 // 150 = 266 -> 256
    assert batch_size_for(10_000_000) == 256
    for users in (1, 999, 4_800, 19_200, 38_400, 10**6):
        size = batch_size_for(users)
        assert size & (size - 1) == 0 and 32 <= size <= 256
