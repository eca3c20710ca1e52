"""Benchmark: ingest a 1,000,000-row interaction CSV with `load_interactions`.

Generates a synthetic e-commerce log (user_id,item_id,timestamp,event; skewed popularity,
unix-second timestamps) into a temporary directory, or reads ``--file``, then times read ->
detect -> validate -> dedupe -> k-core -> index -> split, and reports rows/second and the
process's peak resident memory. Results go to ``bench/results/ingest.json``.

    python bench/ingest.py                 # generated 1M rows
    python bench/ingest.py --rows 200000   # smaller
    python bench/ingest.py --file log.csv  # your own file
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.ingestion.build import load_interactions  # noqa: E402
from core.ingestion.options import CleanOptions  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "ingest.json"


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write a synthetic log: Zipf-ish item popularity, 5% purchases, 2023-2024 timestamps."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(2, rows // 20), max(2, rows // 50)
    items = np.minimum(rng.zipf(1.3, rows) - 1, n_items - 1)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, rows),
            "item_id": rng.permutation(n_items)[items],
            "timestamp": rng.integers(1_672_531_200, 1_704_067_200, rows),
            "event": rng.choice(["view", "cart", "purchase"], rows, p=[0.8, 0.15, 0.05]),
        }
    )
    frame.to_csv(path, index=False)


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="an interaction CSV to ingest instead")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate")
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.rows)
        return

    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / "interactions.csv"
            # Generated in a child process so its memory does not count towards the peak.
            subprocess.run(
                [sys.executable, __file__, "--generate", str(path), "--rows", str(args.rows)],
                check=True,
            )
        file_mb = path.stat().st_size / 1e6
        baseline_mb = peak_rss_mb()
        start = time.perf_counter()
        data = load_interactions(
            path, clean=CleanOptions(min_user_interactions=1, min_item_interactions=1)
        )
        seconds = time.perf_counter() - start
        peak_mb = peak_rss_mb()
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as handle:
            rows = sum(1 for line in handle if line.strip()) - 1  # data rows, header excluded
    result = {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak_mb, 1),
        "rows_kept": data.n_interactions,
        "baseline_rss_mb": round(baseline_mb, 1),
        "file_mb": round(file_mb, 1),
        "users": data.n_users,
        "items": data.n_items,
        "notes": list(data.notes),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{rows:,} rows in {seconds:.2f} s = {rows / seconds:,.0f} rows/s; "
        f"peak RSS {peak_mb:.0f} MB (after imports {baseline_mb:.0f} MB; "
        f"file {file_mb:.0f} MB)"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
