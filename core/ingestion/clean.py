"""The cleaning steps between parsed columns and a dataset: order, filters, ids and the split.

    time_order    rows sorted by (user, time, file position), the order every dataset keeps
    keep_rows     rating threshold, zero-weight events, exact duplicates, k-core
    dense_ids     the ids still present, re-indexed 0..n-1 in their natural order
    split_labels  leave-one-out by time, or random 80/10/10 within each user

All of it is vectorised numpy over the rows (no Python loop per row or per user), so a
20-million-row log is cleaned in seconds; `core.ingestion.build.assemble` runs the steps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID
from core.errors import DataError
from core.ingestion.options import CleanOptions, ColumnMapping, SplitOptions
from core.ingestion.parse import Parsed


# --------------------------------------------------------------------------- order
def time_order(user_rank: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Row positions sorted by (user rank, time); ties in time keep the file order."""
    if not len(timestamps):
        return np.zeros(0, dtype=np.int64)
    low = int(timestamps.min())
    span = int(timestamps.max()) - low + 1
    if (int(user_rank.max()) + 1) * span < 2**62:
        # One int64 key sorts about twice as fast as lexsort's two passes.
        key = user_rank.astype(np.int64) * span
        key += timestamps
        key -= low
        return np.argsort(key, kind="stable")
    return np.lexsort((timestamps, user_rank))


# --------------------------------------------------------------------------- filters
def keep_rows(
    parsed: Parsed, order: np.ndarray, mapping: ColumnMapping, clean: CleanOptions, display: str
) -> tuple[np.ndarray, list[str]]:
    """Positions (in ``order``) that survive every filter, and a note per filter that acted."""
    notes: list[str] = []
    keep = np.ones(len(order), dtype=bool)
    if clean.min_rating is not None:
        if parsed.ratings is None:
            raise DataError(
                f"A rating threshold was set but no rating column is mapped for '{display}'; "
                "map the rating column or clear the threshold."
            )
        keep &= parsed.ratings[order] >= clean.min_rating
        if not keep.any():
            raise DataError(
                f"No row of '{display}' has a rating of at least {clean.min_rating:g} in column "
                f"'{mapping.rating}'; lower the rating threshold."
            )
        if dropped := int((~keep).sum()):
            notes.append(f"{dropped} rows with rating below {clean.min_rating:g} dropped")
    if parsed.event_codes is not None:
        weightless = np.flatnonzero(parsed.event_table <= 0)
        zero = keep & np.isin(parsed.event_codes[order], weightless)
        if zero.any():
            keep &= ~zero
            if not keep.any():
                raise DataError(
                    f"Every row of '{display}' has an event type with weight 0 in column "
                    f"'{mapping.event}'; give at least one event type a positive weight."
                )
            notes.append(f"{int(zero.sum())} rows with event weight 0 dropped")

    duplicated = _duplicate_rows(parsed, order, keep, timed=mapping.timestamp is not None)
    if n_dup := int(duplicated.sum()):
        if clean.dedupe:
            keep &= ~duplicated
            notes.append(f"{n_dup} exact duplicate rows removed")
        else:
            notes.append(f"{n_dup} exact duplicate rows found and kept (de-duplication is off)")
    del duplicated

    rows = order if keep.all() else order[keep]
    del keep
    core, passes = k_core(
        parsed.user_codes[rows],
        parsed.item_codes[rows],
        clean.min_user_interactions,
        clean.min_item_interactions,
    )
    if not core.any():
        raise DataError(
            f"K-core filtering (at least {clean.min_user_interactions} interactions per user and "
            f"{clean.min_item_interactions} per item) removed every row of '{display}'; lower "
            "the minimum interaction counts."
        )
    if removed := int((~core).sum()):
        notes.append(f"k-core filtering removed {removed} rows in {passes} passes")
        rows = rows[core]
    return rows, notes


