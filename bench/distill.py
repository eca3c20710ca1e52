"""Benchmark: does distillation work on the demo shop (or any supported log)?

One run, printed and written to bench/results/distill.json: popularity, the teacher, the
student trained without a teacher (its twin), and one student per distillation method,
each with test NDCG@10, HR@10, MRR@10 (overall, and for new and repeat targets apart),
coverage@10, long-tail recall@10, parameters, seconds per epoch and training seconds.

Speed: each run's mean epoch is measured while it trains, minutes after its twin's, so the
ratio of the two also holds the machine's drift in between. The bench then times the twin's
and every distilled student's training steps side by side (core/timing.py, a few seconds)
and prints both ratios; ``step_ratio_paired`` is the side-by-side one. ``bench_seconds`` is
the whole script, imports included.

The "selected" student is picked on *validation* NDCG@10 (``selected_on: "valid"``); its
test figures are then read once. Configs come from the dataset's recipe (core/recipe.py).

    python bench/distill.py                 # demo shop
    python bench/distill.py --data FILE     # any supported log (CSV/TSV/Parquet/JSON Lines...)

Accepts every option of ``python -m core run`` (see --help).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the whole script, imports included

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cli import build_parser, format_table, prepare_experiment  # noqa: E402
from core.enums import Role  # noqa: E402
from core.pipeline import run_experiment  # noqa: E402
from core.timing import paired_step_seconds  # noqa: E402

OUT = ROOT / "bench" / "results" / "distill.json"
KEYS = [
    "name",
    "role",
    "method",
    "seed",
    "params",
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "ndcg@10_new",
    "ndcg@10_repeat",
    "coverage@10",
    "tail_recall@10",
    "valid_ndcg@10",
    "epoch_seconds",
    "train_seconds",
    "teacher_kept",
    "history_masked",
    "step_seconds_paired",
    "step_ratio_paired",
]


def ratio(a: float, b: float) -> float:
    """a / b, or nan when b is 0 (a teacher that hits nothing has no share to keep)."""
    return a / b if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    data, teacher, specs = prepare_experiment(args)
    outcomes = []
    rows = run_experiment(
        data, teacher=teacher, students=specs, log=lambda s: print(s, flush=True), outcomes=outcomes
    )
    trained = time.perf_counter() - STARTED
    teacher_model = next(o.model for o in outcomes if o.spec.role == Role.TEACHER)
    timed = {t.name: t for t in paired_step_seconds(data, specs, teacher_model)}
    twin_step = timed["student-no-teacher"].step_seconds
    for r in rows:
        if r["name"] in timed:
            r["step_seconds_paired"] = timed[r["name"]].step_seconds
            r["step_ratio_paired"] = ratio(timed[r["name"]].step_seconds, twin_step)
    wall = time.perf_counter() - STARTED
    students = [r for r in rows if r["role"] == "student"]
    selected = max(students, key=lambda r: r["valid_ndcg@10"]) if students else None
    out = [
        {k: r.get(k) for k in KEYS}
        | {"selected_on": "valid", "selected": r is selected, "bench_seconds": round(wall, 1)}
        for r in rows
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=2, default=float))

    by_name = {r["name"]: r for r in rows}
    t, pop, twin = by_name["teacher"], by_name["popularity"], by_name["student-no-teacher"]
    print()
    print(format_table(rows))
    print()
    print(f"history mask: {'on' if t['history_masked'] else 'off'} (the dataset's setting)")
    print(f"teacher / popularity NDCG@10: {ratio(t['ndcg@10'], pop['ndcg@10']):.2f}x")
    print(
        f"teacher / no-teacher twin NDCG@10: {ratio(t['ndcg@10'], twin['ndcg@10']):.2f}x (target >= 1.10x)"
    )
    if selected is not None:
        print()
        print("selection on validation NDCG@10:")
        for r in sorted(students, key=lambda r: -r["valid_ndcg@10"]):
            mark = "*" if r is selected else " "
            print(f"  {mark} {r['name']:<20} valid {r['valid_ndcg@10']:.4f}")
        print()
        print(f"selected: {selected['name']}; its test figures, read once:")
        print(f"  params / teacher params: {ratio(selected['params'], t['params']):.3f}")
        print(f"  keeps {ratio(selected['ndcg@10'], t['ndcg@10']):.1%} of the teacher's NDCG@10")
        gain = ratio(selected["ndcg@10"], twin["ndcg@10"]) - 1
        print(
            f"  vs its no-teacher twin: {selected['ndcg@10']:.4f} vs {twin['ndcg@10']:.4f} ({gain:+.1%})"
        )
        if not math.isnan(selected["ndcg@10_repeat"]):
            print(
                f"  new / repeat targets NDCG@10: {selected['ndcg@10_new']:.4f} / "
                f"{selected['ndcg@10_repeat']:.4f}"
            )
    print()
    print(
        f"speed vs the twin (target <= 1.5x): mean epoch while training | training steps timed "
        f"side by side ({next(iter(timed.values())).steps} steps each)"
    )
    for r in students:
        mark = "*" if r is selected else " "
        epochs = ratio(r["epoch_seconds"], twin["epoch_seconds"])
        print(f"  {mark} {r['name']:<20} {epochs:.2f}x | {r['step_ratio_paired']:.2f}x")
    slowest = max((r["step_ratio_paired"] for r in students), default=float("nan"))
    print(f"  slowest distilled step, side by side: {slowest:.2f}x the twin's")
    print(
        f"\nwrote {OUT}; the whole script took {wall:.0f} s ({trained:.0f} s to the last run's "
        f"test figures, {wall - trained:.0f} s of side-by-side timing)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
