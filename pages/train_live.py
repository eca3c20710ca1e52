"""The Train page's live panel: every queued or running run, its curves and a Cancel button.

A UI module of pages/train.py (not a page): it polls the store's progress snapshots with
``st.fragment(run_every=...)`` while something runs, and toasts the runs that ended.
"""

from __future__ import annotations

import streamlit as st

from core.views import charts, forms
from core.views.text import run_title
from pages.common import LIVE_POLL_S, get_jobs, get_store, guarded, show_chart

WATCH_KEY = "train_watch"  # run ids whose end gets a toast
TOASTS_KEY = "train_toasts"  # toasts to show after a full rerun


def cancel(run_id: int) -> None:
    guarded(lambda: get_jobs().cancel(run_id), "cancelling the run")


def finished_toasts(active: list[int]) -> list[str]:
    """Messages for watched runs that ended since the last look; updates the watch list.

    ``active`` are the ids of the runs queued or running now (read once per poll)."""
    watched = st.session_state.get(WATCH_KEY, [])
    done = forms.finished_runs(watched, active)
    st.session_state[WATCH_KEY] = sorted(set(watched) - set(done) | set(active))
    store = get_store()
    return [f"{run_title(run := store.get_run(i))}: {run.status}" for i in done]


def live_run(progress) -> None:
    """One active run: its progress, a cancel button and (after an epoch) its curves."""
    with st.container(border=True):
        head, button = st.columns([6, 1])
        head.text(f"{run_title(progress)} · {progress.status}")
        button.button(
            "Cancel",
            key=f"train_cancel_{progress.run_id}",
            on_click=cancel,
            args=(progress.run_id,),
        )
        st.progress(progress.fraction, text=forms.progress_text(progress))
        if progress.epoch > 0:  # no epoch recorded yet: nothing to read or draw
            frame = charts.training_frame(get_store().epochs(progress.run_id))
            if not frame.empty:
                show_chart("training", frame)


def show_live_runs(polling: bool) -> None:
    """The live panel; ``polling``: something was active when the page ran."""

    @st.fragment(run_every=LIVE_POLL_S if polling else None)
    def live_panel() -> None:
        st.subheader("Live runs")
        # One store read per poll: the active runs' progress snapshots.
        active = guarded(get_jobs().active, "reading the active runs") or []
        ids = [p.run_id for p in active]
        messages = guarded(lambda: finished_toasts(ids), "checking finished runs") or []
        if polling and not active:
            st.session_state[TOASTS_KEY] = messages
            st.rerun()  # a full rerun stops the timer and lists the new teacher
        for message in messages:
            st.toast(message, icon=":material/flag:")
        if not active:
            st.caption("Nothing is training right now.")
        for progress in active:
            live_run(progress)

    live_panel()
