"""Latency measurement: percentile arithmetic, request plumbing and settings restored.

No timed assertions: the numbers depend on the machine; only their internal consistency is
checked (and, with a fake clock, their exact values).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import core.serving.latency as latency
from core.errors import ConfigError
from core.models import ModelConfig, build_model
from core.serving.export import export_onnx, quantize_int8
from core.serving.latency import (
    LatencyMeasurement,
    benchmark_model,
    machine_info,
    measure_latency,
    request_users,
)
from tests.factories import checkerboard


@pytest.fixture(scope="module")
def data():
    return checkerboard()


@pytest.fixture(scope="module")
def sasrec(data, tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig(family="sasrec", dim=8, layers=1, heads=1, max_len=6, dropout=0.0)
    model = build_model(config, data.n_users, data.n_items).eval()
    folder = tmp_path_factory.mktemp("latency")
    fp32 = export_onnx(model, folder / "s.onnx", k=5)
    int8 = quantize_int8(fp32.path, folder / "s-int8.onnx")
    return model, fp32.path, int8.path


def test_measure_latency_with_a_fake_clock(monkeypatch):
    """Call number i takes i ms (the two warm-up calls 5 s): percentiles and qps by hand."""
    now = [0.0]
    calls = []

    def fn():
        calls.append(1)
        now[0] += len(calls) * 1e-3 if len(calls) > 2 else 5.0

    monkeypatch.setattr(latency.time, "perf_counter", lambda: now[0])
    result = measure_latency(fn, warmup=2, iters=100, batch=4)
    assert len(calls) == 102
    # Timed calls took 3..102 ms; numpy's linear percentile of 3..102.
    assert result.p50_ms == pytest.approx(52.5)
    assert result.p95_ms == pytest.approx(3 + 0.95 * 99)
    assert result.p99_ms == pytest.approx(3 + 0.99 * 99)
    total_s = sum(range(3, 103)) / 1000.0
    assert result.qps == pytest.approx(4 * 100 / total_s)
    assert (result.batch, result.iters) == (4, 100)


def test_measure_latency_real_calls_are_ordered():
    result = measure_latency(lambda: sum(range(200)), warmup=3, iters=50, batch=1)
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms
    assert result.qps > 0
    with pytest.raises(ConfigError):
        measure_latency(lambda: None, iters=0, batch=1)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "onnxruntime-int8"])
def test_benchmark_model_records(runtime, sasrec, data):
    model, fp32, int8 = sasrec
    path = {"torch": None, "onnxruntime": fp32, "onnxruntime-int8": int8}[runtime]
    threads_before = torch.get_num_threads()
    model.train()
    records = benchmark_model(
        model, path, data, runtime=runtime, batch_sizes=(1, 7), threads=1, warmup=2, iters=12
    )
    assert model.training  # mode restored
    assert torch.get_num_threads() == threads_before
    assert [r.batch for r in records] == [1, 7]
    for record in records:
        assert isinstance(record, LatencyMeasurement)
        assert record.runtime == runtime and record.threads == 1
        assert 10 <= record.iters <= 12
        assert 0 < record.p50_ms <= record.p95_ms <= record.p99_ms
        assert record.qps > 0
        assert set(record.to_dict()) >= {"runtime", "batch", "p50_ms", "p95_ms", "p99_ms", "qps"}
    model.eval()


def test_torch_requests_are_timed_through_recommend(sasrec, data, monkeypatch):
    """PyTorch is timed on the serving path the ONNX graph is traced from."""
    model, _, _ = sasrec
    calls = []
    serve = model.recommend
    monkeypatch.setattr(model, "recommend", lambda *a, **kw: calls.append(a[1]) or serve(*a, **kw))
    benchmark_model(model, None, data, runtime="torch", batch_sizes=(1,), k=3, warmup=2, iters=10)
    assert len(calls) >= 10 and set(calls) == {3}


def test_benchmark_model_needs_the_right_inputs(sasrec, data):
    model, fp32, _ = sasrec
    with pytest.raises(ConfigError, match="runtime"):
        benchmark_model(model, fp32, data, runtime="tensorrt")
    with pytest.raises(ConfigError, match="ONNX"):
        benchmark_model(model, None, data, runtime="onnxruntime")
    with pytest.raises(ConfigError, match="PyTorch"):
        benchmark_model(None, fp32, data, runtime="torch")


def test_request_users_are_seeded_eval_users(data):
    a = request_users(data, 5, 3, seed=4)
    b = request_users(data, 5, 3, seed=4)
    assert len(a) == 3 and all(len(x) == 5 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert set(np.concatenate(a)) <= set(data.eval_users("test"))


def test_machine_info_names_what_latency_depends_on():
    info = machine_info(threads=1)
    assert info["cpu"] and info["logical_cores"] >= 1 and info["usable_cores"] >= 1
    assert info["torch"] == torch.__version__
    assert info["benchmark_threads"] == 1
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert (info["cuda_device"] is None) == (not torch.cuda.is_available())
