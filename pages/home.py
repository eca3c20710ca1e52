"""Home: what Distillery does, and the one-click demo (demo shop -> teacher -> student -> Compare).

The demo is a run plan in the store (core.plans): popularity and the teacher are queued at
once, the distilled student and its twin wait for the teacher, and the job manager (not
this page) releases them. So every tab, a reload and a server restart show the same demo:
the page only reads the newest demo plan and polls it while it runs.
"""

from __future__ import annotations

import streamlit as st

from core import plans, recipe
from core.enums import PlanKind, Status
from core.job_context import Progress
from core.pipeline import load_demo_dataset
from core.settings import demo_epochs, demo_scale
from core.views import forms
from core.views.text import format_duration, run_title
from pages.common import LIVE_POLL_S, after_submit, get_jobs, get_store, guarded, set_active_dataset

st.title("Distillery")
st.markdown(
    "Train a **large teacher** recommender on your shop's interaction log.  \n"
    "**Distill** it into a small student, and train the same student without a teacher.  \n"
    "**Compare** them side by side: quality kept, size, speed and real recommendations."
)


def start_demo(full: bool) -> int:
    store, jobs = get_store(), get_jobs()
    epochs = demo_epochs()
    # No st.* call (session state included) between building the shop and queuing the plan:
    # a tab that reloads or closes stops its script run at the next one, and a demo whose
    # shop was being built must still be queued (the reloaded Home then shows it).
    with st.spinner("Building the demo shop..."):
        record, _ = forms.save_dataset(store, load_demo_dataset(scale=demo_scale()), "demo shop")
        preset = forms.presets(record)
        plan = forms.demo_plan(epochs, preset if full else recipe.live(preset))
        plan_id = plans.submit_demo(jobs, record.id, plan, epochs=epochs)
    set_active_dataset(record.id)
    after_submit([r.id for r in store.list_runs(plan_id=plan_id)])
    return plan_id


def current_demo() -> plans.PlanView | None:
    return plans.latest(get_store(), PlanKind.DEMO)


def show_demo(demo: plans.PlanView) -> None:
    for run in demo.runs:
        progress = Progress.of(run)  # the snapshot the row carries: no second read
        if run.status == Status.SUCCEEDED:
            fraction, text = 1.0, "succeeded"
        elif run.status == Status.WAITING:
            fraction, text = 0.0, "waiting for the teacher"
        elif run.is_active:
            fraction, text = progress.fraction, forms.progress_text(progress)
        else:
            fraction, text = 0.0, run.status
        st.text(run_title(run))
        st.progress(fraction, text=text)
    status = demo.status
    if status == "running":
        if demo.eta_seconds:
            how = "estimated" if demo.eta_estimated else "from measured epoch times"
            st.caption(f"About {format_duration(demo.eta_seconds)} left ({how}).")
        st.caption("The students start as soon as the teacher has finished.")
    elif status == "succeeded":
        st.success("The demo is ready: the teacher, the distilled student and its twin.")
        teacher = demo.teacher
        st.page_link(
            "pages/compare.py",
            label="Open Compare",
            icon=":material/compare_arrows:",
            query_params={"teacher": str(teacher.id)} if teacher else None,
        )
    elif status == "interrupted":
        st.warning("The demo stopped when its server did. Resume it where it left off.")
        if st.button("Resume the demo", key="home_demo_resume", icon=":material/replay:"):
            guarded(lambda: plans.resume(get_jobs(), demo.plan.id), "resuming the demo")
            st.rerun()
    else:
        problem = demo.problem
        reason = f" ({run_title(problem)}: {problem.error or problem.status})" if problem else ""
        st.error(f"The demo stopped before the end{reason}. Start it again or use the Train page.")


full = st.toggle(
    "Full recipe (early stopping; takes longer)",
    key="home_demo_full",
    help=(
        f"The demo trains the teacher {recipe.LIVE_TEACHER_EPOCHS} epochs and each student "
        f"{recipe.LIVE_STUDENT_EPOCHS}. The full recipe trains each model until its "
        "validation NDCG@10 stops improving. The time left is shown while it runs."
    ),
)
demo = guarded(current_demo, "reading the demo")
running = demo is not None and demo.status == "running"
start = st.button(
    "Try the demo shop",
    type="primary",
    icon=":material/play_arrow:",
    key="home_demo_start",
    disabled=running,
)
if start and guarded(lambda: start_demo(full), "starting the demo") is not None:
    st.rerun()  # the sidebar shows the demo dataset and its runs


# With no demo running, the panel still looks now and then (one small store read), so a tab
# opened before another tab started the demo shows it without a reload.
IDLE_POLL_S = 5.0


@st.fragment(run_every=LIVE_POLL_S if running else IDLE_POLL_S)
def demo_panel() -> None:
    now = guarded(current_demo, "reading the demo")
    if now is None:
        return
    if (now.status == "running") != running:
        st.rerun()  # a full rerun switches the timer and the button's state
    show_demo(now)


demo_panel()
st.divider()
st.page_link("pages/data.py", label="Upload your own data", icon=":material/upload:")
st.page_link("pages/train.py", label="Train a teacher and students", icon=":material/tune:")
