"""Big logs: streamed block by block with the same result and sentences, under a memory budget.

The streaming path is what a 20-million-row file takes (see bench/scale.py for the
figures); here the thresholds are shrunk so that kilobyte files cross several blocks, and
every result is compared with the whole-file path on the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.errors import DataError
from core.ingestion import limits, stream
from core.ingestion.build import load_interactions
from core.ingestion.options import CleanOptions
from tests.helpers.corpus import LOADS, all_cases, message_problems

T0 = 1_600_000_000
FIELDS = ("user_ids", "item_ids", "users", "items", "timestamps", "weights", "split", "titles")


@pytest.fixture
def streaming(monkeypatch):
    """Every input streams, in blocks of a few rows (Parquet) or a few KB (text)."""
    monkeypatch.setattr(stream, "STREAM_BYTES", 0)
    monkeypatch.setattr(stream, "BLOCK_ROWS", 50)
    monkeypatch.setattr(stream, "BLOCK_BYTES", 2048)


def whole_file(data: bytes, name: str, **kwargs):
    """The whole-file path's result (or sentence) for the same bytes."""
    saved = stream.STREAM_BYTES
    stream.STREAM_BYTES = 1 << 62
    try:
        return load_or_message(data, name, **kwargs)
    finally:
        stream.STREAM_BYTES = saved


def load_or_message(data: bytes, name: str, **kwargs):
    try:
        return load_interactions(data, name, **kwargs)
    except DataError as exc:
        return str(exc)


def assert_same(streamed, whole) -> None:
    assert not isinstance(streamed, str), streamed
    for field in FIELDS:
        assert np.array_equal(np.asarray(getattr(streamed, field)), getattr(whole, field)), field
    assert streamed.notes == whole.notes
    assert streamed.content_hash == whole.content_hash
    events = [None if d.events is None else d.events.tolist() for d in (streamed, whole)]
    assert events[0] == events[1]


def shop_log(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A log with funnels, repeats, exact duplicates and ties in time."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 60, n)],
            "item_id": rng.integers(0, 90, n),
            "timestamp": T0 + rng.integers(0, 400, n),
            "event": rng.choice(["view", "cart", "purchase", "addtocart"], n),
        }
    )
    return pd.concat([frame, frame.iloc[::37]], ignore_index=True)  # some double-fired rows


def encodings(frame: pd.DataFrame) -> dict[str, bytes]:
    csv = frame.to_csv(index=False).encode()
    lines = "".join(json.dumps(r) + "\n" for r in frame.to_dict("records")).encode()
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, row_group_size=200)
    return {
        "log.csv": csv,
        "log.tsv.gz": gzip.compress(frame.to_csv(index=False, sep="\t").encode()),
        "log.jsonl": lines,
        "log.jsonl.gz": gzip.compress(lines),
        "log.parquet": buf.getvalue(),
    }


@pytest.mark.parametrize("name", list(encodings(shop_log(10))))
@pytest.mark.parametrize(
    "clean",
    [CleanOptions(), CleanOptions(min_user_interactions=16, min_item_interactions=8)],
    ids=["plain", "k-core"],
)
def test_streamed_log_equals_the_whole_file_path(streaming, name, clean):
    data = encodings(shop_log())[name]
    streamed = load_or_message(data, name, clean=clean)
    assert_same(streamed, whole_file(data, name, clean=clean))
    assert any("exact duplicate rows removed" in note for note in streamed.notes)


def test_streamed_log_without_timestamps_keeps_the_file_order(streaming):
    frame = shop_log().drop(columns=["timestamp"])
    data = frame.to_csv(index=False).encode()
    streamed = load_or_message(data, "order.csv")
    assert_same(streamed, whole_file(data, "order.csv"))
    assert streamed.timestamps[:3].tolist() == sorted(streamed.timestamps[:3].tolist())


def test_float_ids_are_spelled_as_the_whole_file_spells_them(streaming):
    # The first blocks hold only whole numbers; a later one holds 3.5, so no id is an
    # integer and every id keeps its float spelling, in every block.
    items = np.r_[np.arange(200) % 7, [3.5]].astype(float)
    frame = pd.DataFrame({"user_id": np.arange(201) % 9, "item_id": items})
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf)
    streamed = load_or_message(buf.getvalue(), "f.parquet")
    assert_same(streamed, whole_file(buf.getvalue(), "f.parquet"))
    assert "1.0" in streamed.item_ids.tolist() and "3.5" in streamed.item_ids.tolist()


