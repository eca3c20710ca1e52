"""The what-if shopping session on Compare: "what would it recommend if I bought *this*?"

Not a page itself (app.py lists the pages). The session is built by searching products by
title or from the sample user's history, then edited (reorder, remove); it lives in session
state as a short list of item indices per dataset. The section is a fragment, so an edit
reruns only this section; the models come from the shared cache of pages/compare_lists.py.
An empty session or an unknown product gets one sentence, and the lists it had stay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from core.errors import ConfigError
from core.records import RunRecord
from core.store import Store
from core.views import recommendations as recs
from core.views import whatif
from core.views.text import md_escape
from pages.common import guarded
from pages.compare_lists import USER_KEY, in_rows, load_models, show_list

QUERY_KEY, PICK_KEY = "whatif_query", "whatif_pick"


def _edit(key: str, change: Callable, *args) -> None:
    st.session_state[key] = list(change(tuple(st.session_state.get(key, ())), *args))


def _add_picked(key: str, pick_key: str) -> None:
    picked = st.session_state.get(pick_key)
    if picked is not None:
        _edit(key, whatif.add_item, picked)


def _from_user(key: str, data) -> None:
    user = recs.user_index(data, st.session_state.get(USER_KEY))
    if user is not None:
        st.session_state[key] = list(whatif.user_session(data, user))


def build_session(data, key: str) -> tuple[int, ...]:
    """Search and add products, start from the sample user's history, reorder and remove."""
    search, pick, add = st.columns([2, 3, 1], vertical_alignment="bottom")
    query = search.text_input("Search products by title", key=QUERY_KEY, placeholder="e.g. cable")
    matches = whatif.search_products(data, query)
    # One picker per search: a new search starts at its best match (a picker whose options
    # change under the same key shows an empty choice in the browser).
    pick_key = f"{PICK_KEY}_{query.strip().lower()}"
    pick.selectbox(
        "Product", matches, key=pick_key, disabled=not matches,
        format_func=lambda i: f"{data.titles[i]} · {data.categories[i]}",
    )  # fmt: skip
    add.button("Add", key="whatif_add", disabled=not matches, on_click=_add_picked,
               args=(key, pick_key))  # fmt: skip
    if query.strip() and not matches:
        asked = md_escape(query.strip())
        st.info(f"No product title contains “{asked}”; the lists are unchanged.")
    start, clear, _ = st.columns([2, 1, 3])
    start.button("Start from the sample user's history", key="whatif_from_user",
                 on_click=_from_user, args=(key, data))  # fmt: skip
    clear.button("Clear", key="whatif_clear", on_click=lambda: st.session_state.update({key: []}))
    session = tuple(st.session_state.get(key, ()))
    for pos, row in whatif.session_frame(data, session).iterrows() if session else ():
        text, up, down, remove = st.columns([12, 1, 1, 1], vertical_alignment="center")
        text.text(f"{row['position']}. {row['title']} · {row['category']}")
        up.button("↑", key=f"whatif_up_{pos}", on_click=_edit, args=(key, whatif.move, pos, -1),
                  disabled=pos == 0)  # fmt: skip
        down.button("↓", key=f"whatif_down_{pos}", on_click=_edit,
                    args=(key, whatif.move, pos, 1), disabled=pos == len(session) - 1)  # fmt: skip
        remove.button("✕", key=f"whatif_remove_{pos}", on_click=_edit,
                      args=(key, whatif.remove_at, pos))  # fmt: skip
    return session


@st.fragment
def what_if(store: Store, runs: Sequence[RunRecord], data, dataset_id: int) -> None:
    """A hand-made shopping session and each sequence model's next 10 items after it."""
    st.subheader("What if: a shopping session")
    st.caption("Build a session (oldest first) and see what each model recommends next.")
    guarded(lambda: _what_if(store, runs, data, dataset_id), "computing the what-if lists")


def _what_if(store: Store, runs: Sequence[RunRecord], data, dataset_id: int) -> None:
    key, shown_key = f"whatif_session_{dataset_id}", f"whatif_shown_{dataset_id}"
    session = build_session(data, key)
    models = load_models(store, runs)
    try:
        result = whatif.session_lists(data, session, models)
        st.session_state[shown_key] = list(session)
    except ConfigError as exc:
        previous = st.session_state.get(shown_key)
        st.info(f"{exc} The lists below are the previous session's." if previous else str(exc))
        if not previous:
            return
        result = whatif.session_lists(data, previous, models)
    if result.user_models:
        names = md_escape(", ".join(result.user_models))
        st.caption(f"{names}: these models score users, not sessions, so they have no list here.")
    if not result.lists:
        return
    st.caption("Green: also in the first sequence model's top 10 (the teacher's, when it is one).")

    def show(rec: whatif.SessionList) -> None:
        overlap = "reference" if rec.jaccard is None else f"Jaccard@10 {rec.jaccard:.2f}"
        notes = [overlap, f"{rec.ms:.1f} ms", rec.note]
        repeats = int(rec.items["in_session"].sum())
        if repeats:  # only when the dataset does not mask history
            notes.append(f"{repeats} already in the session")
        caption = " · ".join(n for n in notes if n)
        show_list(rec.title, caption, rec.items, rec.jaccard is None, "reference's too")

    in_rows(result.lists, show)
