"""Distillery's entry point: page config, navigation over pages/, and the shared sidebar.

Run with ``streamlit run app.py``. Pages are listed explicitly with ``st.navigation`` (no
auto-discovery of pages/); everything else lives in the pages and in core/.
"""

from __future__ import annotations

import streamlit as st

from pages.common import active_dataset, fmt_int, get_jobs, get_store, guarded

st.set_page_config(page_title="Distillery", page_icon=":material/science:", layout="wide")

page = st.navigation(
    [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/table_chart:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/handoff.py", title="Handoff", icon=":material/local_shipping:"),
    ]
)


def _sidebar() -> None:
    # Creating the job manager on the first run also marks runs a previous server left
    # running as interrupted, so the counts below are never stale.
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

        @st.fragment(run_every=3 if busy else None)
        def live_counts() -> None:
            if _run_counts(show=True) == 0 and busy:
                st.rerun()  # the runs ended: refresh the page and stop polling

        live_counts()


def _run_counts(show: bool = False) -> int:
    counts = get_store().count_runs()
    running, queued = counts.get("running", 0), counts.get("queued", 0)
    if show:
        st.caption(f"Runs: {running} running · {queued} queued")
    return running + queued


guarded(_sidebar, "reading the store")
page.run()
