"""Tests for core.ingestion: readers, column detection, validation messages, cleaning, splits."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID
from core.errors import ConfigError, DataError
from core.files import bytes_sha256
from core.ingestion.build import build_dataset, load_interactions
from core.ingestion.catalog import read_catalog
from core.ingestion.clean import k_core
from core.ingestion.detect import detect_columns
from core.ingestion.options import CleanOptions, ColumnMapping, SplitOptions
from core.ingestion.read import MAX_UPLOAD_BYTES, read_table

T0 = 1_600_000_000  # 2020-09-13, a plausible unix time in seconds


def csv_bytes(header: str, *rows: str, sep: str = ",", newline: str = "\n") -> bytes:
    lines = [header.replace(",", sep), *(r.replace(",", sep) for r in rows)]
    return (newline.join(lines) + newline).encode()


# A small log whose split and stats are worked out by hand (see test_loo_split_by_hand).
HAND = csv_bytes(
    "user_id,item_id,timestamp",
    f"u1,a,{T0 + 100}",
    f"u1,b,{T0 + 300}",
    f"u1,c,{T0 + 200}",
    f"u1,d,{T0 + 300}",
    f"u2,a,{T0 + 50}",
    f"u2,b,{T0 + 60}",
    f"u3,c,{T0 + 10}",
    f"u3,a,{T0 + 20}",
    f"u3,b,{T0 + 30}",
)


def pairs(data) -> list[tuple[str, str]]:
    """(user id, item id) of every interaction, in the dataset's order."""
    return list(
        zip(data.user_ids[data.users].tolist(), data.item_ids[data.items].tolist(), strict=True)
    )


# --------------------------------------------------------------------------- readers
def test_csv_reads_ids_as_strings_and_keeps_leading_zeros():
    frame = read_table(csv_bytes("user_id,item_id", "007,0100", "8,0100"), "log.csv")
    assert frame["user_id"].tolist() == ["007", "8"]
    assert frame["item_id"].tolist() == ["0100", "0100"]
    assert frame.attrs["header_rows"] == 1


@pytest.mark.parametrize(
    ("sep", "name"),
    [(",", "log.csv"), ("\t", "log.tsv"), (";", "log.csv"), ("|", "log.txt"), ("\t", "log.txt")],
)
def test_delimiters_are_sniffed(sep, name):
    data = csv_bytes("user_id,item_id,timestamp", f"1,a,{T0}", f"2,b,{T0 + 1}", sep=sep)
    frame = read_table(data, name)
    assert frame.attrs["delimiter"] == sep
    assert list(frame.columns) == ["user_id", "item_id", "timestamp"]
    assert frame["item_id"].tolist() == ["a", "b"]


def test_space_aligned_columns_read():
    data = b"user  item    ts\n 1   a   1600000000\n22   b   1600000001 \n"
    frame = read_table(data, "aligned.txt")
    assert frame.attrs["delimiter"] == " "
    assert frame.to_dict("list") == {
        "user": ["1", "22"],
        "item": ["a", "b"],
        "ts": ["1600000000", "1600000001"],
    }


def test_quoted_fields_may_contain_the_delimiter():
    data = b'item_id,title\n1,"Socks, wool"\n2,Hat\n'
    assert read_table(data, "c.csv")["title"].tolist() == ["Socks, wool", "Hat"]


@pytest.mark.parametrize("name", ["log.csv.gz", "log.csv", "upload"])
def test_gzip_detected_by_magic_bytes(name):
    raw = csv_bytes("user_id,item_id,timestamp", f"1,a,{T0}", f"2,b,{T0}")
    frame = read_table(gzip.compress(raw), name)
    assert frame["user_id"].tolist() == ["1", "2"]


def test_parquet_detected_by_magic_bytes_and_typed_columns_converted():
    buf = io.BytesIO()
    pd.DataFrame(
        {
            "user_id": [1, 2, 2],
            "item_id": [10.0, 10.0, 20.0],  # integer ids stored as float must not become "10.0"
            "event_time": pd.to_datetime(
                ["2021-01-01", "2021-01-02", "2021-01-03 00:00:01"], format="ISO8601"
            ),
        }
    ).to_parquet(buf)
    frame = read_table(buf.getvalue(), "events.bin")
    assert frame.attrs["format"] == "parquet"
    data = build_dataset(frame, detect_columns(frame))
    assert data.user_ids.tolist() == ["1", "2"]
    assert data.item_ids.tolist() == ["10", "20"]
    base = int(pd.Timestamp("2021-01-01", tz="UTC").timestamp())
    assert data.timestamps.tolist() == [base, base + 86400, base + 2 * 86400 + 1]


