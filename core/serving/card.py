"""The model card of a handoff (JSON data and Markdown), ``metrics.json``, and the page tables.

``card_dict`` turns a run's facts and the gate thresholds into plain JSON-ready data;
``model_card`` renders that data as Markdown with the Jinja2 template
``templates/model_card.md.j2``, where every piece of text that comes from a user or the
machine (names, titles, CPU names) goes through ``md_escape`` and every number through one
formatter, so the template shows the card's layout and nothing else. ``metrics_json`` is
every stored number of the run; ``latency_frame``, ``quality_frame`` and ``sizes_mb`` are
the Handoff page's tables of the same facts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from core.records import jsonable, metric_key
from core.serving.facts import CARD_METRICS, HandoffFacts, kept_key
from core.serving.gates import MB, Gates, evaluate_gates
from core.serving.prepare import INT8_FILE, ONNX_FILE
from core.store import Store
from core.views.text import md_escape

CARD_SCHEMA = "distillery.model_card/1"
LATENCY_COLUMNS = ["model", "runtime", "batch", "p50_ms", "p95_ms", "p99_ms", "qps", "threads"]
# Keys every card has (null when unknown), so hand-built or partial facts still render.
_RUN_KEYS = ("id", "title", "role", "model", "teacher_run_id", "twin_run_id", "num_params")
_DATASET_KEYS = ("name", "source", "content_hash", "n_users", "n_items", "n_interactions")
_TRAINING_KEYS = ("train_seconds", "best_epoch", "val_ndcg@10")
_SIZE_KEYS = ("params", "fp32_weights_bytes", "onnx_bytes", "int8_bytes")


def known_limits(facts: HandoffFacts, escape: Callable[[str], str] = str) -> list[str]:
    """A short, honest list of what the card's numbers do not show.

    ``escape`` is applied to the pieces that come from outside (dataset name, CPU name).
    """
    env, data = facts.environment, facts.dataset
    threads = env.get("benchmark_threads", "?")
    split = (data.get("split") or {}).get("method", "loo")
    protocol = "leave-one-out by time" if split == "loo" else f"{split} split"
    limits = [
        f"Latency was measured on this machine only ({escape(str(env.get('cpu', 'unknown CPU')))}, "
        f"{threads} thread(s), one request at a time or batch as listed); other hardware, "
        "request batching or a busy server give other numbers.",
        f"Quality is a {protocol} full-ranking evaluation on the dataset "
        f"{escape(repr(str(data.get('name', '?'))))} only; live traffic and online metrics may differ.",
        f"The catalog is fixed at export time ({data.get('n_items', '?')} items): a new item "
        "needs a retrained model and a new export; the item map gives each index its item id.",
        f"The graph returns a fixed top {facts.k}; items already bought are excluded only "
        "when the caller passes them in the exclusion mask.",
    ]
    if facts.run.get("input_kind") == "sequence":
        limits.append(
            "Cold users: the model reads the user's recent items; a user with no history gets "
            "a generic list, so a fallback such as popularity is advised."
        )
    else:
        limits.append(
            f"Cold users: the model knows only the {data.get('n_users', '?')} users it was "
            "trained on (it takes a user index); new users need a fallback such as popularity."
        )
    if facts.parity is not None:
        limits.append(
            f"Parity and top-{facts.k} agreement were checked on {facts.parity['n_users']} "
            "sampled test users for the fp32 graph; int8 scores differ from PyTorch by design "
            "and its quality is measured separately (onnxruntime int8 row)."
        )
    return limits


def _batch1(facts: HandoffFacts, model: str, runtime: str) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in facts.latency
            if r["model"] == model and r["runtime"] == runtime and r["batch"] == 1
        ),
        None,
    )


def latency_ratios(facts: HandoffFacts) -> dict[str, float | None]:
    """p50 ratios at batch 1: teacher (onnxruntime) / this run served, and torch / onnxruntime."""
    served = _batch1(facts, "this run", facts.runtime)
    teacher = _batch1(facts, "teacher", "onnxruntime")
    torch_row = _batch1(facts, "this run", "torch")
    onnx_row = _batch1(facts, "this run", "onnxruntime")

    def ratio(a: dict | None, b: dict | None) -> float | None:
        if a is None or b is None or not b["p50_ms"]:
            return None
        return a["p50_ms"] / b["p50_ms"]

    return {
        "teacher_over_served_p50": ratio(teacher, served),
        "torch_over_onnxruntime_p50": ratio(torch_row, onnx_row),
    }


def card_dict(facts: HandoffFacts, gates: Gates) -> dict[str, Any]:
    """The model card as plain JSON-ready data (non-finite numbers become null)."""
    results = evaluate_gates(facts, gates)
    card = {
        "schema": CARD_SCHEMA,
        "run": dict.fromkeys(_RUN_KEYS) | facts.run,
        "handoff": {
            "precision": facts.handoff,
            "artifact": facts.artifact,
            "runtime": facts.runtime,
            "k": facts.k,
            "prepared": facts.prepared,
            "inputs": "context int64 [B] user index, or [B, L] item history (index + 1, 0 = pad); "
            "exclude bool [B, n_items]",
            "outputs": "top_items int64 [B, K] item indices (see item_map.csv), "
            "top_scores float32 [B, K]",
        },
        "dataset": dict.fromkeys(_DATASET_KEYS) | facts.dataset,
        "training": dict.fromkeys(_TRAINING_KEYS) | facts.training,
        "metrics": list(facts.metrics),
        "latency": list(facts.latency),
        "latency_ratios": latency_ratios(facts),
        "parity": facts.parity,
        "sizes": dict.fromkeys(_SIZE_KEYS) | facts.sizes,
        "artifacts": list(facts.artifacts),
        "environment": facts.environment,
        "thresholds": asdict(gates),
        "gates": [asdict(g) for g in results],
        "all_gates_passed": all(g.passed for g in results),
        "known_limits": known_limits(facts),
    }
    return jsonable(card)


# --------------------------------------------------------------------------- Markdown
def _num(value: Any, spec: str = ".4f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def _fence(text: str) -> str:
    """A code fence longer than any backtick run inside ``text`` (user text is in it)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _environment() -> jinja2.Environment:
    # Markdown, not HTML: autoescape would write &lt; for "<"; the template escapes for
    # Markdown itself with the `md` filter. StrictUndefined turns a misspelt key into an
    # error instead of a silently empty cell.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {
        "md": md_escape,
        "num": _num,
        "fence": _fence,
        "run_ref": lambda run_id: f"#{run_id}" if run_id else "—",
    }
    return env


