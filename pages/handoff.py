"""Handoff: a student's ONNX export, parity, latency and int8 twin, gates, card and bundle.

"Prepare handoff" runs ``core.handoff.prepare_handoff`` synchronously under a spinner (an
explicit click, seconds to half a minute on the demo student): the job manager only runs
training jobs. Everything shown afterwards is read back from the store, so a prepared run
shows its checks in any later session. The run lives in the URL (?run=4).
"""

from __future__ import annotations

import streamlit as st

from core import handoff
from core.compare import parse_ids, run_title
from pages.common import get_store, guarded

RUN_KEY = "handoff_run"
ARTIFACT_KEY = "handoff_artifact"
ARTIFACT_LABELS = {"fp32": "fp32 (model.onnx)", "int8": "int8 (model.int8.onnx)"}


def choose_run(runs):
    """The run to hand off: the URL's ?run= once per session, else the newest."""
    by_id = {r.id: r for r in runs}
    if st.session_state.get(RUN_KEY) not in by_id:  # e.g. deleted on the Runs page
        st.session_state.pop(RUN_KEY, None)
    wanted = (parse_ids(st.query_params.get("run")) or [None])[0]
    if RUN_KEY not in st.session_state and wanted in by_id:
        st.session_state[RUN_KEY] = wanted
    run_id = st.selectbox(
        "Student to hand off",
        list(by_id),
        format_func=lambda i: f"{run_title(by_id[i])} ({by_id[i].role})",
        key=RUN_KEY,
    )
    st.query_params["run"] = str(run_id)
    return by_id[run_id]


def prepare(store, run) -> None:
    bar = st.progress(0.0, text="Starting...")
    with st.spinner(
        "Exporting to ONNX, quantizing to int8, checking parity and timing each runtime "
        "(up to half a minute)..."
    ):
        result = guarded(
            lambda: handoff.prepare_handoff(
                store, run.id, progress=lambda message, done: bar.progress(done, text=message)
            ),
            "preparing the handoff",
        )
    bar.empty()
    if result is not None:
        st.toast(f"Handoff prepared in {result.seconds:.0f} s.", icon=":material/check:")


def thresholds() -> handoff.Gates:
    """The editable gate thresholds (defaults from ``handoff.Gates``)."""
    d = handoff.Gates()
    top = st.columns(3)
    kept = top[0].number_input(
        "Keeps at least (% of the teacher's NDCG@10)", 0.0, 500.0, 100 * d.min_kept, 1.0,
        key="handoff_min_kept",
    )  # fmt: skip
    p95 = top[1].number_input(
        "p95 latency at most (ms, one request)", 0.001, 1e5, d.max_p95_ms, 1.0,
        key="handoff_max_p95",
    )  # fmt: skip
    size = top[2].number_input(
        "Size at most (MB)", 0.001, 1e6, d.max_size_mb, 1.0, key="handoff_max_size"
    )
    bottom = st.columns(3)
    diff = bottom[0].number_input(
        "Parity: max |score difference|", 0.0, 1.0, d.max_parity_diff, 1e-5, format="%.1e",
        key="handoff_max_diff",
    )  # fmt: skip
    agree = bottom[1].number_input(
        "Top-10 agreement at least (%)", 0.0, 100.0, 100 * d.min_topk_agreement, 0.5,
        key="handoff_min_agreement",
    )  # fmt: skip
    twin = bottom[2].checkbox(
        "Must beat its no-teacher twin", value=d.must_beat_baseline, key="handoff_beat_twin"
    )
    return handoff.Gates(
        min_kept=kept / 100,
        must_beat_baseline=twin,
        max_p95_ms=p95,
        max_size_mb=size,
        max_parity_diff=diff,
        min_topk_agreement=agree / 100,
    )


def checks(facts) -> None:
    parity = facts.parity
    cols = st.columns(5)
    cols[0].metric("Max |score diff| vs PyTorch", f"{parity['max_abs_diff']:.2e}")
    cols[1].metric(f"Top-{facts.k} agreement", f"{100 * parity['topk_agreement']:.2f}%")
    for col, (label, mb) in zip(cols[2:], handoff.sizes_mb(facts).items(), strict=True):
        col.metric(label, "-" if mb is None else f"{mb:.3f} MB")
    st.caption(f"Parity: fp32 graph vs PyTorch eager on {parity['n_users']} sampled test users.")
    st.markdown("**Latency** (ms per call; qps = users per second)")
    st.dataframe(handoff.latency_frame(facts), hide_index=True)
    ratios = handoff.latency_ratios(facts)
    if ratios["teacher_over_served_p50"]:
        st.caption(
            f"The teacher's onnxruntime p50 is {ratios['teacher_over_served_p50']:.1f}x this "
            "run's p50 (batch 1)."
        )
    st.markdown(f"**Quality** (test split, full ranking, K={facts.k})")
    st.dataframe(handoff.quality_frame(facts), hide_index=True)


def gates_and_bundle(store, run, facts, choice: str) -> None:
    st.subheader("Gates")
    gates = thresholds()
    results = handoff.evaluate_gates(facts, gates)
    failed = [g for g in results if not g.passed]
    if failed:
        st.warning(f"{len(failed)} of {len(results)} gates fail.", icon=":material/warning:")
    else:
        st.success("Every gate passes: ready to hand off.", icon=":material/check_circle:")
    for gate in results:
        # Material icons, not emoji: they render without an emoji font on the viewer's machine.
        icon = (
            ":green[:material/check_circle: **PASS**]"
            if gate.passed
            else ":red[:material/cancel: **FAIL**]"
        )
        st.markdown(f"{icon} {gate.sentence}")
    markdown, _ = handoff.model_card(facts, gates)
    path = guarded(
        lambda: handoff.write_bundle(store, run.id, handoff=choice, gates=gates),
        "writing the bundle",
    )
    if path is not None:
        st.download_button(
            "Download the handoff bundle (zip)",
            path.read_bytes(),
            path.name,
            "application/zip",
            key="handoff_download",
            type="primary",
            icon=":material/download:",
        )
        st.caption(", ".join(handoff.BUNDLE_FILES))
    with st.expander("Model card", expanded=False):
        st.markdown(markdown)  # user text in it is escaped by core.handoff


def main() -> None:
    st.title("Handoff")
    st.caption(
        "Export a student to ONNX, check it against PyTorch, time it, and download its "
        "model card with the files a serving team needs."
    )
    store = get_store()
    runs = guarded(lambda: handoff.handoff_candidates(store), "reading the runs")
    if not runs:
        st.info("Nothing to hand off yet: train a student on the Train page first.")
        return
    run = choose_run(runs)
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    choice = left.radio(
        "Artifact to hand off",
        list(ARTIFACT_LABELS),
        format_func=ARTIFACT_LABELS.get,
        horizontal=True,
        key=ARTIFACT_KEY,
    )
    tip = "Export (fp32 and int8), check parity, evaluate through onnxruntime, time each runtime."
    if right.button("Prepare handoff", key="handoff_prepare", type="primary", help=tip):
        prepare(store, run)
    facts = guarded(
        lambda: handoff.collect_facts(store, run.id, handoff=choice), "reading the handoff"
    )
    if facts is None:
        return
    if not facts.is_prepared:
        st.info("Not prepared yet: press Prepare handoff to export, check and time this run.")
        return
    checks(facts)
    gates_and_bundle(store, run, facts, choice)


main()