def test_movielens_u_data_without_header():
    data = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t5\t881250950\n"
    frame = read_table(data, "u.data")
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert frame.attrs["header_rows"] == 0
    ds = load_interactions(data, "u.data")
    assert ds.user_ids.tolist() == ["186", "196"]
    assert ds.item_ids.tolist() == ["242", "302"]
    assert ds.weights.tolist() == [3.0, 3.0, 5.0]  # ratings are the weights
    assert ds.timestamps.tolist() == [891717742, 881250949, 881250950]


def test_headerless_three_columns_tell_rating_from_timestamp():
    assert list(read_table(b"1,2,4.5\n2,3,1\n", "r.csv").columns) == [
        "user_id",
        "item_id",
        "rating",
    ]
    assert list(read_table(f"1,2,{T0}\n2,3,{T0}\n".encode(), "t.csv").columns) == [
        "user_id",
        "item_id",
        "timestamp",
    ]


RECBOLE_INTER = (
    b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    b"196\t1\t3\t881250949.0\n196\t2\t4\t881250950\n186\t1\t5\t891717742\n"
)
RECBOLE_ITEM = (
    b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    b"1\tToy Story\t1995\tAnimation Children's Comedy\n"
    b"2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    b"3\tFour Rooms\t1995\tThriller\n"
)


def test_recbole_inter_and_item_files():
    frame = read_table(RECBOLE_INTER, "ml-100k.inter")
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    catalog = read_catalog(RECBOLE_ITEM, "ml-100k.item")
    assert catalog.to_dict("list") == {
        "item_id": ["1", "2", "3"],
        "title": ["Toy Story", "GoldenEye", "Four Rooms"],
        "category": ["Animation Children's Comedy", "Action Adventure Thriller", "Thriller"],
        "price": [pytest.approx(np.nan, nan_ok=True)] * 3,
    }
    ds = load_interactions(
        RECBOLE_INTER, "ml-100k.inter", catalog_source=RECBOLE_ITEM, catalog_name="ml-100k.item"
    )
    assert ds.name == "ml-100k"
    assert ds.item_ids.tolist() == ["1", "2"]
    assert ds.titles.tolist() == ["Toy Story", "GoldenEye"]
    assert ds.timestamps.tolist() == [891717742, 881250949, 881250950]


@pytest.mark.parametrize(
    "data",
    [
        b"\xef\xbb\xbfuser_id,item_id\r\n1,a\r\n2,b\r\n",  # BOM + CRLF (Excel's "CSV UTF-8")
        b"\xef\xbb\xbfuser_id,item_id\n1,a\n2,b\n",
        b"user_id,item_id\r\n1,a\r\n2,b",  # CRLF, no final newline
    ],
)
def test_bom_and_crlf_read_fine(data):
    frame = read_table(data, "excel.csv")
    assert list(frame.columns) == ["user_id", "item_id"]
    assert frame["item_id"].tolist() == ["a", "b"]


def test_path_and_bytes_give_the_same_dataset(tmp_path):
    path = tmp_path / "shop log.csv"
    path.write_bytes(HAND)
    from_path = load_interactions(path)
    from_bytes = load_interactions(HAND, "shop log.csv")
    assert from_path.name == from_bytes.name == "shop log"
    assert from_path.content_hash == from_bytes.content_hash == hashlib.sha256(HAND).hexdigest()
    assert pairs(from_path) == pairs(from_bytes)


def test_upload_name_is_never_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real.csv").write_bytes(b"garbage that is not a table")
    ds = load_interactions(HAND, "real.csv")  # bytes win; the name is only a label
    assert ds.n_interactions == 9


def test_bytes_sha256():
    assert bytes_sha256(b"abc") == hashlib.sha256(b"abc").hexdigest()


# --------------------------------------------------------------------------- detection
@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["user_id", "item_id"], ColumnMapping("user_id", "item_id")),
        (
            ["userId", "movieId", "rating", "timestamp"],
            ColumnMapping("userId", "movieId", "timestamp", "rating"),
        ),
        (
            ["timestamp", "visitorid", "event", "itemid", "transactionid"],
            ColumnMapping("visitorid", "itemid", "timestamp", None, "event"),
        ),
        (
            ["event_time", "event_type", "product_id", "category_id", "price", "user_id"],
            ColumnMapping("user_id", "product_id", "event_time", None, "event_type"),
        ),
        (
            ["Customer ID", "SKU", "Date", "Score", "Action"],
            ColumnMapping("Customer ID", "SKU", "Date", "Score", "Action"),
        ),
        (
            ["customer_id", "sku", "ts", "behavior"],
            ColumnMapping("customer_id", "sku", "ts", None, "behavior"),
        ),
    ],
)
def test_detect_columns(columns, expected):
    frame = pd.DataFrame({c: ["1"] for c in columns})
    assert detect_columns(frame) == expected


