"""Benchmark: what training costs in a worker thread instead of the main thread.

The app trains in the job manager's threads; the CLI in its main thread. On the 2-core
machine the same SASRec epoch took about 30% longer in a thread. This script times the
building blocks of a SASRec step (forward + backward, 300 times each) in the main thread and
then in a new thread of the same process, and one teacher epoch of the demo shop's recipe
both ways (``--epoch``). Writes bench/results/threads.json: per op, main and thread seconds
and their ratio.

    python bench/threads.py             # the ops (seconds)
    python bench/threads.py --epoch     # also a demo-shop teacher epoch each way (a minute)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "results" / "threads.json"
REPEAT = 300


def ops() -> dict:
    torch.manual_seed(0)
    a = torch.randn(32, 40, 128, requires_grad=True)
    att = torch.randn(32, 2, 40, 40, requires_grad=True)
    q = torch.randn(32, 2, 40, 64, requires_grad=True)
    lin = torch.nn.Linear(128, 512)
    return {
        "layer_norm": lambda: F.layer_norm(a, (128,)).sum().backward(),
        "softmax": lambda: torch.softmax(att, -1).sum().backward(),
        "gelu": lambda: F.gelu(a).sum().backward(),
        "linear": lambda: lin(a).sum().backward(),
        "batched_matmul": lambda: (att @ att).sum().backward(),
        "sdpa": lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward(),
    }


def time_ops(out: dict) -> None:
    for name, fn in ops().items():
        fn()
        started = time.perf_counter()
        for _ in range(REPEAT):
            fn()
        out[name] = time.perf_counter() - started


def time_epoch(out: dict) -> None:
    from core.enums import Role
    from core.pipeline import RunSpec, load_demo_dataset, train_and_evaluate
    from core.recipe import recipe_for

    data = load_demo_dataset()
    plan = recipe_for(data)
    spec = RunSpec(
        "teacher", Role.TEACHER, plan.teacher, replace(plan.teacher_train, epochs=2, min_epochs=2)
    )
    history = train_and_evaluate(data, spec).training.history
    out["teacher_epoch"] = history[-1].seconds  # the second epoch: windows already built


def in_thread(fn, out: dict) -> None:
    worker = threading.Thread(target=fn, args=(out,))
    worker.start()
    worker.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch", action="store_true", help="also time a teacher epoch")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    main_s: dict = {}
    thread_s: dict = {}
    # The thread goes first: nothing has run in parallel in the main thread yet.
    in_thread(time_ops, thread_s)
    time_ops(main_s)
    if args.epoch:
        in_thread(time_epoch, thread_s)
        time_epoch(main_s)
    rows = [
        {
            "op": name,
            "main_seconds": round(main_s[name], 3),
            "thread_seconds": round(thread_s[name], 3),
            "thread_over_main": round(thread_s[name] / main_s[name], 2),
        }
        for name in main_s
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for row in rows:
        print(
            f"{row['op']:<15} main {row['main_seconds']:>7.3f}s  thread "
            f"{row['thread_seconds']:>7.3f}s  x{row['thread_over_main']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
