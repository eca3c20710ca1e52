"""Distillery's entry point: page config, navigation over pages/, and the shared sidebar.

Run with ``streamlit run app.py``. Pages are listed explicitly with ``st.navigation`` (no
auto-discovery of pages/); everything else lives in the pages and in core/.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.enums import Status
from pages.common import SIDEBAR_POLL_S, active_dataset, fmt_int, get_jobs, get_store, guarded

# A file, served by the app itself: a material or emoji page icon makes the browser fetch the
# favicon from a public CDN, and shops run Distillery behind their firewall.
ICON = Path(__file__).resolve().parent / ".streamlit" / "favicon.png"
st.set_page_config(page_title="Distillery", page_icon=str(ICON), layout="wide")

page = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/table_chart:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/sweep.py", title="Sweep", icon=":material/stacked_line_chart:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/handoff.py", title="Handoff", icon=":material/local_shipping:"),
    ]
)


def _sidebar() -> None:
    # Creating the job manager starts this process's training threads, which serve the
    # shared queue (runs of a dead process become interrupted when their lease expires).
    get_jobs()
    dataset = active_dataset()
    with st.sidebar:
        if dataset is None:
            st.caption("No dataset yet: load the demo shop or upload one on the Data page.")
        else:
            st.caption("Active dataset")
            st.text(dataset.name)
            st.caption(f"{fmt_int(dataset.n_users)} users · {fmt_int(dataset.n_items)} items")
        busy = _run_counts() > 0

        @st.fragment(run_every=SIDEBAR_POLL_S if busy else None)
        def live_counts() -> None:
            if _run_counts(show=True) == 0 and busy:
                st.rerun()  # the runs ended: refresh the page and stop polling

        live_counts()


def _run_counts(show: bool = False) -> int:
    counts = get_store().count_runs()
    running, queued = counts.get(Status.RUNNING, 0), counts.get(Status.QUEUED, 0)
    waiting = counts.get(Status.WAITING, 0)
    if show:
        st.caption(f"Runs: {running} running · {queued} queued · {waiting} waiting")
    return running + queued + waiting


guarded(_sidebar, "reading the store")
page.run()
