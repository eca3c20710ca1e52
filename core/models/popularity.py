"""Popularity baseline: every user gets the most-interacted items. The floor to beat."""

from __future__ import annotations

import numpy as np
import torch

from core.dataset import InteractionData
from core.enums import Family
from core.models.base import ModelConfig, Recommender


class Popularity(Recommender):
    family = Family.POPULARITY
    input_kind = "user"
    trainable = False

    def __init__(self, n_users: int, n_items: int, config: ModelConfig | None = None):
        super().__init__(n_users, n_items, config or ModelConfig(family=Family.POPULARITY))
        self.register_buffer("item_scores", torch.zeros(n_items))

    def fit_statistics(self, data: InteractionData) -> None:
        counts = torch.from_numpy(data.item_popularity.astype(np.float32))
        self.item_scores.copy_(torch.log1p(counts))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """[B] user indices -> [B, n_items]: the same popularity row for everyone."""
        return self.item_scores.unsqueeze(0).expand(context.shape[0], -1)

    def num_parameters(self) -> int:
        return 0
