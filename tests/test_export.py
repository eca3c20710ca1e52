"""ONNX export, parity with PyTorch, int8 quantization and evaluation through onnxruntime.

The exported graph is ``Recommender.recommend``; the torch side of every check calls it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from core.errors import ConfigError
from core.metrics import NO_ITEM, evaluate, jaccard_at_k
from core.models import ModelConfig, build_model
from core.ranking import history_mask
from core.serving.export import (
    OnnxRecommender,
    TopKGraph,
    evaluate_onnx,
    export_onnx,
    quantize_int8,
    read_item_map,
    write_item_map,
)
from core.serving.parity import check_parity
from core.train import TrainConfig, train_model
from tests.factories import checkerboard

SMALL = {
    "mf": ModelConfig(family="mf", dim=8),
    "two_tower": ModelConfig(family="two_tower", dim=8, hidden=16, layers=1, dropout=0.0),
    "sasrec": ModelConfig(family="sasrec", dim=16, layers=1, heads=2, max_len=8, dropout=0.0),
}
FAST = TrainConfig(epochs=8, batch_size=32, lr=0.05, patience=8, seed=0, device="cpu")
K = 5  # checkerboard users have 7 eligible items at test time: K < 7 keeps every slot real


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def trained(data):
    models = {}
    for family, config in SMALL.items():
        torch.manual_seed(0)
        model = build_model(config, data.n_users, data.n_items)
        train_model(model, data, FAST)
        models[family] = model.eval()
    return models


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return {f: export_onnx(m, folder / f"{f}.onnx", k=K) for f, m in trained.items()}


def _context(model, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if model.input_kind == "user":
        return torch.randint(0, model.n_users, (batch,), generator=gen)
    seq = torch.randint(1, model.n_items + 1, (batch, model.config.max_len), generator=gen)
    seq[:, : model.config.max_len // 2] = 0  # left padding, as served
    return seq


@pytest.mark.parametrize("family", sorted(SMALL))
def test_export_round_trip(family, trained, exported, data):
    model, info = trained[family], exported[family]
    raw = Path(info.path).read_bytes()
    onnx.checker.check_model(info.path, full_check=True)
    assert info.bytes == len(raw)
    assert info.sha256 == hashlib.sha256(raw).hexdigest()
    assert (info.input_kind, info.k, info.n_items, info.family) == (
        model.input_kind,
        K,
        data.n_items,
        family,
    )
    assert info.max_len == (8 if family == "sasrec" else None)
    assert info.opset >= 18

    proto = onnx.load(info.path)
    inputs = {i.name: i.type.tensor_type for i in proto.graph.input}
    assert inputs["context"].elem_type == onnx.TensorProto.INT64
    assert inputs["exclude"].elem_type == onnx.TensorProto.BOOL
    assert inputs["context"].shape.dim[0].dim_param  # symbolic batch axis
    assert [o.name for o in proto.graph.output] == ["top_items", "top_scores"]

    runner = OnnxRecommender(info.path)
    graph = TopKGraph(model, K)
    for batch in (1, 7):
        context = _context(model, batch, seed=batch)
        exclude = torch.rand(batch, data.n_items, generator=torch.Generator().manual_seed(0)) < 0.3
        items, scores = runner.run(context.numpy(), exclude.numpy())
        assert items.shape == scores.shape == (batch, K)
        assert items.dtype == np.int64 and scores.dtype == np.float32
        # Brute-force reference: full eager scores, excluded items removed, sorted.
        with torch.no_grad():
            full = model(context).masked_fill(exclude, -torch.inf).numpy()
            ref_items, ref_scores = (t.numpy() for t in graph(context, exclude))
            served_items, served_scores = (t.numpy() for t in model.recommend(context, K, exclude))
        np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :K], atol=1e-5)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
        np.testing.assert_array_equal(items, ref_items)
        # The graph is the model's own serving path, not a copy of it.
        np.testing.assert_array_equal(ref_items, served_items)
        np.testing.assert_array_equal(ref_scores, served_scores)


@pytest.mark.parametrize("family", sorted(SMALL))
def test_parity_with_pytorch(family, trained, exported, data):
    result = check_parity(trained[family], exported[family].path, data, n_users=256, k=K)
    assert result.n_users == len(data.eval_users("test")) == 40
    assert result.k == K
    assert result.max_abs_diff < 1e-4
    assert result.topk_agreement >= 0.99
    assert result.passed()


def test_exclusion_mask_is_respected(trained, exported, data):
    runner = OnnxRecommender(exported["sasrec"].path)
    rng = np.random.default_rng(1)
    context = _context(trained["sasrec"], 16, seed=3).numpy()
    exclude = rng.random((16, data.n_items)) < 0.5
    items, scores = runner.topk(context, exclude)
    for row in range(16):
        ranked = items[row][items[row] != NO_ITEM]
        assert not exclude[row, ranked].any()
        assert len(ranked) == min(K, int((~exclude[row]).sum()))
    # Only two eligible items: they fill the first slots, the rest are empty (-1, -inf).
    exclude = np.ones((1, data.n_items), dtype=bool)
    exclude[0, [3, 9]] = False
    items, scores = runner.topk(context[:1], exclude)
    assert set(items[0, :2]) == {3, 9}
    assert (items[0, 2:] == NO_ITEM).all() and np.isneginf(scores[0, 2:]).all()
    # No mask at all is the same as an all-False mask.
    np.testing.assert_array_equal(
        runner.topk(context)[0], runner.topk(context, np.zeros((16, data.n_items), bool))[0]
    )


def test_history_mask_matches_history_matrix(data):
    """The ``exclude`` input every request gets (``core.ranking.history_mask``)."""
    users = np.array([0, 5, 5, 39, 12, 1, 2, 3, 4, 6, 7])
    dense = data.history_matrix("test")[users].toarray() > 0
    np.testing.assert_array_equal(history_mask(data, users, "test").numpy(), dense)
    np.testing.assert_array_equal(history_mask(data, users[:2], "test").numpy(), dense[:2])


def test_recommender_reads_the_graph(exported, trained, data):
    seq = OnnxRecommender(exported["sasrec"].path)
    assert (seq.input_kind, seq.max_len, seq.k, seq.n_items) == ("sequence", 8, K, 12)
    assert (seq.family, seq.quantized) == ("sasrec", "fp32")
    user = OnnxRecommender(exported["mf"].path)
    assert (user.input_kind, user.max_len) == ("user", None)
    # Its inputs come from the model's own make_context (a weightless copy, no memory).
    users = np.array([3, 0, 39])
    for family, runner in (("sasrec", seq), ("mf", user)):
        expected = trained[family].make_context(data, users, "test").numpy()
        np.testing.assert_array_equal(runner.context(data, users, "test"), expected)
    assert seq.input_model.device.type == "meta"


@pytest.mark.parametrize("family", sorted(SMALL))
def test_evaluate_onnx_equals_pytorch_evaluate(family, trained, exported, data):
    model = trained[family]
    ks = (1, 3, K)
    ours = evaluate_onnx(exported[family].path, model.input_kind, data, "test", ks=ks)
    ref = evaluate(lambda u: model.score_users(data, u, "test"), data, "test", ks=ks)
    assert ours.n_users == ref.n_users == 40
    assert ref.metrics["ndcg@5"] > 0.9  # trained: the held-out item ranks first
    assert ours.metrics.keys() == ref.metrics.keys()
    for key, value in ref.metrics.items():
        assert ours.metrics[key] == pytest.approx(value, abs=1e-6), key


def test_score_fn_is_dense_minus_inf_except_top_k(exported, data):
    runner = OnnxRecommender(exported["mf"].path)
    users = data.eval_users("test")[:6]
    dense = runner.score_fn(data, "test")(users)
    items, scores = runner.recommend(data, users, "test")
    assert dense.shape == (6, data.n_items)
    assert (torch.isfinite(dense).sum(dim=1) == K).all()
    np.testing.assert_allclose(np.take_along_axis(dense.numpy(), items, axis=1), scores)


def test_evaluate_onnx_rejects_k_beyond_the_graph(exported, data):
    with pytest.raises(ConfigError, match="top 5"):
        evaluate_onnx(exported["mf"].path, "user", data, ks=(10,))
    with pytest.raises(ConfigError, match="sequence"):
        evaluate_onnx(exported["sasrec"].path, "user", data, ks=(5,))


def test_int8_model_loads_ranks_and_keeps_quality(trained, exported, data, tmp_path):
    model = trained["sasrec"]
    info = quantize_int8(exported["sasrec"].path, tmp_path / "sasrec-int8.onnx")
    onnx.checker.check_model(info.path, full_check=True)
    assert (info.quantized, info.k, info.n_items, info.input_kind) == ("int8", K, 12, "sequence")
    ops = {n.op_type for n in onnx.load(info.path).graph.node}
    assert "MatMulInteger" in ops and "TopK" in ops

    users = data.eval_users("test")
    fp32_items, _ = OnnxRecommender(exported["sasrec"].path).recommend(data, users)
    int8_items, int8_scores = OnnxRecommender(info.path).recommend(data, users)
    assert int8_items.shape == (40, K) and np.isfinite(int8_scores).all()
    assert (int8_items[:, 0] == fp32_items[:, 0]).mean() >= 0.95
    assert np.nanmean(jaccard_at_k(int8_items[:, :3], fp32_items[:, :3])) >= 0.8

    result = evaluate_onnx(info.path, None, data, ks=(K,))
    ref = evaluate(lambda u: model.score_users(data, u, "test"), data, "test", ks=(K,))
    assert result.metrics["ndcg@5"] >= ref.metrics["ndcg@5"] - 0.05


def test_item_map_round_trip(data, tmp_path):
    path = write_item_map(data, tmp_path / "items.csv")
    frame = read_item_map(path)
    assert list(frame.columns) == ["index", "item_id", "title", "category"]
    assert frame["index"].tolist() == list(range(data.n_items))
    assert frame["item_id"].tolist() == [f"i{i}" for i in range(12)]
    assert frame.loc[7, "title"] == "Item 7"
    assert path.read_text().splitlines()[0] == "index,item_id,title,category"


def test_export_is_atomic_deterministic_and_clamps_k(data, tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="mf", dim=4), data.n_users, data.n_items)
    target = tmp_path / "model.onnx"
    target.write_bytes(b"stale")
    model.train()
    info = export_onnx(model, target, k=50)
    assert model.training  # the caller's model is untouched
    assert info.k == data.n_items == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    items, _ = OnnxRecommender(target).topk(np.array([0, 1]))
    assert sorted(items[0]) == list(range(12))
    # Same weights, same bytes: no paths or timestamps end up in the file.
    assert export_onnx(model, tmp_path / "again" / "copy.onnx", k=12).sha256 == info.sha256
    with pytest.raises(ConfigError):
        export_onnx(model, target, k=0)


def test_popularity_exports_too(data, tmp_path):
    model = build_model(ModelConfig(family="popularity"), data.n_users, data.n_items)
    train_model(model, data, TrainConfig(epochs=1, device="cpu"))
    info = export_onnx(model, tmp_path / "pop.onnx", k=3)
    result = check_parity(model, info.path, data, k=3)
    assert result.max_abs_diff == 0.0 and result.topk_agreement == 1.0