def test_every_loading_corpus_case_streams_to_the_same_dataset(streaming, monkeypatch):
    # Text blocks as big as in use: the corpus holds a row of a million characters.
    monkeypatch.setattr(stream, "BLOCK_BYTES", 8 << 20)
    checked = 0
    for case in all_cases():
        if case.expect != LOADS:
            continue
        kwargs = dict(clean=case.clean, max_bytes=case.max_bytes)
        if case.catalog is not None:
            kwargs |= dict(catalog_source=case.catalog[1](), catalog_name=case.catalog[0])
        data = case.data()
        assert_same(
            load_or_message(data, case.upload_name, **kwargs),
            whole_file(data, case.upload_name, **kwargs),
        )
        checked += 1
    assert checked >= 30


# --------------------------------------------------------------------------- bad rows
def lines_with(bad: str, at: int, header: str = "user_id,item_id,timestamp") -> bytes:
    rows = [f"u{k % 40},i{k % 30},{T0 + k}" for k in range(1500)]
    rows[at] = bad
    return ("\n".join([header, *rows]) + "\n").encode()


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (
            "u1,i1,yesterday",
            "the unparseable timestamp 'yesterday' in column 'timestamp' in row 1202",
        ),
        (",i1,1600000000", "an empty user id in column 'user_id' in row 1202"),
        ("u1,i1", "has 2 field(s) in row 1202"),
        ("u1,i1,1600000000,extra", "has 4 field(s) in row 1202"),
    ],
)
def test_a_bad_row_deep_in_a_streamed_file_is_named(streaming, bad, fragment):
    message = load_or_message(lines_with(bad, 1200), "deep.csv")
    assert isinstance(message, str) and fragment in message, message
    assert message_problems(message, "deep.csv") == []


def test_bytes_that_are_not_utf8_deep_in_a_streamed_file(streaming):
    data = lines_with("u\xe9,i1,1600000000", 1200).replace("\xe9".encode(), b"\xe9")
    message = load_or_message(data, "latin.csv")
    assert "is not UTF-8 text: byte b'\\xe9' on line 1202" in message


def test_bad_json_line_deep_in_a_streamed_file(streaming):
    rows = [json.dumps({"user": f"u{k % 40}", "item": f"i{k % 30}"}) for k in range(1500)]
    rows[1200] = json.dumps({"user": f"u{3}", "item": {"sku": "i1"}})
    message = load_or_message(("\n".join(rows) + "\n").encode(), "deep.jsonl")
    assert "has an object in field 'item' on line 1201 where line 1 has a string" in message


def test_a_cut_off_gzip_is_named_not_its_half_row(streaming):
    data = gzip.compress(lines_with("u1,i1,1600000000", 0))
    message = load_or_message(data[:-300], "cut.csv.gz")
    assert "is an incomplete gzip file" in message


# --------------------------------------------------------------------------- memory budget
def test_budget_is_half_of_this_machines_memory():
    assert limits.machine_memory() > 0
    assert limits.memory_budget() == int(limits.BUDGET_SHARE * limits.machine_memory())


def test_a_log_over_the_budget_gets_the_figure_and_the_way_out(streaming, monkeypatch):
    monkeypatch.setattr(limits, "memory_budget", lambda: 100 * limits.BYTES_PER_ROW)
    message = load_or_message(encodings(shop_log())["log.csv"], "huge.csv")
    assert re.search(r"'huge.csv' has at least [\d,]+ rows, which would take about", message)
    assert "over this machine's budget of" in message
    assert "load a sample of the rows, filter the log first" in message
    assert message_problems(message, "huge.csv") == []


def test_a_parquet_log_over_the_budget_is_refused_before_reading(streaming, monkeypatch):
    monkeypatch.setattr(limits, "memory_budget", lambda: 100 * limits.BYTES_PER_ROW)
    monkeypatch.setattr(stream.pq.ParquetFile, "iter_batches", None)  # reading would crash
    message = load_or_message(encodings(shop_log())["log.parquet"], "huge.parquet")
    assert f"has {len(shop_log()):,} rows, which would take about" in message


def test_the_whole_file_path_checks_the_budget_too(monkeypatch):
    monkeypatch.setattr(limits, "memory_budget", lambda: 1000)
    message = load_or_message(encodings(shop_log())["log.csv"], "big.csv")
    assert re.search(r"'big.csv' is [\d.]+ KB, which would take about [\d.]+ KB of memory", message)
    assert "over this machine's budget of 1.0 KB" in message
