"""Every model family honours the one interface; each learns the checkerboard structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from core.models import MODELS, ModelConfig, build_model, count_parameters, load_model
from core.models.softmax import SoftmaxLoss
from core.train import TrainConfig, train_model
from tests.factories import checkerboard

SMALL = {
    "mf": ModelConfig(family="mf", dim=8),
    "two_tower": ModelConfig(family="two_tower", dim=8, hidden=16, layers=1, dropout=0.0),
    "sasrec": ModelConfig(family="sasrec", dim=16, layers=1, heads=2, max_len=8, dropout=0.0),
}
FAST = TrainConfig(epochs=40, batch_size=16, lr=0.02, patience=40, seed=0)


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.mark.parametrize("family", sorted(SMALL))
def test_held_out_item_ranks_first(family, data):
    """The recommender mixin: after training, each user's test item is their top pick."""
    model = build_model(SMALL[family], data.n_users, data.n_items)
    train_model(model, data, FAST)
    users = data.eval_users("test")
    scores = model.score_users(data, users, "test").clone()
    history = torch.from_numpy(data.history_matrix("test")[users].toarray() > 0)
    scores[history] = -torch.inf
    top = scores.argmax(dim=1).numpy()
    targets = data.target_matrix("test")[users].indices
    assert (top == targets).mean() >= 0.9


@pytest.mark.parametrize("family", sorted(SMALL))
def test_scores_shape_and_save_load_round_trip(family, data, tmp_path):
    torch.manual_seed(0)
    model = build_model(SMALL[family], data.n_users, data.n_items).eval()
    users = np.arange(5)
    before = model.score_users(data, users, "test")
    assert before.shape == (5, data.n_items)
    path = tmp_path / f"{family}.pt"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is MODELS[family]
    assert loaded.config == model.config
    assert torch.allclose(loaded.score_users(data, users, "test"), before)
    assert loaded.num_parameters() == model.num_parameters() > 0


def test_parameter_counts_by_hand():
    mf = build_model(ModelConfig(family="mf", dim=4), n_users=3, n_items=5)
    assert mf.num_parameters() == 3 * 4 + 5 * 4 + 5  # users, items, item bias
    tt = build_model(
        ModelConfig(family="two_tower", dim=4, hidden=6, layers=1), n_users=3, n_items=5
    )
    tower = (4 * 6 + 6) + (6 * 4 + 4)
    assert tt.num_parameters() == 3 * 4 + 5 * 4 + 2 * tower
    sr = build_model(
        ModelConfig(family="sasrec", dim=4, layers=1, heads=1, max_len=3), n_users=3, n_items=5
    )
    block = 2 * 2 * 4 + (4 * 12 + 12) + (4 * 4 + 4) + (4 * 16 + 16) + (16 * 4 + 4)
    assert sr.num_parameters() == 6 * 4 + 3 * 4 + block + 2 * 4


def test_popularity_ranks_by_training_count(data):
    pop = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    train_model(pop, data, TrainConfig(epochs=1))
    scores = pop.score_users(data, np.array([0, 1]), "test")
    counts = torch.from_numpy(data.item_popularity).float()
    assert torch.equal(scores[0].argsort(), torch.log1p(counts).argsort())
    assert pop.num_parameters() == 0


def test_sasrec_ignores_padding_and_is_causal():
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(family="sasrec", dim=8, layers=1, heads=2, max_len=5, dropout=0.0), 1, 6
    ).eval()
    seq = torch.tensor([[0, 0, 3, 1, 2]])
    before = model(seq)
    # What sits at the padding positions must not leak into real positions: give the
    # padding token a large embedding (it is zero by construction) and nothing may change.
    with torch.no_grad():
        model.item_emb.weight[0] = torch.randn(8) * 10
    assert torch.allclose(model(seq), before, atol=1e-5)
    with torch.no_grad():
        model.item_emb.weight[0] = 0.0
    # Changing the last item must not change the scores after the first two prefixes.
    a = model.position_scores(torch.tensor([[0, 0, 3, 1, 2]]))
    b = model.position_scores(torch.tensor([[0, 0, 3, 1, 5]]))
    assert torch.allclose(a[0, 2:4], b[0, 2:4])
    assert not torch.allclose(a[0, 4], b[0, 4])


