"""Live sample recommendations for one user, as the Compare page shows them side by side.

- user search (:func:`find_users`, :func:`random_user`, :func:`user_index`) among the users
  with a held-out test item, and the user's recent history;
- :func:`sample_recommendations`: each model's top-K through the one serving path
  (:meth:`core.models.Recommender.recommend_users`: the same masked top-K the metrics
  score), its overlap with the teacher's list, whether it hits the held-out test item, and
  the wall time of the call, as one request on one thread (:data:`LIST_THREADS`);
- row colours for the lists (shared with the teacher, the held-out test item).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pandas.io.formats.style import Styler

from core.dataset import SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.errors import ConfigError
from core.metrics import jaccard_at_k
from core.models import Recommender
from core.records import RunRecord
from core.runner import run_model
from core.serving.latency import torch_threads
from core.store import Store
from core.views.text import run_title

HISTORY_LENGTH = 10
# One list is one request, answered on one thread as a serving replica does. It also keeps
# the lists fast while training runs beside them: two intra-op threads on a busy 2-core box
# turn a 1 ms forward into 50-200 ms of waiting for each other. (The count is restored after.)
LIST_THREADS = 1
SHARED_COLOR = "#d7efdc"  # light green: also in the teacher's top K
TEST_ITEM_COLOR = "#ffe08a"  # amber: the user's held-out test item


# --------------------------------------------------------------------------- users
def find_users(data: InteractionData, query: str = "", limit: int = 50) -> list[str]:
    """Raw ids of users with a test item whose id contains ``query`` (case-insensitive)."""
    users = data.eval_users("test")
    ids = np.asarray(data.user_ids[users]).astype(str)
    query = query.strip().lower()
    if query:
        ids = ids[np.char.find(np.char.lower(ids), query) >= 0]
    return ids[:limit].tolist()


def random_user(data: InteractionData, rng: np.random.Generator | None = None) -> str:
    """A raw user id drawn from the users that have a test item."""
    users = data.eval_users("test")
    if len(users) == 0:
        raise ConfigError("No user has a held-out test item in this dataset.")
    rng = rng or np.random.default_rng()
    return str(data.user_ids[int(rng.choice(users))])


def user_index(data: InteractionData, raw_id: str | None) -> int | None:
    """The dense index of a raw user id, or None when unknown."""
    return None if raw_id is None else data.user_index.get(str(raw_id))


def user_history(data: InteractionData, user: int, n: int = HISTORY_LENGTH) -> pd.DataFrame:
    """The user's last ``n`` train+valid interactions (what the test ranking sees), newest first."""
    lo, hi = np.searchsorted(data.users, [user, user + 1])
    seen = np.flatnonzero(np.isin(data.split[lo:hi], (SPLIT_TRAIN, SPLIT_VALID))) + lo
    recent = seen[-n:][::-1]
    frame = data.describe_items(data.items[recent])[["item_id", "title", "category"]]
    when = data.timestamps[recent]
    frame.insert(0, "when", pd.to_datetime(when, unit="s") if data.has_timestamps else pd.NaT)
    return frame.reset_index(drop=True)


def held_out_items(data: InteractionData, user: int) -> set[int]:
    target = data.target_matrix("test")
    return set(target.indices[target.indptr[user] : target.indptr[user + 1]].tolist())


# --------------------------------------------------------------------------- lists
@dataclass(frozen=True)
class RecommendationList:
    """One model's top-K for the sample user, as shown in a column of the Compare page."""

    run_id: int
    title: str
    items: pd.DataFrame  # rank, item_id, title, category, shared (with teacher), test_item
    item_indices: tuple[int, ...]
    jaccard: float | None  # vs the teacher's list; None for the teacher itself
    test_hit: bool
    ms: float


def recommend(
    model: Recommender, data: InteractionData, user: int, k: int = 10
) -> tuple[list[int], float]:
    """Top-``k`` item indices for one user at test time, and the wall time of the call in ms.

    The train+valid history is masked when the dataset's evaluation masks it
    (``data.masks_history``): the list is what the metrics scored. On a repeat-heavy log
    the mask is off, and "buy again" items are what a live service shows too. Masked slots
    (score ``-inf``) are dropped, so a list can be short.
    """
    started = time.perf_counter()
    items, scores = model.recommend_users(
        data, np.array([user]), k, stage="test", mask_history=data.masks_history
    )
    ms = (time.perf_counter() - started) * 1000.0
    keep = ~torch.isneginf(scores[0])
    return [int(i) for i in items[0][keep].tolist()], ms


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """Overlap of two top-K lists (:func:`core.metrics.jaccard_at_k` for one row)."""
    return float(jaccard_at_k(np.array([a], np.int64), np.array([b], np.int64))[0])


