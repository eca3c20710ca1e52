"""Paired step timing: what a distilled training step costs next to its twin's.

A run's mean epoch time is measured while it trains, and the runs of one bench train one
after another, minutes apart. On a shared machine the speed drifts in between: in one hour
on this project's 2-core machine the same twin epoch took 2.4 s and 5.0 s, and a ratio of
two runs' mean epochs mixed the code's cost with the machine's (ranking and listwise read
1.78x and 2.09x their twin trained minutes earlier, and 1.05-1.24x and 1.23-1.45x measured
side by side).

:func:`paired_step_seconds` measures the runs side by side instead. Each run gets a fresh
model and the objective and optimizer it trains with (a distilled one reuses the teacher's
outputs its training built, :class:`core.teacher_cache.TeacherCache`); then, in rounds, each
run takes a few training steps (:func:`core.train.optimizer_step`, the training loop's own)
and the order rotates every round, so every run sees the same machine. A student and its
twin are the same model, so validation and batching cost both the same and the step ratio
bounds their epoch ratio from above.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from core.dataset import InteractionData
from core.enums import Method
from core.models import Recommender, build_model
from core.pipeline import RunSpec
from core.train import Objective, make_optimizer, optimizer_step, resolve_device


@dataclass(frozen=True)
class StepTiming:
    """One run's share of a paired timing."""

    name: str
    steps: int  # timed steps
    step_seconds: float  # seconds of one training step (the median block's mean)


class _Runner:
    """A fresh copy of one run, stepping through its epoch's batches in a cycle."""

    def __init__(self, spec: RunSpec, data: InteractionData, teacher: Recommender | None):
        train = spec.train
        device = resolve_device(train.device)
        torch.manual_seed(train.seed)
        self.model = build_model(spec.model, data.n_users, data.n_items).to(device)
        distilling = spec.distill.method != Method.NONE
        self.objective = Objective(
            self.model,
            data,
            train,
            teacher=teacher if distilling else None,
            distill=spec.distill,
            generator=torch.Generator(device="cpu").manual_seed(train.seed),
        )
        self.optimizer = make_optimizer(self.model, train)
        self.model.train()
        rng = np.random.default_rng(train.seed)
        self.batches = [
            b.to(device)
            for b in self.model.task_batches(data, train.batch_size, train.negatives, rng)
        ]
        self.next = 0

    def steps(self, n: int) -> float:
        """Seconds taken by ``n`` training steps."""
        started = time.perf_counter()
        for _ in range(n):
            optimizer_step(self.objective, self.optimizer, self.batches[self.next])
            self.next = (self.next + 1) % len(self.batches)
        return time.perf_counter() - started


def paired_step_seconds(
    data: InteractionData,
    specs: list[RunSpec],
    teacher: Recommender | None,
    *,
    rounds: int = 12,
    block: int = 8,
) -> list[StepTiming]:
    """Seconds of one training step of each run in ``specs``, measured interleaved: one
    untimed block of ``block`` steps each, then ``rounds`` rounds of ``block`` steps each,
    the first run of a round moving one place every round; a run's step is its median
    block's time over ``block``.

    ``teacher``: the trained teacher of the distilled specs (ignored for a spec without a
    distillation method). The models trained here are throwaway copies.
    """
    if rounds < 1 or block < 1:
        raise ValueError("rounds and block must be at least 1.")
    if not specs:
        return []
    runners = [_Runner(spec, data, teacher) for spec in specs]
    for runner in runners:
        runner.steps(block)  # warm-up: first-touch allocations, lazy initialisation
    blocks: list[list[float]] = [[] for _ in runners]
    for r in range(rounds):
        for j in range(len(runners)):
            i = (r + j) % len(runners)
            blocks[i].append(runners[i].steps(block))
    # The median block: a pause of the machine during one block (another process, the
    # kernel) moves a mean of a few blocks by tens of percent, the median not at all.
    return [
        StepTiming(spec.name, rounds * block, float(np.median(times)) / block)
        for spec, times in zip(specs, blocks, strict=True)
    ]
