"""Benchmark: training steps with glibc's default allocator settings and with core.allocator's.

A big catalog's score matrices are above glibc's largest adaptive mmap threshold (32 MB),
so by default every training step maps them afresh and the kernel zero-fills every page on
first touch (see core/allocator.py). This bench trains the recipe's no-teacher student (the
twin) for the same steps, from the same seed, in fresh processes, on their main thread (where
the CLI, the benches, the app's run processes and Ray tasks train): glibc's defaults against
``reuse_freed_blocks``. Rounds alternate the variants so the machine's drift hits them
alike. It prints each variant's median step,
the system time and minor page faults per step, peak RSS and a hash of the weights (they
must match), then the ratios, and writes bench/results/allocator.json.

    python bench/allocator.py                          # generated repeat_longtail (16,825 items)
    python bench/allocator.py --data FILE              # any supported log
    python bench/allocator.py --shape long_no_repeat   # 4,000 items: below the threshold
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "allocator.json"
VARIANTS = ("default", "reuse")
WARMUP = 5


def child(args: argparse.Namespace) -> None:
    """One variant in this fresh process: print one JSON line of its measurements."""
    from core import allocator

    if args.child == "reuse" and not allocator.reuse_freed_blocks():
        raise SystemExit("The allocator settings did not apply (not glibc, or MALLOC_* set).")
    import numpy as np
    import torch

    from bench.sweep import load  # the same loader as the sweep: demo, shape or file
    from core.models import build_model
    from core.recipe import recipe_for
    from core.train import Objective, make_optimizer, optimizer_step

    data = load(args)
    recipe = recipe_for(data)
    train = recipe.student_train
    torch.manual_seed(train.seed)
    model = build_model(recipe.student, data.n_users, data.n_items)
    objective = Objective(model, data, train)
    optimizer = make_optimizer(model, train)
    model.train()
    batches = list(
        model.task_batches(data, train.batch_size, train.negatives, np.random.default_rng(0))
    )
    steps = min(args.steps, len(batches) - WARMUP)
    for batch in batches[:WARMUP]:
        optimizer_step(objective, optimizer, batch)
    seconds = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for batch in batches[WARMUP : WARMUP + steps]:
        started = time.perf_counter()
        optimizer_step(objective, optimizer, batch)
        seconds.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "step_ms": statistics.median(seconds) * 1e3,
        "sys_ms": (after.ru_stime - before.ru_stime) / steps * 1e3,
        "faults": (after.ru_minflt - before.ru_minflt) / steps,
    }
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    out.update(
        items=data.n_items,
        steps=steps,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        weights=hashlib.sha256(weights).hexdigest()[:16],
    )
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="interaction log; default: a generated shape")
    parser.add_argument(
        "--shape",
        choices=("long_no_repeat", "repeat_longtail"),
        default="repeat_longtail",
        help="generated log shape",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="generated log size multiplier")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per process")
    parser.add_argument("--rounds", type=int, default=3, help="processes per variant")
    parser.add_argument("--child", choices=("default", "reuse"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    started = time.perf_counter()
    passed = ["--data", str(args.data)] if args.data else ["--shape", args.shape]
    passed += ["--scale", str(args.scale)]
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        for settings in VARIANTS if round_ % 2 == 0 else tuple(reversed(VARIANTS)):
            command = [sys.executable, __file__, "--child", settings, *passed]
            command += ["--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            runs[settings].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1}: {settings:7s} {runs[settings][-1]}", flush=True)

    rows = []
    for settings, measured in runs.items():
        rows.append(
            {
                "settings": settings,
                "items": measured[0]["items"],
                "steps": measured[0]["steps"],
                "step_ms": statistics.median(m["step_ms"] for m in measured),
                "sys_ms": statistics.median(m["sys_ms"] for m in measured),
                "faults": statistics.median(m["faults"] for m in measured),
                "peak_rss_mb": max(m["peak_rss_mb"] for m in measured),
                "weights": sorted({m["weights"] for m in measured}),
            }
        )
    print(f"\n{'settings':9s} {'step ms':>8s} {'sys ms':>7s} {'faults':>8s} {'RSS MB':>7s}")
    for r in rows:
        print(
            f"{r['settings']:9s} {r['step_ms']:8.1f} {r['sys_ms']:7.1f} {r['faults']:8.0f} "
            f"{r['peak_rss_mb']:7.0f}  weights {','.join(r['weights'])}"
        )
    default, reuse = rows
    summary = {
        "speedup": default["step_ms"] / reuse["step_ms"],
        "same_weights": default["weights"] == reuse["weights"] and len(reuse["weights"]) == 1,
        "extra_rss_mb": reuse["peak_rss_mb"] - default["peak_rss_mb"],
    }
    print(
        f"default / reuse step time {summary['speedup']:.2f}x on {default['items']:,} items; "
        f"the same weights: {summary['same_weights']}; "
        f"{summary['extra_rss_mb']:+.0f} MB peak RSS"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - started
    OUT.write_text(json.dumps({"rows": rows, "summary": summary, "seconds": wall}, indent=2))
    print(f"wrote {OUT} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
