"""Glue between the job manager and the training pipeline.

`training_runner` is what the app's `JobManager` calls for every queued run: it loads the
registered dataset and, for students, the teacher's checkpoint, runs the same
`train_and_evaluate` as the CLI, saves the checkpoint atomically and returns the metrics for
the store. `submit_run` turns a `RunSpec` into a job. Trained models are cached by run id
so the Compare page does not reload them on every rerun.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

from core.enums import Status
from core.errors import ConfigError
from core.ingestion.registry import load_dataset
from core.job_context import JobContext, JobOutcome
from core.jobs import JobManager
from core.metrics import EvalResult
from core.models import Recommender, load_model
from core.pipeline import RunSpec, teacher_overlap, test_metrics, train_and_evaluate
from core.records import JobSpec, RunRecord
from core.store import Store

CHECKPOINT = "model.pt"
_MODEL_CACHE_SIZE = 8


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
    if record.status != Status.SUCCEEDED:
        raise ConfigError(
            f"Run #{record.id} has not succeeded (it is {record.status}); pick a finished run."
        )
    path = record.checkpoint_path
    if path is None or not path.exists():
        raise ConfigError(
            f"The checkpoint of run #{record.id} is missing from the data directory; train it again."
        )
    # The file's mtime is part of the key: a run trained again never returns stale weights.
    return _load_checkpoint(record.id, str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=_MODEL_CACHE_SIZE)
def _load_checkpoint(run_id: int, path: str, _mtime_ns: int) -> Recommender:
    try:
        return load_model(Path(path))
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
            f"The checkpoint of run #{run_id} cannot be read ({type(exc).__name__}); "
            "it is damaged or not a Distillery checkpoint, so train that run again."
        ) from exc


def forget_run(run_id: int) -> None:
    """Drop cached objects of a deleted run (rare: the small caches are simply emptied)."""
    _load_checkpoint.cache_clear()
    _teacher_test.cache_clear()


@functools.lru_cache(maxsize=_MODEL_CACHE_SIZE)
def _teacher_test(teacher_id: int, checkpoint: str, model: Recommender, data) -> EvalResult:
    """The teacher's test evaluation, computed once per teacher checkpoint and dataset."""
    return test_metrics(model, data)


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
    ctx.keep_training_notes(outcome.training.notes)
    ctx.set_message("saving the checkpoint")
    artifact = ctx.write_artifact(CHECKPOINT, outcome.model.save, kind="checkpoint")
    test_rows = list(outcome.test.to_rows())
    if teacher is not None and teacher_record is not None:
        teacher_result = _teacher_test(
            teacher_record.id, str(teacher_record.checkpoint_path), teacher, data
        )
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
