"""Benchmark: is each of the recipe's constants the best of its neighbours, on validation?

For one log (the demo shop, a generated shape, or any supported file), trains the recipe's
teacher and, one knob at a time, its neighbours: half and double the width, dropout 0.1
lower and 0.2 higher, half and double the learning rate, the other rate schedules (constant
with or without the anneal after early stopping, linear over all epochs), 2/3 and
4/3 of its epochs, one block fewer and one more. For the student (the recipe's 10% width,
no teacher): the teacher's learning rate against the recipe's 3x, dropout 0.1 and 0.2
against none, and 3/4 and 3/2 of its epochs. ``--live``
does the same around the live demo's recipe (core.recipe.live: a few fixed epochs, less
dropout, a larger rate that falls linearly), plus its schedule against a constant rate.
Every variant is scored by its best *validation* NDCG@10 only: test figures are never read
here, so choosing on this table cannot leak the test split.

Writes bench/results/recipe.json, one row per variant: ``model`` (teacher|student),
``knob``, ``value``, ``valid_ndcg@10``, ``best_epoch``, ``epochs``, ``epoch_seconds``,
``recipe`` (whether it is the recipe's own value). Prints, per knob, whether the recipe's
value is the best on validation.

    python bench/recipe.py                          # demo shop, the recipe's epochs
    python bench/recipe.py --shape long_no_repeat --epochs 15
    python bench/recipe.py --data FILE --knobs dim,lr
    python bench/recipe.py --live --knobs dropout,lr,schedule
    python bench/recipe.py --knobs schedule,epochs
    python bench/recipe.py --knobs student_dropout,student_epochs,student_lr
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.models import build_model  # noqa: E402
from core.recipe import ANNEAL_EPOCHS, live, recipe_for  # noqa: E402
from core.train import train_model  # noqa: E402

OUT = ROOT / "bench" / "results" / "recipe.json"
KNOBS = (
    "dim",
    "dropout",
    "lr",
    "layers",
    "schedule",
    "epochs",
    "student_lr",
    "student_dropout",
    "student_epochs",
)


def schedules(train) -> dict:
    """The rate schedules a teacher is compared on: constant (early stopping alone), the
    same followed by the recipe's anneal, and a rate falling linearly over all epochs."""
    anneal = train.anneal_epochs or ANNEAL_EPOCHS
    return {
        "constant": replace(train, lr_schedule="constant", anneal_epochs=0),
        f"constant+anneal {anneal}": replace(train, lr_schedule="constant", anneal_epochs=anneal),
        "linear": replace(train, lr_schedule="linear", anneal_epochs=0),
    }


def variants(plan, knobs: tuple[str, ...]):
    """``(model, knob, value, ModelConfig, TrainConfig, is_recipe)`` for every variant."""
    t, tt, s, st = plan.teacher, plan.teacher_train, plan.student, plan.student_train
    yield "teacher", "recipe", None, t, tt, True
    if "dim" in knobs:
        for dim in (max(2, t.dim // 2), t.dim * 2):
            yield "teacher", "dim", dim, replace(t, dim=dim), tt, False
    if "dropout" in knobs and t.family == "sasrec":
        for p in (round(max(0.0, t.dropout - 0.1), 2), round(min(0.9, t.dropout + 0.2), 2)):
            yield "teacher", "dropout", p, replace(t, dropout=p), tt, False
    if "lr" in knobs:
        for lr in (tt.lr / 2, tt.lr * 2):
            yield "teacher", "lr", lr, t, replace(tt, lr=lr), False
    if "schedule" in knobs:
        for label, other in schedules(tt).items():
            if other != tt:
                yield "teacher", "schedule", label, t, other, False
    if "epochs" in knobs:
        for epochs in (max(1, tt.epochs * 2 // 3), tt.epochs * 4 // 3):
            # A schedule run to its end stays so; otherwise early stopping keeps its minimum.
            least = epochs if tt.min_epochs == tt.epochs else min(tt.min_epochs, epochs)
            yield (
                "teacher",
                "epochs",
                epochs,
                t,
                replace(tt, epochs=epochs, min_epochs=least),
                False,
            )
    if "layers" in knobs and t.family == "sasrec":
        for layers in (max(1, t.layers - 1), t.layers + 1):
            if layers != t.layers:
                yield "teacher", "layers", layers, replace(t, layers=layers), tt, False
    if any(k.startswith("student_") for k in knobs):
        yield "student", "recipe", None, s, st, True
    if "student_lr" in knobs:
        yield "student", "lr", tt.lr, s, replace(st, lr=tt.lr), False
    if "student_dropout" in knobs and s.family == "sasrec":
        for p in (0.1, 0.2):
            if p != s.dropout:
                yield "student", "dropout", p, replace(s, dropout=p), st, False
    if "student_epochs" in knobs:
        for epochs in (max(1, st.epochs * 3 // 4), st.epochs * 3 // 2):
            cap = replace(st, epochs=epochs, min_epochs=min(st.min_epochs, epochs))
            yield "student", "epochs", epochs, s, cap, False


def main(argv: list[str] | None = None) -> int:
    from bench.sweep import load  # the same loader as the sweep: demo, shape or file

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--shape", choices=("long_no_repeat", "repeat_longtail"))
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--knobs", default=",".join(KNOBS))
    p.add_argument("--epochs", type=int, help="cap on every variant's epochs (default: recipe)")
    p.add_argument("--live", action="store_true", help="around the live demo's recipe")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    knobs = tuple(k for k in args.knobs.split(",") if k)
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        p.error(f"unknown knob(s) {sorted(unknown)}; choose from {', '.join(KNOBS)}")
    started = time.perf_counter()
    data = load(args)
    plan = live(recipe_for(data)) if args.live else recipe_for(data)
    print(f"{data.name}: {data.n_users:,} users, {data.n_items:,} items", flush=True)
    rows = []
    for model_kind, knob, value, model_config, train_config, is_recipe in variants(plan, knobs):
        if args.epochs:
            train_config = train_config.capped(args.epochs)
        torch.manual_seed(train_config.seed)
        model = build_model(model_config, data.n_users, data.n_items)
        result = train_model(model, data, train_config)
        seconds = [r.seconds for r in result.history]
        row = {
            "model": model_kind,
            "knob": knob,
            "value": value,
            "valid_ndcg@10": result.best_val_ndcg,
            "best_epoch": result.best_epoch,
            "epochs": len(result.history),
            "epoch_seconds": float(np.median(seconds)) if seconds else None,
            "recipe": is_recipe,
        }
        rows.append(row)
        print(
            f"  {model_kind:<8} {knob:<8} {value!s:<8} valid {row['valid_ndcg@10']:.4f} "
            f"(best epoch {row['best_epoch']} of {row['epochs']})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2, default=float) + "\n")
    print("\nper knob, on validation NDCG@10:")
    for model_kind in ("teacher", "student"):
        base = next((r for r in rows if r["model"] == model_kind and r["recipe"]), None)
        if base is None:
            continue
        for knob in dict.fromkeys(
            r["knob"] for r in rows if r["model"] == model_kind and r["knob"] != "recipe"
        ):
            others = [r for r in rows if r["model"] == model_kind and r["knob"] == knob]
            best = max([base, *others], key=lambda r: r["valid_ndcg@10"])
            verdict = (
                "the recipe's value is best"
                if best is base or best["recipe"]
                else (
                    f"{knob}={best['value']} is better ({best['valid_ndcg@10']:.4f} vs "
                    f"{base['valid_ndcg@10']:.4f})"
                )
            )
            print(f"  {model_kind} {knob}: {verdict}")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
