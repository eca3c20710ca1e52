"""Matrix factorisation trained with BPR (Rendle et al. 2009): the classic small student.

Regularised by weight decay (``TrainConfig.weight_decay``, set by the recipe), with
negatives drawn outside the user's training positives.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.dataset import SPLIT_TRAIN, InteractionData
from core.enums import Family
from core.models.base import Batch, ModelConfig, Recommender, StepOutput


def positive_keys(data: InteractionData) -> np.ndarray:
    """Sorted ``user * n_items + item`` keys of every training interaction."""
    train = data.split == SPLIT_TRAIN
    return np.unique(data.users[train] * np.int64(data.n_items) + data.items[train])


def sample_negatives(
    keys: np.ndarray,
    users: np.ndarray,
    n_items: int,
    n: int,
    rng: np.random.Generator,
    rounds: int = 20,
) -> np.ndarray:
    """``[B, n]`` uniform items outside each user's training positives.

    Rejection sampling, vectorised: draws that hit a positive are redrawn (a user who has
    nearly the whole catalog may keep a positive after ``rounds`` tries; BPR then sees a
    zero-margin pair, which is harmless).
    """
    neg = rng.integers(0, n_items, size=(len(users), n))
    if not len(keys):
        return neg
    for _ in range(rounds):
        query = users[:, None] * np.int64(n_items) + neg
        found = keys[np.minimum(np.searchsorted(keys, query), len(keys) - 1)] == query
        if not found.any():
            break
        neg[found] = rng.integers(0, n_items, size=int(found.sum()))
    return neg


def interaction_batches(
    data: InteractionData, batch_size: int, negatives: int, rng: np.random.Generator
) -> Iterator[Batch]:
    """Shuffled (user, positive item, negatives) batches over training interactions.

    Negatives are uniform over the items the user has *not* interacted with in training:
    a negative that is really a positive teaches the opposite of the data.
    """
    train = data.split == SPLIT_TRAIN
    users, items = data.users[train], data.items[train]
    keys = positive_keys(data)
    order = rng.permutation(len(users))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        neg = sample_negatives(keys, users[idx], data.n_items, max(1, negatives), rng)
        u = torch.from_numpy(users[idx])
        yield Batch(
            users=u,
            context=u,
            targets=torch.from_numpy(items[idx]),
            negatives=torch.from_numpy(neg),
        )


class MF(Recommender):
    family = Family.MF
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
