"""Benchmark: a 20-million-row e-commerce log on one machine, from Parquet to a trained batch.

Generates a log shaped like a mid-size shop's month (a Zipf-like catalog of 100,000
products, 1,000,000 shoppers of very uneven activity, view -> cart -> purchase funnels,
double-fired events) with vectorised numpy, written to Parquet in row groups (the demo
shop's simulator is built for readable titles, not for this size). Then, in one process:

    ingest  load_interactions streams the Parquet file: parse, dedupe, k-core, ids, split
    build   the training CSR matrix and the per-user sequences
    train   a small SASRec (dim 32, one block): ~50 Adam steps, timed and scaled to 1,000,
            with the task loss the recipe picks for this log (core.recipe: sampled softmax
            with logQ correction once full-catalog logits outgrow the budget), through the
            trainer's own per-batch loss (core.train.Objective)
    eval    full-ranking evaluation (core.metrics.evaluate) of a sample of users

and writes bench/results/scale.json with rows, users, items, ingest_seconds, rows_per_s,
peak_rss_mb (the ingest's peak resident memory, the process's, imports included),
build_seconds, train_seconds_per_1k_batches, train_loss (full, sampled or chunked),
eval_users_per_s and device, plus the Parquet size, the per-phase peaks and what a full
training epoch would take.

    python bench/scale.py                   # 20,000,000 rows (minutes; needs ~4 GB)
    python bench/scale.py --rows 200000     # a quick check of the script
    python bench/scale.py --file log.parquet
    python bench/scale.py --loss full       # the old full-softmax figure, for comparison

Peak memory per phase is read from the kernel (VmHWM, reset between phases through
/proc/self/clear_refs); where that is unavailable, the process's lifetime peak is reported.
What the Parquet ratio means depends on the log: the finished dataset alone is 37 bytes a
row (int64 ids and timestamps), so a log of only the four columns ingestion reads (about
9 bytes a row in Parquet, ``--shape minimal``) peaks at several times its file size, while
the REES46 layout (about 50 bytes a row) stays well under it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.ingestion.build import load_interactions  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "scale.json"
T0 = 1_717_200_000  # 2024-06-01 00:00 UTC
MONTH_S = 30 * 86_400
CHUNK_ROWS = 1_000_000


# --------------------------------------------------------------------------- the log
# The columns of the public REES46 e-commerce log ("eCommerce behavior data from multi
# category store": 42 million events in its first month), the best-known log of a shop
# this size; "minimal" keeps only what ingestion reads.
SHAPES = ("rees46", "minimal")
CATEGORIES = (
    "electronics.smartphone", "electronics.audio.headphone", "appliances.kitchen.kettle",
    "computers.notebook", "apparel.shoes", "furniture.living_room.sofa", "kids.toys",
    "sport.bicycle", "accessories.bag", "construction.tools.drill",
)  # fmt: skip
BRANDS = ("samsung", "apple", "xiaomi", "huawei", "lg", "bosch", "sony", "nike", "lego", "acer")


def generate(path: Path, rows: int, shape: str = "rees46", seed: int = 0) -> None:
    """Write ``rows`` events to Parquet in time order, one row group per million rows.

    Users and items are drawn from power laws (a few shoppers and products take most
    events); 10% of events are carts and 4% purchases of an item the same shopper viewed
    earlier in the chunk; 0.5% are exact double-fired copies. Memory stays at one chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_users = max(10, rows // 20)
    n_items = max(10, min(100_000, rows // 20))
    user_of = 512_000_000 + rng.permutation(n_users)  # rank -> id: heavy users scattered
    item_of = 1_000_000 + rng.permutation(n_items)
    # What a product is, fixed per product as in the real log.
    category_of = rng.integers(0, 800, n_items)
    category_id_of = 2_053_013_552_000_000_000 + category_of * 7_919
    price_of = np.round(rng.lognormal(4.0, 1.2, n_items), 2)
    events = pa.array(["view", "cart", "purchase"])
    chunks = math.ceil(rows / CHUNK_ROWS)
    writer = None
    try:
        for chunk in range(chunks):
            n = min(CHUNK_ROWS, rows - chunk * CHUNK_ROWS)
            user_rank = (n_users * rng.random(n) ** 2.5).astype(np.int64)
            item_rank = (n_items * rng.random(n) ** 3.0).astype(np.int64)
            start = T0 + chunk * MONTH_S // chunks
            stamps = np.sort(start + rng.integers(0, MONTH_S // chunks, n))
            kind = np.zeros(n, dtype=np.int8)
            draw = rng.random(n)
            kind[draw < 0.14] = 1
            kind[draw < 0.04] = 2
            funnel = np.flatnonzero(kind[1:] > 0) + 1  # a cart or purchase: of an earlier view
            earlier = (rng.random(len(funnel)) * funnel).astype(np.int64)
            user_rank[funnel], item_rank[funnel] = user_rank[earlier], item_rank[earlier]
            doubled = np.flatnonzero(rng.random(n - 1) < 0.005) + 1
            for column in (user_rank, item_rank, stamps, kind):
                column[doubled] = column[doubled - 1]
            columns = {
                "user_id": pa.array(user_of[user_rank]),
                "item_id": pa.array(item_of[item_rank]),
                "timestamp": pa.array(stamps),
                "event": pa.DictionaryArray.from_arrays(pa.array(kind), events),
            }
            if shape == "rees46":
                columns = _rees46(columns, item_rank, stamps, chunk, rng)
                columns["category_id"] = pa.array(category_id_of[item_rank])
                columns["price"] = pa.array(price_of[item_rank])
                codes = category_of[item_rank] % len(CATEGORIES)
                columns["category_code"] = pa.DictionaryArray.from_arrays(
                    pa.array(codes.astype(np.int8)), pa.array(CATEGORIES)
                )
                brand = category_of[item_rank] % (len(BRANDS) + 1)  # one in 11 has none
                columns["brand"] = pa.DictionaryArray.from_arrays(
                    pa.array(brand.astype(np.int8), mask=brand == len(BRANDS)), pa.array(BRANDS)
                )
            table = pa.table(columns)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _rees46(columns: dict, item_rank: np.ndarray, stamps: np.ndarray, chunk: int, rng) -> dict:
    """The REES46 layout: event_time, event_type, product_id, user_id, user_session."""
    import pyarrow as pa

    users = columns["user_id"].to_numpy()
    # A session: one shopper within one chunk of the month, named by a random UUID.
    session_keys = (users.astype(np.uint64) << np.uint64(8)) | np.uint64(chunk & 0xFF)
    unique, inverse = np.unique(session_keys, return_inverse=True)
    names = rng.bytes(16 * len(unique))
    uuids = np.array(
        [
            f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            for h in (names[i : i + 16].hex() for i in range(0, len(names), 16))
        ]
    )
    return {
        "event_time": pa.array(stamps.astype("datetime64[s]"), pa.timestamp("s", tz="UTC")),
        "event_type": columns["event"],
        "product_id": columns["item_id"],
        "user_id": columns["user_id"],
        "user_session": pa.array(uuids[inverse]),
    }


# --------------------------------------------------------------------------- memory
def reset_peak() -> None:
    """Start a new peak-RSS measurement (Linux: VmHWM is reset by writing 5 to clear_refs)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident memory since `reset_peak` (or since the process started), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# --------------------------------------------------------------------------- phases
def recipe_loss(data) -> tuple[str, int, str]:
    """(loss, softmax negatives, the recipe's reason or "") the recipe picks for this log."""
    from core.recipe import recipe_for

    plan = recipe_for(data)
    reason = next((r for r in plan.reasons if "softmax" in r), "")
    return plan.teacher_train.loss, plan.teacher_train.softmax_negatives, reason


def train_timing(
    data, batches: int, batch_size: int, max_len: int, device: str, loss: str, negatives: int
):
    """(model, seconds per 1,000 batches, batches in one epoch) for a small SASRec."""
    import torch

    from core.models import ModelConfig, build_model
    from core.train import Objective, TrainConfig

    torch.manual_seed(0)
    config = ModelConfig(family="sasrec", dim=32, layers=1, heads=1, max_len=max_len)
    model = build_model(config, data.n_users, data.n_items).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train = TrainConfig(
        batch_size=batch_size, device=device, loss=loss, softmax_negatives=negatives
    ).validate()
    objective = Objective(model, data, train)
    stream = model.task_batches(data, batch_size, 0, np.random.default_rng(0))
    epoch_batches = math.ceil(len(model.training_windows(data)[2]) / batch_size)
    model.train()

    def step() -> None:
        batch = next(stream).to(torch.device(device))
        optimizer.zero_grad(set_to_none=True)
        objective(batch)[0].backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    per_batch = (time.perf_counter() - started) / batches
    return model, per_batch * 1000, epoch_batches


def eval_timing(model, data, users: int, seed: int = 0) -> tuple[float, int]:
    """(evaluated users per second, users evaluated) of full ranking on the test stage."""
    from core.metrics import evaluate

    candidates = data.eval_users("test")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(candidates, min(users, len(candidates)), replace=False))
    started = time.perf_counter()
    result = evaluate(
        lambda u: model.score_users(data, u, "test"), data, "test", ks=(10,), users=sample
    )
    seconds = time.perf_counter() - started
    return len(sample) / seconds, result.n_users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows to generate")
    parser.add_argument("--file", type=Path, help="ingest this log instead of generating one")
    parser.add_argument("--keep", type=Path, help="also keep the generated Parquet file here")
    parser.add_argument("--batches", type=int, default=50, help="training batches to time")
    parser.add_argument("--batch-size", type=int, default=64, help="users per training batch")
    parser.add_argument("--max-len", type=int, default=50, help="SASRec history length")
    parser.add_argument("--eval-users", type=int, default=5_000, help="users to evaluate")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--loss",
        choices=("recipe", "full", "sampled", "chunked"),
        default="recipe",
        help="SASRec's task loss: the recipe's pick for this log (default) or a fixed one",
    )
    parser.add_argument(
        "--shape",
        choices=SHAPES,
        default="rees46",
        help="rees46: the nine columns of the public REES46 shop log (default); minimal: "
        "user_id, item_id, timestamp, event only",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where to write the JSON (default %(default)s)"
    )
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.rows, args.shape)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file or args.keep or Path(tmp) / "events.parquet"
        if args.file is None:
            started = time.perf_counter()
            # In a child process, so the generator's memory does not count towards the peaks.
            subprocess.run(
                [
                    *(sys.executable, __file__, "--generate", str(path)),
                    *("--rows", str(args.rows), "--shape", args.shape),
                ],
                check=True,
            )
            print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
        file_mb = path.stat().st_size / 1e6

        rss_before = rss_mb()
        reset_peak()
        started = time.perf_counter()
        data = load_interactions(path, max_bytes=None)
        ingest_seconds = time.perf_counter() - started
        ingest_peak = peak_rss_mb()
        rows_read = _rows_of(path)
    print(
        f"ingest: {rows_read:,} rows in {ingest_seconds:.1f} s; peak RSS {ingest_peak:,.0f} MB "
        f"(before {rss_before:,.0f} MB; Parquet {file_mb:,.0f} MB, "
        f"ratio {ingest_peak / file_mb:.2f})"
    )

    reset_peak()
    started = time.perf_counter()
    data.train_matrix  # noqa: B018 - building it is what is timed
    data.history_matrix("test")
    data.sequences()
    build_seconds = time.perf_counter() - started
    build_peak = peak_rss_mb()
    print(f"build: CSR + sequences in {build_seconds:.1f} s; peak RSS {build_peak:,.0f} MB")

    loss, negatives, loss_reason = recipe_loss(data)
    if args.loss != "recipe":
        loss, loss_reason = args.loss, f"{args.loss} softmax asked for on the command line"
    print(f"train loss: {loss}" + (f" ({loss_reason})" if loss_reason else ""))
    reset_peak()
    model, per_1k, epoch_batches = train_timing(
        data, args.batches, args.batch_size, args.max_len, args.device, loss, negatives
    )
    train_peak = peak_rss_mb()
    epoch_minutes = per_1k / 1000 * epoch_batches / 60
    print(
        f"train: {per_1k:,.0f} s per 1,000 batches of {args.batch_size} users ({loss} "
        f"softmax); one epoch is {epoch_batches:,} batches = about {epoch_minutes:,.0f} "
        f"minutes on {args.device}"
    )

    reset_peak()
    users_per_s, evaluated = eval_timing(model, data, args.eval_users)
    eval_peak = peak_rss_mb()
    print(f"eval: {users_per_s:,.0f} users/s over {evaluated:,} users (full ranking)")

    device = args.device
    if device.startswith("cuda"):
        import torch

        device = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        device = f"cpu ({os.cpu_count()} cores, {platform.machine()})"
    result = {
        "rows": rows_read,
        "users": data.n_users,
        "items": data.n_items,
        "ingest_seconds": round(ingest_seconds, 2),
        "rows_per_s": round(rows_read / ingest_seconds),
        "peak_rss_mb": round(ingest_peak, 1),
        "build_seconds": round(build_seconds, 2),
        "train_seconds_per_1k_batches": round(per_1k, 1),
        "train_loss": loss,
        "eval_users_per_s": round(users_per_s, 1),
        "device": device,
        # Context for the figures above.
        "interactions_kept": data.n_interactions,
        "parquet_mb": round(file_mb, 1),
        "log_shape": args.shape if args.file is None else str(args.file.name),
        "peak_rss_over_parquet": round(ingest_peak / file_mb, 2),
        "rss_before_ingest_mb": round(rss_before, 1),
        "build_peak_rss_mb": round(build_peak, 1),
        "train_peak_rss_mb": round(train_peak, 1),
        "eval_peak_rss_mb": round(eval_peak, 1),
        "train_loss_negatives": negatives if loss == "sampled" else None,
        "train_loss_reason": loss_reason,
        "train_batch_users": args.batch_size,
        "train_max_len": args.max_len,
        "train_batches_timed": args.batches,
        "epoch_batches": epoch_batches,
        "epoch_minutes_estimate": round(epoch_minutes, 1),
        "eval_users": evaluated,
        "notes": list(data.notes),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def _rows_of(path: Path) -> int:
    """Rows of the log: from the Parquet footer, or the lines of a text log but its header."""
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        if handle.read(4) == b"PAR1":
            return pq.ParquetFile(path).metadata.num_rows
        handle.seek(0)
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b"")) - 1


if __name__ == "__main__":
    main()
