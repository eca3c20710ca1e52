"""Reliability figures: the bad-input corpus, random inputs, injected faults and racing cancels.

Runs, each in a fresh temporary data directory:
1. every case of the bad-input corpus (tests/helpers/corpus.py: the files in tests/corpus/
   plus the generated ones) through load -> register, as the Data page does;
2. ``--fuzz`` seeded random uploads (random bytes behind common magic numbers, random
   delimited text), which must load or raise a one-sentence DataError;
3. the fault scenarios of tests/helpers/faults.py (SIGKILL mid-training, a locked
   database, a full disk, NaN loss, out of memory, lost or malicious teacher checkpoints);
4. ``--rounds`` rounds of four concurrent runs with random cancels;
5. several processes on one PostgreSQL store (a throwaway server, tests/helpers/postgres.py):
   ``--apps`` stand-in app servers (tests/helpers/app_process.py, each a job manager with
   one worker thread) and ``--workers`` headless ``python -m core worker`` processes share
   ``--runs`` tiny real runs (demo shop x0.05, 1 epoch), submitted and cancelled at random
   from the app processes; one worker is killed with SIGKILL while it trains a run, whose
   lease then runs out and another process recovers it.

Prints a summary and writes ``bench/results/reliability.json`` (keys: inputs_tried,
inputs_handled, crashes, partial_writes, faults_injected, faults_survived,
concurrent_runs, inconsistencies, processes, duplicate_executions (must be 0),
lease_recoveries, postgres, plus details).

    python bench/reliability.py
    python bench/reliability.py --fuzz 2000 --rounds 50 --runs 80
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import paths  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.ingestion.build import load_interactions  # noqa: E402
from core.ingestion.messages import display_name  # noqa: E402
from core.job_context import CANCELLED_NOTE, INTERRUPTED_NOTE  # noqa: E402
from core.settings import DB_URL_ENV  # noqa: E402
from core.store import Store  # noqa: E402
from tests.helpers import corpus, faults  # noqa: E402
from tests.helpers.postgres import PostgresServer  # noqa: E402
from tests.helpers.processes import AppProcess, WorkerProcess, executions  # noqa: E402

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


# Every process's lease: a killed worker's run is recovered within seconds, and a live
# process on a loaded two-core machine still renews it in time (3 s proved too short).
MP_LEASE_S = 10.0
MP_WAIT_S = 900


def _kill_while_training(victim: WorkerProcess, store: Store) -> int:
    """SIGKILL ``victim`` while it trains a run (checked in the store); returns that run."""
    deadline = time.monotonic() + MP_WAIT_S
    owner = victim.wait_until_serving()
    while time.monotonic() < deadline:
        for run_id in sorted(executions([victim.output]), reverse=True):
            run = store.get_run(run_id)
            if run.status == "running" and run.owner == owner:
                victim.signal(signal.SIGKILL)
                victim.wait()
                if store.get_run(run_id).status == "running":  # it did not finish first
                    return run_id
                raise AssertionError(f"run {run_id} ended before the kill landed")
        time.sleep(0.02)
    raise AssertionError("the worker to kill never trained a run")


def _mp_problems(store: Store, cancels: dict[int, bool], killed: int) -> list[str]:
    """Every run ended, and ended as its cancels and the kill say; files match statuses."""
    problems = []
    for run in store.list_runs():
        where = f"run {run.id} ({run.status})"
        if run.status not in ("succeeded", "cancelled", "interrupted"):
            problems.append(f"{where} did not end as expected: {run.error}")
        if cancels.get(run.id) and run.status != "cancelled":
            problems.append(f"{where}: a cancel said yes")
        if run.status == "cancelled" and not cancels.get(run.id):
            problems.append(f"{where}: cancelled although no cancel said yes")
        if run.status == "interrupted" and (run.id != killed or run.error != INTERRUPTED_NOTE):
            problems.append(f"{where}: interrupted with {run.error!r}")
        artifacts = store.artifacts(run.id)
        intact = (
            len(artifacts) == 1
            and artifacts[0].path == run.checkpoint_path
            and run.checkpoint_path.is_file()
            and faults.sha256(run.checkpoint_path) == artifacts[0].sha256
        )
        if run.status == "succeeded" and not intact:
            problems.append(f"{where} has no intact checkpoint")
        kept = bool(artifacts) or paths.run_dir(run.id).exists()
        if run.status == "cancelled" and (kept or run.error != CANCELLED_NOTE):
            problems.append(f"{where} kept files or has error {run.error!r}")
    if store.get_run(killed).status not in ("interrupted", "cancelled"):
        problems.append(f"the killed worker's run {killed} was not recovered")
    if faults.temp_files():
        problems.append(f"temporary files left: {faults.temp_files()}")
    return problems


def run_multiprocess(runs: int, apps: int, workers: int, seed: int) -> dict[str, Any]:
    """Scenario 5 (see the module docstring) on a throwaway PostgreSQL server."""
    old_url = os.environ.get(DB_URL_ENV)
    started = time.perf_counter()
    with PostgresServer() as server, FreshHome():
        _, url = server.create_database()
        os.environ[DB_URL_ENV] = url
        try:
            with Store() as store:
                faults.tiny_dataset(store)
                shares = [runs // apps + (i < runs % apps) for i in range(apps)]
                lease = ["--lease-seconds", str(MP_LEASE_S)]
                pool = [WorkerProcess(lease_s=MP_LEASE_S) for _ in range(workers)]
                app_procs = [
                    AppProcess(
                        "--runs", str(n), "--total", str(runs), "--seed", str(seed + i), *lease
                    )
                    for i, n in enumerate(shares)
                ]
                try:
                    killed = _kill_while_training(pool[0], store)
                    for app in app_procs:
                        assert app.wait(MP_WAIT_S) == 0, app.output[-3000:]
                    for worker in pool[1:]:
                        worker.signal(signal.SIGTERM)
                        assert worker.wait(MP_WAIT_S) == 0, worker.output[-3000:]
                finally:
                    for process in [*pool, *app_procs]:
                        process.__exit__()
                results = [app.result() for app in app_procs]
                cancels: dict[int, bool] = {}
                for result in results:
                    for run_id, took in result["cancels"].items():
                        cancels[int(run_id)] = cancels.get(int(run_id), False) or took
                started_runs = executions(p.output for p in [*pool, *app_procs])
                statuses: dict[str, int] = {}
                for run in store.list_runs():
                    statuses[run.status] = statuses.get(run.status, 0) + 1
                problems = _mp_problems(store, cancels, killed)
                # Ended by another process after its owner's lease ran out: interrupted, or
                # cancelled if a cancel had been accepted for it before.
                recovered = [
                    r.id
                    for r in store.list_runs()
                    if r.error == INTERRUPTED_NOTE or (r.id == killed and r.status == "cancelled")
                ]
                backend = store.backend
                names = [f"worker-{i}" for i in range(workers)] + [f"app-{i}" for i in range(apps)]
                per_process = {
                    name: len(executions([process.output]))
                    for name, process in zip(names, [*pool, *app_procs], strict=True)
                }
        finally:
            if old_url is None:
                os.environ.pop(DB_URL_ENV, None)
            else:
                os.environ[DB_URL_ENV] = old_url
    return {
        "processes": apps + workers,
        "runs": sum(statuses.values()),
        "duplicate_executions": sum(n - 1 for n in started_runs.values() if n > 1),
        "lease_recoveries": len(recovered),
        "killed_worker_run": killed,
        "cancels_requested": len(cancels),
        "cancels_accepted": sum(cancels.values()),
        "executions_per_process": per_process,
        "postgres": backend == "postgresql",
        "final_statuses": statuses,
        "inconsistencies": problems[:20],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", type=int, default=500, help="random uploads to try")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of 4 concurrent runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=40, help="runs shared by the processes")
    parser.add_argument("--apps", type=int, default=3, help="stand-in app server processes")
    parser.add_argument("--workers", type=int, default=2, help="headless worker processes")
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
    print(
        f"processes ({args.apps} apps + {args.workers} workers, {args.runs} runs, PostgreSQL) ..."
    )
    multi = run_multiprocess(args.runs, args.apps, args.workers, args.seed)

    survived = [n for n, r in scenarios.items() if r["survived"]]
    result = {
        "inputs_tried": len(outcomes) + fuzz["tried"],
        "inputs_handled": sum(o.handled for o in outcomes) + fuzz["handled"],
        "crashes": sum(o.crashed for o in outcomes) + fuzz["crashes"],
        "partial_writes": sum(o.partial_write for o in outcomes),
        "faults_injected": sum(FAULTS_PER_SCENARIO[n] for n in scenarios),
        "faults_survived": sum(FAULTS_PER_SCENARIO[n] for n in survived),
        "concurrent_runs": concurrency.runs,
        "inconsistencies": len(concurrency.inconsistencies) + len(multi["inconsistencies"]),
        "processes": multi["processes"],
        "duplicate_executions": multi["duplicate_executions"],
        "lease_recoveries": multi["lease_recoveries"],
        "postgres": multi["postgres"],
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
            "processes": multi,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str))
    for key in list(result)[:12]:
        print(f"{key:<20} {result[key]}")
    print(f"wrote {RESULTS.relative_to(ROOT)} in {result['details']['seconds']} s")


if __name__ == "__main__":
    main()
