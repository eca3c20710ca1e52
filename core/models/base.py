"""The one interface every recommender implements: teacher, student and baseline alike.

A model maps a batch of *contexts* to scores over the whole catalog. The context is what a
serving team would send: a user index (``input_kind == "user"``) or a left-padded item
history (``input_kind == "sequence"``, item index + 1, 0 = padding). Training-specific
pieces (batches and the task loss) live on the model so that the trainer stays generic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from core.dataset import InteractionData, pad_sequences, stage_code
from core.enums import Family, choice_list
from core.errors import ConfigError
from core.models.softmax import SoftmaxLoss
from core.ranking import history_mask, top_k


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model. Each family reads the fields it needs.

    dim:      embedding size; the main size knob (item embeddings dominate parameter counts).
    layers:   SASRec attention blocks / two-tower MLP layers per tower.
    heads:    SASRec attention heads (must divide dim).
    hidden:   two-tower MLP width (the 'deep' in deep two-tower).
    max_len:  SASRec history length kept (most recent items).
    dropout:  regularisation for SASRec and two-tower; MF uses weight decay instead.
    """

    family: str = "sasrec"
    dim: int = 64
    layers: int = 2
    heads: int = 2
    hidden: int = 256
    max_len: int = 50
    dropout: float = 0.2

    def validate(self) -> ModelConfig:
        if self.family not in set(Family):
            raise ConfigError(
                f"Unknown model family {self.family!r}; choose one of {choice_list(Family)}."
            )
        if self.dim < 1 or self.layers < 1 or self.hidden < 1 or self.max_len < 2:
            raise ConfigError(
                "Model sizes must be positive (dim, layers, hidden >= 1; max_len >= 2)."
            )
        if self.family == "sasrec" and self.dim % self.heads:
            raise ConfigError(f"SASRec needs dim ({self.dim}) divisible by heads ({self.heads}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"Dropout must be in [0, 1); got {self.dropout}.")
        return self

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known}).validate()


@dataclass
class Batch:
    """One training batch. ``context`` is the model input; the rest is task-specific.

    users:    [B] dense user index of each row (for distillation masks and teacher caches).
    context:  [B] user indices or [B, L] padded sequences.
    targets:  task targets: [B] positive items (user models) or [B, L] next items + 1 (sequence).
    negatives: [B, n_neg] sampled negative items (BPR), or None.
    softmax:  how a softmax model's task loss covers the catalog (full, sampled with the
              batch's shared negatives, or chunked; see ``core.models.softmax``); None = full.
    """

    users: torch.Tensor
    context: torch.Tensor
    targets: torch.Tensor
    negatives: torch.Tensor | None = None
    softmax: SoftmaxLoss | None = None

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.users.to(device),
            self.context.to(device),
            self.targets.to(device),
            None if self.negatives is None else self.negatives.to(device),
            None if self.softmax is None else self.softmax.to(device),
        )


@dataclass
class StepOutput:
    """What one training step produced: the task loss and catalog scores for distillation.

    rows:       [N, C] student scores over the catalog for the distillation rows; None when
                the step never scored the whole catalog (sampled or chunked softmax), and
                distillation then scores candidates from ``states`` instead.
    row_users:  [N] the user each row belongs to.
    positions:  for sequence models, the bool ``[B, L]`` mask of batch positions the rows come
                from (row order = ``context[positions]``), so a sequence teacher can score
                exactly the same prefixes; None for user models (one row per batch row).
    states:     [N, dim] the rows' hidden states (with grad) when ``rows`` is None: what
                :meth:`Recommender.candidate_scores` turns into scores of any items.
    targets:    [N] each row's true next item, when ``rows`` is None.
    sampled_scores: [N, M] raw scores of the batch's shared negatives
                (``batch.softmax.items``), when the step drew them.
    log_partition: [N] ``logsumexp(rows)`` (with grad) when the task loss is a full softmax
                over ``rows``: the soft distillation term at T=1 reuses it instead of a
                second pass over the catalog.
    """

    task_loss: torch.Tensor
    rows: torch.Tensor | None
    row_users: torch.Tensor
    positions: torch.Tensor | None = None
    states: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sampled_scores: torch.Tensor | None = None
    log_partition: torch.Tensor | None = None


def trim_padding(context: torch.Tensor) -> torch.Tensor:
    """Left-padded histories ``[B, L]`` without the leading columns that are padding in
    every row. A sequence model reads positions right-aligned and never attends to padding,
    so its scores are the same; the attention and MLP skip those columns. Evaluation orders
    users by history length (core.metrics), so a batch of short histories is cut to a few
    columns: on the demo shop (median history 17, window 70) a full-ranking pass of the
    teacher took a third of the time. Scoring only, never traced for ONNX (the cut depends
    on the batch)."""
    used = (context != 0).any(dim=0)
    if not bool(used.any()):
        return context[:, -1:]
    first = int(used.to(torch.int8).argmax())
    return context[:, first:]


