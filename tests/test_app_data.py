"""AppTests of the Data page: demo loading, uploads, mapping/cleaning errors, saving.

Also the pure helpers of core/views/forms.py that the page calls.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.errors import DataError
from core.ingestion.options import CleanOptions, ColumnMapping
from core.ingestion.read import read_table
from core.ingestion.registry import load_dataset
from core.store import Store
from core.views import forms

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGE = "pages/data.py"


pytestmark = pytest.mark.usefixtures("fresh_app")


def data_page(timeout: float = 60) -> AppTest:
    return AppTest.from_file(APP, default_timeout=timeout).switch_page(PAGE).run()


def log_csv() -> bytes:
    """6 users x 5 interactions over 7 items, an hour apart; ratings 1..5."""
    rows = ["user_id,item_id,timestamp,rating"]
    for u in range(6):
        for t in range(5):
            rows.append(
                f"u{u},i{(u + t) % 7},{1_700_000_000 + u * 100 + t * 3600},{1 + (u + t) % 5}"
            )
    return "\n".join(rows).encode()


CATALOG = b"item_id,title,category\ni0,Trail Shoes,Running\ni1,Espresso Beans,Coffee\n"


def by_label(elements, label: str):
    (found,) = [e for e in elements if e.label == label]
    return found


def nothing_written(home: Path) -> bool:
    datasets = home / "datasets"
    return Store().list_datasets() == [] and (not datasets.exists() or not any(datasets.iterdir()))


def test_renders_on_an_empty_store(home):
    at = data_page()
    assert not at.exception and not at.error
    assert len(at.file_uploader) == 2
    assert at.file_uploader(key="data_upload").allowed_type == [
        ".csv", ".tsv", ".txt", ".data", ".inter", ".parquet", ".jsonl", ".ndjson", ".json",
        ".gz",
    ]  # fmt: skip
    assert [b.label for b in at.button] == ["Load the demo shop"]
    assert "No dataset yet" in at.info[0].value


def test_renders_the_active_dataset_of_a_seeded_store(seeded_home):
    _, ids = seeded_home
    record = Store().get_dataset(ids["dataset"])
    at = data_page()
    assert not at.exception and not at.error
    picker = at.selectbox(key="data_active")
    assert picker.value == record.id
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Users"] == f"{record.n_users:,}"
    assert metrics["Items"] == f"{record.n_items:,}"
    assert len(at.get("vega_lite_chart")) == 3  # long tail, timeline, activity
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 20


def test_loading_the_demo_registers_it_once(home, monkeypatch):
    monkeypatch.setenv("DISTILLERY_DEMO_SCALE", "0.05")
    at = data_page()
    at.button(key="data_demo").click().run()
    assert not at.exception and not at.error
    (dataset,) = Store().list_datasets()
    assert dataset.name == "Demo shop x0.05"
    assert f"dataset #{dataset.id}" in at.success[0].value
    assert dataset.name in [t.value for t in at.sidebar.text]
    assert at.selectbox(key="data_active").value == dataset.id
    assert len(at.get("vega_lite_chart")) == 3

    at.button(key="data_demo").click().run()
    assert "already saved" in at.success[0].value
    assert len(Store().list_datasets()) == 1


def test_upload_preview_and_save(home):
    at = data_page()
    at.file_uploader(key="data_upload").set_value(("shop log.csv", log_csv(), "text/csv"))
    at.file_uploader(key="data_catalog").set_value(("catalog.csv", CATALOG, "text/csv"))
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    # the mapping form is prefilled by detection
    detected = {s.label: s.value for s in at.selectbox}
    assert detected["User"] == "user_id" and detected["Item"] == "item_id"
    assert detected["Timestamp"] == "timestamp" and detected["Rating"] == "rating"
    assert detected["Event"] == forms.NONE
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Users"], metrics["Items"], metrics["Interactions"]) == ("6", "7", "30")
    assert nothing_written(home)  # a preview writes nothing

    by_label(at.text_input, "Dataset name").set_value("My shop")
    at.button(key="data_save").click().run()
    assert not at.exception and not at.error
    (record,) = Store().list_datasets()
    assert record.name == "My shop" and record.source == "upload: shop log.csv"
    assert "Saved as dataset" in at.success[0].value
    assert "My shop" in [t.value for t in at.sidebar.text]
    data = load_dataset(Store(), record.id)
    assert data.describe_items([data.item_index["i1"]])["title"].tolist() == ["Espresso Beans"]

    at.button(key="data_save").click().run()
    assert "already saved" in at.success[0].value
    assert len(Store().list_datasets()) == 1


def test_a_binary_upload_shows_the_core_error_and_writes_nothing(home):
    bad = b"\x00\x01\x02 not a table"
    with pytest.raises(DataError) as expected:
        read_table(bad, "log.csv")
    at = data_page()
    at.file_uploader(key="data_upload").set_value(("log.csv", bad, "text/csv"))
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == [str(expected.value)]
    assert "binary file" in at.error[0].value
    assert not at.metric and not at.get("vega_lite_chart")
    assert [b.label for b in at.button] == ["Load the demo shop"]  # no Save button
    assert nothing_written(home)


def test_bad_mapping_and_cleaning_choices_show_one_sentence(home):
    at = data_page()
    at.file_uploader(key="data_upload").set_value(("log.csv", log_csv(), "text/csv"))
    at.run()
    by_label(at.selectbox, "Item").set_value("user_id")
    by_label(at.button, "Apply").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert "mapped to both user and item" in at.error[0].value
    assert "Save dataset" not in [b.label for b in at.button]

    by_label(at.selectbox, "Item").set_value("item_id")
    by_label(at.selectbox, "Rating").set_value(forms.NONE)
    by_label(at.number_input, "Keep ratings >= (implicit)").set_value(3.0)
    by_label(at.button, "Apply").click().run()
    assert "rating threshold was set but no rating column is mapped" in at.error[0].value

    by_label(at.selectbox, "Rating").set_value("rating")
    by_label(at.button, "Apply").click().run()
    assert not at.error
    kept = sum(1 + (u + t) % 5 >= 3 for u in range(6) for t in range(5))
    assert {m.label: m.value for m in at.metric}["Interactions"] == str(kept)
    assert nothing_written(home)


# --------------------------------------------------------------------------- core/views/forms
def test_column_options_prefill_the_detected_column():
    assert forms.column_options(["a", "b"], "b", optional=False) == (["a", "b"], 1)
    assert forms.column_options(["a", "b"], None, optional=True) == ([forms.NONE, "a", "b"], 0)
    assert forms.column_options(["a", "b"], "gone", optional=True) == ([forms.NONE, "a", "b"], 0)


def test_mapping_from_choices():
    assert forms.mapping_from_choices("u", "i", "t", forms.NONE, "e") == ColumnMapping(
        user="u", item="i", timestamp="t", rating=None, event="e"
    )
    with pytest.raises(DataError, match="Column 'u' is mapped to both user and rating"):
        forms.mapping_from_choices("u", "i", forms.NONE, "u")
    with pytest.raises(DataError, match="user id"):
        forms.mapping_from_choices(forms.NONE, "i")


def test_clean_options_override_the_event_weights():
    options = forms.clean_options(
        min_rating=None, dedupe=False, min_user=2, min_item=3, view=0.5, cart=0.0, purchase=4.0
    )
    assert options == CleanOptions(
        min_rating=None,
        dedupe=False,
        min_user_interactions=2,
        min_item_interactions=3,
        event_weights={"view": 0.5, "cart": 0.0, "purchase": 4.0},
    )
    weights = options.resolved_event_weights()
    assert weights["view"] == 0.5 and weights["cart"] == 0.0 and weights["buy"] == 3.0
