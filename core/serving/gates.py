"""The handoff gates: pass/fail checks of a run's facts against editable thresholds.

Each gate gives one sentence a serving team can read without the numbers' context. A gate
whose measurement is missing fails and says so; ``>=``/``<=`` gates pass exactly at their
threshold; "beats the twin" is strict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from core.metrics import kept_fraction
from core.serving.facts import HandoffFacts

MB = 1_000_000  # sizes are decimal megabytes, as file browsers show them
NOT_MEASURED = "not measured yet: press Prepare handoff"


@dataclass(frozen=True)
class Gates:
    """Handoff thresholds (all editable on the page).

    ``min_kept`` is a fraction (0.95 = 95% of the teacher's NDCG@K); sizes are decimal MB.
    """

    min_kept: float = 0.95
    must_beat_baseline: bool = True
    max_p95_ms: float = 10.0
    max_size_mb: float = 50.0
    max_parity_diff: float = 1e-4
    min_topk_agreement: float = 0.99


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    measured: float | None
    threshold: float | None
    sentence: str

    @property
    def mark(self) -> str:
        return "✅" if self.passed else "❌"


def _at_least(value: float, threshold: float) -> bool:
    # Exactly at the threshold passes, also when float arithmetic lands one ulp below it.
    return value >= threshold or math.isclose(value, threshold, rel_tol=1e-12, abs_tol=1e-15)


def _at_most(value: float, threshold: float) -> bool:
    return value <= threshold or math.isclose(value, threshold, rel_tol=1e-12, abs_tol=1e-15)


def _quality_kept(facts: HandoffFacts, gates: Gates) -> GateResult:
    name, k = "quality_kept", facts.k
    if facts.teacher_ndcg is None or facts.teacher_ndcg <= 0:
        why = facts.teacher_note or "the teacher has no positive test NDCG"
        return GateResult(
            name, False, None, gates.min_kept, f"Cannot compare with a teacher: {why}."
        )
    kept = kept_fraction(facts.ndcg, facts.teacher_ndcg)
    if kept is None:
        return GateResult(name, False, None, gates.min_kept, f"Quality kept: {NOT_MEASURED}.")
    return GateResult(
        name,
        _at_least(kept, gates.min_kept),
        kept,
        gates.min_kept,
        f"Keeps {100 * kept:.1f}% of the teacher's NDCG@{k} ({facts.ndcg:.4f} vs "
        f"{facts.teacher_ndcg:.4f}; needs at least {100 * gates.min_kept:.1f}%).",
    )


def _beats_twin(facts: HandoffFacts) -> GateResult:
    name = "beats_twin"
    if facts.twin_id is None:
        why = facts.twin_note or "no no-teacher twin was trained"
        return GateResult(name, False, None, None, f"Cannot show that the teacher helps: {why}.")
    if facts.ndcg is None or facts.twin_ndcg is None:
        return GateResult(name, False, None, facts.twin_ndcg, f"Beats its twin: {NOT_MEASURED}.")
    ok = facts.ndcg > facts.twin_ndcg
    return GateResult(
        name,
        ok,
        facts.ndcg,
        facts.twin_ndcg,
        f"NDCG@{facts.k} {facts.ndcg:.4f} {'beats' if ok else 'does not beat'} the "
        f"no-teacher twin #{facts.twin_id} ({facts.twin_ndcg:.4f}; it must be higher).",
    )


def _limit(
    name: str,
    label: str,
    measured: float | None,
    threshold: float,
    within: Callable[[float, float], bool],
    sentence: Callable[[float], str],
) -> GateResult:
    """A gate on one measured number against a bound (missing = failed, said so)."""
    if measured is None:
        return GateResult(name, False, None, threshold, f"{label}: {NOT_MEASURED}.")
    return GateResult(name, within(measured, threshold), measured, threshold, sentence(measured))


def evaluate_gates(facts: HandoffFacts, gates: Gates) -> list[GateResult]:
    """Each gate's verdict with one sentence (see the module docstring).

    The parity gates judge the fp32 graph (int8 scores differ by design; its quality is
    judged by the NDCG gates, which use the handed-off artifact's onnxruntime NDCG).
    """
    k = facts.k
    size_mb = None if facts.size_bytes is None else facts.size_bytes / MB
    out = [_quality_kept(facts, gates)]
    if gates.must_beat_baseline:
        out.append(_beats_twin(facts))
    out += [
        _limit(
            "p95_latency",
            "p95 latency",
            facts.p95_ms,
            gates.max_p95_ms,
            _at_most,
            lambda v: (
                f"p95 latency of single requests in {facts.runtime} is {v:.3f} ms "
                f"(needs at most {gates.max_p95_ms:g} ms)."
            ),
        ),
        _limit(
            "size",
            "Size",
            size_mb,
            gates.max_size_mb,
            _at_most,
            lambda v: f"{facts.artifact} is {v:.3f} MB (needs at most {gates.max_size_mb:g} MB).",
        ),
        _limit(
            "parity",
            "Parity",
            facts.parity_max_diff,
            gates.max_parity_diff,
            _at_most,
            lambda v: (
                f"The fp32 ONNX top-{k} scores differ from PyTorch's by at most "
                f"{v:.2e} (tolerance {gates.max_parity_diff:.0e})."
            ),
        ),
        _limit(
            "topk_agreement",
            "Agreement",
            facts.topk_agreement,
            gates.min_topk_agreement,
            _at_least,
            lambda v: (
                f"onnxruntime agrees with PyTorch on {100 * v:.2f}% of the "
                f"top-{k} items (needs at least {100 * gates.min_topk_agreement:.2f}%)."
            ),
        ),
    ]
    return out
