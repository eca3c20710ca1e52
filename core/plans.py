"""Run plans the pages start and show: the one-click demo and the size sweep, with an ETA.

A plan lives in the store (core.plan_queries), not in a browser session: the students of
the demo wait there for their teacher and are queued by the store when it succeeds, so a
reload, a second tab or a server restart never loses the demo. Pages call:

- `submit_demo(jobs, dataset_id, plan)`: the demo's runs in one plan (popularity and the
  teacher now, the distilled student and its twin after the teacher); while a demo plan of
  that dataset is still running, the same plan is returned instead of a second one;
- `submit_sweep(jobs, teacher_run_id, method, fractions, seeds)`: for each size (a share of
  the teacher's parameters) and seed, a distilled student and its no-teacher twin, after
  the teacher; a size that is not smaller than the teacher is one sentence, nothing queued;
- `latest(store, kind)` / `view(store, plan_id)`: a `PlanView` with the plan's runs, how far
  it is, and an ETA from measured epoch times;
- `resume(jobs, plan_id)`: queue its interrupted runs again (one click).

The ETA is never a fixed claim. A running run's remaining time is its mean measured epoch
time times its epochs left; a run that has not started yet is costed with the epoch times
measured for a run of the same shape (model, training and whether it distills) on the same
dataset, else with the measured epoch time of the run it waits for, scaled by the square
root of their parameter ratio and by how much more a distilled epoch costs (flagged as
estimated; `_epoch_scale`).
Epochs left are counted up to each run's configured maximum (early stopping may end a run
sooner). The runs are then scheduled on the given number of worker threads, dependencies
respected. Until some epoch has been measured there is no ETA.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.enums import DISTILL_METHODS, Family, Method, PlanKind, Role, Status, choice_list
from core.errors import ConfigError, StoreError
from core.models import ModelConfig, count_parameters
from core.pipeline import RunSpec
from core.plan_queries import BLOCKED_PREFIX
from core.recipe import SIZE_FRACTIONS, student_width
from core.records import JobSpec, PlanRecord, PlanStep, RunRecord
from core.settings import workers as configured_workers
from core.store import Store
from core.views.forms import DemoPlan, presets, run_name

if TYPE_CHECKING:
    from core.jobs import JobManager

DEMO_NAME = "Demo shop"


# --------------------------------------------------------------------------- submit
def _job(dataset_id: int, spec: RunSpec) -> JobSpec:
    return JobSpec(dataset_id, spec.role, spec.model.family, spec.to_dict(), name=spec.name)


def submit_demo(
    jobs: JobManager, dataset_id: int, plan: DemoPlan, *, epochs: int | None = None
) -> int:
    """Queue the demo as one plan and return its id: popularity and the teacher at once,
    the student and its twin waiting for the teacher. ``epochs`` (the cap the plan was built
    with) is recorded for the page. A demo of this dataset that is still running is returned
    as it is, so two tabs pressing the button start one demo."""
    current = latest(jobs.store, PlanKind.DEMO, dataset_id=dataset_id)
    if current is not None and not current.done:
        return current.plan.id
    steps = [PlanStep(_job(dataset_id, plan.popularity)), PlanStep(_job(dataset_id, plan.teacher))]
    steps += [PlanStep(_job(dataset_id, spec), after=1) for spec in plan.students]
    record, _ = jobs.submit_plan(DEMO_NAME, PlanKind.DEMO, steps, {"epochs": epochs})
    return record.id


def _teacher_for_sweep(store: Store, teacher_run_id: int) -> RunRecord:
    try:
        teacher = store.get_run(teacher_run_id)
    except StoreError as exc:
        raise ConfigError(
            f"Teacher run #{teacher_run_id} no longer exists (it was deleted); pick another "
            "teacher. Nothing was queued."
        ) from exc
    if teacher.role != Role.TEACHER or teacher.model == Family.POPULARITY:
        raise ConfigError(
            f"Run #{teacher.id} is a {teacher.role} run, not a trained teacher; pick a teacher "
            "run for the sweep. Nothing was queued."
        )
    return teacher


def _seeds(seeds: int | Sequence[int], first: int) -> list[int]:
    chosen = list(range(first, first + seeds)) if isinstance(seeds, int) else list(seeds)
    if not chosen or len(set(chosen)) != len(chosen):
        raise ConfigError("A sweep needs at least one seed, each seed once. Nothing was queued.")
    return chosen


def sweep_sizes(
    teacher: ModelConfig, n_users: int, n_items: int, fractions: Iterable[float]
) -> list[tuple[float, ModelConfig, int]]:
    """``(fraction, student model, parameters)`` per asked size, smallest first; a size
    that is not smaller than the teacher is refused with one sentence."""
    asked = sorted({float(f) for f in fractions})
    if not asked:
        raise ConfigError("Pick at least one student size for the sweep. Nothing was queued.")
    teacher_params = count_parameters(teacher, n_users, n_items)
    sizes: list[tuple[float, ModelConfig, int]] = []
    for fraction in asked:
        if not 0 < fraction < 1:
            raise ConfigError(
                f"A sweep's sizes are shares of the teacher's parameters below 100%; "
                f"{fraction:.0%} is not. Nothing was queued."
            )
        width = student_width(teacher, n_users, n_items, fraction)
        dropout = min(teacher.dropout, 0.2) if teacher.family == Family.SASREC else teacher.dropout
        model = replace(teacher, dim=width, layers=1, dropout=dropout).validate()
        params = count_parameters(model, n_users, n_items)
        if params >= teacher_params:
            raise ConfigError(
                f"A student at {fraction:.0%} of the teacher would have {params:,} parameters, "
                f"not fewer than the teacher's {teacher_params:,}; pick smaller sizes. "
                "Nothing was queued."
            )
        if all(m.dim != width for _, m, _ in sizes):  # two shares may round to one width
            sizes.append((fraction, model, params))
    return sizes


def submit_sweep(
    jobs: JobManager,
    teacher_run_id: int,
    method: str,
    fractions: Iterable[float] = SIZE_FRACTIONS,
    seeds: int | Sequence[int] = 1,
    *,
    epochs: int | None = None,
    teacher_init: bool | None = None,
) -> int:
    """Queue a size sweep after a teacher and return the plan id: per size and seed, a
    student distilled with ``method`` and its no-teacher twin (same model and training).
    ``teacher_init`` (None: the recipe's) starts each distilled student's item table from the
    teacher's (core.embedding_init); the twins always start from random weights.

    Sizes are shares of the teacher's parameters (about 1% to 25%); the width of each
    student comes from `core.recipe.student_width`. Training settings and the distillation
    knobs come from the dataset's recipe; ``epochs`` caps each run's epochs (as the quick
    demo does; early stopping may end a run sooner). The students wait while the teacher
    trains; a teacher that was deleted or ended badly, a size not smaller than the teacher,
    or an unknown method is one sentence, and nothing is queued.
    """
    if method not in DISTILL_METHODS:
        raise ConfigError(
            f"Unknown distillation method {method!r}; choose one of "
            f"{choice_list(DISTILL_METHODS)}. Nothing was queued."
        )
    teacher = _teacher_for_sweep(jobs.store, teacher_run_id)
    dataset = jobs.store.get_dataset(teacher.dataset_id)
    teacher_spec = RunSpec.from_dict(teacher.config)
    recipe = presets(dataset)
    distill = (
        recipe.distill
        if recipe.distill.method == method
        else replace(recipe.distill, method=method)
    )
    if teacher_init is not None:
        distill = replace(distill, teacher_init=teacher_init)
    distill.validate()
    student_train = recipe.student_train
    if epochs is not None:
        student_train = student_train.capped(epochs)
    chosen = _seeds(seeds, student_train.seed)
    sizes = sweep_sizes(teacher_spec.model, dataset.n_users, dataset.n_items, fractions)
    steps: list[PlanStep] = []
    for fraction, model, _params in sizes:
        for seed in chosen:
            train = replace(student_train, seed=seed)
            suffix = f" · {fraction:.0%} · seed {seed}"
            student = RunSpec(
                run_name(Role.STUDENT, model, method) + suffix, Role.STUDENT, model, train, distill
            )
            twin = RunSpec(run_name(Role.BASELINE, model) + suffix, Role.BASELINE, model, train)
            steps += [PlanStep(_job(dataset.id, s), after_run=teacher.id) for s in (student, twin)]
    config = {
        "teacher_run_id": teacher.id,
        "method": method,
        "fractions": [f for f, _, _ in sizes],
        "widths": [m.dim for _, m, _ in sizes],
        "seeds": chosen,
        "epochs": student_train.epochs,
    }
    name = f"Sweep of {teacher.label} ({method}, {len(sizes)} sizes x {len(chosen)} seeds)"
    record, _ = jobs.submit_plan(name, PlanKind.SWEEP, steps, config)
    return record.id


def resume(jobs: JobManager, plan_id: int) -> list[int]:
    """Queue every interrupted run of a plan again; returns the ids put back (their waiting
    dependents included)."""
    back: list[int] = []
    for run in jobs.store.list_runs(plan_id=plan_id, status=Status.INTERRUPTED):
        if run.id not in back:
            back += jobs.resume(run.id)
    return back


def cancel(jobs: JobManager, plan_id: int) -> list[int]:
    """Cancel every queued, waiting or running run of a plan; returns the ids cancelled."""
    active = jobs.store.list_runs(plan_id=plan_id, status=(Status.RUNNING, Status.QUEUED))
    # Waiting runs end with their parent; those still waiting after that are cancelled here.
    done = [r.id for r in active if jobs.cancel(r.id)]
    waiting = jobs.store.list_runs(plan_id=plan_id, status=Status.WAITING)
    return done + [r.id for r in waiting if jobs.cancel(r.id)]


# --------------------------------------------------------------------------- view
@dataclass(frozen=True)
class PlanView:
    """A plan as a page shows it: its runs (step order), where it is, and an ETA."""

    plan: PlanRecord
    runs: tuple[RunRecord, ...]
    eta_seconds: float | None  # None: nothing measured yet, or nothing left to do
    eta_estimated: bool  # part of the ETA is scaled from another run's epoch times

    @property
    def done(self) -> bool:
        return all(r.is_terminal for r in self.runs)

    @property
    def succeeded(self) -> bool:
        return all(r.status == Status.SUCCEEDED for r in self.runs)

    @property
    def status(self) -> str:
        """``running`` (something is queued, waiting or running), ``succeeded``,
        ``interrupted`` (`resume` continues it), ``cancelled`` or ``failed``."""
        if not self.done:
            return "running"
        if self.succeeded:
            return "succeeded"
        if self.resumable:
            return "interrupted"
        problem = self.problem
        return (
            "cancelled" if problem is not None and problem.status == Status.CANCELLED else "failed"
        )

    @property
    def resumable(self) -> tuple[int, ...]:
        """Runs that stopped with their process: `resume` queues them again."""
        return tuple(r.id for r in self.runs if r.status == Status.INTERRUPTED)

    @property
    def teacher(self) -> RunRecord | None:
        return next((r for r in self.runs if r.role == Role.TEACHER), None)

    @property
    def problem(self) -> RunRecord | None:
        """The run that stopped the plan: the first one that failed, was cancelled or was
        interrupted by itself (not merely because its teacher stopped)."""
        bad = [r for r in self.runs if r.is_terminal and r.status != Status.SUCCEEDED]
        own = [r for r in bad if not (r.error or "").startswith(BLOCKED_PREFIX)]
        return (own or bad or [None])[0]

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.runs)


def latest(
    store: Store,
    kind: str = PlanKind.DEMO,
    *,
    dataset_id: int | None = None,
    workers: int | None = None,
) -> PlanView | None:
    """The newest plan of ``kind`` (of one dataset, if given), or None when there is none."""
    found = store.list_plans(kind=kind, dataset_id=dataset_id, limit=1)
    return view(store, found[0].id, workers=workers) if found else None


def view(store: Store, plan_id: int, *, workers: int | None = None) -> PlanView:
    """A plan's runs and ETA, read from the store. ``workers``: the training threads that
    serve the queue (default: this app's, ``DISTILLERY_WORKERS``)."""
    plan = store.get_plan(plan_id)
    runs = tuple(store.list_runs(plan_id=plan_id))
    eta, estimated = _eta(store, plan, runs, workers or configured_workers())
    return PlanView(plan, runs, eta, estimated)


# --------------------------------------------------------------------------- ETA
def _shape(run: RunRecord) -> str:
    """What sets a run's epoch time: its model, its training (bar the seed) and whether it
    distills (the teacher's outputs are part of each step)."""
    config = run.config
    train = {k: v for k, v in (config.get("train") or {}).items() if k != "seed"}
    distills = (config.get("distill") or {}).get("method", Method.NONE) != Method.NONE
    return json.dumps([run.model, config.get("model"), train, distills], sort_keys=True)


# A distilled epoch's cost over its twin's, by method (the teacher's outputs are precomputed
# once, core.teacher_cache; every column read shares the task loss's gradient, core.columns).
# Measured on the demo shop's 10% student with its training steps side by side with the
# twin's (core.timing: the machine's drift between two runs' epochs stays out of it), on 2
# cores, rounded up from the highest of five interleaved timings (two of 12-round medians,
# three of 4- and 8-round means), bench/distill.py's final side-by-side steps (12-round
# medians) and its mean epochs: soft 1.16-1.27x, hard 1.15-1.37x, combined 1.36-1.47x,
# ranking 1.04-1.14x, listwise 1.22-1.37x. (One 4-round mean read combined at 1.66x while
# its mean epoch was 1.36x: one slow block, why core.timing now takes the median.) A step
# bounds an epoch from above (validation and batching cost a student what they cost its
# twin), so an ETA errs long, never short.
DISTILLED_EPOCH_FACTOR = {
    Method.SOFT: 1.3,
    Method.HARD: 1.4,
    Method.COMBINED: 1.5,
    Method.RANKING: 1.2,
    Method.LISTWISE: 1.4,
}
# Before its first epoch a distilled run scores its training rows with the teacher once
# (core.teacher_cache): a forward pass without backward or validation, about half of one of
# the teacher's epochs (demo shop: 6.4 s against 12 s).
TEACHER_CACHE_SHARE = 0.5


def _method(run: RunRecord) -> str:
    return (run.config.get("distill") or {}).get("method", Method.NONE)


def _dataset_size(store: Store, dataset_id: int) -> tuple[int, int] | None:
    try:
        record = store.get_dataset(dataset_id)
    except StoreError:
        return None
    return record.n_users, record.n_items


def _params(run: RunRecord, sizes: tuple[int, int] | None) -> int | None:
    if run.num_params:
        return run.num_params
    if sizes is None or not isinstance(run.config.get("model"), dict):
        return None
    return _config_params(json.dumps(run.config["model"], sort_keys=True), *sizes)


@functools.lru_cache(maxsize=256)
def _config_params(model_json: str, n_users: int, n_items: int) -> int | None:
    """A waiting run's parameter count (Home's ETA asks for it at every poll)."""
    try:
        return count_parameters(ModelConfig.from_dict(json.loads(model_json)), n_users, n_items)
    except (ConfigError, TypeError, ValueError):
        return None


def _epoch_scale(run: RunRecord, reference: RunRecord, sizes: tuple[int, int] | None) -> float:
    """An estimate of ``run``'s epoch time over ``reference``'s measured one, for a run of a
    shape never measured: the square root of their parameter ratio (an epoch visits the same
    batches and validates the same users whatever the model; its matrix products grow with
    the width, the rest does not: on the demo shop a twin with 15% of its teacher's
    parameters took 31% of its epoch time, sqrt gives 39%), times the ratio of their methods'
    `DISTILLED_EPOCH_FACTOR` (1 for a run that does not distill). Always shown as an estimate."""
    ours, theirs = _params(run, sizes), _params(reference, sizes)
    scale = math.sqrt(ours / theirs) if ours and theirs else 1.0

    def factor(r: RunRecord) -> float:
        return DISTILLED_EPOCH_FACTOR.get(_method(r), 1.0)

    return scale * factor(run) / factor(reference)


def _max_epochs(run: RunRecord) -> int:
    return int((run.config.get("train") or {}).get("epochs") or 1)


def _eta(
    store: Store, plan: PlanRecord, runs: Sequence[RunRecord], workers: int
) -> tuple[float | None, bool]:
    left = [r for r in runs if not r.is_terminal]
    if not left:
        return None, False
    # A sweep waits for a teacher of another plan: its remaining time counts too.
    inside = {r.id for r in runs}
    for parent_id in {r.depends_on_run_id for r in left if r.status == Status.WAITING}:
        if parent_id is not None and parent_id not in inside:
            try:
                parent = store.get_run(parent_id)
            except StoreError:
                continue
            if not parent.is_terminal:
                left.append(parent)
                inside.add(parent_id)
    # Epoch times measured on this dataset: this plan's runs and earlier runs of any shape.
    others = [
        r
        for r in store.list_runs(dataset_id=plan.dataset_id)
        if r.plan_id != plan.id and r.status == Status.SUCCEEDED
    ]
    frame = store.epochs_frame([r.id for r in (*runs, *others)])
    seconds = frame.groupby("run_id")["seconds"].agg(["mean", "count"]) if len(frame) else None

    def measured(run: RunRecord) -> tuple[float, int] | None:
        # Popularity's one "epoch" is a count (milliseconds): it says nothing about how long
        # a trained model's epoch takes, so it is never a reference.
        if seconds is None or run.id not in seconds.index or run.role == Role.POPULARITY:
            return None
        row = seconds.loc[run.id]
        return float(row["mean"]), int(row["count"])

    by_shape: dict[str, tuple[float, int, bool]] = {}
    for run in (*others, *runs):  # newest measurement of a shape wins
        found = measured(run)
        if found is not None:
            by_shape[_shape(run)] = (*found, run.status == Status.SUCCEEDED)
    # Without a run of its own shape, a run is costed at the epoch time of the run it waits
    # for (else the longest-measured one), scaled by `_epoch_scale`.
    measured_runs = [(r, m) for r in (*runs, *others) if (m := measured(r)) is not None]
    longest = max(measured_runs, key=lambda pair: pair[1][1], default=None)
    by_id = {r.id: m for r, m in measured_runs}
    by_run = {r.id: r for r, _ in measured_runs}
    sizes = _dataset_size(store, plan.dataset_id)
    estimated = False
    remaining: dict[int, float] = {}
    for run in left:
        if run.model == Family.POPULARITY:  # counted, never trained epoch by epoch
            remaining[run.id] = 0.0
            continue
        total = int(run.progress.get("total_epochs") or _max_epochs(run))
        own = measured(run) if run.status == Status.RUNNING else None
        if own is not None:
            remaining[run.id] = own[0] * max(0, total - own[1])
            continue
        like = by_shape.get(_shape(run))
        start = 0.0
        if like is not None:
            per_epoch, epochs_seen, finished = like
            epochs = min(total, epochs_seen) if finished else total
        elif run.depends_on_run_id in by_id or longest is not None:
            if run.depends_on_run_id in by_id:
                ref_run, reference = by_run[run.depends_on_run_id], by_id[run.depends_on_run_id]
            else:
                ref_run, reference = longest
            scale = _epoch_scale(run, ref_run, sizes)
            per_epoch, epochs, estimated = reference[0] * scale, total, True
            if _method(run) != Method.NONE and ref_run.role == Role.TEACHER:
                start = TEACHER_CACHE_SHARE * reference[0]  # its teacher's cache, built once
        else:
            return None, False
        cost = per_epoch * epochs + start
        if run.status == Status.RUNNING and run.started is not None:
            cost = max(0.0, cost - (datetime.now(UTC) - run.started).total_seconds())
        remaining[run.id] = cost
    return _schedule(left, remaining, workers), estimated


def _schedule(left: Sequence[RunRecord], remaining: dict[int, float], workers: int) -> float:
    """When the last run ends if ``workers`` threads take queued runs oldest first and a
    waiting run is queued when its parent ends (running runs keep their threads)."""
    ids = {r.id for r in left}
    parents = {
        r.id: r.depends_on_run_id
        for r in left
        if r.status == Status.WAITING and r.depends_on_run_id in ids
    }
    running = {r.id: remaining[r.id] for r in left if r.status == Status.RUNNING}
    ready = sorted(r.id for r in left if r.status != Status.RUNNING and r.id not in parents)
    slots = max(workers, len(running))
    now = 0.0
    while running or ready:
        while ready and len(running) < slots:
            run_id = ready.pop(0)
            running[run_id] = now + remaining[run_id]
        run_id, now = min(running.items(), key=lambda item: item[1])
        del running[run_id]
        released = [child for child, parent in parents.items() if parent == run_id]
        for child in released:
            del parents[child]
        ready = sorted(ready + released)
    return now if math.isfinite(now) else 0.0


def summary(plan_view: PlanView) -> dict[str, Any]:
    """A JSON-friendly summary of a plan (for logs, the CLI and benches)."""
    return {
        "plan": plan_view.plan.id,
        "kind": plan_view.plan.kind,
        "status": plan_view.status,
        "runs": {r.id: r.status for r in plan_view.runs},
        "eta_seconds": plan_view.eta_seconds,
        "eta_estimated": plan_view.eta_estimated,
    }