def test_manual_mapping_overrides_detection():
    data = csv_bytes("buyer,thing,when", f"1,a,{T0}", f"2,b,{T0 + 5}", f"2,a,{T0 + 9}")
    ds = load_interactions(data, "m.csv", mapping=ColumnMapping("buyer", "thing", "when"))
    assert pairs(ds) == [("1", "a"), ("2", "b"), ("2", "a")]
    assert ds.has_timestamps


def test_some_columns_by_hand_and_the_rest_detected():
    frame = pd.DataFrame({c: ["1"] for c in ("buyer", "item_id", "ts", "product", "event")})
    mapping = detect_columns(frame, "m.csv", given={"user": "buyer", "item": "product"})
    assert mapping == ColumnMapping("buyer", "product", "ts", None, "event")
    with pytest.raises(DataError, match=r"The item column 'nope' is not in 'm.csv' \(columns"):
        detect_columns(frame, "m.csv", given={"user": "buyer", "item": "nope"})
    with pytest.raises(DataError, match="mapped as both user and item"):
        detect_columns(frame, "m.csv", given={"user": "buyer", "item": "buyer"})


# --------------------------------------------------------------------------- timestamps
@pytest.mark.parametrize(
    "values",
    [
        [str(T0), str(T0 + 60), str(T0 + 3600)],  # unix seconds
        [str(T0 * 1000), str((T0 + 60) * 1000 + 999), str((T0 + 3600) * 1000)],  # ms
        [str(T0 * 10**6), str((T0 + 60) * 10**6), str((T0 + 3600) * 10**6)],  # microseconds
        [f"{T0}.0", f"{T0 + 60}.5", f"{T0 + 3600}.0"],  # float seconds (RecBole)
        ["2020-09-13 12:26:40", "2020-09-13 12:27:40", "2020-09-13 13:26:40"],
        ["2020-09-13T12:26:40Z", "2020-09-13T14:27:40+02:00", "2020-09-13T13:26:40Z"],
        ["2020-09-13 12:26:40 UTC", "2020-09-13 12:27:40 UTC", "2020-09-13 13:26:40 UTC"],
    ],
)
def test_timestamp_units_are_detected(values):
    data = csv_bytes("user_id,item_id,timestamp", *(f"u{k},i{k},{v}" for k, v in enumerate(values)))
    ds = build_dataset(read_table(data, "t.csv"), ColumnMapping("user_id", "item_id", "timestamp"))
    assert ds.timestamps.tolist() == [T0, T0 + 60, T0 + 3600]


def test_timestamp_unit_is_noted():
    ms = csv_bytes("user_id,item_id,ts", f"1,a,{T0 * 1000}", f"2,b,{T0 * 1000}")
    assert "timestamps read as unix milliseconds" in load_interactions(ms, "ms.csv").notes
    dates = csv_bytes("user_id,item_id,date", "1,a,2021-03-04", "2,b,2021-03-05")
    assert "timestamps read as dates" in load_interactions(dates, "d.csv").notes


def test_no_timestamps_uses_file_order_and_says_so():
    data = csv_bytes("user_id,item_id", "1,c", "1,a", "1,b", "2,a", "2,b", "2,c")
    ds = load_interactions(data, "order.csv")
    assert not ds.has_timestamps
    assert "no timestamps: file order used" in ds.notes
    assert pairs(ds)[:3] == [("1", "c"), ("1", "a"), ("1", "b")]
    assert ds.timestamps.tolist() == [0, 1, 2, 3, 4, 5]  # row positions stand in for time
    assert ds.split.tolist() == [SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST] * 2


# --------------------------------------------------------------------------- events
EVENTS = csv_bytes(
    "user_id,item_id,timestamp,event",
    f"1,a,{T0},view",
    f"1,a,{T0 + 1},cart",
    f"1,a,{T0 + 2},purchase",
    f"2,b,{T0},View",
    f"2,a,{T0 + 1},addtocart",
    f"2,b,{T0 + 2},wishlist",
)


