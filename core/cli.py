"""Headless command line: the app's pipeline without a browser.

    python -m core stats   [--data FILE]            validate a log and print its statistics
    python -m core demo    --out DIR                write the demo shop as CSV files
    python -m core load-demo                        register the demo shop in the run store
    python -m core run     [--data FILE] [...]      teacher, students, baselines: table + JSON
    python -m core worker  [--max-runs N] [--device cuda]   serve the run queue headless

Same seed and settings -> the same numbers the app shows for the same runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from core.dataset import HISTORY_MASK_SETTINGS, InteractionData
from core.enums import DISTILL_METHODS, TRAINABLE_FAMILIES, Role, choice_list
from core.errors import DistilleryError
from core.pipeline import (
    RunSpec,
    load_demo_dataset,
    run_experiment,
    student_specs,
)
from core.train import TrainConfig


def add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        help="interaction log (CSV/TSV/Parquet/JSON Lines, gz too; u.data, .inter); "
        "default: the demo shop",
    )
    parser.add_argument(
        "--catalog", type=Path, help="optional catalog file (item id, title, category, price)"
    )
    for role, flag, what in (
        ("user", "--user-col", "user ids"),
        ("item", "--item-col", "item ids"),
        ("timestamp", "--time-col", "timestamps"),
        ("event", "--event-col", "event types (view, cart, purchase...)"),
    ):
        parser.add_argument(
            flag,
            dest=f"{role}_col",
            metavar="COLUMN",
            help=f"the column of --data holding the {what}; default: detected by name",
        )
    parser.add_argument(
        "--demo-scale", type=float, default=1.0, help="demo shop size multiplier (default 1.0)"
    )
    parser.add_argument(
        "--split",
        choices=("loo", "random"),
        default="loo",
        help="leave-one-out by time (default) or random 80/10/10",
    )
    parser.add_argument(
        "--history-mask",
        choices=HISTORY_MASK_SETTINGS,
        default="auto",
        help="evaluation masks the user's history: auto (off when many targets are repeats), "
        "on or off",
    )
    parser.add_argument(
        "--min-user", type=int, default=1, help="k-core: minimum interactions per user"
    )
    parser.add_argument(
        "--min-item", type=int, default=1, help="k-core: minimum interactions per item"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and every run")


def load_data(args: argparse.Namespace) -> InteractionData:
    from core.ingestion.build import load_interactions
    from core.ingestion.options import CleanOptions, SplitOptions

    split = SplitOptions(method=args.split, seed=args.seed, history_mask=args.history_mask)
    columns = {
        role: col
        for role in ("user", "item", "timestamp", "event")
        if (col := getattr(args, f"{role}_col", None)) is not None
    }
    if args.data is None:
        if columns:
            raise DistilleryError(
                "--user-col, --item-col, --time-col and --event-col map the columns of a log "
                "given with --data; add --data FILE or drop them."
            )
        return load_demo_dataset(scale=args.demo_scale, split=split)
    return load_interactions(
        args.data,
        args.data.name,
        columns=columns,
        catalog_source=args.catalog,
        catalog_name=args.catalog.name if args.catalog else None,
        clean=CleanOptions(
            min_user_interactions=args.min_user, min_item_interactions=args.min_item
        ),
        split=split,
        # A file named on the command line is not an upload: no upload limit, only the
        # machine's memory budget (core.ingestion.limits), and big files are streamed.
        max_bytes=None,
    )


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = [
        "name",
        "role",
        "params",
        "ndcg@10",
        "hr@10",
        "mrr@10",
        "coverage@10",
        "tail_recall@10",
        "teacher_kept",
        "train_seconds",
    ]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    data = load_data(args)
    stats = {"name": data.name, **data.stats(), "notes": list(data.notes)}
    # Strict JSON: a log without timestamps has no interactions per day (NaN), and NaN is
    # not JSON; it is printed as null.
    print(json.dumps(_plain_json(stats), indent=2, allow_nan=False))
    return 0


def _plain_json(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones and NaN or infinity as None."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from core.ingestion.demo import DemoConfig, generate_demo

    interactions, catalog = generate_demo(DemoConfig(scale=args.demo_scale))
    args.out.mkdir(parents=True, exist_ok=True)
    interactions.to_csv(args.out / "interactions.csv", index=False)
    catalog.to_csv(args.out / "catalog.csv", index=False)
    print(f"wrote {len(interactions):,} interactions and {len(catalog):,} products to {args.out}")
    return 0


def cmd_load_demo(args: argparse.Namespace) -> int:
    from core.ingestion.registry import register_dataset
    from core.store import Store

    data = load_demo_dataset(scale=args.demo_scale)
    with Store() as store:
        record = register_dataset(store, data, source="demo shop")
        print(
            f"dataset #{record.id} {record.name!r}: {record.n_users:,} users, {record.n_items:,} items ({store.url})"
        )
    return 0


def experiment_specs(
    args: argparse.Namespace, data: InteractionData
) -> tuple[RunSpec, list[RunSpec]]:
    """The teacher and students to run: the dataset's recipe, with any flag given on top."""
    from core.recipe import recipe_for

    plan = recipe_for(data, student_fraction=args.student_fraction, seed=args.seed)

    def given(**flags: Any) -> dict[str, Any]:
        return {k: v for k, v in flags.items() if v is not None}

    teacher_model = replace(
        plan.teacher,
        **given(family=args.teacher_family, dim=args.teacher_dim, layers=args.teacher_layers),
    )
    student_model = replace(
        plan.student,
        **given(family=args.student_family, dim=args.student_dim, layers=args.student_layers),
    )

    def capped(train: TrainConfig) -> TrainConfig:
        """The plan's training, at most ``--epochs`` epochs in all (TrainConfig.capped)."""
        if args.epochs:
            train = train.capped(args.epochs)
        return replace(train, seed=args.seed, device=args.device)

    teacher_train = capped(plan.teacher_train)
    student_train = capped(plan.student_train)
    teacher = RunSpec(name="teacher", role=Role.TEACHER, model=teacher_model, train=teacher_train)
    methods = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in methods if m not in DISTILL_METHODS]
    if unknown:
        raise DistilleryError(
            f"Unknown distillation method {unknown[0]!r}; choose from {choice_list(DISTILL_METHODS)}."
        )
    knobs = asdict(plan.distill)
    knobs.pop("method")
    knobs.update(
        given(
            temperature=args.temperature,
            alpha=args.alpha,
            beta=args.beta,
            top_k=args.top_k,
            lam=args.lam,
            teacher_init=args.teacher_init or None,
        )
    )
    return teacher, student_specs(student_model, student_train, methods, **knobs)


