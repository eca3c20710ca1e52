"""ONNX export of a trained recommender for the serving team, and running it with onnxruntime.

The exported graph is :meth:`Recommender.recommend` itself (scores, exclusion, top-K,
built on :func:`core.ranking.top_k`), traced, so what a serving team calls per request is
the very code that the metrics, the Compare page and the latency checks rank with:

- inputs: ``context`` int64 ``[B]`` dense user indices (``input_kind == "user"``) or
  ``[B, L]`` left-padded item histories (item index + 1, 0 = padding, L = ``max_len``);
  ``exclude`` bool ``[B, n_items]``, True for items never to recommend (already bought);
  pass all False for no masking.
- outputs: ``top_items`` int64 ``[B, K]`` dense item indices, best first, and
  ``top_scores`` float32 ``[B, K]``. Excluded items get ``-inf`` before the in-graph TopK,
  so a ``-inf`` score means "no item" (only when fewer than K items are eligible);
  ``OnnxRecommender.topk`` turns those slots into ``-1`` like ``core.metrics`` does.

Requests built from the dataset get their ``context`` from the model's own
``make_context`` and their ``exclude`` from :func:`core.ranking.history_mask`, on either
runtime, so both see identical inputs. The parity check lives in
:mod:`core.serving.parity`.

The batch axis is dynamic; K, ``n_items`` and L are fixed at export time and also written
into the model's metadata (``distillery.*`` keys). Dense indices map back to the shop's
item ids through the item map written by ``write_item_map`` (CSV: index, item_id, title,
category), shipped beside the ONNX file.

Design choices:

- Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), the
  supported path in torch 2.x; the TorchScript exporter (``dynamo=False``) still works in
  torch 2.13 but is deprecated. The dynamo graph is also cleaner (fused LayerNormalization
  and Gelu at opset 20) and keeps one copy of tied embeddings instead of a constant-folded
  transposed duplicate. Its per-node debug metadata (stack traces with local file paths)
  is stripped so that the file is identical wherever it is exported.
- No full-score output: serving never needs it. Parity compares the top-K scores (the
  torch side runs the very same ``recommend``), and the full-ranking evaluation through
  onnxruntime rebuilds a dense score row that is ``-inf`` except at the graph's top-K
  items. With the history passed as ``exclude`` and K >= the evaluation K, its top-K, and
  therefore every top-K metric, is identical to scoring the full catalog.
- int8: ``onnxruntime.quantization.quantize_dynamic`` with int8 weights on every op type
  it supports here (MatMul, Gemm, Gather): TopK, Where and the index gathers are left in
  float/int64, so ranking and masking are untouched. Its accuracy is measured with the
  same evaluation protocol (``evaluate_onnx``), never assumed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import torch
from torch import nn

from core.dataset import InteractionData
from core.errors import ConfigError
from core.files import atomic_path, file_sha256
from core.metrics import NO_ITEM, EvalResult, ScoreFn, evaluate
from core.models import ModelConfig, Recommender, build_model
from core.ranking import history_mask

CONTEXT, EXCLUDE = "context", "exclude"
TOP_ITEMS, TOP_SCORES = "top_items", "top_scores"
META_PREFIX = "distillery."
# torch.export traces through process-wide state, and the exporter's log silencing below
# touches global loggers: one export or quantization at a time per process.
_EXPORT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExportInfo:
    """One ONNX file written for handoff (what the store records next to the run)."""

    path: str
    input_kind: str  # "user" or "sequence"
    k: int
    n_items: int
    opset: int
    bytes: int
    sha256: str
    family: str = ""
    max_len: int | None = None  # history length L of sequence models
    quantized: str = "fp32"  # "fp32" or "int8"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class TopKGraph(nn.Module):
    """The served computation, :meth:`Recommender.recommend` with a fixed K, as a module.

    ``torch.onnx.export`` traces a module's ``forward``; this one only calls the model's
    ``recommend``, so the graph holds no ranking code of its own.
    """

    def __init__(self, model: Recommender, k: int):
        super().__init__()
        self.model = model
        self.k = int(k)

    def forward(self, context: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.recommend(context, self.k, exclude)


# --------------------------------------------------------------------------- helpers


def _drop_known_noise(record: logging.LogRecord) -> bool:
    # onnxruntime's quantizer advises shape-inference pre-processing on the root logger; our
    # graphs come straight from the exporter with shapes inferred, so it does not apply.
    return not str(record.msg).startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _export_guard() -> Iterator[None]:
    """Serialise exports; silence exporter noise meanwhile."""
    # The dynamo exporter logs a warning per missing optional op library (torchvision) and
    # deprecation notices from its dependencies; none of them concern our graphs.
    with _EXPORT_LOCK:
        logger = logging.getLogger("torch.onnx")
        level = logger.level
        logger.setLevel(logging.ERROR)
        root = logging.getLogger()
        root.addFilter(_drop_known_noise)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            root.removeFilter(_drop_known_noise)
            logger.setLevel(level)


def _opset(proto: onnx.ModelProto) -> int:
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in proto.metadata_props}


def _set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    merged = _metadata(proto) | values
    del proto.metadata_props[:]
    for key in sorted(merged):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, merged[key]


def _info(path: Path, proto: onnx.ModelProto) -> ExportInfo:
    meta = _metadata(proto)
    max_len = meta.get(META_PREFIX + "max_len", "")
    return ExportInfo(
        path=str(path),
        input_kind=meta[META_PREFIX + "input_kind"],
        k=int(meta[META_PREFIX + "k"]),
        n_items=int(meta[META_PREFIX + "n_items"]),
        opset=_opset(proto),
        bytes=path.stat().st_size,
        sha256=file_sha256(path),
        family=meta.get(META_PREFIX + "family", ""),
        max_len=int(max_len) if max_len else None,
        quantized=meta.get(META_PREFIX + "quantized", "fp32"),
    )


def _save_checked(proto: onnx.ModelProto, path: Path) -> ExportInfo:
    """Check ``proto`` with onnx.checker (shape inference included) and write it atomically."""
    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
    return _info(path, proto)


# --------------------------------------------------------------------------- export


def example_context(model: Recommender, batch: int = 2) -> torch.Tensor:
    """A valid dummy input of ``model`` (batch of 2: torch.export specialises sizes 0 and 1)."""
    if model.input_kind == "user":
        return torch.arange(batch, dtype=torch.int64) % max(1, model.n_users)
    length = model.config.max_len
    seq = torch.arange(batch * length, dtype=torch.int64).reshape(batch, length)
    return seq % model.n_items + 1


def export_onnx(
    model: Recommender, path: str | Path, *, k: int = 10, opset: int | None = None
) -> ExportInfo:
    """Export ``model`` + exclusion + top-K to ``path`` (see the module docstring).

    ``k`` is clamped to the catalog size. The model is exported from a CPU copy in eval
    mode; the caller's model is left as it was.
    """
    if model.input_kind not in ("user", "sequence"):
        raise ConfigError(f"Cannot export a model with input kind {model.input_kind!r}.")
    if k < 1:
        raise ConfigError(f"K must be a positive integer; got {k}.")
    k = min(int(k), model.n_items)
    path = Path(path)
    if model.device.type == "cpu":
        cpu_model = deepcopy(model).eval()
    else:  # rebuild on the CPU rather than duplicate the model in GPU memory first
        cpu_model = build_model(model.config, model.n_users, model.n_items).eval()
        cpu_model.load_state_dict({n: t.cpu() for n, t in model.state_dict().items()})
    graph = TopKGraph(cpu_model, k).eval()
    context = example_context(cpu_model)
    exclude = torch.zeros(context.shape[0], model.n_items, dtype=torch.bool)
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as tmpdir, _export_guard(), torch.no_grad():
        raw = Path(tmpdir) / "model.onnx"
        try:
            torch.onnx.export(
                graph,
                (context, exclude),
                str(raw),
                input_names=[CONTEXT, EXCLUDE],
                output_names=[TOP_ITEMS, TOP_SCORES],
                dynamic_shapes={"context": {0: batch}, "exclude": {0: batch}},
                opset_version=opset,
                external_data=False,
                dynamo=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many unrelated types
            raise ConfigError(
                f"The {model.family} model could not be exported to ONNX: {exc}"
            ) from exc
        proto = onnx.load(str(raw))
    for node in proto.graph.node:
        del node.metadata_props[:]
    proto.doc_string = (
        f"Distillery {model.family} recommender: {CONTEXT} + {EXCLUDE} -> "
        f"{TOP_ITEMS}, {TOP_SCORES} (top {k} of {model.n_items} items)."
    )
    _set_metadata(
        proto,
        {
            META_PREFIX + "family": model.family,
            META_PREFIX + "input_kind": model.input_kind,
            META_PREFIX + "k": str(k),
            META_PREFIX + "n_items": str(model.n_items),
            META_PREFIX + "n_users": str(model.n_users),
            META_PREFIX + "max_len": str(model.config.max_len)
            if model.input_kind == "sequence"
            else "",
            META_PREFIX + "model_config": json.dumps(asdict(model.config), sort_keys=True),
            META_PREFIX + "quantized": "fp32",
        },
    )
    return _save_checked(proto, path)


def quantize_int8(
    onnx_path: str | Path, out_path: str | Path, *, op_types: Sequence[str] | None = None
) -> ExportInfo:
    """Dynamic int8 quantization (int8 weights, activations quantized per call).

    ``op_types`` restricts the quantized op types (default: all that onnxruntime supports,
    which here are MatMul, Gemm and Gather; TopK and Where are never quantized).
    """
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source_meta = _metadata(onnx.load(str(onnx_path), load_external_data=False))
    with tempfile.TemporaryDirectory() as tmpdir, _export_guard():
        raw = Path(tmpdir) / "int8.onnx"
        quantize_dynamic(
            onnx_path,
            raw,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types else None,
        )
        proto = onnx.load(str(raw))
    _set_metadata(proto, source_meta | {META_PREFIX + "quantized": "int8"})
    return _save_checked(proto, out_path)


def write_item_map(data: InteractionData, path: str | Path) -> Path:
    """CSV ``index,item_id,title,category``: dense item index -> the shop's own item id."""
    path = Path(path)
    frame = data.describe_items(np.arange(data.n_items))
    frame = frame.rename(columns={"item": "index"})[["index", "item_id", "title", "category"]]
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def read_item_map(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"item_id": str, "title": str, "category": str}).fillna("")