def test_event_weights_default_and_custom():
    ds = load_interactions(EVENTS, "ev.csv", clean=CleanOptions(event_weights={"wishlist": 0.5}))
    assert ds.weights.tolist() == [1.0, 2.0, 3.0, 1.0, 2.0, 0.5]
    assert ds.events.tolist() == ["view", "cart", "purchase", "view", "addtocart", "wishlist"]
    heavier = CleanOptions(event_weights={"wishlist": 1.5, "purchase": 10})
    assert load_interactions(EVENTS, "ev.csv", clean=heavier).weights.tolist() == [
        1.0,
        2.0,
        10.0,
        1.0,
        2.0,
        1.5,
    ]


def test_event_weights_rise_along_the_funnel_and_the_notes_say_which():
    ds = load_interactions(EVENTS, "ev.csv", clean=CleanOptions(event_weights={"wishlist": 0.5}))
    by_event = dict(zip(ds.events.tolist(), ds.weights.tolist(), strict=True))
    assert by_event["view"] < by_event["cart"] < by_event["purchase"]
    assert "event weights used: wishlist 0.5, view 1, addtocart 2, cart 2, purchase 3" in ds.notes
    rated = csv_bytes("user_id,item_id,rating,event", "1,a,4,view", "1,b,5,cart", "2,a,3,view")
    notes = load_interactions(rated, "r.csv").notes
    assert "weights: the rating in column 'rating' (event types in column 'event' kept, " in (
        " ".join(notes)
    )


def test_event_weight_zero_drops_that_event_type():
    clean = CleanOptions(event_weights={"wishlist": 1.0, "view": 0})
    ds = load_interactions(EVENTS, "ev.csv", clean=clean)
    assert "view" not in ds.events.tolist()
    assert ds.n_interactions == 4
    assert "2 rows with event weight 0 dropped" in ds.notes


def test_rating_threshold_and_weights():
    data = csv_bytes(
        "user_id,item_id,rating", "1,a,5", "1,b,2", "2,a,4", "2,b,4.5", "3,b,3.9", "3,a,4"
    )
    ds = load_interactions(data, "r.csv", clean=CleanOptions(min_rating=4))
    assert pairs(ds) == [("1", "a"), ("2", "a"), ("2", "b"), ("3", "a")]
    assert ds.weights.tolist() == [5.0, 4.0, 4.5, 4.0]
    assert "2 rows with rating below 4 dropped" in ds.notes


# --------------------------------------------------------------------------- cleaning
DUPES = csv_bytes(
    "user_id,item_id,timestamp",
    f"1,a,{T0}",
    f"1,a,{T0}",  # duplicate of row 2
    f"1,b,{T0}",
    f"2,a,{T0}",
    f"2,a,{T0 + 1}",  # same pair, other time: not a duplicate
    f"1,a,{T0}",  # duplicate of row 2
)


def test_dedupe_removes_and_reports():
    ds = load_interactions(DUPES, "d.csv")
    assert ds.n_interactions == 4
    assert "2 exact duplicate rows removed" in ds.notes
    assert pairs(ds) == [("1", "a"), ("1", "b"), ("2", "a"), ("2", "a")]


def test_dedupe_off_still_reports():
    ds = load_interactions(DUPES, "d.csv", clean=CleanOptions(dedupe=False))
    assert ds.n_interactions == 6
    assert "2 exact duplicate rows found and kept (de-duplication is off)" in ds.notes


def test_same_time_different_event_is_not_a_duplicate():
    data = csv_bytes(
        "user_id,item_id,ts,event", f"1,a,{T0},view", f"1,a,{T0},cart", f"2,b,{T0},view"
    )
    ds = load_interactions(data, "e.csv")
    assert ds.n_interactions == 3
    assert not any("duplicate" in note for note in ds.notes)


# One pass of k-core (2, 2) only removes D; that starves item c, then user C, in later passes.
KCORE = csv_bytes("user_id,item_id", "A,a", "A,b", "B,a", "B,b", "C,b", "C,c", "D,c")


def test_k_core_iterates_to_a_fixed_point():
    clean = CleanOptions(min_user_interactions=2, min_item_interactions=2)
    ds = load_interactions(KCORE, "k.csv", clean=clean)
    assert pairs(ds) == [("A", "a"), ("A", "b"), ("B", "a"), ("B", "b")]
    assert "k-core filtering removed 3 rows in 4 passes" in ds.notes
    # A single pass would have left C's two rows: the fixed point is what makes it a k-core.
    users = np.array([0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 0, 1, 1, 2, 2])
    one_pass = (np.bincount(users)[users] >= 2) & (np.bincount(items)[items] >= 2)
    assert one_pass.sum() == 6


