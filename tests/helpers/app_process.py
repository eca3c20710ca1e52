"""A stand-in app server for the multi-process reliability scenario (bench/reliability.py).

Like one ``streamlit run`` process, it holds a `JobManager` with one worker thread on the
shared store (``DISTILLERY_DB_URL``) and the app's own `training_runner`. It submits
``--runs`` tiny runs (the first registered dataset: popularity, MF or SASRec, 1 epoch) at
random moments, cancels random active runs of *any* process along the way, and, once the
store holds ``--total`` runs and all have ended, shuts down and prints one line:

    RESULT {"owner": ..., "submitted": [...], "cancels": {"<run id>": true|false, ...}}

Its log (stderr) has one ``run N started by OWNER`` line per run it executed. Run as
``python -m tests.helpers.app_process --runs 14 --total 40 --seed 1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time

from core.enums import ACTIVE_STATUSES, TERMINAL_STATUSES
from core.jobs import JobManager
from core.models import ModelConfig
from core.pipeline import RunSpec, popularity_spec
from core.runner import submit_run, training_runner
from core.store import Store
from core.train import TrainConfig
from tests.helpers.processes import RESULT_PREFIX

ONE_EPOCH = TrainConfig(epochs=1, batch_size=256)
SPECS = (
    RunSpec(name="mf", role="teacher", model=ModelConfig(family="mf", dim=8), train=ONE_EPOCH),
    RunSpec(
        name="sasrec",
        role="teacher",
        model=ModelConfig(family="sasrec", dim=16, layers=1, heads=1, max_len=20),
        train=ONE_EPOCH,
    ),
    popularity_spec(),
)
DEADLINE_S = 900


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, required=True, help="runs this process submits")
    parser.add_argument("--total", type=int, required=True, help="runs all processes submit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cancel-fraction", type=float, default=0.25)
    parser.add_argument("--lease-seconds", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    rng = random.Random(args.seed)
    cancels: dict[int, bool] = {}
    with Store() as store:
        dataset_id = store.list_datasets()[0].id
        manager = JobManager(store, training_runner, workers=1, lease_s=args.lease_seconds)
        submitted = []
        for _ in range(args.runs):
            submitted.append(submit_run(manager, dataset_id, rng.choice(SPECS)))
            time.sleep(rng.uniform(0.0, 0.4))
            if rng.random() < args.cancel_fraction:
                active = [r.id for r in store.list_runs(status=ACTIVE_STATUSES)]
                if active:
                    run_id = rng.choice(active)
                    cancels[run_id] = manager.cancel(run_id) or cancels.get(run_id, False)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            runs = store.list_runs()
            if len(runs) >= args.total and all(r.status in TERMINAL_STATUSES for r in runs):
                break
            time.sleep(0.2)
        manager.shutdown(wait=True)
        result = {"owner": manager.owner, "submitted": submitted, "cancels": cancels}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