def timed_list(call: Callable[[], tuple[list[int], float]]) -> tuple[list[int], float]:
    """``call()`` on one thread, as a serving replica answers one request, after one untimed
    call: a model's first forward pays one-off allocation costs that would make whichever
    model happens to run first look slow."""
    with torch_threads(LIST_THREADS):
        call()
        return call()


def list_frame(data: InteractionData, items: list[int], reference: list[int]) -> pd.DataFrame:
    """A top-K list as a table: rank, id, title, category, and whether the reference has it."""
    frame = data.describe_items(items)[["item_id", "title", "category"]]
    frame.insert(0, "rank", np.arange(1, len(items) + 1))
    frame["shared"] = [i in reference for i in items]
    return frame


def ranked_lists(
    data: InteractionData,
    models: Sequence[tuple[RunRecord, Recommender]],
    call: Callable[[Recommender], tuple[list[int], float]],
    mark: tuple[str, set[int]],
) -> Iterator[tuple[RunRecord, Recommender, list[int], float, pd.DataFrame, float | None]]:
    """Each model's timed list as ``(run, model, items, ms, frame, jaccard)``.

    The first list is the reference: every frame marks the items it shares with it, and
    the column ``mark[0]`` marks the items in ``mark[1]`` (held-out items, the session...);
    ``jaccard`` is the overlap with the reference (None for the reference itself).
    """
    reference: list[int] | None = None
    for run, model in models:
        items, ms = timed_list(lambda model=model: call(model))
        first = reference is None
        reference = items if first else reference
        frame = list_frame(data, items, reference)
        frame[mark[0]] = [i in mark[1] for i in items]
        yield run, model, items, ms, frame, None if first else jaccard(items, reference)


def sample_recommendations(
    data: InteractionData,
    user: int,
    models: Sequence[tuple[RunRecord, Recommender]],
    k: int = 10,
) -> list[RecommendationList]:
    """Top-``k`` of each model for ``user``; the first model is the teacher (the reference)."""
    if not models:
        return []
    held_out = held_out_items(data, user)
    lists: list[RecommendationList] = []
    ranked = ranked_lists(
        data, models, lambda model: recommend(model, data, user, k), ("test_item", held_out)
    )
    for run, _, items, ms, frame, overlap in ranked:
        lists.append(
            RecommendationList(
                run_id=run.id,
                title=run_title(run),
                items=frame,
                item_indices=tuple(items),
                jaccard=overlap,
                test_hit=bool(held_out & set(items)),
                ms=ms,
            )
        )
    return lists


def load_models(store: Store, runs: Sequence[RunRecord]) -> list[tuple[RunRecord, Recommender]]:
    """Each run with its trained model (cached by ``core.runner.run_model``)."""
    return [(run, run_model(store, run)) for run in runs]


# --------------------------------------------------------------------------- styling
def row_colors(items: pd.DataFrame, highlight_shared: bool = True) -> list[str | None]:
    """Background per recommended item: amber for the held-out test item, else green when
    the teacher recommends it too (not on the teacher's own list, where all would be).
    Lists without a held-out item (the what-if session's) have no ``test_item`` column."""
    tests = items["test_item"] if "test_item" in items else [False] * len(items)
    return [
        TEST_ITEM_COLOR if test else SHARED_COLOR if shared and highlight_shared else None
        for shared, test in zip(items["shared"], tests, strict=True)
    ]


def style_recommendations(
    items: pd.DataFrame, highlight_shared: bool = True, columns: Sequence[str] | None = None
) -> Styler:
    """The list (only ``columns``; default all) with :func:`row_colors` as row backgrounds
    (the text itself is unchanged)."""
    colors = row_colors(items, highlight_shared)
    shown = items if columns is None else items[list(columns)]
    css = pd.DataFrame(
        [[f"background-color: {c}" if c else ""] * shown.shape[1] for c in colors],
        index=shown.index,
        columns=shown.columns,
    )
    # One call for the whole frame: a row-wise apply builds a Series per row, and the page
    # styles a dozen lists per rerun.
    return shown.style.apply(lambda _: css, axis=None)
