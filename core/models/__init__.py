"""Model families behind one interface (see ``base.Recommender``) and their construction.

``MODELS`` is the explicit table of families; ``build_model`` and ``load_model`` are the only
ways the rest of the code creates models, so checkpoints always carry their config.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from core.enums import Family
from core.errors import ConfigError
from core.models.base import Batch, ModelConfig, Recommender, StepOutput
from core.models.mf import MF
from core.models.popularity import Popularity
from core.models.sasrec import SASRec
from core.models.two_tower import TwoTower

MODELS: dict[str, type[Recommender]] = {
    Family.POPULARITY: Popularity,
    Family.MF: MF,
    Family.TWO_TOWER: TwoTower,
    Family.SASREC: SASRec,
}

__all__ = [
    "MODELS",
    "Batch",
    "ModelConfig",
    "Recommender",
    "StepOutput",
    "build_model",
    "load_model",
    "count_parameters",
]


def build_model(config: ModelConfig, n_users: int, n_items: int) -> Recommender:
    config.validate()
    try:
        cls = MODELS[config.family]
    except KeyError:
        raise ConfigError(f"Unknown model family {config.family!r}.") from None
    return cls(n_users, n_items, config)


def count_parameters(config: ModelConfig, n_users: int, n_items: int) -> int:
    """Parameter count of a model without keeping it (for the live size readout).

    Every family is a fixed part plus user and item tables, so its count is affine in the
    user and item counts: three builds at two or three users and items give the count at
    any size, without allocating (or initialising) a million-item table per call, which
    the recipe's width search would otherwise do about eight times.
    """

    def count(users: int, items: int) -> int:
        return build_model(config, users, items).num_parameters()

    base = count(2, 2)
    per_user, per_item = count(3, 2) - base, count(2, 3) - base
    return base + (n_users - 2) * per_user + (n_items - 2) * per_item


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> Recommender:
    """Rebuild a model from a checkpoint written by ``Recommender.save`` (weights_only)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    config = ModelConfig.from_dict(json.loads(ckpt["config_json"]))
    model = build_model(config, int(ckpt["n_users"]), int(ckpt["n_items"]))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model
