"""Small hand-built datasets shared by the unit tests (no ingestion involved), and a
teacher trained on one."""

from __future__ import annotations

import numpy as np

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, InteractionData


def sequences_dataset(
    sequences: list[list[int]], n_items: int, name: str = "tiny"
) -> InteractionData:
    """Time-ordered item sequences per user, split leave-one-out (last = test, then valid).

    Users with fewer than 3 interactions stay train-only, as in the real split.
    """
    users, items, split, ts = [], [], [], []
    for u, seq in enumerate(sequences):
        for t, item in enumerate(seq):
            users.append(u)
            items.append(item)
            ts.append(1_600_000_000 + 3600 * t)
            if len(seq) >= 3 and t == len(seq) - 1:
                split.append(SPLIT_TEST)
            elif len(seq) >= 3 and t == len(seq) - 2:
                split.append(SPLIT_VALID)
            else:
                split.append(SPLIT_TRAIN)
    item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    return InteractionData(
        name=name,
        user_ids=np.array([f"u{u}" for u in range(len(sequences))], dtype=object),
        item_ids=item_ids,
        users=np.array(users, dtype=np.int64),
        items=np.array(items, dtype=np.int64),
        timestamps=np.array(ts, dtype=np.int64),
        weights=np.ones(len(users), dtype=np.float32),
        split=np.array(split, dtype=np.int8),
        has_timestamps=True,
        titles=np.array([f"Item {i}" for i in range(n_items)], dtype=object),
        categories=np.array(["cat"] * n_items, dtype=object),
        prices=np.full(n_items, np.nan),
        content_hash=f"hash-{name}",
    )


def checkerboard(n_users: int = 40, n_items: int = 12, seed: int = 0) -> InteractionData:
    """Two taste groups over disjoint halves of the catalog, each walking its half in order.

    A user of group g sees a cyclic run of g's items; the held-out (test) item is the next
    item of that run: never in the user's history, always in the group's half. Any model
    that learns the structure ranks it first among unseen items.
    """
    rng = np.random.default_rng(seed)
    half = n_items // 2
    seqs = []
    for u in range(n_users):
        group = u % 2
        start = int(rng.integers(0, half))
        length = half - 1  # every user sees all but one item of their half, ending before it
        seqs.append([group * half + (start + t) % half for t in range(length + 1)])
    return sequences_dataset(seqs, n_items, name="checkerboard")


def sasrec_teacher(data: InteractionData, dim: int = 32, epochs: int = 15):
    """A 1-block SASRec (max_len 8, no dropout) trained on ``data`` with seed 0."""
    import torch

    from core.models import ModelConfig, build_model
    from core.train import TrainConfig, train_model

    torch.manual_seed(0)
    config = ModelConfig(family="sasrec", dim=dim, layers=1, heads=2, max_len=8, dropout=0.0)
    model = build_model(config, data.n_users, data.n_items)
    train_model(model, data, TrainConfig(epochs=epochs, batch_size=16, lr=0.02, patience=epochs))
    return model