def naive_k_core(edges: list[tuple[int, int]], min_user: int, min_item: int) -> list[int]:
    """Reference: remove one violating edge at a time until none is left."""
    alive = list(range(len(edges)))
    while True:
        users = Counter(edges[e][0] for e in alive)
        items = Counter(edges[e][1] for e in alive)
        bad = [e for e in alive if users[edges[e][0]] < min_user or items[edges[e][1]] < min_item]
        if not bad:
            return alive
        alive.remove(bad[0])


@settings(max_examples=60, deadline=None)
@given(
    edges=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40),
    min_user=st.integers(1, 4),
    min_item=st.integers(1, 4),
)
def test_k_core_matches_brute_force(edges, min_user, min_item):
    users = np.array([u for u, _ in edges])
    items = np.array([i for _, i in edges])
    keep, _ = k_core(users, items, min_user, min_item)
    assert np.flatnonzero(keep).tolist() == naive_k_core(edges, min_user, min_item)


# --------------------------------------------------------------------------- splits
def test_loo_split_by_hand():
    ds = load_interactions(HAND, "hand.csv")
    assert ds.user_ids.tolist() == ["u1", "u2", "u3"]
    assert ds.item_ids.tolist() == ["a", "b", "c", "d"]
    # u1 by time: a(100) c(200) b(300, row 3) d(300, row 5): the tie keeps file order, so d is last.
    assert pairs(ds) == [
        ("u1", "a"),
        ("u1", "c"),
        ("u1", "b"),
        ("u1", "d"),
        ("u2", "a"),
        ("u2", "b"),
        ("u3", "c"),
        ("u3", "a"),
        ("u3", "b"),
    ]
    t, v, s = SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST
    assert ds.split.tolist() == [t, t, v, s, t, t, t, v, s]  # u2 has 2 interactions: train only
    assert ds.timestamps.tolist() == [T0 + x for x in (100, 200, 300, 300, 50, 60, 10, 20, 30)]
    assert ds.split_method == "loo"


def test_stats_by_hand():
    stats = load_interactions(HAND, "hand.csv").stats()
    span = 290 / 86400
    assert stats == {
        "users": 3,
        "items": 4,
        "interactions": 9,
        "density": 9 / 12,
        # item counts a=3 b=3 c=2 d=1: sorted 1,2,3,3 -> (5 - 2 * 19/9) / 4
        "gini_item_popularity": pytest.approx(7 / 36),
        "span_days": pytest.approx(span),
        "interactions_per_day": pytest.approx(9 / span),
        "train": 5,
        "valid": 2,
        "test": 2,
        # Training interactions per user: u1 a,c; u2 a,b (too short to split); u3 c.
        "median_history": 2.0,
        "p90_history": 2.0,
        # Held-out: u1 valid b, test d; u3 valid a, test b: none was bought before.
        "repeat_share": 0.0,
        "history_mask": "auto",
        "masks_history": True,
    }


def random_split_log() -> bytes:
    rows = []
    for user, count in (("big", 100), ("mid", 15), ("three", 3), ("two", 2)):
        rows += [f"{user},i{k},{T0 + k}" for k in range(count)]
    return csv_bytes("user_id,item_id,timestamp", *rows)


def test_random_split_proportions_and_small_users():
    ds = load_interactions(random_split_log(), "r.csv", split=SplitOptions("random", seed=3))
    counts = {}
    for u, user in enumerate(ds.user_ids):
        labels = ds.split[ds.users == u]
        counts[user] = [
            int((labels == code).sum()) for code in (SPLIT_TRAIN, SPLIT_VALID, SPLIT_TEST)
        ]
    assert counts == {"big": [80, 10, 10], "mid": [11, 2, 2], "three": [1, 1, 1], "two": [2, 0, 0]}
    assert ds.split_method == "random" and ds.split_seed == 3


def test_random_split_is_deterministic_under_the_seed():
    log = random_split_log()
    first = load_interactions(log, "r.csv", split=SplitOptions("random", seed=7)).split
    again = load_interactions(log, "r.csv", split=SplitOptions("random", seed=7)).split
    other = load_interactions(log, "r.csv", split=SplitOptions("random", seed=8)).split
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # The random split still keeps the arrays in time order, so it is not the LOO split.
    assert not np.array_equal(first, load_interactions(log, "r.csv").split)


def test_split_options_are_checked():
    with pytest.raises(ConfigError):
        SplitOptions("temporal")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        CleanOptions(min_user_interactions=0)
    with pytest.raises(ConfigError):
        CleanOptions(event_weights={"view": -1})


# --------------------------------------------------------------------------- catalog
CATALOG = b"product_id,name,category,price\na,Alpha socks,Socks,9.5\nb,Beta hat,,\nz,Zeta,Other,1\n"


