"""The Compare page's side-by-side top-10 lists: the shared plumbing and one real user's.

Not a page itself (app.py lists the pages); the what-if session's lists are in
pages/compare_whatif.py. Both sections are fragments: picking another user or editing the
session reruns only that section, never the table and the charts above it. Trained models
are held in ``st.cache_resource`` keyed by run id and checkpoint (path and mtime): every tab
shares them, and a run trained again is loaded afresh. A user's lists are cached by the
dataset, the user and the checkpoints (``st.cache_data``), so reruns for anything else on
the page do not score every model again. Session state holds only the chosen user.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from core.models import Recommender
from core.records import RunRecord
from core.runner import run_model
from core.store import Store
from core.views import recommendations as recs
from pages.common import guarded

USER_KEY = "compare_user"
PER_ROW = 3
# A comparison rarely shows more than a dozen models; students are small, teachers a few MB.
MODEL_CACHE = 32


def prefill(key: str, value, valid) -> None:
    """Seed a widget from the URL once per session, ignoring values that are not options."""
    if key not in st.session_state and value is not None and value in valid:
        st.session_state[key] = value


@st.cache_resource(max_entries=MODEL_CACHE, show_spinner=False)
def _cached_model(run_id: int, checkpoint: str, mtime_ns: int, _store: Store) -> Recommender:
    return run_model(_store, run_id)


def model_key(run: RunRecord) -> tuple[int, str, int]:
    """What a run's lists depend on: its id and its checkpoint (path, mtime)."""
    path = run.checkpoint_path
    if path is None or not path.exists():
        return run.id, "", 0
    return run.id, str(path), path.stat().st_mtime_ns


def load_models(store: Store, runs: Sequence[RunRecord]) -> list[tuple[RunRecord, Recommender]]:
    """Each run with its trained model, loaded once per checkpoint for every tab."""
    out = []
    for run in runs:
        key = model_key(run)
        if not key[1]:
            out.append((run, run_model(store, run)))  # says, in one sentence, what is wrong
        else:
            out.append((run, _cached_model(*key, store)))
    return out


@st.cache_data(max_entries=256, show_spinner=False)
def _sample_lists(dataset: tuple, user: int, models: tuple, _store: Store, _runs, _data):
    # The lists depend only on the dataset, the user and the checkpoints (the keys): a rerun
    # for anything else on the page reuses them instead of scoring every model again.
    return recs.sample_recommendations(_data, user, load_models(_store, _runs), k=10)


def show_list(title: str, caption: str, items, reference: bool, shared: str) -> None:
    """One top-10 list; rows the reference list shares are green and ticked in ``shared``."""
    st.text(title)
    st.caption(caption)
    columns = ["rank", "title", "category", "shared"]
    st.dataframe(
        recs.style_recommendations(items, highlight_shared=not reference, columns=columns),
        hide_index=True,
        column_order=columns[:3] if reference else columns,  # all shared with itself
        column_config={
            "rank": st.column_config.NumberColumn("#", width="small"),
            "shared": st.column_config.CheckboxColumn(shared, width="small"),
        },
    )


def in_rows(entries: list, show: Callable) -> None:
    for start in range(0, len(entries), PER_ROW):
        for col, entry in zip(st.columns(PER_ROW), entries[start : start + PER_ROW], strict=False):
            with col:
                show(entry)


# --------------------------------------------------------------------------- sample user
def pick_random_user(data) -> None:
    st.session_state[USER_KEY] = recs.random_user(data)


@st.fragment
def samples(store: Store, runs: Sequence[RunRecord], data) -> None:
    """One user's history and each run's top 10 (``runs[0]`` is the teacher)."""
    st.subheader("Sample recommendations")
    # Inside the fragment: its own reruns do not pass through the page's guards.
    guarded(lambda: _samples(store, runs, data), "computing sample recommendations")


def _samples(store: Store, runs: Sequence[RunRecord], data) -> None:
    users = recs.find_users(data, limit=1)
    if not users:
        st.info("No user in this dataset has a held-out test item.")
        return
    if st.session_state.get(USER_KEY) not in data.user_index:  # another teacher's dataset
        st.session_state.pop(USER_KEY, None)
    prefill(USER_KEY, st.query_params.get("user"), data.user_index)
    st.session_state.setdefault(USER_KEY, users[0])
    left, middle, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    query = left.text_input("Search user ids", key="compare_user_search", placeholder="e.g. u00042")
    options = recs.find_users(data, query, limit=50)
    current = st.session_state[USER_KEY]
    raw = middle.selectbox("User", [current, *[u for u in options if u != current]], key=USER_KEY)
    right.button("Random user", key="compare_random_user", on_click=pick_random_user, args=(data,))
    st.query_params["user"] = raw
    user = recs.user_index(data, raw)

    st.markdown("**Recent history** (train + validation, newest first)")
    st.dataframe(recs.user_history(data, user), hide_index=True)
    dataset = (data.content_hash, data.n_items, data.masks_history)
    keys = tuple(model_key(run) for run in runs)
    lists = _sample_lists(dataset, user, keys, store, runs, data)
    st.caption("Green: also in the teacher's top 10. Amber: the user's held-out test item.")

    def show(rec: recs.RecommendationList) -> None:
        overlap = "reference" if rec.jaccard is None else f"Jaccard@10 {rec.jaccard:.2f}"
        hit = "test item hit" if rec.test_hit else "test item missed"
        caption = f"{overlap} · {hit} · {rec.ms:.1f} ms"
        show_list(rec.title, caption, rec.items, rec.jaccard is None, "teacher's too")

    in_rows(lists, show)