# --------------------------------------------------------------------------- runtime


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def onnx_session(
    path: str | Path, threads: int = 1, providers: Sequence[str] | None = None
) -> ort.InferenceSession:
    """An onnxruntime session with a fixed intra-op thread count and full graph optimisation.

    Full optimisation constant-folds weight-only subgraphs (e.g. the two-tower item tower),
    which eager PyTorch recomputes on every call.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(path), sess_options=options, providers=list(providers or default_providers())
    )


def _input_model(meta: Mapping[str, str], n_items: int, name: str) -> Recommender:
    """A weightless copy of the exported model, rebuilt from the graph's metadata.

    It exists for its ``make_context``: onnxruntime then gets its inputs from the very code
    that builds PyTorch's. Built on the meta device, its weights take no memory.
    """
    raw = meta.get(META_PREFIX + "model_config")
    if not raw:
        raise ConfigError(f"{name} is not a Distillery export: it has no model config.")
    config = ModelConfig.from_dict(json.loads(raw))
    with torch.device("meta"):
        return build_model(config, int(meta.get(META_PREFIX + "n_users") or 1), n_items)


class OnnxRecommender:
    """An exported model served through onnxruntime, with the Recommender-style helpers."""

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 1,
        providers: Sequence[str] | None = None,
    ):
        self.path = Path(path)
        self.session = onnx_session(self.path, threads=threads, providers=providers)
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {CONTEXT, EXCLUDE}:
            raise ConfigError(
                f"{self.path.name} is not a Distillery export: its inputs are {sorted(inputs)}."
            )
        ctx_shape = inputs[CONTEXT].shape
        self.input_kind = "user" if len(ctx_shape) == 1 else "sequence"
        self.max_len = int(ctx_shape[1]) if self.input_kind == "sequence" else None
        self.n_items = int(inputs[EXCLUDE].shape[1])
        k_dim = self.session.get_outputs()[0].shape[1]
        self.k = int(meta.get(META_PREFIX + "k") or k_dim)
        self.family = meta.get(META_PREFIX + "family", "")
        self.quantized = meta.get(META_PREFIX + "quantized", "fp32")
        self.input_model = _input_model(meta, self.n_items, self.path.name)

    def run(self, context: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw graph outputs ``(top_items, top_scores)``."""
        items, scores = self.session.run(
            [TOP_ITEMS, TOP_SCORES],
            {
                CONTEXT: np.ascontiguousarray(context, dtype=np.int64),
                EXCLUDE: np.ascontiguousarray(exclude, dtype=bool),
            },
        )
        return items, scores

    def topk(
        self, context: np.ndarray, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``[B, K]`` item indices (``-1`` where no eligible item is left) and their scores."""
        context = np.asarray(context)
        if exclude is None:
            exclude = np.zeros((context.shape[0], self.n_items), dtype=bool)
        items, scores = self.run(context, exclude)
        return np.where(np.isneginf(scores), NO_ITEM, items), scores

    def context(
        self, data: InteractionData, users: np.ndarray, stage: str | int = "test"
    ) -> np.ndarray:
        """The graph's ``context`` for dense ``users`` (``Recommender.make_context``)."""
        return self.input_model.make_context(data, users, stage).numpy()

    def recommend(
        self,
        data: InteractionData,
        users: np.ndarray,
        stage: str | int = "test",
        exclude_history: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-K for dense ``users`` as the test (or given) stage would see them."""
        users = np.asarray(users, dtype=np.int64)
        exclude = history_mask(data, users, stage).numpy() if exclude_history else None
        return self.topk(self.context(data, users, stage), exclude)

    def score_fn(
        self, data: InteractionData, stage: str | int = "test", exclude_history: bool = True
    ) -> ScoreFn:
        """A ``core.metrics`` score function: ``-inf`` everywhere except the top-K items.

        Gives the same top-k (k <= K) as scoring the whole catalog, because the history
        that ``evaluate`` masks is also excluded inside the graph before its TopK.
        """

        def scores(users: np.ndarray) -> torch.Tensor:
            items, top = self.recommend(data, users, stage, exclude_history)
            dense = np.full((len(items), self.n_items), -np.inf, dtype=np.float32)
            rows, cols = np.nonzero(items != NO_ITEM)
            dense[rows, items[rows, cols]] = top[rows, cols]
            return torch.from_numpy(dense)

        return scores


def evaluate_onnx(
    onnx_path: str | Path,
    model_input_kind: str | None,
    data: InteractionData,
    stage: str = "test",
    ks: Sequence[int] = (10, 20),
    max_len: int | None = None,
    *,
    threads: int = 1,
    exclude_history: bool | None = None,
    batch_size: int = 512,
    users: np.ndarray | None = None,
    return_topk: bool = False,
) -> EvalResult:
    """Full-ranking evaluation of an exported model through onnxruntime (``core.metrics``).

    ``model_input_kind`` and ``max_len`` are read from the graph when None; given values
    must match it. The graph's K must cover the largest evaluated K. ``exclude_history``
    None follows the dataset's history-mask setting, as ``core.metrics.evaluate`` does.
    """
    runner = OnnxRecommender(onnx_path, threads=threads)
    if model_input_kind is not None and model_input_kind != runner.input_kind:
        raise ConfigError(
            f"{Path(onnx_path).name} takes {runner.input_kind} inputs, not {model_input_kind}."
        )
    if max_len is not None and runner.max_len is not None and max_len != runner.max_len:
        raise ConfigError(
            f"{Path(onnx_path).name} reads histories of {runner.max_len} items, not {max_len}."
        )
    if max(ks) > runner.k:
        raise ConfigError(
            f"{Path(onnx_path).name} returns its top {runner.k} items, so it cannot be "
            f"evaluated at K={max(ks)}; export it with k >= {max(ks)}."
        )
    if exclude_history is None:
        exclude_history = data.masks_history
    return evaluate(
        runner.score_fn(data, stage, exclude_history),
        data,
        stage,
        ks=ks,
        exclude_history=exclude_history,
        batch_size=batch_size,
        users=users,
        return_topk=return_topk,
    )