def _duplicate_rows(parsed: Parsed, order: np.ndarray, keep: np.ndarray, timed: bool) -> np.ndarray:
    """Mask (over ``order``) of kept rows equal on every key to an earlier kept row.

    Keys: user, item, and the timestamp, rating and event type where the log has them. The
    first of equal rows in the file stays. Only rows that share their user and time (or,
    without timestamps, their user and item) with another row can be duplicates, and on a
    real log those are few, so the full-key comparison runs on a small set.
    """
    users = parsed.user_codes[order]
    if timed:
        # Sorted by (user, time): rows sharing both are neighbours.
        times = parsed.timestamps[order]
        same = (users[1:] == users[:-1]) & (times[1:] == times[:-1])
        del times
        candidate = np.zeros(len(order), dtype=bool)
        candidate[1:] |= same
        candidate[:-1] |= same
        del same
        rows = np.flatnonzero(candidate & keep)
    else:
        pair = users.astype(np.int64) * len(parsed.item_uniques) + parsed.item_codes[order]
        rows = np.flatnonzero(keep)
        rows = rows[pd.Series(pair[rows]).duplicated(keep=False).to_numpy()]
        del pair
    del users
    duplicated = np.zeros(len(order), dtype=bool)
    if len(rows):
        at = order[rows]
        keys = [parsed.user_codes[at], parsed.item_codes[at]]
        if timed:
            keys.append(parsed.timestamps[at])
        keys += [a[at] for a in (parsed.ratings, parsed.event_codes) if a is not None]
        frame = pd.DataFrame({f"k{j}": key for j, key in enumerate(keys)})
        # The sort is stable, so among equal rows the first in ``order`` is the first in the file.
        duplicated[rows[frame.duplicated(keep="first").to_numpy()]] = True
    return duplicated


def k_core(
    users: np.ndarray, items: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Keep-mask after iterating user/item minimum counts to a fixed point, and pass count."""
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep, 0
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    passes = 0
    while True:
        passes += 1
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_count[users] < min_user) | (item_count[items] < min_item))
        if not drop.any():
            return keep, passes
        keep &= ~drop


# --------------------------------------------------------------------------- ids and split
def natural_order(labels: np.ndarray) -> np.ndarray:
    """Order raw ids numerically when they are all integers, else as strings."""
    if len(labels):
        as_str = pd.Series(labels, dtype="str")
        # 18 digits always fit in int64.
        if as_str.str.fullmatch(r"\d{1,18}").all():
            return np.lexsort((labels, as_str.astype(np.int64).to_numpy()))
    return np.argsort(labels, kind="stable")


def natural_ranks(labels: np.ndarray) -> np.ndarray:
    """[len(labels)] int32 position of each raw id in `natural_order`."""
    ranks = np.empty(len(labels), dtype=np.int32)
    ranks[natural_order(labels)] = np.arange(len(labels), dtype=np.int32)
    return ranks


def dense_ids(
    codes: np.ndarray, uniques: np.ndarray, ranks: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Re-index the codes still present to 0..n-1 in natural order: (int64 indices, ids).

    ``ranks`` (from `natural_ranks` over all of ``uniques``) saves ordering them again.
    """
    present = np.zeros(len(uniques), dtype=bool)
    present[codes] = True
    kept = np.flatnonzero(present)
    if ranks is None:
        kept = kept[natural_order(uniques[kept])]
    else:
        kept = kept[np.argsort(ranks[kept], kind="stable")]
    remap = np.full(len(uniques), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept), dtype=np.int64)
    return remap[codes], uniques[kept].astype(str)


def split_labels(users: np.ndarray, n_users: int, options: SplitOptions) -> np.ndarray:
    """Per-interaction split codes for interactions sorted by (user, time, file order)."""
    n = len(users)
    counts = np.bincount(users, minlength=n_users)
    ends = np.cumsum(counts)
    eligible = counts >= 3
    labels = np.full(n, SPLIT_TRAIN, dtype=np.int8)
    if options.method == "loo":
        labels[ends[eligible] - 1] = SPLIT_TEST
        labels[ends[eligible] - 2] = SPLIT_VALID
        return labels
    # Random 80/10/10 within each user: rank each user's interactions by a seeded random key.
    starts = ends - counts
    per_user = counts[users]
    rng = np.random.default_rng(options.seed)
    keys = rng.random(n)
    order = np.lexsort((keys, users))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[users[order]]
    held = np.maximum(1, np.floor(0.1 * per_user + 0.5)).astype(np.int64)
    per_user_ok = per_user >= 3
    labels[per_user_ok & (rank < held)] = SPLIT_TEST
    labels[per_user_ok & (rank >= held) & (rank < 2 * held)] = SPLIT_VALID
    return labels
