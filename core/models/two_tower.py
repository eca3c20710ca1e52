"""Deep two-tower model: an MLP over user and item embeddings, dot-product scoring.

Trained with a full-catalog softmax over each training interaction (the catalog is small
enough to score whole, so there is no sampling bias to correct). A wide teacher option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.enums import Family
from core.models.base import Batch, ModelConfig, Recommender, StepOutput
from core.models.mf import interaction_batches


def tower(dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout)]
        width = hidden
    mods.append(nn.Linear(width, dim))
    return nn.Sequential(*mods)


class TwoTower(Recommender):
    family = Family.TWO_TOWER
    input_kind = "user"

    def __init__(self, n_users: int, n_items: int, config: ModelConfig):
        super().__init__(n_users, n_items, config)
        self.user_emb = nn.Embedding(n_users, config.dim)
        self.item_emb = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.user_emb.weight, std=0.1)
        nn.init.normal_(self.item_emb.weight, std=0.1)
        self.user_tower = tower(config.dim, config.hidden, config.layers, config.dropout)
        self.item_tower = tower(config.dim, config.hidden, config.layers, config.dropout)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, n_items]; the residual keeps the towers easy to train."""
        u = self.user_emb(context)
        u = u + self.user_tower(u)
        v = self.item_emb.weight
        v = v + self.item_tower(v)
        return u @ v.T

    def task_batches(self, data, batch_size, negatives, rng):
        return interaction_batches(data, batch_size, negatives, rng)

    def training_step(self, batch: Batch) -> StepOutput:
        scores = self(batch.context)
        loss = F.cross_entropy(scores, batch.targets)
        return StepOutput(task_loss=loss, rows=scores, row_users=batch.users)
