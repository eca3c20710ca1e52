"""Matrix factorisation trained with BPR (Rendle et al. 2009): the classic small student."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.dataset import SPLIT_TRAIN, InteractionData
from core.models.base import Batch, ModelConfig, Recommender, StepOutput


def interaction_batches(
    data: InteractionData, batch_size: int, negatives: int, rng: np.random.Generator
) -> Iterator[Batch]:
    """Shuffled (user, positive item, uniform negatives) batches over training interactions."""
    train = data.split == SPLIT_TRAIN
    users, items = data.users[train], data.items[train]
    order = rng.permutation(len(users))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        neg = rng.integers(0, data.n_items, size=(len(idx), max(1, negatives)))
        u = torch.from_numpy(users[idx])
        yield Batch(
            users=u,
            context=u,
            targets=torch.from_numpy(items[idx]),
            negatives=torch.from_numpy(neg),
        )


class MF(Recommender):
    family = "mf"
    input_kind = "user"

    def __init__(self, n_users: int, n_items: int, config: ModelConfig):
        super().__init__(n_users, n_items, config)
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        # Small init keeps early BPR margins near zero, where its gradient is largest.
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, n_items] scores u . v_i + b_i."""
        return self.user_emb(context) @ self.item_emb.weight.T + self.item_bias

    def task_batches(self, data, batch_size, negatives, rng):
        return interaction_batches(data, batch_size, negatives, rng)

    def training_step(self, batch: Batch) -> StepOutput:
        scores = self(batch.context)
        pos = scores.gather(1, batch.targets.unsqueeze(1))
        neg = scores.gather(1, batch.negatives)
        loss = -F.logsigmoid(pos - neg).mean()
        return StepOutput(task_loss=loss, rows=scores, row_users=batch.users)
