"""Handoff: a student's ONNX export, parity, latency and int8 twin, gates, card and bundle.

"Prepare handoff" runs ``core.serving.prepare.prepare_handoff`` synchronously under a
spinner (an explicit click, seconds to half a minute on the demo student): the job manager
only runs training jobs. Everything shown afterwards is read back from the store, so a
prepared run shows its checks in any later session. The run lives in the URL (?run=4).
The bundle zip is built only when its download button is clicked, not on every rerun.
"""

from __future__ import annotations

import streamlit as st

from core.serving.bundle import BUNDLE_FILES, bundle_path, missing_files, write_bundle
from core.serving.card import latency_frame, latency_ratios, model_card, quality_frame, sizes_mb
from core.serving.facts import collect_facts
from core.serving.gates import Gates, evaluate_gates
from core.serving.prepare import handoff_candidates, prepare_handoff
from core.views.text import parse_ids, run_title
from pages.common import get_store, guarded

RUN_KEY = "handoff_run"
ARTIFACT_KEY = "handoff_artifact"
ARTIFACT_LABELS = {"fp32": "fp32 (model.onnx)", "int8": "int8 (model.int8.onnx)"}
# Material icons, not emoji: they render without an emoji font on the viewer's machine.
PASS, FAIL = ":green[:material/check_circle: **PASS**]", ":red[:material/cancel: **FAIL**]"
# Gates field -> its number input: label, min, max, step, scale (100: shown as a percentage), key.
THRESHOLD_INPUTS = {
    "min_kept": ("Keeps at least (% of the teacher's NDCG@10)", 0.0, 500.0, 1.0, 100, "handoff_min_kept"),
    "max_p95_ms": ("p95 latency at most (ms, one request)", 0.001, 1e5, 1.0, 1, "handoff_max_p95"),
    "max_size_mb": ("Size at most (MB)", 0.001, 1e6, 1.0, 1, "handoff_max_size"),
    "max_parity_diff": ("Parity: max |score difference|", 0.0, 1.0, 1e-5, 1, "handoff_max_diff"),
    "min_topk_agreement": ("Top-10 agreement at least (%)", 0.0, 100.0, 0.5, 100, "handoff_min_agreement"),
}  # fmt: skip


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
    with st.spinner("Exporting, quantizing, checking parity and timing (up to half a minute)..."):
        result = guarded(
            lambda: prepare_handoff(store, run.id, progress=lambda m, f: bar.progress(f, text=m)),
            "preparing the handoff",
        )
    bar.empty()
    if result is not None:
        st.toast(f"Handoff prepared in {result.seconds:.0f} s.", icon=":material/check:")


def thresholds() -> Gates:
    """The editable gate thresholds (defaults from ``Gates``), three to a row."""
    defaults, values = Gates(), {}
    cells = [*st.columns(3), *st.columns(3)]
    for cell, (field, (label, low, high, step, scale, key)) in zip(
        cells, THRESHOLD_INPUTS.items(), strict=False
    ):
        shown = cell.number_input(
            label, low, high, scale * getattr(defaults, field), step, key=key,
            format="%.1e" if field == "max_parity_diff" else None,
        )  # fmt: skip
        values[field] = shown / scale
    values["must_beat_baseline"] = cells[-1].checkbox(
        "Must beat its no-teacher twin", value=defaults.must_beat_baseline, key="handoff_beat_twin"
    )
    return Gates(**values)


def checks(facts) -> None:
    parity = facts.parity
    cols = st.columns(5)
    cols[0].metric("Max |score diff| vs PyTorch", f"{parity['max_abs_diff']:.2e}")
    cols[1].metric(f"Top-{facts.k} agreement", f"{100 * parity['topk_agreement']:.2f}%")
    for col, (label, mb) in zip(cols[2:], sizes_mb(facts).items(), strict=True):
        col.metric(label, "-" if mb is None else f"{mb:.3f} MB")
    st.caption(f"Parity: fp32 graph vs PyTorch eager on {parity['n_users']} sampled test users.")
    st.markdown("**Latency** (ms per call; qps = users per second)")
    st.dataframe(latency_frame(facts), hide_index=True)
    ratio = latency_ratios(facts)["teacher_over_served_p50"]
    if ratio:
        st.caption(f"The teacher's onnxruntime p50 is {ratio:.1f}x this run's p50 (batch 1).")
    st.markdown(f"**Quality** (test split, full ranking, K={facts.k})")
    st.dataframe(quality_frame(facts), hide_index=True)


def gates_and_bundle(store, run, facts, choice: str) -> None:
    st.subheader("Gates")
    gates = thresholds()
    results = evaluate_gates(facts, gates)
    if failed := [g for g in results if not g.passed]:
        st.warning(f"{len(failed)} of {len(results)} gates fail.", icon=":material/warning:")
    else:
        st.success("Every gate passes: ready to hand off.", icon=":material/check_circle:")
    for gate in results:
        st.markdown(f"{PASS if gate.passed else FAIL} {gate.sentence}")
    missing = missing_files(store, run.id)
    if missing:
        st.warning(f"{', '.join(missing)} went missing: press Prepare handoff again.")
    else:
        st.download_button(
            "Download the handoff bundle (zip)",
            # A callable: the zip is written only when the button is clicked.
            lambda: write_bundle(store, run.id, handoff=choice, gates=gates).read_bytes(),
            bundle_path(run.id, choice).name,
            "application/zip",
            key="handoff_download",
            type="primary",
            icon=":material/download:",
        )
        st.caption(", ".join(BUNDLE_FILES))
    with st.expander("Model card", expanded=False):
        st.markdown(model_card(facts, gates)[0])  # user text in it is escaped by core.serving


def main() -> None:
    st.title("Handoff")
    st.caption(
        "Export a student to ONNX, check it against PyTorch, time it, and download its "
        "model card with the files a serving team needs."
    )
    store = get_store()
    runs = guarded(lambda: handoff_candidates(store), "reading the runs")
    if not runs:
        st.info("Nothing to hand off yet: train a student on the Train page first.")
        return
    run = choose_run(runs)
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    choice = left.radio(
        "Artifact to hand off", list(ARTIFACT_LABELS), format_func=ARTIFACT_LABELS.get,
        horizontal=True, key=ARTIFACT_KEY,
    )  # fmt: skip
    tip = "Export (fp32 and int8), check parity, evaluate through onnxruntime, time each runtime."
    if right.button("Prepare handoff", key="handoff_prepare", type="primary", help=tip):
        prepare(store, run)
    facts = guarded(lambda: collect_facts(store, run.id, handoff=choice), "reading the handoff")
    if facts is None:
        return
    if not facts.is_prepared:
        st.info("Not prepared yet: press Prepare handoff to export, check and time this run.")
        return
    checks(facts)
    gates_and_bundle(store, run, facts, choice)


main()
