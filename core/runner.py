"""Glue between the job manager and the training pipeline.

`training_runner` is what the app's `JobManager` calls for every queued run: it loads the
registered dataset and, for students, the teacher's checkpoint, runs the same
`train_and_evaluate` as the CLI, saves the checkpoint atomically and returns the metrics for
the store. `submit_run` turns a `RunSpec` into a job. Trained models are cached by run id
so the Compare page does not reload them on every rerun.
"""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict

import numpy as np

from core.errors import ConfigError
from core.jobs import JobContext, JobManager, JobOutcome, JobSpec
from core.metrics import EvalResult
from core.models import Recommender, load_model
from core.pipeline import RunSpec, teacher_overlap, test_metrics, train_and_evaluate
from core.registry import load_dataset
from core.store import RunRecord, Store

CHECKPOINT = "model.pt"
_MODEL_CACHE_SIZE = 8
_models: OrderedDict[tuple[int, str], Recommender] = OrderedDict()
_teacher_tests: OrderedDict[tuple[int, str], EvalResult] = OrderedDict()
_lock = threading.Lock()


def submit_run(
    jobs: JobManager, dataset_id: int, spec: RunSpec, teacher_run_id: int | None = None
) -> int:
    """Queue one run; students and no-teacher baselines name the teacher they compare to."""
    return jobs.submit(
        JobSpec(
            dataset_id=dataset_id,
            role=spec.role,
            model=spec.model.family,
            config=spec.to_dict(),
            teacher_run_id=teacher_run_id,
            name=spec.name,
        )
    )


def run_model(store: Store, run: RunRecord | int) -> Recommender:
    """The trained model of a succeeded run, loaded once (weights_only) and cached."""
    record = store.get_run(run) if isinstance(run, int) else run
    if record.status != "succeeded":
        raise ConfigError(
            f"Run #{record.id} has not succeeded (it is {record.status}); pick a finished run."
        )
    path = record.checkpoint_path
    if path is None or not path.exists():
        raise ConfigError(
            f"The checkpoint of run #{record.id} is missing from the data directory; train it again."
        )
    key = (record.id, str(path))
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    try:
        model = load_model(path)
    except (
        OSError,
        EOFError,
        RuntimeError,
        ValueError,
        LookupError,
        TypeError,
        pickle.UnpicklingError,
    ) as exc:
        # A truncated, corrupted or foreign file (weights_only refuses anything but tensors
        # and plain containers) must end a student run with a sentence, not a traceback.
        raise ConfigError(
            f"The checkpoint of run #{record.id} cannot be read ({type(exc).__name__}); "
            "it is damaged or not a Distillery checkpoint, so train that run again."
        ) from exc
    with _lock:
        _models[key] = model
        while len(_models) > _MODEL_CACHE_SIZE:
            _models.popitem(last=False)
    return model


def forget_run(run_id: int) -> None:
    """Drop cached objects of a deleted run."""
    with _lock:
        for cache in (_models, _teacher_tests):
            for key in [k for k in cache if k[0] == run_id]:
                del cache[key]


def _teacher_test(store: Store, teacher: RunRecord, model: Recommender, data) -> EvalResult:
    key = (teacher.id, str(teacher.checkpoint_path))
    with _lock:
        if key in _teacher_tests:
            return _teacher_tests[key]
    result = test_metrics(model, data)
    with _lock:
        _teacher_tests[key] = result
        while len(_teacher_tests) > _MODEL_CACHE_SIZE:
            _teacher_tests.popitem(last=False)
    return result


def training_runner(ctx: JobContext) -> JobOutcome:
    """Train, test and save one run (called on a worker thread by the JobManager)."""
    ctx.set_message("loading data")
    data = load_dataset(ctx.store, ctx.spec.dataset_id)
    spec = RunSpec.from_dict(ctx.spec.config)
    teacher_record = ctx.teacher
    teacher = None
    if teacher_record is not None:
        ctx.set_message("loading the teacher")
        teacher = run_model(ctx.store, teacher_record)
        if teacher.n_items != data.n_items or teacher.n_users != data.n_users:
            raise ConfigError(
                f"Teacher run #{teacher_record.id} was trained on another dataset; pick a teacher of this dataset."
            )
    ctx.set_message("training")
    outcome = train_and_evaluate(
        data,
        spec,
        teacher=teacher,
        cancel=ctx.cancel_event,
        progress=lambda r: ctx.report(
            r.epoch, r.epochs, r.loss, r.terms, r.val, r.seconds, r.eta_seconds
        ),
    )
    ctx.check_cancelled()
    ctx.set_message("saving the checkpoint")
    artifact = ctx.write_artifact(CHECKPOINT, outcome.model.save, kind="checkpoint")
    test_rows = list(outcome.test.to_rows())
    if teacher is not None and teacher_record is not None:
        teacher_result = _teacher_test(ctx.store, teacher_record, teacher, data)
        test_rows.append(
            ("jaccard_vs_teacher", 10, teacher_overlap(outcome.test, teacher_result, 10))
        )
    valid_rows = [
        ("ndcg", 10, outcome.training.best_val_ndcg),
        ("best_epoch", 0, float(outcome.training.best_epoch)),
    ]
    test_rows.append(("train_seconds", 0, outcome.train_seconds))
    return JobOutcome(
        num_params=outcome.params,
        checkpoint_path=artifact.path,
        results={"test": test_rows, "valid": valid_rows},
    )


def sample_users(data, n: int, seed: int = 0) -> np.ndarray:
    """Users that have a test item, for "random user" pickers and parity samples."""
    users = data.eval_users("test")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(users, size=min(n, len(users)), replace=False))
