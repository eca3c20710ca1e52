"""The frozen interaction dataset every other module consumes.

`InteractionData` is the contract between ingestion (`core.ingestion`, the demo shop
included), the models, the trainer and the evaluation code: dense user/item indices, a
per-interaction split label, time order, the catalog lookup, the evaluation's history-mask
setting and derived views (CSR matrices, time-ordered sequences, popularity, repeats,
stats). It is built once and never mutated: derived views are pure functions of the fields,
computed lazily and memoised on the instance; models keep their own training arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
from scipy import sparse

SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST = 0, 1, 2
STAGES = {"train": SPLIT_TRAIN, "valid": SPLIT_VALID, "test": SPLIT_TEST}
# What a model may see as history when it is evaluated on a stage.
HISTORY_STAGES = {
    SPLIT_VALID: (SPLIT_TRAIN,),
    SPLIT_TEST: (SPLIT_TRAIN, SPLIT_VALID),
}
# Sequences are passed to models as item index + 1, with 0 as left padding.
PAD = 0


HISTORY_MASK_SETTINGS = ("auto", "on", "off")
# See InteractionData.masks_history for why 5%.
AUTO_MASK_MAX_REPEAT_SHARE = 0.05


def stage_code(stage: str | int) -> int:
    """Map 'train'/'valid'/'test' (or their codes) to the split code."""
    if isinstance(stage, str):
        return STAGES[stage]
    return int(stage)


def pad_sequences(seqs: list[np.ndarray], max_len: int) -> np.ndarray:
    """Left-pad time-ordered item sequences to ``[B, max_len]`` (item index + 1; 0 = pad).

    Only the most recent ``max_len`` items of each sequence are kept.
    """
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = np.asarray(seq[-max_len:], dtype=np.int64)
        if len(tail):
            out[row, max_len - len(tail) :] = tail + 1
    return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a non-negative count vector (0 = uniform, ->1 = concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(x)
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum / cum[-1]).sum()) / n)


@dataclass(frozen=True, eq=False)
class InteractionData:
    """A cleaned, split, densely indexed interaction log.

    Interaction arrays (``users``, ``items``, ``timestamps``, ``weights``, ``split``) all have
    length N and are sorted by (user, timestamp, original file order).
    """

    name: str
    user_ids: np.ndarray  # [n_users] raw user id (str) of each dense index
    item_ids: np.ndarray  # [n_items] raw item id (str) of each dense index
    users: np.ndarray  # [N] int64 dense user index
    items: np.ndarray  # [N] int64 dense item index
    timestamps: np.ndarray  # [N] int64 unix seconds (file order if has_timestamps is False)
    weights: np.ndarray  # [N] float32 interaction weight (rating / event weight; 1 if none)
    split: np.ndarray  # [N] int8 SPLIT_TRAIN / SPLIT_VALID / SPLIT_TEST
    has_timestamps: bool
    titles: np.ndarray  # [n_items] str; raw item id when the catalog has no title
    categories: np.ndarray  # [n_items] str; "" when unknown
    prices: np.ndarray  # [n_items] float64; nan when unknown
    content_hash: str  # sha256 of the raw input bytes (or the demo generator's parameters)
    split_method: str = "loo"  # "loo" (leave-one-out by time) or "random" (80/10/10)
    split_seed: int = 0
    events: np.ndarray | None = None  # [N] str event type when the log had one
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "no timestamps: file order used"
    history_mask: str = "auto"  # "auto", "on" or "off": see masks_history

    def __post_init__(self) -> None:
        if self.history_mask not in HISTORY_MASK_SETTINGS:
            raise ValueError(
                f"history_mask must be one of {', '.join(HISTORY_MASK_SETTINGS)}; "
                f"got {self.history_mask!r}."
            )

    # ----------------------------------------------------------------- sizes
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.users)

    @cached_property
    def user_index(self) -> dict[str, int]:
        return {str(u): i for i, u in enumerate(self.user_ids)}

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {str(v): i for i, v in enumerate(self.item_ids)}

    # ----------------------------------------------------------------- views
    def matrix(self, stages: tuple[int, ...] = (SPLIT_TRAIN,)) -> sparse.csr_matrix:
        """Binary user x item CSR matrix of the interactions in ``stages``."""
        key = tuple(sorted(stages))
        cache = self.__dict__.setdefault("_matrix_cache", {})
        if key not in cache:
            mask = np.isin(self.split, key)
            m = sparse.csr_matrix(
                (np.ones(int(mask.sum()), dtype=np.float32), (self.users[mask], self.items[mask])),
                shape=(self.n_users, self.n_items),
            )
            m.data[:] = 1.0  # duplicates collapse to a binary matrix
            m.sort_indices()
            cache[key] = m
        return cache[key]

    @property
    def train_matrix(self) -> sparse.csr_matrix:
        return self.matrix((SPLIT_TRAIN,))

    def history_matrix(self, stage: str | int) -> sparse.csr_matrix:
        """What a model may see (and what is masked) when evaluated on ``stage``."""
        code = stage_code(stage)
        return self.matrix(HISTORY_STAGES.get(code, (SPLIT_TRAIN,)))

    def target_matrix(self, stage: str | int) -> sparse.csr_matrix:
        """Held-out items of ``stage`` ('valid' or 'test')."""
        return self.matrix((stage_code(stage),))

    def eval_users(self, stage: str | int) -> np.ndarray:
        """Users with at least one held-out item in ``stage``, ascending."""
        code = stage_code(stage)
        return np.unique(self.users[self.split == code])

    def sequences(self, stages: tuple[int, ...] = (SPLIT_TRAIN,)) -> list[np.ndarray]:
        """Per user, the time-ordered item indices of the interactions in ``stages``."""
        key = tuple(sorted(stages))
        cache = self.__dict__.setdefault("_seq_cache", {})
        if key not in cache:
            mask = np.isin(self.split, key)
            users, items = self.users[mask], self.items[mask]
            bounds = np.searchsorted(users, np.arange(self.n_users + 1))
            cache[key] = [items[bounds[u] : bounds[u + 1]] for u in range(self.n_users)]
        return cache[key]

    def history_sequences(self, stage: str | int) -> list[np.ndarray]:
        code = stage_code(stage)
        return self.sequences(HISTORY_STAGES.get(code, (SPLIT_TRAIN,)))

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """[n_items] training interaction count per item."""
        train = self.split == SPLIT_TRAIN
        return np.bincount(self.items[train], minlength=self.n_items).astype(np.int64)

    @cached_property
    def tail_items(self) -> np.ndarray:
        """[n_items] bool: items outside the top 20% by training popularity (the long tail)."""
        order = np.argsort(-self.item_popularity, kind="stable")
        head = order[: int(np.ceil(0.2 * self.n_items))]
        mask = np.ones(self.n_items, dtype=bool)
        mask[head] = False
        return mask

    @cached_property
    def user_activity(self) -> np.ndarray:
        """[n_users] training interaction count per user."""
        train = self.split == SPLIT_TRAIN
        return np.bincount(self.users[train], minlength=self.n_users).astype(np.int64)

    # ----------------------------------------------------------------- repeats
    def repeat_targets(self, stage: str | int) -> sparse.csr_matrix:
        """Held-out items of ``stage`` the user already had in its history (binary CSR)."""
        targets = self.target_matrix(stage)
        return targets.multiply(self.history_matrix(stage)).tocsr()

    @cached_property
    def repeat_share(self) -> float:
        """Share of held-out (validation + test) targets already in the user's history."""
        held = repeats = 0
        for stage in ("valid", "test"):
            held += self.target_matrix(stage).nnz
            repeats += self.repeat_targets(stage).nnz
        return repeats / held if held else 0.0

    @property
    def masks_history(self) -> bool:
        """Whether evaluation masks the user's history items (the resolved setting).

        ``auto`` masks unless more than ``AUTO_MASK_MAX_REPEAT_SHARE`` of the held-out
        targets are repeats: masking makes a repeat target unreachable, and beyond that
        share the lost ceiling is larger than the seed-to-seed noise of NDCG@10 (1-3%
        relative on logs of a few thousand users), so it would change which model looks
        best. Below it, masking's benefit (no slot spent on an item the user already has)
        is the bigger effect, and the few repeat targets are reported apart, never scored.
        """
        if self.history_mask == "auto":
            return self.repeat_share <= AUTO_MASK_MAX_REPEAT_SHARE
        return self.history_mask == "on"

    # ----------------------------------------------------------------- catalog
    def describe_items(self, items: np.ndarray | list[int]) -> pd.DataFrame:
        """Catalog rows (item id, title, category, price) for dense item indices."""
        idx = np.asarray(items, dtype=np.int64)
        return pd.DataFrame(
            {
                "item": idx,
                "item_id": self.item_ids[idx].astype(str),
                "title": self.titles[idx].astype(str),
                "category": self.categories[idx].astype(str),
                "price": self.prices[idx],
            }
        )

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, float | int]:
        """Summary statistics shown on the Data page and stored with the dataset."""
        n = self.n_interactions
        span_days = 0.0
        if self.has_timestamps and n:
            span_days = float(self.timestamps.max() - self.timestamps.min()) / 86400.0
        counts = np.bincount(self.items, minlength=self.n_items)
        history = self.user_activity  # training interactions per user
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n,
            "density": n / max(1, self.n_users * self.n_items),
            "gini_item_popularity": gini(counts),
            "span_days": span_days,
            "interactions_per_day": (n / span_days) if span_days > 0 else float("nan"),
            "train": int((self.split == SPLIT_TRAIN).sum()),
            "valid": int((self.split == SPLIT_VALID).sum()),
            "test": int((self.split == SPLIT_TEST).sum()),
            "median_history": float(np.median(history)) if len(history) else 0.0,
            "p90_history": float(np.percentile(history, 90)) if len(history) else 0.0,
            "repeat_share": self.repeat_share,
            "history_mask": self.history_mask,
            "masks_history": self.masks_history,
        }

    def interactions_frame(self) -> pd.DataFrame:
        """The cleaned log as a DataFrame with raw ids (for storage as Parquet and previews)."""
        frame = pd.DataFrame(
            {
                "user_id": self.user_ids[self.users].astype(str),
                "item_id": self.item_ids[self.items].astype(str),
                "timestamp": self.timestamps,
                "weight": self.weights,
                "split": self.split,
            }
        )
        if self.events is not None:
            frame["event"] = self.events
        return frame
