"""Home: what Distillery does, and the one-click demo (demo shop -> teacher -> student -> Compare).

The job manager refuses a student whose teacher has not succeeded, so the demo is a small
state machine kept in session state (run ids only): popularity and the teacher are queued
at once, and a polling fragment queues the students when the teacher has succeeded.
"""

from __future__ import annotations

import streamlit as st

from core import forms
from core.pipeline import load_demo_dataset
from core.runner import submit_run
from pages.common import (
    after_submit,
    demo_epochs,
    demo_scale,
    get_jobs,
    get_store,
    guarded,
    set_active_dataset,
)

DEMO_KEY = "home_demo"  # {"dataset", "teacher", "runs", "students_queued", "epochs"}
ACTIVE_STAGES = ("teacher", "queue_students", "students")

st.title("Distillery")
st.markdown(
    "Train a **large teacher** recommender on your shop's interaction log.  \n"
    "**Distill** it into a small student, and train the same student without a teacher.  \n"
    "**Compare** them side by side: quality kept, size, speed and real recommendations."
)


def start_demo(quick: bool) -> int:
    store, jobs = get_store(), get_jobs()
    with st.spinner("Building the demo shop..."):
        record, _ = forms.save_dataset(store, load_demo_dataset(scale=demo_scale()), "demo shop")
    set_active_dataset(record.id)
    caps = [c for c in (demo_epochs(), forms.QUICK_DEMO_EPOCHS if quick else None) if c]
    epochs = min(caps) if caps else None
    plan = forms.demo_plan(epochs)
    popularity = submit_run(jobs, record.id, plan.popularity)
    teacher = submit_run(jobs, record.id, plan.teacher)
    st.session_state[DEMO_KEY] = {
        "dataset": record.id,
        "teacher": teacher,
        "runs": [popularity, teacher],
        "students_queued": False,
        "epochs": epochs,
    }
    after_submit([popularity, teacher])
    return teacher


def advance_demo() -> tuple[str, dict]:
    """The demo's stage; queues the students as soon as the teacher has succeeded."""
    demo = st.session_state.get(DEMO_KEY)
    if not demo:
        return "idle", {}
    runs = {r.id: r for r in get_store().list_runs(dataset_id=demo["dataset"])}
    statuses = [runs[i].status if i in runs else "deleted" for i in demo["runs"]]
    teacher = runs.get(demo["teacher"])
    stage = forms.demo_stage(
        teacher.status if teacher else "deleted", demo["students_queued"], statuses
    )
    if stage != "queue_students":
        return stage, runs
    specs = forms.demo_plan(demo["epochs"]).students
    ids = [
        submit_run(get_jobs(), demo["dataset"], spec, teacher_run_id=demo["teacher"])
        for spec in specs
    ]
    st.session_state[DEMO_KEY] = {**demo, "runs": demo["runs"] + ids, "students_queued": True}
    after_submit(ids)
    return advance_demo()


def show_demo(stage: str, runs: dict) -> None:
    demo = st.session_state[DEMO_KEY]
    jobs = get_jobs()
    for run_id in demo["runs"]:
        run = runs.get(run_id)
        if run is None:
            st.caption(f"Run #{run_id} was deleted.")
            continue
        progress = jobs.progress(run_id)
        if run.status == "succeeded":
            fraction, text = 1.0, "succeeded"
        elif run.is_active and progress is not None:
            fraction, text = progress.fraction, forms.progress_text(progress)
        else:
            fraction, text = 0.0, run.status
        st.text(run.label)
        st.progress(fraction, text=text)
    if stage == "queue_students" or stage == "teacher":
        st.caption("The students start as soon as the teacher has finished.")
    elif stage == "done":
        st.success("The demo is ready: the teacher, the distilled student and its twin.")
        st.page_link(
            "pages/compare.py",
            label="Open Compare",
            icon=":material/compare_arrows:",
            query_params={"teacher": str(demo["teacher"])},
        )
    elif stage == "failed":
        failed = [r for i in demo["runs"] if (r := runs.get(i)) and r.status != "succeeded"]
        reason = f" ({failed[0].label}: {failed[0].error or failed[0].status})" if failed else ""
        st.error(f"The demo stopped before the end{reason}. Start it again or use the Train page.")


quick = st.toggle(
    f"Quick demo (at most {forms.QUICK_DEMO_EPOCHS} epochs per model)",
    key="home_demo_quick",
    help="The full demo trains the preset teacher for about a minute on two CPU cores.",
)
stage, _ = guarded(advance_demo, "checking the demo runs") or ("idle", {})
start = st.button(
    "Try the demo shop",
    type="primary",
    icon=":material/play_arrow:",
    key="home_demo_start",
    disabled=stage in ACTIVE_STAGES,
)
if start and guarded(lambda: start_demo(quick), "starting the demo") is not None:
    st.rerun()  # the sidebar shows the demo dataset and its runs
polling = stage in ACTIVE_STAGES


@st.fragment(run_every=2 if polling else None)
def demo_panel() -> None:
    stage, runs = guarded(advance_demo, "checking the demo runs") or ("idle", {})
    if stage == "idle":
        return
    if polling and stage not in ACTIVE_STAGES:
        st.rerun()  # a full rerun stops the timer and re-enables the button
    show_demo(stage, runs)


demo_panel()
st.divider()
st.page_link("pages/data.py", label="Upload your own data", icon=":material/upload:")
st.page_link("pages/train.py", label="Train a teacher and students", icon=":material/tune:")
