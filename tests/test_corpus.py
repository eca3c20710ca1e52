"""The bad-input corpus: every hostile or broken upload gets one clear sentence and writes
nothing; every valid-but-odd one loads with exactly its content.

The cases live in tests/helpers/corpus.py (files under tests/corpus/, listed in its
README, plus cases built here: 10,000 columns, million-character fields, gzip bombs,
path-like file names); hypothesis adds random bytes and random delimited text. Each case
runs the Data page's path (load, then register only on success) in a fresh data directory.
The last test prints how many cases were tried and handled and writes
tests/artifacts/corpus_summary.json.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("tests.helpers.corpus")

from core.errors import DataError  # noqa: E402
from core.ingestion.build import build_dataset, load_interactions  # noqa: E402
from core.ingestion.messages import display_name  # noqa: E402
from core.ingestion.options import ColumnMapping  # noqa: E402
from core.ingestion.read import read_table  # noqa: E402
from tests.helpers.corpus import (  # noqa: E402
    CORPUS_DIR,
    FILE_CASES,
    LOADS,
    Case,
    Outcome,
    all_cases,
    generated_cases,
    message_problems,
    run_case,
)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CASES = all_cases()
# Filled as the tests run; the summary test reports it (and runs the cases itself when it
# is run on its own).
OUTCOMES: dict[str, Outcome] = {}
GENERATED = {"examples": 0, "handled": 0}


def describe(outcome: Outcome) -> str:
    return f"{outcome.case}: " + "; ".join(outcome.problems)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_upload_is_loaded_or_refused_with_one_sentence_and_nothing_written(case: Case, home):
    outcome = run_case(case, home)
    OUTCOMES[case.name] = outcome
    assert outcome.problems == [], describe(outcome)
    assert outcome.loaded == (case.expect == LOADS)
    if not outcome.loaded:
        assert case.expect in outcome.message and case.shown_name in outcome.message


def test_every_corpus_file_has_a_case_and_the_readme_lists_it():
    on_disk = {
        p.name for p in CORPUS_DIR.iterdir() if p.is_file() and p.suffix not in (".py", ".md")
    }
    named = {c.name for c in FILE_CASES} | {"good_log.csv"}
    assert on_disk == named
    readme = (CORPUS_DIR / "README.md").read_text()
    assert [n for n in sorted(on_disk) if f"`{n}`" not in readme] == []
    assert all((CORPUS_DIR / n).stat().st_size <= 4096 for n in on_disk)
    assert len(on_disk) >= 50


def test_uploaded_names_are_shown_sanitised_and_never_opened(home, tmp_path):
    # A real file at the path the client claims: its content must never be read.
    decoy = tmp_path / "decoy.csv"
    decoy.write_text("user_id,item_id\nDECOY,DECOY\nDECOY2,DECOY2\n")
    good = (CORPUS_DIR / "good_log.csv").read_bytes()
    data = load_interactions(good, str(decoy))
    assert "DECOY" not in set(map(str, data.user_ids)) and data.n_interactions == 9
    assert data.name == "decoy"
    with pytest.raises(DataError) as caught:
        load_interactions(b"", str(decoy))
    assert str(caught.value).startswith("'decoy.csv' is empty;")
    assert str(decoy) not in str(caught.value)

    assert display_name("../../x.csv") == "x.csv"
    assert display_name("C:\\Windows\\x.csv") == "x.csv"
    assert display_name("a\x00b\n.csv") == "ab.csv"
    assert display_name("\u202ecsv.exe") == "csv.exe"
    assert display_name("/") == display_name("") == display_name(None) == "upload"
    long = display_name("x" * 5000 + ".parquet")
    assert len(long) == 80 and long.endswith("x.parquet") and "…" in long


def test_unmapped_nested_column_does_not_break_building_without_a_hash():
    raw = (CORPUS_DIR / "parquet_unmapped_list_column.parquet").read_bytes()
    frame = read_table(raw, "tags.parquet")
    assert frame.attrs["unusable_columns"] == {"tags": "nested values (lists or structs)"}
    data = build_dataset(frame, ColumnMapping(user="user_id", item="item_id"))
    assert data.n_interactions == 3 and len(data.content_hash) == 64
    with pytest.raises(DataError, match="The item column 'tags' of 'tags.parquet' holds nested"):
        build_dataset(frame, ColumnMapping(user="user_id", item="tags"))


# --------------------------------------------------------------------------- hypothesis
def _attempt(raw: bytes, name: str, max_bytes: int = 1 << 20) -> None:
    """Load ``raw``: it either loads or raises a one-sentence DataError; nothing else."""
    GENERATED["examples"] += 1
    try:
        data = load_interactions(raw, name, max_bytes=max_bytes)
    except DataError as exc:
        assert message_problems(str(exc), display_name(name)) == [], str(exc)
    else:
        assert data.n_users >= 2 and data.n_items >= 2
        assert len(data.users) == data.n_interactions
    GENERATED["handled"] += 1


MAGIC = st.sampled_from([b"", b"\x1f\x8b", b"PAR1", b"PK\x03\x04", b"\xef\xbb\xbf", b"\xff\xfe"])
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(prefix=MAGIC, body=st.binary(max_size=600))
def test_random_bytes_never_crash(prefix, body, home):
    _attempt(prefix + body, "random.bin")
    assert list(home.iterdir()) == []  # reading writes nothing anywhere


CELL = st.text(alphabet=st.sampled_from(list("ab1 9-.,;\t|\"'\r\n=<>é\u202e")), max_size=8)


@SETTINGS
@given(
    header=st.lists(
        st.sampled_from(["user_id", "item_id", "timestamp", "rating", "event", "title", "x"]),
        min_size=1,
        max_size=5,
    ),
    rows=st.lists(st.lists(CELL, min_size=1, max_size=5), max_size=8),
    sep=st.sampled_from([",", ";", "\t", "|", " "]),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    compress=st.booleans(),
)
def test_random_delimited_text_never_crashes(header, rows, sep, newline, compress, home):
    text = newline.join(sep.join(r) for r in [header, *rows]) + newline
    raw = text.encode()
    _attempt(gzip.compress(raw, mtime=0) if compress else raw, "log.csv")
    assert list(home.iterdir()) == []


@settings(SETTINGS, max_examples=80)
@given(
    users=st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=12),
    items=st.lists(st.integers(min_value=-(2**70), max_value=2**70), min_size=1, max_size=12),
    stamps=st.lists(
        st.one_of(
            st.integers(min_value=-(2**64), max_value=2**64),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from(["2024-01-31", "2024-13-01", "31/01/2024", "", "NaN"]),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_random_values_in_a_well_formed_log_never_crash(users, items, stamps, home):
    n = min(len(users), len(items), len(stamps))
    lines = ["user_id,item_id,timestamp"]
    for u, i, t in zip(users[:n], items[:n], stamps[:n], strict=True):
        quoted = '"' + u.replace('"', '""') + '"'
        lines.append(f"{quoted},{i},{t}")
    _attempt(("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"), "values.csv")


# --------------------------------------------------------------------------- summary
def test_corpus_summary_counts_tried_and_handled(tmp_path, monkeypatch):
    outcomes = dict(OUTCOMES)
    missing = [c for c in CASES if c.name not in outcomes]
    for i, case in enumerate(missing):  # run on its own (e.g. -k summary): run them here
        root = tmp_path / f"home-{i}"
        root.mkdir()
        monkeypatch.setenv("DISTILLERY_HOME", str(root))
        outcomes[case.name] = run_case(case, root)
    values = list(outcomes.values())
    summary = {
        "inputs_tried": len(values) + GENERATED["examples"],
        "inputs_handled": sum(o.handled for o in values) + GENERATED["handled"],
        "corpus_cases": len(values),
        "corpus_files": sum(o.origin == "file" for o in values),
        "generated_cases": sum(o.origin == "generated" for o in values),
        "hypothesis_examples": GENERATED["examples"],
        "loaded_as_valid": sum(o.loaded for o in values),
        "refused_with_message": sum(not o.loaded and not o.crashed for o in values),
        "crashes": sum(o.crashed for o in values),
        "partial_writes": sum(o.partial_write for o in values),
        "unhandled": [describe(o) for o in values if not o.handled],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "corpus_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\ncorpus: {summary['inputs_tried']} tried, {summary['inputs_handled']} handled")
    assert summary["unhandled"] == []
    assert summary["crashes"] == summary["partial_writes"] == 0
    assert summary["corpus_files"] >= 50 and len(generated_cases()) >= 20