def add_experiment_args(parser: argparse.ArgumentParser) -> None:
    recipe = "default: the dataset's recipe (core/recipe.py)"
    parser.add_argument("--teacher-family", choices=TRAINABLE_FAMILIES, help=recipe)
    parser.add_argument("--teacher-dim", type=int, help=recipe)
    parser.add_argument("--teacher-layers", type=int, help=recipe)
    parser.add_argument("--student-family", choices=TRAINABLE_FAMILIES, help=recipe)
    parser.add_argument("--student-dim", type=int, help=recipe)
    parser.add_argument("--student-layers", type=int, help=recipe)
    parser.add_argument(
        "--student-fraction",
        type=float,
        default=0.10,
        help="student size as a share of the teacher's parameters (default 0.10)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(DISTILL_METHODS),
        help=f"comma-separated subset of {','.join(DISTILL_METHODS)}",
    )
    parser.add_argument("--epochs", type=int, help="maximum epochs for every run; " + recipe)
    parser.add_argument("--temperature", type=float, help="soft targets: temperature T; " + recipe)
    parser.add_argument("--alpha", type=float, help="soft targets: weight a of the KL; " + recipe)
    parser.add_argument("--beta", type=float, help="hard targets: weight b; " + recipe)
    parser.add_argument("--top-k", type=int, help="teacher top-K for hard/ranking/listwise")
    parser.add_argument("--lam", type=float, help="ranking distillation position decay lambda")
    parser.add_argument(
        "--teacher-init",
        action="store_true",
        help="start each distilled student's item table from the teacher's leading principal "
        "directions (core.embedding_init)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", type=Path, help="write the result rows to this JSON file")


def prepare_experiment(
    args: argparse.Namespace,
) -> tuple[InteractionData, RunSpec, list[RunSpec]]:
    """The data and the runs ``args`` asks for; prints the data's size and the device."""
    from core.train import resolve_device

    data = load_data(args)
    teacher, students = experiment_specs(args, data)
    print(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, "
        f"{data.n_interactions:,} interactions; device {resolve_device(args.device)}",
        flush=True,
    )
    return data, teacher, students


def experiment(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Load the data and run popularity, teacher and students as ``args`` says; log progress."""
    data, teacher, students = prepare_experiment(args)
    return run_experiment(
        data, teacher=teacher, students=students, log=lambda s: print(s, flush=True)
    )


def cmd_run(args: argparse.Namespace) -> int:
    rows = experiment(args)
    print()
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2, default=float))
        print(f"\nwrote {args.json}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from core.worker import run_worker

    return run_worker(
        max_runs=args.max_runs,
        device=args.device,
        threads=args.threads,
        lease_s=args.lease_seconds,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m core", description="Distillery: distill recommenders from the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="validate an interaction log and print its statistics")
    add_data_args(p)
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("demo", help="write the built-in demo shop as CSV files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--demo-scale", type=float, default=1.0)
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser(
        "load-demo", help="register the demo shop in the run store (what the app starts from)"
    )
    p.add_argument("--demo-scale", type=float, default=1.0)
    p.set_defaults(func=cmd_load_demo)
    p = sub.add_parser(
        "run", help="train a teacher, distilled students and baselines; print a table"
    )
    add_data_args(p)
    add_experiment_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser(
        "worker", help="serve the run queue without a browser (a GPU box) until SIGTERM"
    )
    p.add_argument("--max-runs", type=int, help="stop after this many runs (default: never)")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="train every run on this device (default: each run's own setting)",
    )
    p.add_argument("--threads", type=int, default=1, help="runs trained at once (default 1)")
    p.add_argument(
        "--lease-seconds",
        type=float,
        help="how long a claimed run stays this worker's without a heartbeat (default 30)",
    )
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DistilleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
