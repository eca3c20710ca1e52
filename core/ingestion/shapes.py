"""Generated logs whose shape differs from the demo shop's, for benchmarks and tests.

A preset or a test tuned to the demo shop would pass there and fail on the next shop, so
the recipe, the size sweep and the distillation benchmark also run on logs of other
shapes. Each is a pure function of ``(shape, scale, seed)``:

- ``long_no_repeat``: long histories (40-160 events), never the same item twice, strong
  sequential structure (each user walks an item graph inside drifting taste clusters) —
  a media or marketplace log.
- ``repeat_longtail``: heavy repeats (every shopper re-buys a personal set of staples on a
  rhythm; about half the events are repeats) over a long-tail catalog of 20,000 items with
  Zipf popularity and short sequential runs — a grocery or drugstore log.

Both return ``(interactions, catalog)`` frames with the columns the demo uses
(``user_id, item_id, timestamp`` / ``item_id, title, category``), so they go through the
same ingestion path as an upload (``bench/*.py --data FILE`` writes them as CSV).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import ConfigError

SHAPES = ("long_no_repeat", "repeat_longtail")
_START = 1_700_000_000
_DAY = 86_400


def generate_shape(
    shape: str, scale: float = 1.0, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The interactions and catalog of one generated log shape (see the module docstring)."""
    if shape not in SHAPES:
        raise ConfigError(f"Unknown log shape {shape!r}; choose one of {', '.join(SHAPES)}.")
    if not 0 < scale <= 20:
        raise ConfigError(f"The scale must be in (0, 20]; got {scale}.")
    rng = np.random.default_rng(seed)
    make = _long_no_repeat if shape == "long_no_repeat" else _repeat_longtail
    users, items, times, n_items, categories = make(rng, scale)
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in users],
            "item_id": [f"i{i}" for i in items],
            "timestamp": np.asarray(times, dtype=np.int64),
        }
    )
    catalog = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"{categories[i].title()} item {i}" for i in range(n_items)],
            "category": categories,
        }
    )
    return interactions, catalog


def _successors(rng: np.random.Generator, cluster_of: np.ndarray, n_next: int) -> np.ndarray:
    """Per item, ``n_next`` likely next items, mostly inside its own cluster."""
    n_items = len(cluster_of)
    members = [np.flatnonzero(cluster_of == c) for c in range(cluster_of.max() + 1)]
    out = np.empty((n_items, n_next), dtype=np.int64)
    for i in range(n_items):
        same = members[cluster_of[i]]
        out[i] = rng.choice(same, size=n_next, replace=len(same) < n_next)
        stray = rng.random(n_next) < 0.15
        out[i, stray] = rng.integers(0, n_items, size=int(stray.sum()))
    return out


def _long_no_repeat(rng: np.random.Generator, scale: float):
    n_users, n_items, n_clusters = int(2500 * scale), int(4000 * max(1.0, scale**0.5)), 40
    cluster_of = rng.integers(0, n_clusters, size=n_items)
    succ = _successors(rng, cluster_of, 6)
    popularity = rng.zipf(1.6, size=n_items).astype(float)
    users, items, times = [], [], []
    for u in range(n_users):
        length = int(rng.integers(40, 161))
        seen: set[int] = set()
        current = int(rng.choice(n_items, p=popularity / popularity.sum()))
        t = _START + int(rng.integers(0, 30 * _DAY))
        while len(seen) < length:
            seen.add(current)
            users.append(u)
            items.append(current)
            times.append(t)
            t += int(rng.integers(600, 2 * _DAY))
            options = [i for i in succ[current] if i not in seen]
            if options and rng.random() < 0.85:
                current = int(options[int(rng.integers(0, len(options)))])
            else:  # a jump: the taste drifts
                current = int(rng.integers(0, n_items))
                while current in seen:
                    current = int(rng.integers(0, n_items))
    categories = np.array([f"cluster {c}" for c in cluster_of], dtype=object)
    return users, items, times, n_items, categories


def _repeat_longtail(rng: np.random.Generator, scale: float):
    n_users, n_items, n_clusters = int(3000 * scale), int(20000 * max(1.0, scale**0.5)), 200
    cluster_of = rng.integers(0, n_clusters, size=n_items)
    succ = _successors(rng, cluster_of, 4)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 1.1  # long tail
    popularity = popularity[rng.permutation(n_items)]
    p = popularity / popularity.sum()
    users, items, times = [], [], []
    for u in range(n_users):
        n_staples = int(rng.integers(1, 5))
        staples = rng.choice(n_items, size=n_staples, replace=False, p=p)
        period = rng.integers(14, 60, size=n_staples) * _DAY
        span = int(rng.integers(60, 180)) * _DAY
        t0 = _START + int(rng.integers(0, 30 * _DAY))
        events: list[tuple[int, int]] = []
        for item, every in zip(staples, period, strict=True):  # re-orders on a rhythm
            t = t0 + int(rng.integers(0, every))
            while t < t0 + span:
                events.append((t, int(item)))
                t += int(every * rng.uniform(0.8, 1.2))
        n_explore = int(rng.integers(15, 60))
        current = int(rng.choice(n_items, p=p))
        t = t0
        for _ in range(n_explore):  # short sequential runs through the long tail
            events.append((t, current))
            t += int(rng.integers(_DAY // 4, span // n_explore + _DAY))
            current = (
                int(succ[current, int(rng.integers(0, 4))])
                if rng.random() < 0.7
                else int(rng.choice(n_items, p=p))
            )
        events.sort()
        for t, item in events:
            users.append(u)
            items.append(item)
            times.append(t)
    categories = np.array([f"aisle {c}" for c in cluster_of], dtype=object)
    return users, items, times, n_items, categories