_TEMPLATES = _environment()


def _card_markdown(card: dict[str, Any], facts: HandoffFacts) -> str:
    environment = [
        (key, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
        for key, v in sorted(card["environment"].items())
    ]
    return _TEMPLATES.get_template("model_card.md.j2").render(
        card,
        k=facts.k,
        quality_metrics=CARD_METRICS,
        kept_column=kept_key(facts.k),
        split_json=json.dumps(card["dataset"].get("split") or {}, sort_keys=True),
        config_json=json.dumps(card["run"].get("config") or {}, indent=2, sort_keys=True),
        environment=environment,
        onnx_file=ONNX_FILE,
        int8_file=INT8_FILE,
        known_limits=known_limits(facts, md_escape),
    )


def model_card(facts: HandoffFacts, gates: Gates) -> tuple[str, dict[str, Any]]:
    """The card as (Markdown, JSON-ready dict). User text in the Markdown is escaped."""
    card = card_dict(facts, gates)
    return _card_markdown(card, facts), card


def metrics_json(store: Store, run_id: int) -> dict[str, Any]:
    """Every stored result split, latency row and parity check of the run."""
    splits: dict[str, dict[str, float | None]] = {}
    for rec in store.result_records(run_id):
        splits.setdefault(rec.split, {})[rec.key] = rec.value
    return jsonable(
        {
            "run_id": run_id,
            "results": splits,
            "latency": [
                {
                    "runtime": r.runtime,
                    "batch": r.batch,
                    "p50_ms": r.p50,
                    "p95_ms": r.p95,
                    "p99_ms": r.p99,
                    "qps": r.qps,
                    "threads": r.threads,
                    "created": r.created.isoformat(),
                }
                for r in store.latencies(run_id)
            ],
            "parity": [
                {
                    "max_abs_diff": p.max_abs_diff,
                    "topk_agreement": p.topk_agreement,
                    "n_users": p.n_users,
                    "created": p.created.isoformat(),
                }
                for p in store.parities(run_id)
            ],
        }
    )


# --------------------------------------------------------------------------- page tables
def latency_frame(facts: HandoffFacts) -> pd.DataFrame:
    """The card's latency table (runtime x batch, this run then the teacher)."""
    return pd.DataFrame(list(facts.latency), columns=["run_id", *LATENCY_COLUMNS])[LATENCY_COLUMNS]


def quality_frame(facts: HandoffFacts) -> pd.DataFrame:
    """The card's quality table: this run through each runtime, teacher, twin, popularity."""
    k = facts.k
    columns = ["row", "run_id", "runtime", *(metric_key(m, k) for m in CARD_METRICS)]
    frame = pd.DataFrame(list(facts.metrics), columns=[*columns, kept_key(k)])
    numeric = [c for c in frame.columns if c not in ("row", "runtime", "run_id")]
    frame[numeric] = frame[numeric].astype("float64")
    return frame


def sizes_mb(facts: HandoffFacts) -> dict[str, float | None]:
    """fp32 weights, ONNX file and int8 file in decimal MB (None when unknown)."""
    sizes = facts.sizes
    keys = {"fp32 weights": "fp32_weights_bytes", ONNX_FILE: "onnx_bytes", INT8_FILE: "int8_bytes"}
    return {
        label: None if sizes.get(key) is None else sizes[key] / MB for label, key in keys.items()
    }
