"""What a user decides about an upload: the column mapping, the cleaning and the split.

Frozen dataclasses, validated on construction (a bad value raises `ConfigError`), so the
Data page, the CLI and the run plans hand the same small values to `build.build_dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np

from core.dataset import HISTORY_MASK_SETTINGS
from core.errors import ConfigError

# Interaction weight per event type. Names are matched case-insensitively; the aliases cover
# the public logs people upload most (RetailRocket: addtocart/transaction, Taobao: pv/buy).
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "cart": 2.0,
        "purchase": 3.0,
        "click": 1.0,
        "pv": 1.0,
        "page_view": 1.0,
        "pageview": 1.0,
        "addtocart": 2.0,
        "add_to_cart": 2.0,
        "buy": 3.0,
        "transaction": 3.0,
    }
)


def event_key(event: str) -> str:
    """An event type as weights are looked up: lower case, spaces and dashes as ``_``."""
    return re.sub(r"[\s\-]+", "_", str(event).strip().lower())


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of the log holds what; optional roles are None when absent."""

    user: str
    item: str
    timestamp: str | None = None
    rating: str | None = None
    event: str | None = None

    def columns(self) -> dict[str, str]:
        """Role -> column for the roles that are mapped."""
        roles = {
            "user": self.user,
            "item": self.item,
            "timestamp": self.timestamp,
            "rating": self.rating,
            "event": self.event,
        }
        return {role: col for role, col in roles.items() if col is not None}


@dataclass(frozen=True)
class CleanOptions:
    """How the log is filtered before it is split."""

    # Implicit feedback from explicit ratings: keep only rows with rating >= min_rating.
    min_rating: float | None = None
    # Drop exact duplicate rows (same user, item, timestamp, rating and event); the count is
    # reported in InteractionData.notes either way.
    dedupe: bool = True
    # k-core: repeat until every user and item has at least this many interactions.
    min_user_interactions: int = 1
    min_item_interactions: int = 1
    # Weight per event type, merged over DEFAULT_EVENT_WEIGHTS; weight 0 drops that event type.
    event_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.min_user_interactions < 1 or self.min_item_interactions < 1:
            raise ConfigError("Minimum interactions per user and per item must be at least 1.")
        for event, weight in (self.event_weights or {}).items():
            if not np.isfinite(weight) or weight < 0:
                raise ConfigError(
                    f"The weight of event type '{event}' must be a non-negative number, not {weight}."
                )

    def resolved_event_weights(self) -> dict[str, float]:
        weights = dict(DEFAULT_EVENT_WEIGHTS)
        weights.update({event_key(k): float(v) for k, v in (self.event_weights or {}).items()})
        return weights


@dataclass(frozen=True)
class SplitOptions:
    """How interactions are split into train / valid / test (see DESIGN.md, evaluation)."""

    method: Literal["loo", "random"] = "loo"
    seed: int = 0
    # Evaluation's history mask: "auto" masks unless many held-out targets are repeats
    # (core.dataset.InteractionData.masks_history), "on" always, "off" never.
    history_mask: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.method not in ("loo", "random"):
            raise ConfigError(f"Split method must be 'loo' or 'random', not '{self.method}'.")
        if self.history_mask not in HISTORY_MASK_SETTINGS:
            raise ConfigError(
                f"The history mask must be one of {', '.join(HISTORY_MASK_SETTINGS)}, "
                f"not '{self.history_mask}'."
            )
