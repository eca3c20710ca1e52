"""Benchmark: does distillation work on the demo shop (or an uploaded-format file)?

One run, printed and written to bench/results/distill.json: popularity, the teacher, the
student trained without a teacher, and one student per distillation method, each with test
NDCG@10, HR@10, MRR@10, coverage@10, long-tail recall@10, parameters and training seconds.

    python bench/distill.py                 # demo shop, default presets (core/pipeline.py)
    python bench/distill.py --data FILE     # the same on an uploaded-format file

Accepts every option of ``python -m core run`` (see --help); this script only fixes where
the JSON goes and prints the targets next to the measured ratios.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.cli import build_parser, experiment, format_table  # noqa: E402

OUT = ROOT / "bench" / "results" / "distill.json"


def ratio(a: float, b: float) -> float:
    """a / b, or nan when b is 0 (a teacher that hits nothing has no share to keep)."""
    return a / b if b else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(["run", *(argv if argv is not None else sys.argv[1:])])
    started = time.perf_counter()
    rows = experiment(args)
    keys = [
        "name",
        "role",
        "method",
        "params",
        "ndcg@10",
        "hr@10",
        "mrr@10",
        "coverage@10",
        "tail_recall@10",
        "train_seconds",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            [{k: r.get(k) for k in keys} | {"teacher_kept": r.get("teacher_kept")} for r in rows],
            indent=2,
        )
    )

    by_role = {r["name"]: r for r in rows}
    t, pop, base = by_role["teacher"], by_role["popularity"], by_role["student-no-teacher"]
    students_rows = [r for r in rows if r["role"] == "student"]
    print()
    print(format_table(rows))
    print()
    print(
        f"teacher / popularity NDCG@10: {ratio(t['ndcg@10'], pop['ndcg@10']):.2f}x (target >= 1.5x)"
    )
    if students_rows:
        best = max(students_rows, key=lambda r: r["ndcg@10"])
        print(
            f"student params / teacher params: {ratio(best['params'], t['params']):.3f} (target <= 0.10)"
        )
        print(
            f"best distilled ({best['name']}) keeps {ratio(best['ndcg@10'], t['ndcg@10']):.1%} of teacher NDCG@10 (target >= 95%)"
        )
        print(
            f"best distilled vs no-teacher student: {best['ndcg@10']:.4f} vs {base['ndcg@10']:.4f} ({ratio(best['ndcg@10'], base['ndcg@10']) - 1:+.1%})"
        )
    print(f"\nwrote {OUT} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