def test_catalog_join_and_fallback_titles():
    ds = load_interactions(HAND, "hand.csv", catalog_source=CATALOG, catalog_name="cat.csv")
    assert ds.titles.tolist() == ["Alpha socks", "Beta hat", "c", "d"]
    assert ds.categories.tolist() == ["Socks", "", "", ""]
    np.testing.assert_array_equal(ds.prices, [9.5, np.nan, np.nan, np.nan])
    assert "2 items have no catalog entry: their id is shown as the title" in ds.notes
    described = ds.describe_items([0, 2])
    assert described["title"].tolist() == ["Alpha socks", "c"]


def test_without_catalog_titles_are_ids():
    ds = load_interactions(HAND, "hand.csv")
    assert ds.titles.tolist() == ds.item_ids.tolist()
    assert ds.categories.tolist() == ["", "", "", ""]
    assert np.isnan(ds.prices).all()


def test_catalog_columns_can_be_given():
    data = b"code,label,dept,cost\na,Alpha,X,3\nb,Beta,Y,4\n"
    cat = read_catalog(data, "c.csv", item="code", title="label", category="dept", price="cost")
    assert cat.to_dict("list") == {
        "item_id": ["a", "b"],
        "title": ["Alpha", "Beta"],
        "category": ["X", "Y"],
        "price": [3.0, 4.0],
    }


# --------------------------------------------------------------------------- hashing
def test_content_hash_of_frame_when_no_bytes():
    frame = read_table(HAND, "hand.csv")
    mapping = detect_columns(frame)
    first = build_dataset(frame, mapping).content_hash
    assert first == build_dataset(frame.copy(), mapping).content_hash
    changed = frame.copy()
    changed.loc[0, "item_id"] = "zz"
    assert build_dataset(changed, mapping).content_hash != first
    assert build_dataset(frame, mapping, content_hash="abc").content_hash == "abc"


# --------------------------------------------------------------------------- bad input
SPREADSHEET = "spreadsheet numbering, the header is row 1"
FUTURE = int(time.time()) + 10 * 86400


