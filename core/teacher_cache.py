"""The frozen teacher's outputs on the student's training rows, computed once per run.

A distilled epoch used to re-run the teacher on the same prefixes in every batch of every
epoch. The teacher is frozen and the student's training rows do not change between epochs
(each user's last ``max_len`` next-item steps for a sequence student, one row per user
otherwise), so :class:`TeacherCache` scores them all once, before the first epoch, and each
batch then slices its rows. What is kept depends on a memory budget:

- ``full``: the teacher's scores ``[rows, n_items]`` while they fit the budget (exact soft
  term, top-K taken per batch);
- ``topk``: otherwise the teacher's top-K' items and scores plus the log-partition at the
  distillation temperature (:class:`core.distill.TeacherTargets`): enough for every term,
  the soft one as a KL over the top-K' items and one "rest" bin.

The teacher scores *exactly the student's prefixes*: for a sequence student, the prefix at
each position of the student's own window. When the teacher's ``max_len`` covers the
window, one causal pass of the teacher over that window (right-aligned, as SASRec trains)
gives every prefix's scores, and each depends on its prefix alone; a teacher shorter than
the window sees each prefix's last ``max_len`` items, as when it is served. For a user
student, the teacher scores the user's whole training history.

What the distillation terms mask (see :func:`distill_mask`): when the dataset masks history
at evaluation, the items of the row's own context (the prefix, for a sequence student; the
training items, for a user student), because the served list will never show them; when it
does not (repeat-heavy logs), nothing, because a repeat is a correct next item. Never the
user's *later* items, which would hide the true next item from the teacher's targets.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from core.dataset import InteractionData
from core.distill import DistillConfig, TeacherTargets
from core.enums import Method
from core.models import Batch, Recommender, StepOutput
from core.ranking import history_mask

# Bytes the cache may hold. 512 MB keeps a demo-sized run's cache next to the app's other
# memory; past it the top-K form takes over (about 1,000x smaller for a 3,000-item catalog).
DEFAULT_BUDGET_BYTES = 512 * 2**20
# Items per row kept for the soft term in the top-K form: the teacher's softmax mass beyond
# its best 128 items is small, and it still counts, as the "rest" bin.
SOFT_TOP_K = 128
_CHUNK_ROWS = 4096


def prefix_mask(context: torch.Tensor, positions: torch.Tensor, n_items: int) -> torch.Tensor:
    """Bool ``[N, n_items]``: per selected position (row-major), the items of its prefix.

    ``context`` is ``[B, L]`` (item + 1, 0 = padding); the prefix of position ``c`` is
    ``context[b, :c+1]``. Memory is ``N x n_items`` bits, what the student's rows cost anyway.
    """
    rows, cols = positions.nonzero(as_tuple=True)
    length = context.shape[1]
    tokens = context[rows] * (torch.arange(length, device=context.device)[None, :] <= cols[:, None])
    mask = torch.zeros(len(rows), n_items + 1, dtype=torch.bool, device=context.device)
    mask.scatter_(1, tokens, True)
    return mask[:, 1:]


def distill_mask(
    data: InteractionData, batch: Batch, step: StepOutput, n_items: int
) -> torch.Tensor | None:
    """The items the distillation terms leave out for these rows (see the module docstring)."""
    if not data.masks_history:
        return None
    if step.positions is not None:
        return prefix_mask(batch.context, step.positions, n_items)
    return history_mask(data, step.row_users, "train", step.rows.device)


def _method_uses_soft(method: str) -> bool:
    return method in (Method.SOFT, Method.COMBINED)


class TeacherCache:
    """The teacher's targets for every training row of one student, built once."""

    def __init__(
        self,
        teacher: Recommender,
        student: Recommender,
        data: InteractionData,
        config: DistillConfig,
        *,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ):
        self.teacher, self.data, self.config = teacher, data, config
        self.n_items = data.n_items
        self.device = student.device
        self.per_position = student.input_kind == "sequence"
        if self.per_position:
            inputs, targets, users = student.training_windows(data)
            steps = (targets > 0).sum(axis=1)
            self.inputs = torch.from_numpy(inputs)
            self.row_start = torch.from_numpy(np.cumsum(steps) - steps).to(self.device)
            self.first_col = torch.from_numpy(inputs.shape[1] - steps).to(self.device)
            window = np.full(data.n_users, -1, dtype=np.int64)
            window[users] = np.arange(len(users))
            self.window_of_user = torch.from_numpy(window).to(self.device)
            self.n_rows = int(steps.sum())
        else:
            self.n_rows = data.n_users
        full_bytes = self.n_rows * self.n_items * 4
        self.mode = "full" if full_bytes <= budget_bytes else "topk"
        self.k = min(
            self.n_items,
            max(config.top_k, SOFT_TOP_K if _method_uses_soft(config.method) else 0),
        )
        started = time.perf_counter()
        self._build()
        self.seconds = time.perf_counter() - started
        self.note = (
            f"The teacher's outputs on {self.n_rows:,} training rows were computed once, in "
            f"{self.seconds:.1f} s."
        )
        if self.mode == "topk":
            self.note += (
                f" Its full scores ({full_bytes / 2**30:.1f} GB) exceed the "
                f"{budget_bytes / 2**20:.0f} MB cache budget, so the student learns from the "
                f"teacher's top {self.k} items and log-partition per row."
            )

    # ------------------------------------------------------------------ building
    @torch.no_grad()
    def _teacher_rows(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher scores of windows ``lo:hi`` (sequence student) or users ``lo:hi``, with the
        distillation mask of those rows."""
        teacher, data, device = self.teacher, self.data, self.device
        if not self.per_position:
            users = np.arange(lo, hi)
            scores = teacher.score_users(data, users, "train").to(device)
            mask = history_mask(data, users, "train", device) if data.masks_history else None
            return scores, mask
        context = self.inputs[lo:hi].to(device)
        positions = context_positions(context, self.first_col[lo:hi])
        mask = prefix_mask(context, positions, self.n_items) if data.masks_history else None
        if teacher.input_kind == "sequence":
            scores = teacher_prefix_scores(teacher, context, positions)
        else:
            window_users = torch.nonzero(self.window_of_user >= 0).squeeze(1)
            users = window_users[lo:hi]
            per_window = teacher.score_users(data, users.cpu().numpy(), "train").to(device)
            scores = per_window[positions.nonzero(as_tuple=True)[0]]
        return scores, mask

    def _build(self) -> None:
        was_training = self.teacher.training
        self.teacher.eval()
        n_units = len(self.inputs) if self.per_position else self.n_rows
        width = self.inputs.shape[1] if self.per_position else 1
        step = max(1, _CHUNK_ROWS // width)
        parts: list[tuple[torch.Tensor, ...]] = []
        try:
            for lo in range(0, n_units, step):
                scores, mask = self._teacher_rows(lo, min(n_units, lo + step))
                if self.mode == "full":
                    parts.append((scores.float(),))
                else:
                    t = TeacherTargets.from_scores(
                        scores, self.k, self.config.temperature, mask=mask
                    )
                    parts.append((t.topk.int(), t.topk_scores.float(), t.log_partition.float()))
        finally:
            self.teacher.train(was_training)
        joined = [torch.cat(column) if column else None for column in zip(*parts, strict=True)]
        if self.mode == "full":
            self.scores = joined[0] if joined else torch.zeros(0, self.n_items)
        else:
            self.topk, self.topk_scores, self.log_partition = joined

    # ------------------------------------------------------------------ lookup
    def row_index(self, batch: Batch, step: StepOutput) -> torch.Tensor:
        """Cache rows of this step's distillation rows, in the order of ``step.rows``."""
        if not self.per_position or step.positions is None:
            return step.row_users.to(self.device)
        rows, cols = step.positions.nonzero(as_tuple=True)
        window = self.window_of_user[batch.users.to(self.device)[rows]]
        return self.row_start[window] + cols - self.first_col[window]

    def targets(self, batch: Batch, step: StepOutput, mask: torch.Tensor | None) -> TeacherTargets:
        idx = self.row_index(batch, step)
        if self.mode == "full":
            k = 1 if self.config.method == Method.SOFT else self.config.top_k
            return TeacherTargets.from_scores(
                self.scores[idx], k, self.config.temperature, mask=mask
            )
        return TeacherTargets(
            self.topk[idx].long(),
            self.topk_scores[idx],
            self.log_partition[idx],
            self.config.temperature,
        )


def context_positions(context: torch.Tensor, first_col: torch.Tensor) -> torch.Tensor:
    """Bool ``[W, L]``: the positions of each window that are training rows (col >= first)."""
    cols = torch.arange(context.shape[1], device=context.device)
    return cols[None, :] >= first_col[:, None].to(context.device)


@torch.no_grad()
def teacher_prefix_scores(
    teacher: Recommender, context: torch.Tensor, positions: torch.Tensor
) -> torch.Tensor:
    """``[N, n_items]``: a sequence teacher's next-item scores after each selected prefix.

    When the teacher reads at least the window's length, one causal pass over the window
    scores every prefix at once. Otherwise each prefix is cut to the teacher's last
    ``max_len`` items, as the teacher would see it when served.
    """
    length = context.shape[1]
    t_len = teacher.config.max_len
    if t_len >= length:
        return teacher.position_scores(context)[positions]
    rows, cols = positions.nonzero(as_tuple=True)
    offsets = cols[:, None] - t_len + 1 + torch.arange(t_len, device=context.device)[None, :]
    windows = context[rows[:, None], offsets.clamp_min(0)] * (offsets >= 0)
    return teacher(windows)