class Recommender(nn.Module):
    """Base class. Subclasses set ``family`` and ``input_kind`` and implement forward()."""

    family: ClassVar[str] = ""
    input_kind: ClassVar[str] = "user"  # "user" or "sequence"
    trainable: ClassVar[bool] = True
    # Task-loss modes of TrainConfig.loss the model implements (core.models.softmax); the
    # others train with their own loss whatever the setting (BPR is sampled already).
    softmax_modes: ClassVar[tuple[str, ...]] = ("full",)

    def __init__(self, n_users: int, n_items: int, config: ModelConfig):
        super().__init__()
        self.n_users = n_users
        self.n_items = n_items
        self.config = config

    # ------------------------------------------------------------------ inference
    def forward(self, context: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Scores ``[B, n_items]`` for a batch of contexts (export-friendly: tensors only)."""
        raise NotImplementedError

    def make_context(
        self, data: InteractionData, users: np.ndarray, stage: str | int
    ) -> torch.Tensor:
        """The model input for ``users`` when predicting ``stage`` (history = earlier stages).

        ``stage='train'`` means "after the whole training history" (used for distillation).
        """
        users = np.asarray(users, dtype=np.int64)
        if self.input_kind == "user":
            return torch.from_numpy(users)
        code = stage_code(stage)
        seqs = data.sequences((0,)) if code == 0 else data.history_sequences(code)
        return torch.from_numpy(pad_sequences([seqs[u] for u in users], self.config.max_len))

    @torch.no_grad()
    def score_users(
        self, data: InteractionData, users: np.ndarray, stage: str | int = "test"
    ) -> torch.Tensor:
        """Scores ``[B, n_items]`` for dense user indices, in eval mode, on the model's device."""
        was_training = self.training
        self.eval()
        try:
            context = self.make_context(data, users, stage)
            if self.input_kind == "sequence":
                context = trim_padding(context)
            return self(context.to(self.device))
        finally:
            self.train(was_training)

    def recommend(
        self, context: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(items [B, k], scores [B, k])``: the top ``k`` items per context, best first.

        ``exclude`` is a bool ``[B, n_items]`` mask (e.g. :func:`core.ranking.history_mask`)
        of items never to recommend. This is what the ONNX export traces and what every
        ranking in the product (metrics, latency, Compare) computes.
        """
        return top_k(self(context), k, exclude)

    @torch.no_grad()
    def recommend_users(
        self,
        data: InteractionData,
        users: np.ndarray,
        k: int,
        stage: str | int = "test",
        mask_history: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`recommend` for dense user indices, in eval mode, history of ``stage`` masked."""
        was_training = self.training
        self.eval()
        try:
            context = self.make_context(data, users, stage).to(self.device)
            exclude = history_mask(data, users, stage, self.device) if mask_history else None
            return self.recommend(context, k, exclude)
        finally:
            self.train(was_training)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def num_parameters(self) -> int:
        return int(sum(p.numel() for p in self.parameters()))

    def size_bytes(self) -> int:
        """fp32 bytes of parameters and buffers (what a checkpoint weighs, roughly)."""
        tensors = list(self.parameters()) + list(self.buffers())
        return int(sum(t.numel() * t.element_size() for t in tensors))

    # ------------------------------------------------------------------ training
    def task_batches(
        self, data: InteractionData, batch_size: int, negatives: int, rng: np.random.Generator
    ) -> Iterator[Batch]:  # pragma: no cover - abstract
        raise NotImplementedError

    def training_step(self, batch: Batch) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def candidate_scores(
        self, states: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """``[N, K]`` scores of ``items`` ``[N, K]`` for row states ``[N, dim]`` (big catalogs).

        Only models with more than "full" in ``softmax_modes`` implement it.
        """
        raise NotImplementedError

    def fit_statistics(self, data: InteractionData) -> None:
        """Models with closed-form state (popularity) fill it here; others do nothing."""

    # ------------------------------------------------------------------ persistence
    def checkpoint(self) -> dict[str, Any]:
        return {
            "family": str(self.family),  # plain str: weights_only loads no enums
            "n_users": self.n_users,
            "n_items": self.n_items,
            "config_json": json.dumps(asdict(self.config), sort_keys=True),
            "state_dict": self.state_dict(),
        }

    def save(self, path: str | Path) -> None:
        torch.save(self.checkpoint(), path)