def _bad_cases():
    ok_rows = [f"1,a,{T0}", f"2,b,{T0 + 1}"]
    hdr = "user_id,item_id,timestamp"
    return [
        # (id, name, data, kwargs, fragments the message must contain)
        ("empty", "empty.csv", b"", {}, ["'empty.csv'", "empty"]),
        ("blank", "blank.csv", b"\n \r\n\n", {}, ["'blank.csv'", "empty"]),
        (
            "binary",
            "photo.csv",
            bytes(range(256)) * 8,
            {},
            ["'photo.csv'", "binary"],
        ),
        (
            "not utf-8",
            "latin.csv",
            b"user_id,item_id\n1,caf\xe9\n2,b\n",
            {},
            ["'latin.csv'", "not UTF-8", "line 2", "UTF-8"],
        ),
        (
            "not utf-8 past the sniffed sample",
            "latin.csv",
            csv_bytes(hdr, *[f"{k},a,{T0}" for k in range(5000)])
            + b"9,caf\xe9,"
            + str(T0).encode()
            + b"\n",
            {},
            ["'latin.csv'", "not UTF-8", "line 5002"],
        ),
        (
            "excel",
            "book.xlsx",
            b"PK\x03\x04" + b"\x00" * 100,
            {},
            ["'book.xlsx'", "save the sheet as CSV"],
        ),
        (
            "unknown delimiter: one column",
            "colon.csv",
            b"user_id:item_id:timestamp\n1:a:1600000000\n2:b:1600000000\n",
            {},
            ["'colon.csv'", "only one column", "separate the columns"],
        ),
        (
            "mixed delimiter: too few fields",
            "mixed.csv",
            csv_bytes(hdr, ok_rows[0], f"2;b;{T0}", ok_rows[1]),
            {},
            ["'mixed.csv'", "1 field(s) in row 3", "3 column(s)", "one delimiter"],
        ),
        (
            "too many fields",
            "extra.csv",
            csv_bytes(hdr, *ok_rows, f"3,c,{T0},oops"),
            {},
            ["'extra.csv'", "4 field(s) in row 4"],
        ),
        (
            "header only",
            "head.csv",
            b"user_id,item_id,timestamp\n",
            {},
            ["'head.csv'", "no data rows"],
        ),
        (
            "no user column",
            "cols.csv",
            csv_bytes("shopper_name,item_id", "ann,a", "bob,b"),
            {},
            ["'cols.csv'", "user", "'shopper_name'", "'item_id'"],
        ),
        (
            "mapping names a missing column",
            "map.csv",
            csv_bytes(hdr, *ok_rows),
            {"mapping": ColumnMapping("user_id", "sku")},
            ["'map.csv'", "'sku'", "'user_id', 'item_id', 'timestamp'"],
        ),
        (
            "null user id",
            "nulls.csv",
            csv_bytes(hdr, ok_rows[0], f",b,{T0}", ok_rows[1]),
            {},
            ["'nulls.csv'", "empty user id", "'user_id'", f"row 3 ({SPREADSHEET})"],
        ),
        (
            "blank item id",
            "nulls.csv",
            csv_bytes(hdr, f"1,  ,{T0}", *ok_rows),
            {},
            ["'nulls.csv'", "empty item id", "'item_id'", "row 2 ("],
        ),
        (
            "non-numeric rating",
            "stars.csv",
            csv_bytes("user_id,item_id,rating", "1,a,4", "2,b,five", "3,b,x"),
            {},
            ["'stars.csv'", "'five'", "'rating'", "row 3 (", "and 1 more row(s)"],
        ),
        (
            "unparseable timestamp",
            "dates.csv",
            csv_bytes("user_id,item_id,date", "1,a,2021-01-01", "2,b,2021-01-02", "3,c,not a date"),
            {},
            ["'dates.csv'", "'not a date'", "'date'", "row 4 ("],
        ),
        (
            "negative timestamp",
            "neg.csv",
            csv_bytes(hdr, *ok_rows, f"3,c,-{T0}"),
            {},
            ["'neg.csv'", "'timestamp'", "row 4 (", "before 1990"],
        ),
        (
            "timestamp before 1990",
            "old.csv",
            csv_bytes("user_id,item_id,date", "1,a,2021-01-01", "2,b,1989-12-31"),
            {},
            ["'old.csv'", "'1989-12-31'", "row 3 (", "before 1990"],
        ),
        (
            "timestamp in the future",
            "future.csv",
            csv_bytes(hdr, *ok_rows, f"3,c,{FUTURE}"),
            {},
            ["'future.csv'", f"'{FUTURE}'", "row 4 (", "in the future"],
        ),
        (
            "seconds mistaken for milliseconds",
            "units.csv",
            csv_bytes(hdr, f"1,a,{T0 * 1000}", f"2,b,{T0 * 1000}", f"3,c,{T0}"),
            {},
            ["'units.csv'", "row 4 (", "unit"],
        ),
        (
            "unknown event",
            "ev.csv",
            csv_bytes("user_id,item_id,event", "1,a,view", "2,b,wishlist"),
            {},
            ["'ev.csv'", "'wishlist'", "'event'", "row 3 (", "weight"],
        ),
        (
            "single user",
            "one.csv",
            csv_bytes(hdr, f"1,a,{T0}", f"1,b,{T0}"),
            {},
            ["'one.csv'", "only one user", "'1'", "'user_id'"],
        ),
        (
            "single item after the rating threshold",
            "item.csv",
            csv_bytes("user_id,item_id,rating", "1,a,5", "2,a,5", "2,b,1"),
            {"clean": CleanOptions(min_rating=4)},
            ["'item.csv'", "only one item", "'a'", "'item_id'"],
        ),
        (
            "rating threshold removes everything",
            "low.csv",
            csv_bytes("user_id,item_id,rating", "1,a,1", "2,b,2"),
            {"clean": CleanOptions(min_rating=4)},
            ["'low.csv'", "'rating'", "lower the rating threshold"],
        ),
        (
            "k-core removes everything",
            "sparse.csv",
            csv_bytes(hdr, *ok_rows, f"3,c,{T0}"),
            {"clean": CleanOptions(min_user_interactions=5)},
            ["'sparse.csv'", "removed every row", "at least 5 interactions per user"],
        ),
        (
            "over the size limit",
            "huge.csv",
            csv_bytes(hdr, *ok_rows),
            {"max_bytes": 10},
            ["'huge.csv'", "56 bytes, over the 10 bytes upload limit"],
        ),
        (
            "catalog matches nothing",
            "log.csv",
            csv_bytes(hdr, *ok_rows),
            {"catalog_source": b"sku,title\nx,X\ny,Y\n", "catalog_name": "cat.csv"},
            ["'cat.csv'", "'log.csv'", "'sku'", "'x' in row 2 (", "None of the 2 item ids"],
        ),
        (
            "duplicate column names",
            "twice.csv",
            csv_bytes("user_id,item_id,item_id", "1,a,b", "2,b,c"),
            {},
            ["'twice.csv'", "'item_id'", "unique"],
        ),
        (
            "parquet name without parquet bytes",
            "log.parquet",
            csv_bytes(hdr, *ok_rows),
            {},
            ["'log.parquet'", "Parquet"],
        ),
    ]


