"""Shared UI plumbing for every page: the store, the job manager, the active dataset, errors,
cached charts and how often live panels poll.

Not a page itself (app.py lists the pages explicitly with st.navigation). The store and the
job manager are process-wide resources (``st.cache_resource``), shared by every browser tab;
both are thread-safe. Session state holds only small values (ids, choices).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core import settings
from core.errors import DistilleryError
from core.jobs import JobManager
from core.process_backend import default_backend
from core.records import DatasetRecord
from core.runner import training_runner
from core.store import Store
from core.views import charts
from core.views.forms import dataset_label

T = TypeVar("T")

DATASET_KEY = "active_dataset_id"
# How often live panels re-read the store while runs are queued or running. Each poll runs
# in the server process, next to the training threads; an epoch takes tens of seconds and
# progress is written once per epoch, so a faster poll would mostly redraw the same thing.
LIVE_POLL_S = 5
# The sidebar's run counts only need to notice that runs ended (then the page reruns).
SIDEBAR_POLL_S = 10
# Chart builders by name, for chart_spec.
CHARTS: dict[str, Callable[[pd.DataFrame], Any]] = {
    "training": charts.training_chart,
    "popularity": charts.popularity_chart,
    "timeline": charts.timeline_chart,
    "activity": charts.activity_chart,
}


@st.cache_resource(show_spinner=False)
def get_store() -> Store:
    return Store()


@st.cache_resource(show_spinner=False)
def get_jobs() -> JobManager:
    return JobManager(
        get_store(), training_runner, workers=settings.workers(), backend=default_backend()
    )


@st.cache_data(show_spinner=False, max_entries=128)
def chart_spec(kind: str, frame: pd.DataFrame) -> dict:
    """The Vega-Lite spec of chart ``kind`` drawn from ``frame``, built once per distinct frame.

    Building an Altair chart costs about a tenth of a second of Python, under the GIL that
    the training threads of this process also need; live panels redraw every few seconds
    and the other pages on every click, mostly from frames that have not changed.
    """
    return CHARTS[kind](frame).to_dict()


def show_chart(kind: str, frame: pd.DataFrame, where: Any = st) -> None:
    """Draw chart ``kind`` (see ``CHARTS``) of ``frame`` in ``where`` (a column, say)."""
    where.vega_lite_chart(chart_spec(kind, frame))


def after_submit(run_ids: list[int]) -> None:
    """In synchronous mode (page tests) wait for the runs just submitted.

    After a submit the page waits for the job, so AppTest sees the result in the same
    script run (the worker thread still does the work, never st.* calls).
    """
    if settings.sync_jobs():
        for run_id in run_ids:
            get_jobs().wait(run_id)


def active_dataset() -> DatasetRecord | None:
    """The dataset chosen on the Data page (or the most recent one), if any."""
    store = get_store()
    datasets = store.list_datasets()
    if not datasets:
        return None
    chosen = st.session_state.get(DATASET_KEY)
    for record in datasets:
        if record.id == chosen:
            return record
    newest = max(datasets, key=lambda d: d.id)
    st.session_state[DATASET_KEY] = newest.id
    return newest


def set_active_dataset(dataset_id: int) -> None:
    st.session_state[DATASET_KEY] = int(dataset_id)


def guarded(action: Callable[[], T], what: str = "") -> T | None:
    """Run ``action``; show a typed error as one sentence instead of a traceback."""
    try:
        return action()
    except DistilleryError as exc:
        st.error(str(exc), icon=":material/error:")
    except Exception as exc:  # noqa: BLE001 - the UI must never show a traceback
        st.error(
            f"Something went wrong{(' while ' + what) if what else ''}: {type(exc).__name__}: {exc}",
            icon=":material/error:",
        )
    return None


def fmt_int(value: Any) -> str:
    return "-" if value is None else f"{int(value):,}"


def dataset_picker(key: str, label: str = "Dataset") -> DatasetRecord | None:
    """A selectbox of the registered datasets, bound to the active dataset (None if none)."""
    current = active_dataset()
    if current is None:
        return None
    by_id = {d.id: d for d in get_store().list_datasets()}
    # Follow the active dataset when another page (or a save) changed it.
    if st.session_state.get(key) != current.id:
        st.session_state[key] = current.id
    st.selectbox(
        label,
        list(by_id),
        format_func=lambda i: dataset_label(by_id[i]),
        key=key,
        on_change=lambda: set_active_dataset(st.session_state[key]),
    )
    return by_id.get(st.session_state[key], current)


def leave_pages_directory_mode() -> None:
    """Make sure app.py's st.navigation is in charge, even on a cold server's first request.

    Streamlit treats a pages/ folder next to app.py as its legacy multipage layout until
    st.navigation has been called once in the process. If the very first request of a fresh
    server asks for a page URL (say /train), Streamlit runs pages/train.py on its own: no
    app.py, no sidebar, every file of pages/ (common.py too) listed as a page, and it stays
    that way because st.navigation is never reached. Every page imports this module, so
    leaving that mode here and rerunning routes that request through app.py.
    """
    if PagesManager.uses_pages_directory and get_script_run_ctx() is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


leave_pages_directory_mode()
