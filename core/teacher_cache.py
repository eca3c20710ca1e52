"""The frozen teacher's outputs on the student's training rows, computed once per run.

A distilled epoch used to re-run the teacher on the same prefixes in every batch of every
epoch. The teacher is frozen and the student's training rows do not change between epochs
(each user's last ``max_len`` next-item steps for a sequence student, one row per user
otherwise), so :class:`TeacherCache` scores them all once, before the first epoch, and each
batch then slices its rows. The next student of the same teacher with the same rows, K and
temperature reuses them (the last ``KEEP_BUILT`` builds are kept). What is kept depends on a
memory budget:

- ``full``: the teacher's scores ``[rows, n_items]`` while they fit the budget (exact soft
  term, top-K taken per batch);
- ``topk``: otherwise the teacher's top-K' items and scores plus the log-partition at the
  distillation temperature (:class:`core.distill.TeacherTargets`): enough for every term,
  the soft one as a KL over the top-K' items and one "rest" bin. Always this form for a
  student trained with sampled or chunked softmax (big catalogs), which never scores the
  whole catalog: :func:`candidate_rows` then scores it on the teacher's top-K' items, its
  positive and the batch's shared negatives only.

The teacher is run over the catalog in pieces of at most ``SCORE_CHUNK_BYTES`` of scores,
so building the cache of a million-item catalog never holds more than a few rows at once.

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

import threading
import time
import weakref

import numpy as np
import torch

from core.dataset import InteractionData
from core.distill import Candidates, DistillConfig, TeacherTargets
from core.enums import Method
from core.models import Batch, Recommender, StepOutput
from core.models.base import trim_padding
from core.ranking import history_mask

# Bytes the cache may hold. 512 MB keeps a demo-sized run's cache next to the app's other
# memory; past it the top-K form takes over (about 1,000x smaller for a 3,000-item catalog).
DEFAULT_BUDGET_BYTES = 512 * 2**20
# Items per row kept for the soft term in the top-K form: the teacher's softmax mass beyond
# its best 128 items is small, and it still counts, as the "rest" bin.
SOFT_TOP_K = 128
_CHUNK_ROWS = 4096
# Teacher scores held at once while building: 4096 rows of a 3,000-item catalog (the old
# fixed chunk, unchanged for small catalogs), 16 rows at a million items. The top-K and
# log-partition of a chunk make about three more copies of it.
SCORE_CHUNK_BYTES = 64 * 2**20


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
    return history_mask(data, step.row_users, "train", step.row_users.device)


def _method_uses_soft(method: str) -> bool:
    return method in (Method.SOFT, Method.COMBINED)


# The last caches built, for reuse: a bench or a plan distills several students from one
# teacher in turn, and those whose rows, K and temperature are the same (soft and combined;
# hard, ranking and listwise) read the same outputs. ``KEEP_BUILT`` builds are kept at most
# (the two forms the recipe's methods ask for), through weak references to their teacher and
# dataset, and only one of at most ``KEEP_BUILT_BYTES`` (the app keeps teachers loaded; a
# big catalog's cache is not held after its run). A key holds every teacher tensor's
# in-place version counter, so a teacher trained further or given other weights is scored
# again.
KEEP_BUILT = 2
KEEP_BUILT_BYTES = DEFAULT_BUDGET_BYTES
_BUILT: list[dict] = []  # most recent last
_BUILT_LOCK = threading.Lock()
_CACHED = ("scores", "topk", "topk_scores", "log_partition")


def forget_built() -> None:
    """Drop the outputs kept for reuse."""
    with _BUILT_LOCK:
        _BUILT.clear()


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
        full_scores: bool = True,
    ):
        """``full_scores=False``: always the top-K form (a sampled-softmax student)."""
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
        self.mode = "full" if full_scores and full_bytes <= budget_bytes else "topk"
        # The soft term's extra items stop where some row would run out of unmasked items
        # (a catalog not much bigger than a history); the top_k the user asked for never does.
        soft_k = SOFT_TOP_K if _method_uses_soft(config.method) else 0
        soft_k = min(soft_k, self.n_items - self._most_masked())
        self.k = min(self.n_items, max(config.top_k, soft_k))
        started = time.perf_counter()
        key = self._reuse_key(student)
        with _BUILT_LOCK:
            kept = next(
                (
                    b
                    for b in _BUILT
                    if b["teacher"]() is teacher and b["data"]() is data and b["key"] == key
                ),
                None,
            )
        if kept is not None:
            for name, value in kept["outputs"].items():
                setattr(self, name, value)
        else:
            self._build()
            outputs = {name: getattr(self, name) for name in _CACHED if hasattr(self, name)}
            size = sum(t.numel() * t.element_size() for t in outputs.values())
            built = {"teacher": weakref.ref(teacher), "data": weakref.ref(data), "key": key}
            with _BUILT_LOCK:
                _BUILT[:] = [b for b in _BUILT if b["teacher"]() is not None]
                if size <= KEEP_BUILT_BYTES:
                    _BUILT.append(built | {"outputs": outputs})
                del _BUILT[:-KEEP_BUILT]
        self.seconds = time.perf_counter() - started
        how = (
            f"computed once, in {self.seconds:.1f} s"
            if kept is None
            else "reused from an earlier student of this teacher (the same rows, K and temperature)"
        )
        self.note = f"The teacher's outputs on {self.n_rows:,} training rows were {how}."
        if self.mode == "topk" and not full_scores:
            self.note += (
                " The student trains on sampled candidates, not the whole catalog, so it "
                f"learns from the teacher's top {self.k} items and log-partition per row."
            )
        elif self.mode == "topk" and _method_uses_soft(config.method):
            self.note += (
                f" Its full scores ({full_bytes / 2**30:.1f} GB) exceed the "
                f"{budget_bytes / 2**20:.0f} MB cache budget, so the student learns from the "
                f"teacher's top {self.k} items and log-partition per row."
            )
        elif self.mode == "topk":  # the method reads the top-K alone: full scores never help
            self.note += (
                f" The {config.method} term reads the teacher's top {self.k} items per row."
            )

    def _reuse_key(self, student: Recommender) -> tuple:
        """What the built outputs depend on, besides the dataset (compared by identity)."""
        versions = tuple(
            (t.data_ptr(), t._version)
            for t in (*self.teacher.parameters(), *self.teacher.buffers())
        )
        rows = (self.per_position, student.config.max_len if self.per_position else None)
        return (rows, self.mode, self.k, float(self.config.temperature), str(self.device), versions)

    def _most_masked(self) -> int:
        """The most items any row's distillation mask removes (0 when nothing is masked)."""
        if not self.data.masks_history:
            return 0
        if not self.per_position:
            return int(np.diff(self.data.train_matrix.indptr).max(initial=0))
        # A window's last prefix is the whole window: its distinct items bound every row's.
        tokens = np.sort(self.inputs.numpy(), axis=1)
        if tokens.size == 0:
            return 0
        distinct = (tokens[:, 1:] != tokens[:, :-1]) & (tokens[:, 1:] > 0)
        return int((distinct.sum(axis=1) + (tokens[:, 0] > 0)).max())

    # ------------------------------------------------------------------ building
    @torch.no_grad()
    def _teacher_rows(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher scores of windows ``idx`` (sequence student; their rows in window order)
        or users ``idx``, with the distillation mask of those rows."""
        teacher, data, device = self.teacher, self.data, self.device
        if not self.per_position:
            scores = teacher.score_users(data, idx, "train").to(device)
            mask = history_mask(data, idx, "train", device) if data.masks_history else None
            return scores, mask
        index = torch.from_numpy(idx)
        context = self.inputs[index].to(device)
        # The chunk's windows have similar lengths (see `_chunks`): drop the columns that
        # are padding in all of them (positions stay right-aligned, as in training).
        trimmed = trim_padding(context)
        cut = context.shape[1] - trimmed.shape[1]
        context = trimmed
        positions = context_positions(context, self.first_col[index.to(device)] - cut)
        mask = prefix_mask(context, positions, self.n_items) if data.masks_history else None
        if teacher.input_kind == "sequence":
            scores = teacher_prefix_scores(teacher, context, positions)
        else:
            window_users = torch.nonzero(self.window_of_user >= 0).squeeze(1)
            users = window_users[index.to(window_users.device)]
            per_window = teacher.score_users(data, users.cpu().numpy(), "train").to(device)
            scores = per_window[positions.nonzero(as_tuple=True)[0]]
        return scores, mask

    def _rows_of(self, idx: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> torch.Tensor:
        """Cache rows of windows ``idx`` (each window's rows, in order; ``starts`` and
        ``counts`` per window) or of users ``idx``."""
        if not self.per_position:
            return torch.from_numpy(idx)
        starts, counts = starts[idx], counts[idx]
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return torch.from_numpy(np.repeat(starts, counts) + offsets)

    def _build(self) -> None:
        was_training = self.teacher.training
        self.teacher.eval()
        n, k = self.n_rows, self.k
        if self.mode == "full":
            self.scores = torch.zeros(n, self.n_items, device=self.device)
        else:
            self.topk = torch.zeros(n, k, dtype=torch.int32, device=self.device)
            self.topk_scores = torch.zeros(n, k, device=self.device)
            self.log_partition = torch.zeros(n, device=self.device)
        if self.per_position:
            starts = self.row_start.cpu().numpy()
            counts = self.inputs.shape[1] - self.first_col.cpu().numpy()
        else:
            starts = counts = np.empty(0, dtype=np.int64)
        try:
            for idx in self._chunks():
                scores, mask = self._teacher_rows(idx)
                rows = self._rows_of(idx, starts, counts).to(self.device)
                if self.mode == "full":
                    self.scores[rows] = scores.float()
                    continue
                t = TeacherTargets.from_scores(scores, k, self.config.temperature, mask=mask)
                self.topk[rows] = t.topk.int()
                self.topk_scores[rows] = t.topk_scores.float()
                self.log_partition[rows] = t.log_partition.float()
        finally:
            self.teacher.train(was_training)

    def _chunks(self) -> list[np.ndarray]:
        """Windows (sequence student) or users per teacher pass.

        A pass scores at most about ``rows`` training rows (a window adds its own steps; one
        window longer than that goes alone), so the catalog is read once per ``rows`` rows
        and a chunk's scores stay near ``SCORE_CHUNK_BYTES``. Windows are taken shortest
        first, so a chunk's windows have similar lengths and its pass skips the padding
        columns they share: on the demo shop (median history 17, window 70) the teacher's
        pass over the training rows took 40% less time.
        """
        rows = min(_CHUNK_ROWS, max(1, SCORE_CHUNK_BYTES // (4 * max(1, self.n_items))))
        if not self.per_position:
            return [
                np.arange(lo, min(self.n_rows, lo + rows)) for lo in range(0, self.n_rows, rows)
            ]
        steps = (self.inputs.shape[1] - self.first_col).cpu().numpy()
        if not len(steps):
            return []
        order = np.argsort(steps, kind="stable")
        chunk_of = np.maximum(np.cumsum(steps[order]) - 1, 0) // rows  # by each window's last row
        starts = np.concatenate([[0], np.flatnonzero(np.diff(chunk_of)) + 1])
        ends = np.concatenate([starts[1:], [len(steps)]])
        return [order[lo:hi] for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True)]

    # ------------------------------------------------------------------ lookup
    def row_index(self, batch: Batch, step: StepOutput) -> torch.Tensor:
        """Cache rows of this step's distillation rows, in the order of ``step.rows``."""
        if not self.per_position or step.positions is None:
            return step.row_users.to(self.device)
        rows, cols = step.positions.nonzero(as_tuple=True)
        # A batch may keep only the last columns of the windows (SASRec cuts a batch to its
        # longest history): count columns from the window's full width.
        cols = cols + (self.inputs.shape[1] - step.positions.shape[1])
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


def prefix_items(context: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``[N, L]`` 0-based items of each selected position's prefix (row-major); -1 = none."""
    rows, cols = positions.nonzero(as_tuple=True)
    length = context.shape[1]
    keep = torch.arange(length, device=context.device)[None, :] <= cols[:, None]
    return context[rows] * keep - 1


def drawn_in(items: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Bool ``[N, M]``: True where ``items[j]`` (``[M]``) appears in row ``n`` of ``query``.

    Sorts the M items once and marks, per row, the range each query value occupies in that
    order (a difference array): ``[N, M]`` memory, never ``[N, M, X]``.
    """
    n_rows, m = query.shape[0], items.shape[0]
    ordered, order = items.sort()
    query = query.contiguous()
    lo = torch.searchsorted(ordered, query)
    hi = torch.searchsorted(ordered, query, right=True)
    ones = torch.ones_like(lo, dtype=torch.int32)
    delta = torch.zeros(n_rows, m + 1, dtype=torch.int32, device=items.device)
    delta.scatter_add_(1, lo, ones).scatter_add_(1, hi, -ones)
    hit = torch.empty(n_rows, m, dtype=torch.bool, device=items.device)
    hit[:, order] = delta.cumsum(dim=1)[:, :m] > 0
    return hit


def candidate_rows(
    student: Recommender,
    batch: Batch,
    step: StepOutput,
    targets: TeacherTargets,
    masks_history: bool,
) -> tuple[torch.Tensor, torch.Tensor, TeacherTargets, Candidates]:
    """A big-catalog student's scores on its distillation candidates, with what they mean.

    For each row: the teacher's K' kept items (best first), the row's positive, and the
    batch's M shared negatives (``batch.softmax.items``). Masked columns: a positive or
    negative that repeats one of the teacher's items or the positive (an accidental hit),
    and, when the dataset masks history (as :func:`distill_mask` does), any item of the
    row's prefix; the teacher's items were chosen outside the prefix already.

    Returns ``(scores [N, K'+1+M], mask [N, K'+1+M], targets over columns, candidates)``.
    """
    if step.states is None or step.targets is None or batch.softmax is None:
        raise ValueError("Candidate rows need a sampled or chunked step (states, targets).")
    if batch.softmax.items is None:
        raise ValueError("Candidate rows need the batch's shared negatives.")
    states, positive = step.states, step.targets
    device = states.device
    teacher_items = targets.topk.to(device, torch.long)  # [N, K']
    negatives = batch.softmax.items.to(device)  # [M]
    n_rows, k = teacher_items.shape
    m = negatives.shape[0]
    negative_scores = step.sampled_scores
    if negative_scores is None:
        negative_scores = student.candidate_scores(states, negatives.expand(n_rows, m))
    scores = torch.cat(
        [
            student.candidate_scores(states, teacher_items),
            student.candidate_scores(states, positive[:, None]),
            negative_scores,
        ],
        dim=1,
    )
    if masks_history and step.positions is not None:
        prefix = prefix_items(batch.context, step.positions)
    else:
        prefix = positive.new_full((n_rows, 0), -1)
    known = torch.cat([teacher_items, prefix], dim=1)
    positive_out = (known == positive[:, None]).any(dim=1, keepdim=True)
    negative_out = drawn_in(negatives, torch.cat([known, positive[:, None]], dim=1))
    mask = torch.cat(
        [torch.zeros(n_rows, k, dtype=torch.bool, device=device), positive_out, negative_out],
        dim=1,
    )
    log_expected = batch.softmax.log_expected.to(device, scores.dtype)
    log_weight = torch.cat([log_expected.new_zeros(k + 1), -log_expected])[None, :]
    columns = torch.arange(k, device=device).expand(n_rows, k)
    negative_columns = (k + 1 + torch.arange(m, device=device)).expand(n_rows, m)
    over_columns = TeacherTargets(
        columns,
        targets.topk_scores.to(device),
        targets.log_partition.to(device),
        targets.temperature,
    )
    return scores, mask, over_columns, Candidates(log_weight, negative_columns)


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
        return teacher.position_scores(context, positions)
    rows, cols = positions.nonzero(as_tuple=True)
    offsets = cols[:, None] - t_len + 1 + torch.arange(t_len, device=context.device)[None, :]
    windows = context[rows[:, None], offsets.clamp_min(0)] * (offsets >= 0)
    return teacher(windows)