@pytest.mark.parametrize(
    ("name", "data", "kwargs", "fragments"),
    [case[1:] for case in _bad_cases()],
    ids=[case[0] for case in _bad_cases()],
)
def test_bad_input_raises_one_clear_sentence(name, data, kwargs, fragments):
    with pytest.raises(DataError) as info:
        load_interactions(data, name, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert message.endswith(".")
    assert "\n" not in message
    assert not re.search(r"\.\s+[A-Z]", message), f"more than one sentence: {message!r}"


def test_oversized_path_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: nothing is written or read
    with pytest.raises(DataError, match="huge.csv.*over the"):
        load_interactions(path)


def test_gzip_bomb_is_refused():
    bomb = gzip.compress(b"user_id,item_id\n" + b"1,a\n" * 50_000)
    with pytest.raises(DataError, match="expands to more than"):
        read_table(bomb, "bomb.csv.gz", max_bytes=len(bomb) + 1)


def test_gzip_members_and_zero_padding_are_read_like_gzip_does():
    raw = csv_bytes("user_id,item_id", "1,a", "2,b", "3,c")
    two_members = gzip.compress(raw[:20]) + gzip.compress(raw[20:])
    # Tape and block devices pad a gzip file with zeros; gunzip ignores them.
    frame = read_table(two_members + bytes(512), "log.csv.gz")
    assert frame["item_id"].tolist() == ["a", "b", "c"]
    with pytest.raises(DataError, match="has data that is not gzip after"):
        read_table(two_members + b"PK", "log.csv.gz")
    with pytest.raises(DataError, match="is an incomplete gzip file"):
        read_table(two_members[:-6], "log.csv.gz")


def test_parquet_rows_are_counted_from_one():
    buf = io.BytesIO()
    pd.DataFrame({"user_id": ["1", None], "item_id": ["a", "b"]}).to_parquet(buf)
    with pytest.raises(DataError, match=r"data row 2 \(counting data rows from 1\)"):
        load_interactions(buf.getvalue(), "p.parquet")


def test_headerless_rows_are_counted_from_one():
    with pytest.raises(DataError, match=r"row 2 \(the file has no header row\)"):
        load_interactions(b"1\t2\t3\t881250949\n1\t3\tx\t881250949\n", "u.data")


def test_catalog_without_descriptive_columns_is_refused():
    with pytest.raises(DataError, match="no title, category or price column"):
        read_catalog(b"item_id,stock\na,1\n", "stock.csv")


def test_catalog_bad_price_names_row():
    with pytest.raises(DataError, match=r"'\$5'.*'price'.*row 3"):
        read_catalog(b"item_id,title,price\na,A,4\nb,B,$5\n", "cat.csv")


def test_plain_dataframe_with_typed_columns():
    frame = pd.DataFrame({"user": [10, 10, 20], "item": [1, 2, 1], "rating": [5, 3, 4]})
    ds = build_dataset(frame, detect_columns(frame), name="typed")
    assert ds.user_ids.tolist() == ["10", "20"]
    assert ds.item_ids.tolist() == ["1", "2"]
    assert ds.weights.tolist() == [5.0, 3.0, 4.0]
    assert ds.name == "typed"
    bad = frame.assign(rating=[5, None, 4])
    with pytest.raises(DataError, match=r"'upload'.*'rating'.*data row 2 \(counting data rows"):
        build_dataset(bad, detect_columns(bad))


def test_numeric_ids_are_indexed_in_numeric_order():
    data = csv_bytes("user_id,item_id", "10,b", "9,a", "10,a", "100,b", "9,b")
    ds = load_interactions(data, "n.csv")
    assert ds.user_ids.tolist() == ["9", "10", "100"]


def test_catalog_frame_with_duplicates_and_missing_columns():
    frame = read_table(HAND, "hand.csv")
    catalog = pd.DataFrame({"item_id": ["b", "b", "a", "c"], "title": ["Bee", "Dup", "", None]})
    ds = build_dataset(frame, detect_columns(frame), catalog=catalog)
    assert ds.titles.tolist() == ["a", "Bee", "c", "d"]  # empty and missing titles fall back
    assert ds.categories.tolist() == ["", "", "", ""]
    assert np.isnan(ds.prices).all()
    assert "1 items have no catalog entry: their id is shown as the title" in ds.notes
