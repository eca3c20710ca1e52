"""Data: upload an interaction log (or load the demo shop), map and clean it, preview, save.

Nothing is written until "Save dataset": reading, detection and cleaning happen in memory
(cached by file content, so reruns do not parse the file again), and any problem is one
st.error sentence from core.ingestion.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import streamlit as st

from core.dataset import InteractionData
from core.errors import DistilleryError
from core.ingestion.build import load_interactions
from core.ingestion.detect import detect_columns
from core.ingestion.options import DEFAULT_EVENT_WEIGHTS, SplitOptions
from core.ingestion.read import read_table as read_log
from core.ingestion.registry import load_dataset
from core.pipeline import load_demo_dataset
from core.settings import demo_scale
from core.views import charts, forms
from core.views.text import md_escape
from pages.common import dataset_picker, get_store, guarded, set_active_dataset, show_chart

LOG_TYPES = ["csv", "tsv", "txt", "data", "inter", "parquet", "jsonl", "ndjson", "json", "gz"]
CATALOG_TYPES = ["csv", "tsv", "item", "parquet", "gz"]
SPLITS = {"loo": "Leave-one-out by time", "random": "Random 80/10/10 per user"}
MASKS = {"auto": "Auto (off when many repeats)", "on": "On", "off": "Off (repeats count)"}
FLASH_KEY = "data_flash"
ROLES = (("user", False), ("item", False), ("timestamp", True), ("rating", True), ("event", True))


@st.cache_data(show_spinner="Reading the file...", max_entries=4)
def columns_of(data: bytes, name: str) -> tuple[list[str], dict[str, str | None], str | None]:
    """Column names, the detected mapping and an error sentence (errors are cached too)."""
    try:
        frame = read_log(data, name)
    except DistilleryError as exc:
        return [], {}, str(exc)
    try:
        detected = asdict(detect_columns(frame, name))
    except DistilleryError:
        detected = {}  # the user maps the columns by hand
    return [str(c) for c in frame.columns], detected, None


@st.cache_resource(show_spinner="Cleaning and splitting...", max_entries=2)
def build(
    data: bytes,
    name: str,
    catalog: bytes | None,
    catalog_name: str | None,
    mapping: tuple,
    clean: tuple,
    split: tuple,
) -> tuple[InteractionData | None, str | None]:
    try:
        dataset = load_interactions(
            data,
            name,
            mapping=forms.mapping_from_choices(*mapping),
            catalog_source=catalog,
            catalog_name=catalog_name,
            clean=forms.clean_options(**dict(clean)),
            split=SplitOptions(*split),
        )
    except DistilleryError as exc:
        return None, str(exc)
    return dataset, None


def show(data: InteractionData) -> None:
    """Preview, stats and charts of a dataset (candidate or saved)."""
    metrics = charts.dataset_metrics(data)
    for row in (metrics[:4], metrics[4:]):
        for col, (label, value) in zip(st.columns(4), row, strict=False):
            col.metric(label, value)
    for note in data.notes:
        st.caption("Note: " + md_escape(note))  # notes can quote column names: plain text
    st.dataframe(charts.preview_frame(data), hide_index=True)
    left, mid, right = st.columns(3)
    show_chart("popularity", charts.popularity_frame(charts.item_counts(data)), left)
    timeline = charts.timeline_frame(data)
    if timeline.empty:
        mid.info("No timestamps: the file order is used as time.")
    else:
        show_chart("timeline", timeline, mid)
    show_chart("activity", charts.activity_frame(charts.user_counts(data)), right)


def save(data: InteractionData, source: str) -> None:
    """Register ``data``, make it active, and rerun so the sidebar shows it."""
    record, new = forms.save_dataset(get_store(), data, source)
    set_active_dataset(record.id)
    st.session_state[FLASH_KEY] = (
        f"Saved as dataset #{record.id}; it is now the active dataset."
        if new
        else f"This data is already saved as dataset #{record.id}; it is now the active dataset."
    )
    st.rerun()


def mapping_form(token: str, columns: list[str], detected: dict) -> tuple:
    """The mapping, cleaning and split form; returns the submitted (or detected) choices."""
    with st.form(f"data_form_{token}"):
        st.markdown("**Columns**")
        cols = st.columns(5)
        mapping = []
        for col, (role, optional) in zip(cols, ROLES, strict=True):
            options, index = forms.column_options(columns, detected.get(role), optional)
            mapping.append(
                col.selectbox(role.capitalize(), options, index, key=f"data_map_{role}_{token}")
            )
        st.markdown("**Cleaning and split**")
        c = st.columns(5)
        min_rating = c[0].number_input(
            "Keep ratings >= (implicit)",
            value=None,
            step=0.5,
            placeholder="no threshold",
            key=f"data_min_rating_{token}",
        )
        min_user = c[1].number_input(
            "Min interactions per user", 1, 1000, 1, key=f"data_min_user_{token}"
        )
        min_item = c[2].number_input(
            "Min interactions per item", 1, 1000, 1, key=f"data_min_item_{token}"
        )
        dedupe = c[3].checkbox("Remove exact duplicates", True, key=f"data_dedupe_{token}")
        mask = c[4].selectbox(
            "History mask (evaluation)", list(MASKS), format_func=MASKS.get, key=f"data_mask_{token}"
        )
        w = st.columns(5)
        weights = {
            event: w[i].number_input(
                f"Weight of '{event}'",
                0.0,
                100.0,
                DEFAULT_EVENT_WEIGHTS[event],
                step=0.5,
                key=f"data_weight_{event}_{token}",
            )
            for i, event in enumerate(("view", "cart", "purchase"))
        }
        method = w[3].selectbox(
            "Split", list(SPLITS), format_func=SPLITS.get, key=f"data_split_{token}"
        )
        seed = w[4].number_input("Split seed", 0, 2**31 - 1, 0, key=f"data_seed_{token}")
        st.form_submit_button("Apply", icon=":material/check:")
    clean = dict(
        min_rating=min_rating, dedupe=dedupe, min_user=min_user, min_item=min_item, **weights
    )
    return tuple(mapping), tuple(sorted(clean.items())), (method, int(seed), mask)


st.title("Data")
st.caption(
    "Upload an interaction log (CSV, TSV, Parquet, gzip, MovieLens u.data, RecBole .inter) "
    "with an optional product catalog, or start from the built-in demo shop."
)
if message := st.session_state.pop(FLASH_KEY, None):
    st.success(message, icon=":material/check_circle:")
up, demo = st.columns([3, 1])
upload = up.file_uploader("Interaction log", type=LOG_TYPES, key="data_upload")
catalog = up.file_uploader("Catalog (optional)", type=CATALOG_TYPES, key="data_catalog")
if demo.button("Load the demo shop", icon=":material/storefront:", key="data_demo"):
    with st.spinner("Building the demo shop..."):
        guarded(
            lambda: save(load_demo_dataset(scale=demo_scale()), "demo shop"), "loading the demo"
        )

if upload is not None:
    raw = upload.getvalue()
    columns, detected, error = columns_of(raw, upload.name)
    if error:
        st.error(error, icon=":material/error:")
    else:
        token = upload.file_id[:8]  # widget keys per upload: another file has other columns
        choices = mapping_form(token, columns, detected)
        cat_raw = catalog.getvalue() if catalog is not None else None
        data, error = build(raw, upload.name, cat_raw, catalog.name if catalog else None, *choices)
        if error:
            st.error(error, icon=":material/error:")
        else:
            name = st.text_input("Dataset name", data.name, max_chars=80, key=f"data_name_{token}")
            if st.button("Save dataset", type="primary", icon=":material/save:", key="data_save"):
                named = replace(data, name=name.strip() or data.name)
                guarded(lambda: save(named, f"upload: {upload.name}"), "saving the dataset")
            show(data)
else:
    st.subheader("Saved datasets")
    record = dataset_picker("data_active", "Active dataset")
    if record is None:
        st.info("No dataset yet: upload a file or load the demo shop.")
    else:
        dataset = guarded(lambda: load_dataset(get_store(), record.id), "reading the dataset")
        if dataset is not None:
            show(dataset)
