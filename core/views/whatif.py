"""The what-if shopping session on the Compare page: "what would it recommend if I bought *this*?"

A session is a short, time-ordered tuple of dense item indices that the user builds by
hand: found by title (:func:`search_products`), taken from a real user's history
(:func:`user_session`) and edited (:func:`add_item`, :func:`remove_at`, :func:`move`). Edits
are pure functions returning a new tuple, so the page keeps only that small tuple in its
session state.

:func:`session_lists` scores the session as the context of every sequence model through the
one serving path (:meth:`core.models.Recommender.recommend`): the session left-padded to the
model's ``max_len`` exactly as :meth:`~core.models.Recommender.make_context` pads a user's
history, with the session's own items excluded when the dataset's evaluation masks history.
Models that score *users* (MF, two-tower) cannot take a session and are named instead;
popularity needs no context and is shown as the floor, the same for every session.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.dataset import InteractionData, pad_sequences
from core.enums import Family
from core.errors import ConfigError
from core.models import Recommender
from core.records import RunRecord
from core.views.recommendations import ranked_lists
from core.views.text import run_title

# Longer sessions add nothing a demo can show: SASRec presets read at most 50 items, and
# a list of more than 20 rows no longer fits beside the recommendations.
MAX_SESSION = 20
SEARCH_LIMIT = 20


# --------------------------------------------------------------------------- building
def search_products(data: InteractionData, query: str, limit: int = SEARCH_LIMIT) -> list[int]:
    """Items whose title contains ``query`` (case-insensitive), or whose id is ``query``.

    Best matches first: an exact id, then titles that start with the query, then the rest;
    ties go to the more popular item (what a shop's own search would rank first).
    """
    query = query.strip().lower()
    if not query:
        return []
    titles = np.char.lower(np.asarray(data.titles).astype(str))
    found = np.char.find(titles, query)
    exact = np.char.lower(np.asarray(data.item_ids).astype(str)) == query
    hits = np.flatnonzero((found >= 0) | exact)
    # lexsort: the last key is the primary one.
    order = np.lexsort((-data.item_popularity[hits], found[hits] != 0, ~exact[hits]))
    return hits[order][:limit].tolist()


def user_session(data: InteractionData, user: int, n: int = MAX_SESSION) -> tuple[int, ...]:
    """The user's last ``n`` train+validation items, oldest first: what the test ranking sees."""
    return tuple(int(i) for i in data.history_sequences("test")[user][-n:])


def check_session(data: InteractionData, session: Sequence[int]) -> tuple[int, ...]:
    """The session as a tuple of valid item indices; one sentence when it cannot be scored."""
    if len(session) == 0:
        raise ConfigError(
            "The session is empty: add a product to see what each model recommends next."
        )
    unknown = [i for i in session if not 0 <= int(i) < data.n_items]
    if unknown:
        raise ConfigError(
            f"Product {unknown[0]} is not in this dataset's catalog; remove it from the session."
        )
    return tuple(int(i) for i in session)


def add_item(session: Sequence[int], item: int, limit: int = MAX_SESSION) -> tuple[int, ...]:
    """``item`` bought next; the oldest items fall off past ``limit``."""
    return (*session, int(item))[-limit:]


def remove_at(session: Sequence[int], position: int) -> tuple[int, ...]:
    return tuple(i for p, i in enumerate(session) if p != position)


def move(session: Sequence[int], position: int, offset: int) -> tuple[int, ...]:
    """Swap the item at ``position`` with its neighbour ``offset`` (-1 earlier, +1 later)."""
    items = list(session)
    other = position + offset
    if 0 <= position < len(items) and 0 <= other < len(items):
        items[position], items[other] = items[other], items[position]
    return tuple(items)


def session_frame(data: InteractionData, session: Sequence[int]) -> pd.DataFrame:
    """The session as shown: position (1 = oldest), item id, title, category."""
    frame = data.describe_items(list(session))[["item_id", "title", "category"]]
    frame.insert(0, "position", np.arange(1, len(session) + 1))
    return frame


# --------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class SessionList:
    """One model's next-item top-K for the session, as shown in a column of the page."""

    run_id: int
    title: str
    items: pd.DataFrame  # rank, item_id, title, category, shared (with the reference), in_session
    item_indices: tuple[int, ...]
    jaccard: float | None  # vs the reference list; None for the reference itself
    ms: float
    note: str = ""  # e.g. that popularity is the same for every session


@dataclass(frozen=True)
class SessionResult:
    lists: list[SessionList]
    user_models: list[str]  # titles of the runs that score users, not sessions


def scores_sessions(model: Recommender) -> bool:
    return model.input_kind == "sequence" or model.family == Family.POPULARITY


def session_context(model: Recommender, session: Sequence[int]) -> torch.Tensor:
    """``[1, max_len]`` padded items (+1) for a sequence model; a dummy user for popularity,
    whose scores do not depend on who asks."""
    if model.input_kind == "sequence":
        return torch.from_numpy(pad_sequences([np.asarray(session)], model.config.max_len))
    return torch.zeros(1, dtype=torch.int64)


def recommend_session(
    model: Recommender, data: InteractionData, session: Sequence[int], k: int = 10
) -> tuple[list[int], float]:
    """Top-``k`` item indices after ``session``, and the wall time of the call in ms.

    The session's items are excluded when the dataset's evaluation masks history (as the
    metrics do for a user's own history); masked slots (``-inf``) are dropped.
    """
    started = time.perf_counter()
    device = model.device
    exclude = None
    if data.masks_history:
        exclude = torch.zeros((1, data.n_items), dtype=torch.bool)
        exclude[0, list(session)] = True
        exclude = exclude.to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            items, scores = model.recommend(session_context(model, session).to(device), k, exclude)
    finally:
        model.train(was_training)
    ms = (time.perf_counter() - started) * 1000.0
    keep = ~torch.isneginf(scores[0])
    return [int(i) for i in items[0][keep].tolist()], ms


def session_lists(
    data: InteractionData,
    session: Sequence[int],
    models: Sequence[tuple[RunRecord, Recommender]],
    k: int = 10,
) -> SessionResult:
    """Each model's top-``k`` after ``session``; the first session-scoring sequence model
    (the teacher when it is one) is the reference the others' overlap is measured against."""
    session = check_session(data, session)
    scorable = [(run, model) for run, model in models if scores_sessions(model)]
    # The reference is a sequence model: popularity's list says nothing about the session.
    scorable.sort(key=lambda pair: pair[1].input_kind != "sequence")
    lists: list[SessionList] = []
    ranked = ranked_lists(
        data,
        scorable,
        lambda model: recommend_session(model, data, session, k),
        ("in_session", set(session)),
    )
    for run, model, items, ms, frame, overlap in ranked:
        lists.append(
            SessionList(
                run_id=run.id,
                title=run_title(run),
                items=frame,
                item_indices=tuple(items),
                jaccard=overlap,
                ms=ms,
                note="" if model.input_kind == "sequence" else "the same for every session",
            )
        )
    users = [run_title(run) for run, model in models if not scores_sessions(model)]
    return SessionResult(lists, users)