@pytest.mark.parametrize(
    "raw",
    [
        {"family": "transformer"},
        {"family": "sasrec", "dim": 10, "heads": 3},
        {"family": "mf", "dim": 0},
        {"family": "mf", "dropout": 1.5},
    ],
)
def test_bad_model_config_raises_config_error(raw):
    with pytest.raises(ConfigError):
        ModelConfig.from_dict(raw)


def test_bpr_negatives_avoid_the_users_positives():
    from core.models.mf import positive_keys, sample_negatives
    from tests.factories import checkerboard

    data = checkerboard(n_users=30, n_items=12)
    keys = positive_keys(data)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(data.n_users), 20)
    neg = sample_negatives(keys, users, data.n_items, 5, rng)
    train = data.train_matrix
    hits = [train[u, i] for u, row in zip(users, neg, strict=True) for i in row]
    assert not any(hits)
    # Each user has 5 of 12 items in training: about 7/12 of uniform draws survive, so a
    # plain uniform draw would hit positives hundreds of times here.
    assert neg.min() >= 0 and neg.max() < data.n_items


def test_training_leaves_the_shared_dataset_untouched():
    from tests.factories import checkerboard

    data = checkerboard()
    before = set(vars(data))
    model = build_model(ModelConfig(family="sasrec", dim=8, layers=1, heads=2, max_len=6), 40, 12)
    batches = list(model.task_batches(data, 8, 1, np.random.default_rng(0)))
    assert batches
    assert not {k for k in set(vars(data)) - before if "sasrec" in k or "window" in k}
    assert model.training_windows(data)[0] is model.training_windows(data)[0]  # cached


@pytest.mark.parametrize("family", sorted(MODELS))
def test_count_parameters_matches_a_real_build(family):
    config = ModelConfig(family=family, dim=6, hidden=10, layers=2, heads=2, max_len=4)
    for users, items in [(1, 1), (5, 40), (300, 7)]:
        real = build_model(config, users, items).num_parameters()
        assert count_parameters(config, users, items) == real


def test_sasrec_big_catalog_steps_return_states_not_catalog_rows(data):
    torch.manual_seed(0)
    model = build_model(SMALL["sasrec"], data.n_users, data.n_items)
    batch = next(model.task_batches(data, 8, 1, np.random.default_rng(0)))
    full = model.training_step(batch)
    assert full.rows.shape[1] == data.n_items and full.states is None
    drawn = torch.tensor([0, 3, 3, 7])
    for mode in ("sampled", "chunked"):
        batch.softmax = SoftmaxLoss(mode, drawn, torch.zeros(4))
        step = model.training_step(batch)
        assert step.rows is None and step.states.shape == (len(full.rows), 16)
        assert step.sampled_scores.shape == (len(full.rows), 4)
        assert torch.equal(step.targets, batch.targets[step.positions] - 1)
        # The candidates' scores are the rows' scores of those items.
        assert torch.allclose(
            model.candidate_scores(step.states, drawn.expand(len(step.states), 4)),
            full.rows[:, drawn],
            atol=1e-5,
        )
    batch.softmax = SoftmaxLoss("chunked")
    chunked = model.training_step(batch).task_loss
    assert chunked.item() == pytest.approx(full.task_loss.item(), abs=1e-5)


def test_sasrec_full_softmax_step_is_cross_entropy_and_keeps_its_log_partition(data):
    torch.manual_seed(0)
    model = build_model(SMALL["sasrec"], data.n_users, data.n_items)
    batch = next(model.task_batches(data, 8, 1, np.random.default_rng(0)))
    step = model.training_step(batch)
    targets = batch.targets[step.positions] - 1
    expected = torch.nn.functional.cross_entropy(step.rows, targets)
    assert step.task_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(step.log_partition, torch.logsumexp(step.rows, dim=1))


