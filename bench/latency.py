"""Benchmark: what the distilled student costs to serve, next to its teacher, on this machine.

Trains the teacher and a soft-distilled student on the demo shop (presets from
core/pipeline.py), exports both to ONNX (top-K inside the graph), quantizes the student to
int8, checks PyTorch/onnxruntime parity, and measures in one run, for each served form:

    teacher        torch, onnxruntime
    student        torch, onnxruntime
    student-int8   onnxruntime-int8

p50/p95/p99 of single requests (batch 1: context + whole-catalog scores + exclusion of the
user's history + top-10) and throughput at batch 256, with NDCG@10 measured through the
runtime that serves it, and the size of what is served. Batch-1 latency is measured in
interleaved rounds (every form once per round) and each form keeps its median round, so
a burst of background load on a shared machine hits all forms alike.

    python bench/latency.py            # full presets (a few minutes on 2 CPU cores)
    python bench/latency.py --quick    # few epochs: latency is the same, quality is not

Writes bench/results/latency.json (a list of rows) and bench/results/latency_summary.json
(machine, thread settings, parity, ratios and the targets from DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.distill import DistillConfig  # noqa: E402
from core.pipeline import (  # noqa: E402
    STUDENT_MODEL,
    STUDENT_TRAIN,
    TEACHER_MODEL,
    TEACHER_TRAIN,
    RunSpec,
    load_demo_dataset,
    train_and_evaluate,
)
from core.serving.export import evaluate_onnx, export_onnx, quantize_int8  # noqa: E402
from core.serving.latency import (  # noqa: E402
    LatencyMeasurement,
    benchmark_model,
    machine_info,
)
from core.serving.parity import check_parity  # noqa: E402

RESULTS = ROOT / "bench" / "results"
K = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train for a few epochs only")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per runtime")
    parser.add_argument("--iters", type=int, default=300, help="timed batch-1 requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved batch-1 rounds")
    parser.add_argument("--batch", type=int, default=256, help="throughput batch size")
    parser.add_argument("--scale", type=float, default=1.0, help="demo shop scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    return parser.parse_args(argv)


def train(data, quick: bool, log):
    teacher_train, student_train = TEACHER_TRAIN, STUDENT_TRAIN
    if quick:
        teacher_train = replace(teacher_train, epochs=3)
        student_train = replace(student_train, epochs=4)
    teacher = train_and_evaluate(
        data,
        RunSpec("teacher", "teacher", TEACHER_MODEL, teacher_train),
        progress=lambda r: log(f"  teacher epoch {r.epoch:>2} val ndcg@10={r.val['ndcg@10']:.4f}"),
    )
    student = train_and_evaluate(
        data,
        RunSpec(
            "student-combined",
            "student",
            STUDENT_MODEL,
            student_train,
            DistillConfig(method="combined"),
        ),
        teacher=teacher.model,
        progress=lambda r: log(f"  student epoch {r.epoch:>2} val ndcg@10={r.val['ndcg@10']:.4f}"),
    )
    return teacher, student


def median_round(records: list[LatencyMeasurement]) -> LatencyMeasurement:
    order = np.argsort([r.p50_ms for r in records])
    return records[int(order[len(order) // 2])]


def format_table(rows: list[dict]) -> str:
    header = (
        f"{'name':<13} {'runtime':<17} {'batch':>5} {'p50 ms':>9} {'p95 ms':>9} "
        f"{'p99 ms':>9} {'qps':>10} {'ndcg@10':>8} {'size':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['name']:<13} {r['runtime']:<17} {r['batch']:>5} {r['p50_ms']:>9.3f} "
            f"{r['p95_ms']:>9.3f} {r['p99_ms']:>9.3f} {r['qps']:>10,.0f} "
            f"{r['ndcg@10']:>8.4f} {r['size_bytes'] / 1e6:>8.2f}MB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(message, flush=True)

    data = load_demo_dataset(scale=args.scale)
    log(
        f"{data.name}: {data.n_users:,} users, {data.n_items:,} items, "
        f"{data.n_interactions:,} interactions"
    )
    teacher, student = train(data, args.quick, log)
    # Serving is measured on CPU, whatever device trained the models.
    t_model, s_model = teacher.model.cpu().eval(), student.model.cpu().eval()
    log(
        f"teacher: {teacher.params:,} params, test ndcg@10={teacher.test.metrics['ndcg@10']:.4f}"
        f" ({teacher.train_seconds:.0f}s)"
    )
    log(
        f"student: {student.params:,} params, test ndcg@10={student.test.metrics['ndcg@10']:.4f}"
        f" ({student.train_seconds:.0f}s)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t_onnx = export_onnx(t_model, folder / "teacher.onnx", k=K)
        s_onnx = export_onnx(s_model, folder / "student.onnx", k=K)
        s_int8 = quantize_int8(s_onnx.path, folder / "student-int8.onnx")
        parity = {
            "teacher": check_parity(t_model, t_onnx.path, data, k=K, seed=args.seed),
            "student": check_parity(s_model, s_onnx.path, data, k=K, seed=args.seed),
        }
        for name, p in parity.items():
            log(
                f"parity {name}: max |diff| {p.max_abs_diff:.2e}, "
                f"top-{p.k} agreement {p.topk_agreement:.4f} over {p.n_users} users"
            )

        ndcg = {
            ("teacher", "torch"): teacher.test.metrics["ndcg@10"],
            ("student", "torch"): student.test.metrics["ndcg@10"],
        }
        for name, info, runtime in (
            ("teacher", t_onnx, "onnxruntime"),
            ("student", s_onnx, "onnxruntime"),
            ("student-int8", s_int8, "onnxruntime-int8"),
        ):
            ndcg[(name, runtime)] = evaluate_onnx(info.path, None, data, ks=(K,)).metrics["ndcg@10"]

        forms = [
            ("teacher", "torch", t_model, None, t_model.size_bytes()),
            ("teacher", "onnxruntime", None, t_onnx.path, t_onnx.bytes),
            ("student", "torch", s_model, None, s_model.size_bytes()),
            ("student", "onnxruntime", None, s_onnx.path, s_onnx.bytes),
            ("student-int8", "onnxruntime-int8", None, s_int8.path, s_int8.bytes),
        ]
        log(
            f"measuring batch 1 ({args.rounds} rounds x {args.iters} requests) "
            f"and batch {args.batch}, {args.threads} thread(s)"
        )

        def measure(model, path, runtime: str, batch: int, seed: int, iters: int, budget: float):
            (record,) = benchmark_model(
                model, path, data, runtime=runtime, batch_sizes=(batch,), threads=args.threads,
                k=K, seed=seed, iters=iters, time_budget_s=budget,
            )  # fmt: skip
            return record

        single: dict[tuple[str, str], list[LatencyMeasurement]] = {}
        for round_ in range(args.rounds):
            for name, runtime, model, path, _ in forms:
                record = measure(model, path, runtime, 1, args.seed + round_, args.iters, 10.0)
                single.setdefault((name, runtime), []).append(record)
        rows = []
        for name, runtime, model, path, size in forms:
            bulk = measure(model, path, runtime, args.batch, args.seed, 50, 6.0)
            for record in (median_round(single[(name, runtime)]), bulk):
                rows.append(
                    {
                        "name": name,
                        "runtime": runtime,
                        "batch": record.batch,
                        "p50_ms": record.p50_ms,
                        "p95_ms": record.p95_ms,
                        "p99_ms": record.p99_ms,
                        "qps": record.qps,
                        "ndcg@10": ndcg[(name, runtime)],
                        "size_bytes": int(size),
                        "iters": record.iters,
                        "threads": record.threads,
                    }
                )

    def row(name: str, runtime: str, batch: int) -> dict:
        return next(
            r for r in rows if (r["name"], r["runtime"], r["batch"]) == (name, runtime, batch)
        )

    t_ort, s_ort = row("teacher", "onnxruntime", 1), row("student", "onnxruntime", 1)
    t_pt, s_pt = row("teacher", "torch", 1), row("student", "torch", 1)
    s_q = row("student-int8", "onnxruntime-int8", 1)
    b = args.batch
    ratios = {
        "student_speedup_p50_onnxruntime": t_ort["p50_ms"] / s_ort["p50_ms"],
        "student_int8_speedup_p50_vs_teacher_onnxruntime": t_ort["p50_ms"] / s_q["p50_ms"],
        "teacher_onnxruntime_speedup_p50_vs_torch": t_pt["p50_ms"] / t_ort["p50_ms"],
        "student_onnxruntime_speedup_p50_vs_torch": s_pt["p50_ms"] / s_ort["p50_ms"],
        f"teacher_onnxruntime_qps_vs_torch_b{b}": row("teacher", "onnxruntime", b)["qps"]
        / row("teacher", "torch", b)["qps"],
        f"student_onnxruntime_qps_vs_torch_b{b}": row("student", "onnxruntime", b)["qps"]
        / row("student", "torch", b)["qps"],
        "int8_vs_fp32_ndcg@10": s_q["ndcg@10"] / s_ort["ndcg@10"],
        "student_vs_teacher_ndcg@10": s_ort["ndcg@10"] / t_ort["ndcg@10"],
        "student_vs_teacher_params": student.params / teacher.params,
        "student_vs_teacher_onnx_bytes": s_ort["size_bytes"] / t_ort["size_bytes"],
        "int8_vs_fp32_onnx_bytes": s_q["size_bytes"] / s_ort["size_bytes"],
    }
    targets = {
        "student onnxruntime p50 >= 5x faster than teacher": ratios[
            "student_speedup_p50_onnxruntime"
        ]
        >= 5.0,
        "int8 student within 1% NDCG@10 of fp32 student": ratios["int8_vs_fp32_ndcg@10"] >= 0.99,
        "onnxruntime no slower than torch (teacher p50)": ratios[
            "teacher_onnxruntime_speedup_p50_vs_torch"
        ]
        >= 1.0,
        "onnxruntime no slower than torch (student p50)": ratios[
            "student_onnxruntime_speedup_p50_vs_torch"
        ]
        >= 1.0,
    }
    summary = {
        "machine": machine_info(threads=args.threads),
        "dataset": {"name": data.name, "users": data.n_users, "items": data.n_items},
        "quick": args.quick,
        "k": K,
        "params": {"teacher": teacher.params, "student": student.params},
        "parity": {
            name: {
                "max_abs_diff": p.max_abs_diff,
                "topk_agreement": p.topk_agreement,
                "n_users": p.n_users,
                "passed": p.passed(),
            }
            for name, p in parity.items()
        },
        "exports": {
            "teacher": t_onnx.to_dict() | {"path": "teacher.onnx"},
            "student": s_onnx.to_dict() | {"path": "student.onnx"},
            "student-int8": s_int8.to_dict() | {"path": "student-int8.onnx"},
        },
        "ratios": ratios,
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    keys = [
        "name",
        "runtime",
        "batch",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "qps",
        "ndcg@10",
        "size_bytes",
    ]
    (args.out / "latency.json").write_text(
        json.dumps([{k: r[k] for k in keys} for r in rows], indent=2) + "\n"
    )
    (args.out / "latency_summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    m = summary["machine"]
    print()
    print(
        f"{m['cpu']}, {m['usable_cores']} usable cores, {args.threads} thread(s); "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}"
    )
    print(format_table(rows))
    print()
    for key, value in ratios.items():
        print(f"{key:<50} {value:8.3f}")
    print()
    for name, ok in targets.items():
        print(f"[{'PASS' if ok else 'MISS'}] {name}")
    print(
        f"\nwrote {args.out / 'latency.json'} and latency_summary.json ({summary['seconds']:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
