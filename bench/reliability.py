"""Reliability figures: the bad-input corpus, random inputs, injected faults and racing cancels.

Runs, each in a fresh temporary data directory:
1. every case of the bad-input corpus (tests/helpers/corpus.py: the files in tests/corpus/
   plus the generated ones) through load -> register, as the Data page does;
2. ``--fuzz`` seeded random uploads (random bytes behind common magic numbers, random
   delimited text), which must load or raise a one-sentence DataError;
3. the fault scenarios of tests/helpers/faults.py (SIGKILL mid-training, a locked
   database, a full disk, NaN loss, out of memory, lost or malicious teacher checkpoints);
4. ``--rounds`` rounds of four concurrent runs with random cancels.

Prints a summary and writes ``bench/results/reliability.json`` (keys: inputs_tried,
inputs_handled, crashes, partial_writes, faults_injected, faults_survived,
concurrent_runs, inconsistencies, plus details).

    python bench/reliability.py
    python bench/reliability.py --fuzz 2000 --rounds 50
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.data import display_name, load_interactions  # noqa: E402
from core.errors import DataError  # noqa: E402
from tests.helpers import corpus, faults  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "reliability.json"
# Faults each scenario injects (a scenario survives all of them or, on any failure, none).
FAULTS_PER_SCENARIO = {
    "sigkill_mid_training": 1,  # one SIGKILL: one run mid-epoch, one mid-save, one queued
    "db_locked_briefly": 1,
    "db_locked_too_long": 3,  # results, an epoch and a dataset refused under the lock
    "disk_full_while_saving": 1,
    "nan_loss": 2,  # a NaN loss and an absurd learning rate
    "out_of_memory": 3,  # CUDA, CPU allocator, Python MemoryError
    "teacher_checkpoint_lost": 3,  # deleted, truncated, replaced by a malicious pickle
    "malicious_pickle_refused": 2,
}


class FreshHome:
    """A temporary, empty DISTILLERY_HOME for the duration of a ``with`` block."""

    def __enter__(self) -> Path:
        self._dir = tempfile.TemporaryDirectory(prefix="distillery-reliability-")
        self._old = os.environ.get("DISTILLERY_HOME")
        os.environ["DISTILLERY_HOME"] = self._dir.name
        return Path(self._dir.name)

    def __exit__(self, *exc: object) -> None:
        if self._old is None:
            os.environ.pop("DISTILLERY_HOME", None)
        else:
            os.environ["DISTILLERY_HOME"] = self._old
        self._dir.cleanup()


def run_corpus() -> list[corpus.Outcome]:
    outcomes = []
    for case in corpus.all_cases():
        with FreshHome() as home:
            outcomes.append(corpus.run_case(case, home))
    return outcomes


def fuzz_inputs(n: int, seed: int) -> list[tuple[bytes, str]]:
    rng = random.Random(seed)
    magic = [b"", b"\x1f\x8b", b"PAR1", b"PK\x03\x04", b"\xef\xbb\xbf", b"\xff\xfe"]
    cells = list("ab1 9-.,;\t|\"'\r\n=<>é\u202e") + ["user_id", "item_id", "timestamp", "rating"]
    inputs = []
    for i in range(n):
        if i % 2:
            raw = rng.choice(magic) + rng.randbytes(rng.randrange(600))
        else:
            sep, newline = rng.choice(",;\t| "), rng.choice(["\n", "\r\n", "\r"])
            rows = [
                sep.join("".join(rng.choices(cells, k=rng.randrange(4))) for _ in range(3))
                for _ in range(rng.randrange(1, 9))
            ]
            raw = (f"user_id{sep}item_id{sep}timestamp{newline}" + newline.join(rows)).encode()
            if rng.random() < 0.3:
                raw = gzip.compress(raw, mtime=0)
        inputs.append((raw, f"fuzz-{i}.csv"))
    return inputs


def run_fuzz(n: int, seed: int) -> dict[str, int]:
    counts = {"tried": 0, "handled": 0, "crashes": 0}
    with FreshHome() as home:
        for raw, name in fuzz_inputs(n, seed):
            counts["tried"] += 1
            try:
                load_interactions(raw, name, max_bytes=1 << 20)
            except DataError as exc:
                if corpus.message_problems(str(exc), display_name(name)):
                    continue
            except Exception:  # noqa: BLE001 - a crash is what this counts
                counts["crashes"] += 1
                continue
            counts["handled"] += 1
        assert list(home.iterdir()) == [], "reading an upload wrote files"
    return counts


def run_scenarios() -> dict[str, dict]:
    report = {}
    for name, scenario in faults.SCENARIOS.items():
        started = time.perf_counter()
        with FreshHome() as home:
            try:
                facts = scenario(home)
                report[name] = {"survived": True, "facts": facts}
            except Exception:  # noqa: BLE001 - a failed scenario is a finding, not an abort
                report[name] = {"survived": False, "error": traceback.format_exc(limit=-4)}
        report[name]["seconds"] = round(time.perf_counter() - started, 2)
        print(f"  {name:<26} {'survived' if report[name]['survived'] else 'FAILED'}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=500, help="random uploads to try")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 4 concurrent runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="show the runs' own logs")
    args = parser.parse_args()
    os.environ.pop("DISTILLERY_DB_URL", None)  # always the temporary SQLite stores
    if not args.verbose:  # failing runs on purpose logs tracebacks; they are expected here
        logging.getLogger("core").setLevel(logging.CRITICAL)

    started = time.perf_counter()
    print("corpus ...")
    outcomes = run_corpus()
    print(f"fuzz ({args.fuzz}) ...")
    fuzz = run_fuzz(args.fuzz, args.seed)
    print("fault scenarios ...")
    scenarios = run_scenarios()
    print(f"concurrent runs ({args.rounds} rounds of 4) ...")
    with FreshHome() as home:
        concurrency = faults.concurrent_cancels(home, rounds=args.rounds, seed=args.seed)

    survived = [n for n, r in scenarios.items() if r["survived"]]
    result = {
        "inputs_tried": len(outcomes) + fuzz["tried"],
        "inputs_handled": sum(o.handled for o in outcomes) + fuzz["handled"],
        "crashes": sum(o.crashed for o in outcomes) + fuzz["crashes"],
        "partial_writes": sum(o.partial_write for o in outcomes),
        "faults_injected": sum(FAULTS_PER_SCENARIO[n] for n in scenarios),
        "faults_survived": sum(FAULTS_PER_SCENARIO[n] for n in survived),
        "concurrent_runs": concurrency.runs,
        "inconsistencies": len(concurrency.inconsistencies),
        "details": {
            "corpus_cases": len(outcomes),
            "corpus_loaded_as_valid": sum(o.loaded for o in outcomes),
            "corpus_refused_with_a_sentence": sum(o.handled and not o.loaded for o in outcomes),
            "corpus_unhandled": [
                f"{o.case}: {'; '.join(o.problems)}" for o in outcomes if not o.handled
            ],
            "fuzz": fuzz,
            "scenarios": scenarios,
            "concurrency": {
                "rounds": concurrency.rounds,
                "cancels_requested": concurrency.cancels,
                "final_statuses": concurrency.statuses,
                "inconsistencies": concurrency.inconsistencies[:20],
            },
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    for key in list(result)[:8]:
        print(f"{key:<16} {result[key]}")
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['details']['seconds']} s")


if __name__ == "__main__":
    main()
