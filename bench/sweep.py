"""Benchmark: students at every size, with and without the teacher, over seeds.

For each student size (about 1%, 3%, 10% and 25% of the teacher's parameters; width is the
size knob because item tables dominate):

1. *selection, on validation only*: each candidate method is trained once (first seed) and
   the one with the best validation NDCG@10 is kept for that size;
2. *measurement*: the selected method and the no-teacher twin are trained on every seed;
   their test figures are reported as mean +- std.

Writes bench/results/sweep.json, one row per run: name, role (teacher|student|baseline),
method, params, params_fraction, seed, ndcg@10, hr@10, mrr@10, valid_ndcg@10,
epoch_seconds. Prints the selection first, then the test table.

    python bench/sweep.py                       # demo shop, seeds 0,1,2
    python bench/sweep.py --shape long_no_repeat
    python bench/sweep.py --data FILE --seeds 0,1,2 --fractions 0.01,0.1
    python bench/sweep.py --methods 'soft:alpha=0.9;combined'   # a method with its own knobs

A method is a name (core.enums.Method) with the recipe's knobs, or ``name:knob=value,...``
(knobs of core.distill.DistillConfig) to try it with other ones; ``;`` separates methods.
``--methods none`` trains the twins alone, for the teacher / twin ratio of a log:

    python bench/sweep.py --shape repeat_longtail --methods none --fractions 0.1 --seeds 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.distill import DistillConfig  # noqa: E402
from core.enums import Method, Role  # noqa: E402
from core.models import count_parameters  # noqa: E402
from core.pipeline import RunSpec, summary_row, train_and_evaluate  # noqa: E402
from core.recipe import SIZE_FRACTIONS, recipe_for, student_width  # noqa: E402

OUT = ROOT / "bench" / "results" / "sweep.json"
# The candidates each size selects from: the recipe's method (soft), the same started from
# the teacher's embeddings, and the literature's picks for small students.
DEFAULT_METHODS = "soft;soft:teacher_init=true;combined;ranking;listwise"
ROW_KEYS = (
    "name",
    "role",
    "method",
    "params",
    "params_fraction",
    "seed",
    "ndcg@10",
    "hr@10",
    "mrr@10",
    "valid_ndcg@10",
    "epoch_seconds",
    "ndcg@10_new",
    "ndcg@10_repeat",
)


def load(args: argparse.Namespace):
    if args.shape:
        from core.ingestion.build import build_dataset
        from core.ingestion.options import ColumnMapping
        from core.ingestion.shapes import generate_shape

        inter, catalog = generate_shape(args.shape, scale=args.scale)
        mapping = ColumnMapping(
            user="user_id", item="item_id", timestamp="timestamp", rating=None, event=None
        )
        return build_dataset(inter, mapping, catalog=catalog, name=args.shape)
    if args.data:
        from core.ingestion.build import load_interactions

        return load_interactions(args.data.read_bytes(), args.data.name)
    from core.pipeline import load_demo_dataset

    return load_demo_dataset(scale=args.scale)


def row(outcome, teacher, fraction: float) -> dict:
    r = summary_row(outcome, teacher)
    r["params_fraction"] = fraction
    r["role"] = str(outcome.spec.role)
    r["method"] = str(outcome.spec.distill.method) if outcome.spec.role == Role.STUDENT else None
    return {k: r.get(k) for k in ROW_KEYS}


TEACHERS = ROOT / "bench" / "results" / ".teachers"


def _teacher_path(data, spec: RunSpec) -> Path:
    from core.ingestion.registry import fingerprint

    described = spec.to_dict()
    # Distillation knobs at their defaults (all of them, for a teacher) stay out of the key,
    # so a knob added to DistillConfig later does not orphan the teachers saved before it.
    defaults = asdict(DistillConfig())
    described["distill"] = {k: v for k, v in described["distill"].items() if defaults[k] != v}
    key = json.dumps([fingerprint(data), described], sort_keys=True, default=str)
    return TEACHERS / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def cached_teacher(data, spec: RunSpec):
    """A teacher trained earlier on the same data with the same spec, or None."""
    path = _teacher_path(data, spec)
    if not path.exists():
        return None
    print(f"reusing the teacher saved at {path}", flush=True)
    return torch.load(path, weights_only=False)


def save_teacher(data, outcome) -> None:
    path = _teacher_path(data, outcome.spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(outcome, path)


def parse_methods(text: str) -> list[tuple[str, Method, dict]]:
    """``"soft:alpha=0.9;combined"`` -> ``[(label, method, knobs), ...]``.

    Methods are separated by ``;`` (or ``,`` when no method has knobs)."""
    parts = text.split(";") if (";" in text or ":" in text) else text.split(",")
    out = []
    for part in (p.strip() for p in parts if p.strip()):
        name, _, knob_text = part.partition(":")
        knobs = {}
        for pair in (p for p in knob_text.split(",") if p):
            key, _, value = pair.partition("=")
            if key not in DistillConfig.__dataclass_fields__ or key == "method":
                raise SystemExit(f"Unknown distillation knob {key!r} in --methods {text!r}.")
            default = getattr(DistillConfig(), key)
            knobs[key] = type(default)(value) if not isinstance(default, bool) else value == "true"
        out.append((part.replace(":", "@"), Method(name), knobs))
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--shape", choices=("long_no_repeat", "repeat_longtail"))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fractions", default=",".join(str(f) for f in SIZE_FRACTIONS))
    p.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="candidates for the selection, separated by ';'; name or name:knob=value,...",
    )
    p.add_argument("--epochs", type=int, help="cap on every run's epochs (default: the recipe)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument(
        "--reuse-teacher",
        action="store_true",
        help="keep the trained teacher under bench/results/.teachers and reuse it when the "
        "data and the teacher's spec are the same (for iterating on students)",
    )
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    methods = parse_methods(args.methods)
    twins_only = all(m[1] == Method.NONE for m in methods)
    methods = [m for m in methods if m[1] != Method.NONE]
    started = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731

    data = load(args)
    plan = recipe_for(data, seed=seeds[0])

    def cap(train):
        return train.capped(args.epochs) if args.epochs else train

    log(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, "
        f"{data.n_interactions:,} interactions; mask {'on' if data.masks_history else 'off'}"
    )
    for reason in plan.reasons:
        log(f"  recipe: {reason}")
    teacher_spec = RunSpec("teacher", Role.TEACHER, plan.teacher, cap(plan.teacher_train))
    teacher = cached_teacher(data, teacher_spec) if args.reuse_teacher else None
    if teacher is None:
        teacher = train_and_evaluate(data, teacher_spec)
        if args.reuse_teacher:
            save_teacher(data, teacher)
    t_params = teacher.params
    rows = [row(teacher, None, 1.0)]
    log(
        f"teacher: test ndcg@10 {teacher.test.metrics['ndcg@10']:.4f}, {t_params:,} params, "
        f"{teacher.train_seconds:.0f}s"
    )

    selection: dict[float, tuple[str, float]] = {}
    for fraction in fractions:
        width = student_width(plan.teacher, data.n_users, data.n_items, fraction)
        model = replace(plan.student, dim=width)
        real = count_parameters(model, data.n_users, data.n_items) / t_params
        base_train = cap(plan.student_train)

        def spec(candidate, seed: int, model=model, base_train=base_train, width=width):
            label, method, knobs = candidate
            role = Role.BASELINE if method == Method.NONE else Role.STUDENT
            distill = (
                replace(plan.distill, method=method, **knobs)
                if method != Method.NONE
                else DistillConfig()
            )
            return RunSpec(
                f"d{width}-{label}", role, model, replace(base_train, seed=seed), distill
            )

        twin_candidate = ("none", Method.NONE, {})

        if twins_only:  # --methods none: the twins alone (the teacher / twin ratio)
            for seed in seeds:
                twin = train_and_evaluate(data, spec(twin_candidate, seed))
                rows.append(row(twin, teacher, fraction))
                log(f"  size {fraction:.0%} seed {seed}: twin {twin.test.metrics['ndcg@10']:.4f}")
            continue
        # 1. selection on validation (first seed)
        tried = {}
        for candidate in methods:
            out = train_and_evaluate(data, spec(candidate, seeds[0]), teacher=teacher.model)
            tried[candidate[0]] = (candidate, out)
            log(
                f"  size {fraction:.0%} (d={width}, {real:.1%}) {candidate[0]:<16} "
                f"valid {out.training.best_val_ndcg:.4f}"
            )
        best = max(tried, key=lambda m: tried[m][1].training.best_val_ndcg)
        selection[fraction] = (best, tried[best][1].training.best_val_ndcg)
        log(f"  size {fraction:.0%}: selected {best} on validation")
        for label, (_, out) in tried.items():
            if label != best:
                rows.append(row(out, teacher, fraction) | {"selected": False})
        # 2. measurement over seeds: the selected method and the twin
        for seed in seeds:
            distilled = (
                tried[best][1]
                if seed == seeds[0]
                else train_and_evaluate(data, spec(tried[best][0], seed), teacher=teacher.model)
            )
            twin = train_and_evaluate(data, spec(twin_candidate, seed))
            rows.append(row(distilled, teacher, fraction) | {"selected": True})
            rows.append(row(twin, teacher, fraction))
            log(
                f"  size {fraction:.0%} seed {seed}: distilled "
                f"{distilled.test.metrics['ndcg@10']:.4f} twin {twin.test.metrics['ndcg@10']:.4f}"
            )

    wall = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2, default=float))

    t_ndcg = teacher.test.metrics["ndcg@10"]
    print("\nselection (validation NDCG@10, first seed):")
    for fraction, (method, valid) in selection.items():
        print(f"  {fraction:>5.0%}: {method} ({valid:.4f})")
    print(f"\ntest NDCG@10 over seeds {seeds} (mean +- std); teacher {t_ndcg:.4f}")
    print(
        f"{'size':>6} {'params':>7} {'distilled':>17} {'twin':>17} {'gain':>7} {'kept':>6} {'> 2 std':>8}"
    )
    for fraction in fractions:
        sel = [r for r in rows if r["params_fraction"] == fraction and r.get("selected")]
        twins = [r for r in rows if r["params_fraction"] == fraction and r["role"] == "baseline"]
        b_mean, b_std = mean_std([r["ndcg@10"] for r in twins])
        if twins_only:
            print(
                f"{fraction:>6.0%} {twins[0]['params']:>7,} {'':>17} {b_mean:.4f} +- {b_std:.4f}"
                f"   teacher / twin {t_ndcg / b_mean:.2f}x (target >= 1.10x)"
            )
            continue
        d_mean, d_std = mean_std([r["ndcg@10"] for r in sel])
        clear = d_mean - b_mean > 2 * max(d_std, b_std)
        print(
            f"{fraction:>6.0%} {sel[0]['params']:>7,} {d_mean:.4f} +- {d_std:.4f} "
            f"{b_mean:.4f} +- {b_std:.4f} {d_mean / b_mean - 1:>+7.1%} {d_mean / t_ndcg:>6.1%} "
            f"{'yes' if clear else 'no':>8}"
        )
    print(f"\nwrote {args.out} in {wall:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
