"""JSON Lines input: read like CSV (same detection, dataset and sentences), rows named by line.

The corpus (tests/corpus/*.jsonl, checked by tests/test_corpus.py) holds the broken files;
these tests pin what a JSON Lines log turns into and the line numbering.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from core.errors import DataError
from core.ingestion.build import load_interactions
from core.ingestion.jsonl import LineNumbers, blank_lines, is_json_lines
from core.ingestion.read import read_table
from tests.helpers.corpus import message_problems

T0 = 1_600_000_000
ROWS = [
    {"user_id": "u1", "item_id": "a", "timestamp": T0 + 10, "event": "view"},
    {"user_id": "u1", "item_id": "a", "timestamp": T0 + 20, "event": "cart"},
    {"user_id": "u1", "item_id": "b", "timestamp": T0 + 30, "event": "purchase"},
    {"user_id": "u2", "item_id": "b", "timestamp": T0 + 5, "event": "view"},
    {"user_id": "u2", "item_id": "c", "timestamp": T0 + 6, "event": "view"},
    {"user_id": "u2", "item_id": "a", "timestamp": T0 + 7, "event": "view"},
]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def as_csv(rows: list[dict]) -> bytes:
    header = ",".join(rows[0])
    return "\n".join([header, *(",".join(str(v) for v in r.values()) for r in rows)]).encode()


def refused(data: bytes, name: str) -> str:
    with pytest.raises(DataError) as info:
        load_interactions(data, name)
    message = str(info.value)
    assert message_problems(message, name) == [], message
    return message


@pytest.mark.parametrize(
    "name, data",
    [
        ("events.jsonl", jsonl(ROWS)),
        ("events.ndjson", jsonl(ROWS)),
        # mtime=0: the same bytes in every collection (pytest-xdist's workers compare them).
        ("events.jsonl.gz", gzip.compress(jsonl(ROWS), mtime=0)),
        ("events.txt", jsonl(ROWS)),  # no suffix to go by: the first character is "{"
        ("events", b"\n\n  " + jsonl(ROWS)),
    ],
    ids=["jsonl", "ndjson", "jsonl.gz", "txt", "no-suffix"],
)
def test_json_lines_give_the_dataset_the_same_log_gives_as_csv(name, data):
    from_json = load_interactions(data, name)
    from_csv = load_interactions(as_csv(ROWS), "events.csv")
    for field in ("user_ids", "item_ids", "users", "items", "timestamps", "weights", "split"):
        assert np.array_equal(getattr(from_json, field), getattr(from_csv, field)), field
    assert from_json.events.tolist() == from_csv.events.tolist()
    assert from_json.notes == from_csv.notes


def test_json_values_keep_their_types_until_parsed():
    rows = [{"user": 7, "sku": "007", "ts": T0, "rating": 4.5, "gift": True}]
    frame = read_table(jsonl(rows * 2), "r.jsonl")
    assert frame.attrs["format"] == "jsonl"
    assert frame["sku"].tolist() == ["007", "007"]  # a quoted id keeps its leading zeros
    assert frame["user"].tolist() == [7, 7]
    data = load_interactions(jsonl(rows + [{**rows[0], "user": 8, "sku": "8"}]), "r.jsonl")
    assert data.user_ids.tolist() == ["7", "8"] and data.item_ids.tolist() == ["007", "8"]


def test_detection_by_name_or_by_first_character():
    assert is_json_lines(b"user_id,item_id\n", "log.jsonl")
    assert is_json_lines(b"user_id,item_id\n", "log.NDJSON.gz")
    assert is_json_lines(b'  \n{"a": 1}\n', "upload")
    assert not is_json_lines(b"user_id,item_id\n", "log.csv")


def test_blank_lines_are_counted_in_line_numbers():
    data = b'{"a": 1}\n\n  \r\n{"a": 2}\n\n{"a": 3}\n'
    assert blank_lines(data) == (2, 3, 5)
    line_of = LineNumbers(blank_lines(data))
    assert [line_of(p) for p in range(3)] == [1, 4, 6]
    assert blank_lines(b'{"a": 1}\n{"a": 2}') == ()


def test_missing_field_names_its_line_and_field():
    rows = jsonl(ROWS[:2]) + b"\n" + json.dumps({"user_id": "u3", "timestamp": T0}).encode()
    message = refused(rows + b"\n", "missing.jsonl")
    assert "a missing or empty item id in field 'item_id' on line 4" in message


def test_null_id_is_missing():
    rows = [ROWS[0], {**ROWS[1], "user_id": None}]
    message = refused(jsonl(rows), "null.jsonl")
    assert "a missing or empty user id in field 'user_id' on line 2" in message


def test_nested_time_field_names_the_field_and_its_first_line():
    rows = [{**r, "timestamp": {"seconds": r["timestamp"]}} for r in ROWS]
    message = refused(jsonl(rows), "nested.jsonl")
    assert "timestamp column 'timestamp'" in message
    assert "nested values (objects, the first on line 1)" in message


def test_unmapped_nested_fields_are_fine():
    rows = [{**r, "context": {"page": "home", "tags": [1, 2]}} for r in ROWS]
    assert load_interactions(jsonl(rows), "ctx.jsonl").n_interactions == len(ROWS)


def test_a_list_that_appears_later_names_line_and_field():
    rows = [*ROWS[:4], {**ROWS[4], "item_id": ["b", "c"]}, ROWS[5]]
    message = refused(jsonl(rows), "later.jsonl")
    assert "has a list in field 'item_id' on line 5 where line 1 has a string" in message


def test_invalid_json_names_the_line_and_character():
    data = jsonl(ROWS[:2]) + b'{"user_id": "u2" "item_id": "b"}\n'
    message = refused(data, "broken.jsonl")
    assert "has invalid JSON on line 3 (Expecting ',' delimiter at character 18)" in message


def test_json_array_gets_the_way_out():
    message = refused(json.dumps(ROWS, indent=2).encode(), "events.json")
    assert "is a JSON array, not JSON Lines" in message and "one JSON object per line" in message
