"""Shared UI plumbing for every page: the store, the job manager, the active dataset, errors.

Not a page itself (app.py lists the pages explicitly with st.navigation). The store and the
job manager are process-wide resources (``st.cache_resource``), shared by every browser tab;
both are thread-safe. Session state holds only small values (ids, choices).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner import get_script_run_ctx

from core.errors import DistilleryError
from core.forms import dataset_label
from core.jobs import JobManager
from core.runner import training_runner
from core.store import DatasetRecord, Store

T = TypeVar("T")

# Set by page tests: after a submit the page waits for the job, so AppTest sees the result
# in the same script run (the worker thread still does the work, never st.* calls).
SYNC_JOBS_ENV = "DISTILLERY_SYNC_JOBS"
DATASET_KEY = "active_dataset_id"


@st.cache_resource(show_spinner=False)
def get_store() -> Store:
    return Store()


@st.cache_resource(show_spinner=False)
def get_jobs() -> JobManager:
    workers = int(os.environ.get("DISTILLERY_WORKERS", "1"))
    return JobManager(get_store(), training_runner, workers=max(1, workers))


def sync_jobs() -> bool:
    return os.environ.get(SYNC_JOBS_ENV, "") not in ("", "0")


def after_submit(run_ids: list[int]) -> None:
    """In synchronous mode (page tests) wait for the runs just submitted."""
    if sync_jobs():
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


# Demo size knobs, read here only: tests and slow machines shrink the one-click demo.
DEMO_SCALE_ENV = "DISTILLERY_DEMO_SCALE"
DEMO_EPOCHS_ENV = "DISTILLERY_DEMO_EPOCHS"


def demo_scale() -> float:
    """Scale of the demo shop (env DISTILLERY_DEMO_SCALE, default 1.0; tests use 0.05)."""
    try:
        value = float(os.environ.get(DEMO_SCALE_ENV, "") or 1.0)
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


def demo_epochs() -> int | None:
    """Cap on every demo run's epochs (env DISTILLERY_DEMO_EPOCHS; unset = the presets)."""
    try:
        value = int(os.environ.get(DEMO_EPOCHS_ENV, "") or 0)
    except ValueError:
        return None
    return value if value > 0 else None


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