def test_sasrec_batches_group_similar_lengths_and_keep_the_real_states():
    """Bucketing: every user once per epoch, batches cut to their longest history, and the
    cut batch gives the real positions exactly the states of the full window."""
    from tests.factories import sequences_dataset

    rng = np.random.default_rng(3)
    seqs = [list(rng.integers(0, 30, size=int(n))) for n in rng.integers(3, 40, size=200)]
    data = sequences_dataset(seqs, 30, name="lengths")
    config = ModelConfig(family="sasrec", dim=8, layers=2, heads=2, max_len=40, dropout=0.0)
    torch.manual_seed(0)
    model = build_model(config, data.n_users, data.n_items).eval()
    inputs, targets, users = model.training_windows(data)
    batches = list(model.task_batches(data, 16, 0, np.random.default_rng(0)))
    seen = np.concatenate([b.users.numpy() for b in batches])
    assert sorted(seen.tolist()) == sorted(users.tolist())  # each user once
    # Each batch holds about the steps of 16 random users, not 16 users of any length.
    steps = (targets > 0).sum(axis=1)
    per_batch = [int((b.targets > 0).sum()) for b in batches]
    assert max(per_batch) <= 16 * steps.mean() + steps.max()
    assert np.median(per_batch) >= 0.5 * 16 * steps.mean()
    widths = [b.context.shape[1] for b in batches]
    assert min(widths) < config.max_len  # short users' batches are cut
    full_cost = len(users) * config.max_len
    assert sum(b.context.numel() for b in batches) < 0.7 * full_cost
    window = {int(u): i for i, u in enumerate(users)}
    for batch in batches:
        assert (batch.context[:, 0] > 0).any()  # no all-padding column is kept
        rows = [window[int(u)] for u in batch.users]
        full = torch.from_numpy(inputs[rows])
        width = batch.context.shape[1]
        assert torch.equal(full[:, : config.max_len - width], torch.zeros_like(full[:, :-width]))
        assert torch.equal(torch.from_numpy(targets[rows])[:, -width:], batch.targets)
        real = batch.targets > 0
        with torch.no_grad():
            cut = model.hidden(batch.context)[real]
            whole = model.hidden(full)[:, -width:][real]
        assert torch.allclose(cut, whole, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 3])
def test_sasrec_scores_from_the_last_position_alone(layers):
    """Scoring runs the last block on the last position only; the scores are the full
    pass's last row (up to float rounding), for any window length and padding."""
    rng = np.random.default_rng(layers)
    config = ModelConfig(family="sasrec", dim=16, layers=layers, heads=4, max_len=12, dropout=0.3)
    torch.manual_seed(layers)
    model = build_model(config, 40, 25).eval()  # eval: dropout is off for both passes
    for length in (1, 2, 7, 12):
        context = torch.from_numpy(rng.integers(1, 26, size=(9, length)))
        context[:4, : length // 2] = 0  # left padding on some rows
        with torch.no_grad():
            whole = model.hidden(context)
            last = model.hidden(context, last=True)
            scores = model(context)
        assert last.shape == (9, 1, 16)
        assert torch.allclose(last[:, 0], whole[:, -1], atol=1e-5)
        expected = whole[:, -1] @ model.item_emb.weight[1:].T
        assert torch.allclose(scores, expected, atol=1e-5)
        assert torch.equal(scores.argsort(dim=1)[:, -3:], expected.argsort(dim=1)[:, -3:])


def test_a_trained_sasrec_pickles_whole(tmp_path):
    """torch.save of the whole model (benches keep trained teachers) after training, when
    the model holds its training windows by a weak reference."""
    data = checkerboard()
    model = build_model(SMALL["sasrec"], data.n_users, data.n_items)
    train_model(model, data, TrainConfig(epochs=1, batch_size=16, seed=0))
    torch.save(model, tmp_path / "model.pt")
    again = torch.load(tmp_path / "model.pt", weights_only=False).eval()
    users = np.arange(data.n_users)
    assert torch.allclose(again.score_users(data, users), model.eval().score_users(data, users))
