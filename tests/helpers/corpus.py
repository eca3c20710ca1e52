"""The bad-input corpus as data: every case, what it must do, and how one is run.

Shared by tests/test_corpus.py and bench/reliability.py. A case is an upload (bytes and the
file name the client sent) plus the outcome it must have:

- ``expect=LOADS``: it is valid, if odd; it loads, its content is checked, it is registered
  in the store and read back unchanged;
- otherwise ``expect`` is a fragment of the `DataError` message it must raise; the message
  must be one clear sentence naming the file (as `core.ingestion.messages.display_name`
  shows it) and saying what to do, and neither the store nor the data directory may hold
  anything new.

`run_case` goes through the same path as the Data page:
`core.ingestion.build.load_interactions`, then `core.ingestion.registry.register_dataset`
only when loading succeeded. It never raises; it returns an `Outcome` whose ``problems``
list says what went wrong, so that a benchmark can count failures and a test can show them.
"""

from __future__ import annotations

import gzip
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.errors import DataError
from core.ingestion.build import load_interactions
from core.ingestion.messages import display_name
from core.ingestion.options import CleanOptions

CORPUS_DIR = Path(__file__).resolve().parent.parent / "corpus"
LOADS = "<loads>"
T0 = 1_600_000_000
# A message longer than this is not "one clear sentence" any more.
MAX_MESSAGE_CHARS = 400
# What may exist in a fresh data directory after a failed upload: the store itself.
STORE_FILES = {"distillery.db", "distillery.db-wal", "distillery.db-shm", "datasets"}


def corpus_file(name: str) -> Callable[[], bytes]:
    return lambda: (CORPUS_DIR / name).read_bytes()


@dataclass(frozen=True)
class Case:
    """One upload and what it must do."""

    name: str
    data: Callable[[], bytes]
    expect: str  # LOADS, or a fragment of the expected DataError message
    display: str | None = None  # the file name the client sends (default: ``name``)
    check: Callable[[InteractionData], None] | None = None  # content checks for LOADS
    max_bytes: int = 1 << 22
    clean: CleanOptions = field(default_factory=CleanOptions)
    catalog: tuple[str, Callable[[], bytes]] | None = None  # (file name, bytes)
    # The case exercises the catalog: its name is the one the message must carry.
    about_catalog: bool = False
    origin: str = "file"  # "file": kept under tests/corpus/; "generated": built here

    @property
    def upload_name(self) -> str:
        return self.name if self.display is None else self.display

    @property
    def shown_name(self) -> str:
        """The name the error message must quote."""
        if self.about_catalog and self.catalog is not None:
            return display_name(self.catalog[0])
        return display_name(self.upload_name)


@dataclass
class Outcome:
    case: str
    origin: str
    expected: str
    loaded: bool = False
    message: str = ""
    crashed: bool = False  # any exception other than DataError
    partial_write: bool = False  # a failed upload left something in the store or on disk
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def handled(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- checks
def _ids(values: np.ndarray) -> list[str]:
    return [str(v) for v in values]


def good_log(data: InteractionData) -> None:
    """The 3 users x 3 items log of make_corpus.GOOD, whatever the encoding around it."""
    assert _ids(data.user_ids) == ["u1", "u2", "u3"], data.user_ids
    assert _ids(data.item_ids) == ["i1", "i2", "i3"], data.item_ids
    assert data.n_interactions == 9 and data.has_timestamps
    # User u sees i1, i2, i3 at T0 + 100u + i: i3 is the test item, i2 validation, i1 train.
    expected_split = {0: SPLIT_TRAIN, 1: SPLIT_VALID, 2: SPLIT_TEST}
    for u, i, s, t in zip(data.users, data.items, data.split, data.timestamps, strict=True):
        assert s == expected_split[int(i)], (u, i, s)
        assert t == T0 + 100 * (int(u) + 1) + int(i) + 1


def exact_ids(users: set[str], items: set[str], n: int) -> Callable[[InteractionData], None]:
    def check(data: InteractionData) -> None:
        assert set(_ids(data.user_ids)) == users, data.user_ids
        assert set(_ids(data.item_ids)) == items, data.item_ids
        assert data.n_interactions == n

    return check


def catalog_texts(titles: list[str], categories: list[str]) -> Callable[[InteractionData], None]:
    """Titles and categories of i1, i2, i3 kept as the exact text of the catalog."""

    def check(data: InteractionData) -> None:
        good_log(data)
        assert _ids(data.titles) == titles, data.titles
        assert _ids(data.categories) == categories, data.categories

    return check


def udata(data: InteractionData) -> None:
    # 1 10 5 881250949 / 2 20 3 891717742 / 1 20 4 878887116: no header, tab-separated.
    assert _ids(data.user_ids) == ["1", "2"] and _ids(data.item_ids) == ["10", "20"]
    assert data.users.tolist() == [0, 0, 1] and data.items.tolist() == [1, 0, 1]
    assert data.weights.tolist() == [4.0, 5.0, 3.0]  # the rating column, in time order
    assert data.timestamps.tolist() == [878887116, 881250949, 891717742]


def message_problems(message: str, shown_name: str) -> list[str]:
    """Why ``message`` is not one clear sentence naming the file and saying what to do."""
    problems = []
    if f"'{shown_name}'" not in message:
        problems.append(f"does not name the file '{shown_name}'")
    if "\n" in message or "\r" in message:
        problems.append("spans several lines")
    if len(message) > MAX_MESSAGE_CHARS:
        problems.append(f"is {len(message)} characters long")
    if not message.endswith("."):
        problems.append("does not end with a full stop")
    if ";" not in message:
        problems.append("does not say what to do (no '; ...' clause)")
    # Quoted values may hold anything; outside them, a full stop followed by a capital
    # starts a second sentence.
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "''", message)
    if re.search(r"[.!?] +[A-Z]", unquoted):
        problems.append("has more than one sentence")
    if "Traceback" in message or "Error:" in message:
        problems.append("shows an exception, not a sentence")
    return problems


def leftovers(home: Path) -> list[str]:
    """Files an upload may not leave behind: anything but the store and an empty folder."""
    found = []
    for path in sorted(home.rglob("*")):
        relative = path.relative_to(home).as_posix()
        if relative in STORE_FILES:
            continue
        found.append(relative)
    return found


# --------------------------------------------------------------------------- running
def run_case(case: Case, home: Path) -> Outcome:
    """Upload ``case`` into the empty data directory ``home`` (DISTILLERY_HOME points there)."""
    from core.ingestion.registry import load_dataset, register_dataset
    from core.store import Store

    outcome = Outcome(case.name, case.origin, case.expect)
    started = time.perf_counter()
    data = None
    with Store() as store:
        try:
            raw = case.data()
            catalog = case.catalog
            data = load_interactions(
                raw,
                case.upload_name,
                catalog_source=None if catalog is None else catalog[1](),
                catalog_name=None if catalog is None else catalog[0],
                clean=case.clean,
                max_bytes=case.max_bytes,
            )
        except DataError as exc:
            outcome.message = str(exc)
        except Exception as exc:  # noqa: BLE001 - a crash is what this counts
            outcome.crashed = True
            outcome.message = f"{type(exc).__name__}: {exc}"
            outcome.problems.append(f"crashed: {traceback.format_exc(limit=-3)}")

        if data is not None:
            outcome.loaded = True
            if case.expect != LOADS:
                outcome.problems.append(f"loaded, but should fail with '{case.expect}'")
            else:
                _check_loaded(case, data, store, outcome, register_dataset, load_dataset)
        elif not outcome.crashed:
            if case.expect == LOADS:
                outcome.problems.append(f"should load, but failed: {outcome.message}")
            elif case.expect not in outcome.message:
                outcome.problems.append(
                    f"message {outcome.message!r} lacks the fragment {case.expect!r}"
                )
            outcome.problems += [
                f"message {p}" for p in message_problems(outcome.message, case.shown_name)
            ]
        if not outcome.loaded:
            written = leftovers(home)
            datasets = store.list_datasets()
            if written or datasets:
                outcome.partial_write = True
                outcome.problems.append(
                    f"a failed upload wrote {written} and {len(datasets)} dataset row(s)"
                )
    outcome.seconds = time.perf_counter() - started
    return outcome


def _check_loaded(case, data, store, outcome, register_dataset, load_dataset) -> None:
    try:
        if case.check is not None:
            case.check(data)
        record = register_dataset(store, data, source=case.shown_name)
        if [d.id for d in store.list_datasets()] != [record.id]:
            outcome.problems.append("registering did not create exactly one dataset")
        again = load_dataset(store, record.id)
        if case.check is not None:
            case.check(again)  # the stored copy holds exactly the same text
        if record.name != data.name or "/" in record.name or "\x00" in record.name:
            outcome.problems.append(f"stored dataset name {record.name!r} is not safe")
    except AssertionError as exc:
        outcome.problems.append(f"content check failed: {exc!r}")
    except Exception as exc:  # noqa: BLE001
        outcome.crashed = True
        outcome.problems.append(f"crashed after loading: {traceback.format_exc(limit=-3)}")
        outcome.message = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the cases
def _file(name: str, expect: str, **kwargs) -> Case:
    return Case(name, corpus_file(name), expect, **kwargs)


def _with_catalog(catalog: str, expect: str, **kwargs) -> Case:
    return Case(
        catalog,
        corpus_file("good_log.csv"),
        expect,
        display="good_log.csv",
        catalog=(catalog, corpus_file(catalog)),
        about_catalog=True,
        **kwargs,
    )


BEYOND = "before 1990 or more than a day in the future"

FILE_CASES: list[Case] = [
    # empty and binary
    _file("empty.csv", "is empty"),
    _file("whitespace_only.csv", "is empty"),
    _file("only_newlines.csv", "is empty"),
    _file("binary_random.csv", "is a binary file"),
    _file("png_renamed.csv", "is a binary file"),
    _file("nul_in_text.csv", "is a binary file"),
    _file("pdf_renamed.csv", "is a PDF document"),
    # encodings (UTF-16 is refused with a sentence saying to save as UTF-8; see README)
    _file("latin1.csv", "is not UTF-8 text: byte b'\\xe9' on line 2"),
    _file("cp1252_smart_quotes.csv", "is not UTF-8 text: byte b'\\x93' on line 2"),
    _file("overlong_utf8.csv", "is not UTF-8 text: byte b'\\xc0' on line 3"),
    _file("utf16le_bom.csv", "is UTF-16 text; save it as UTF-8"),
    _file("utf16be_bom.csv", "is UTF-16 text; save it as UTF-8"),
    _file("utf16le_no_bom.csv", "is UTF-16 text; save it as UTF-8"),
    _file("utf8_bom.csv", LOADS, check=good_log),
    # delimiters, line ends, quoting
    _file("one_column.csv", "has only one column"),
    _file("mixed_delimiters.csv", "has 1 field(s) in row 2"),
    _file("ragged_rows.csv", "has 4 field(s) in row 3"),
    _file("semicolon_decimal_comma.csv", "the non-numeric rating '4,5'"),
    _file("unclosed_quote.csv", "item id that runs over several lines in column 'item_id'"),
    _file("tab_named_csv.csv", LOADS, check=good_log),
    _file("crlf.csv", LOADS, check=good_log),
    _file("cr_only.csv", LOADS, check=good_log),
    _file("mixed_line_endings.csv", LOADS, check=good_log),
    _file(
        "quoted_delimiters.csv",
        LOADS,
        check=exact_ids({"u,1", "u,2"}, {"i,1", 'i "2"'}, 4),
    ),
    _file("headerless_udata.data", LOADS, check=udata),
    # header problems
    _file("header_only.csv", "but no data rows"),
    _file("header_only_crlf.csv", "but no data rows"),
    _file("duplicate_header.csv", "has two columns named 'user_id'"),
    _file("duplicate_header_recbole.inter", "has two columns named 'user_id'"),
    _file("missing_user_column.csv", "holds the user ids"),
    _file("missing_item_column.csv", "holds the item ids"),
    _file("missing_both_columns.csv", "holds the user and the item ids"),
    # values
    _file("null_user_id.csv", "an empty user id in column 'user_id' in row 3"),
    _file("null_item_id.csv", "an empty item id in column 'item_id' in row 3"),
    _file("blank_id_spaces.csv", "an empty user id in column 'user_id' in row 3"),
    _file("nonnumeric_rating.csv", "the non-numeric rating 'five' in column 'rating' in row 3"),
    _file("rating_nan.csv", "an empty rating in column 'rating' in row 2"),
    _file("rating_infinite.csv", "rating 'inf' in column 'rating' in row 3"),
    _file("unparseable_timestamp.csv", "the unparseable timestamp 'yesterday'"),
    _file("mixed_timestamp_garbage.csv", "the unparseable timestamp '31/31/2024'"),
    _file("negative_timestamp.csv", BEYOND),
    _file("timestamp_year_9999.csv", BEYOND),
    _file("timestamp_overflows_int64.csv", BEYOND),
    _file("timestamp_1e300.csv", BEYOND),
    _file("unknown_event.csv", "the event type 'teleport'"),
    _file(
        "ids_overflow_int64.csv",
        LOADS,
        check=exact_ids(
            {"99999999999999999999999", "99999999999999999999998", "-9223372036854775809"},
            {"18446744073709551616", "1"},
            3,
        ),
    ),
    # too little data left
    _file("single_user.csv", "has only one user ('u1'"),
    _file("single_item.csv", "has only one item ('i1'"),
    _file(
        "single_user_after_rating_filter.csv",
        "has only one user ('u1'",
        clean=CleanOptions(min_rating=4),
    ),
    _file(
        "all_filtered_by_kcore.csv",
        "K-core filtering",
        clean=CleanOptions(min_user_interactions=4),
    ),
    _file(
        "no_rating_above_threshold.csv",
        "has a rating of at least 3",
        clean=CleanOptions(min_rating=3),
    ),
    # size limits, archives, compression
    _file("over_size_limit.csv", "over the 1.0 KB upload limit", max_bytes=1000),
    _file("xlsx_renamed.csv", "Excel .xlsx workbook"),
    _file("xls_renamed.csv", "is an Excel .xls workbook"),
    _file("zip_bomb.csv", "is a ZIP archive"),
    _file("gzip_bomb.csv.gz", "expands to more than 160.0 KB", max_bytes=16_000),
    _file("gzip_truncated.csv.gz", "is an incomplete gzip file"),
    _file("gzip_corrupt.csv.gz", "cannot be decompressed"),
    _file("gzip_twice.csv.gz", "is compressed twice"),
    _file("gzip_trailing_garbage.csv.gz", "has data that is not gzip"),
    _file("gzip_multi_member.csv.gz", LOADS, check=good_log),
    _file("bzip2.csv", "is bzip2-compressed"),
    _file("xz.csv", "is xz-compressed"),
    # Parquet
    _file("parquet_list_user.parquet", "user column 'user_id' of"),
    _file("parquet_struct_item.parquet", "holds nested values"),
    _file("parquet_map_item.parquet", "holds nested values"),
    _file("parquet_binary_user.parquet", "holds binary data that is not UTF-8 text"),
    _file("parquet_infinite_id.parquet", "the infinite user id inf"),
    _file("parquet_duplicate_columns.parquet", "has two columns named 'user_id'"),
    _file("parquet_one_column.parquet", "has only one column"),
    _file("parquet_no_rows.parquet", "has columns but no rows"),
    _file("parquet_truncated.parquet", "looks like Parquet but cannot be read"),
    _file("parquet_binary_text_ids.parquet", LOADS, check=exact_ids({"u1", "u2"}, {"i1", "i2"}, 3)),
    _file(
        "parquet_unmapped_list_column.parquet",
        LOADS,
        check=exact_ids({"1", "2"}, {"10", "20"}, 3),
    ),
    # Float ids beyond 2**53 are not exact integers, so the column keeps its float spelling.
    _file("parquet_float_ids.parquet", LOADS, check=exact_ids({"1", "2"}, {"3.0", "1e+30"}, 2)),
    _file("not_parquet.parquet", "is named like a Parquet file"),
    # hostile text that is valid data: kept verbatim, never interpreted
    _file(
        "formula_injection_ids.csv",
        LOADS,
        check=exact_ids({"=cmd|' /C calc'!A0", "@x"}, {"+SUM(1)", "-2+3"}, 3),
    ),
    _file(
        "html_script_ids.csv",
        LOADS,
        check=exact_ids(
            {"<script>alert(1)</script>", "<b>bold</b>"},
            {"<img src=x onerror=alert(1)>", "[link](javascript:alert(1))"},
            3,
        ),
    ),
    _file(
        "bidi_and_emoji_ids.csv",
        LOADS,
        check=exact_ids({"\u202eevil\u202c", "\u7528\u6237"}, {"\U0001f6d2 cart", "caf\u00e9"}, 3),
    ),
    _file("good_log.csv", LOADS, check=good_log),
    # catalogs, each uploaded next to good_log.csv
    _with_catalog(
        "catalog_formula_titles.csv",
        LOADS,
        check=catalog_texts(
            ["=cmd|' /C calc'!A0", "+SUM(1)", "-2+3"], ['=HYPERLINK("http://x")', "@x", "=1+1"]
        ),
    ),
    _with_catalog(
        "catalog_html_titles.csv",
        LOADS,
        check=catalog_texts(
            [
                "<script>alert(1)</script>",
                '<img src=x onerror="alert(1)">',
                "[click](javascript:alert(1))",
            ],
            ["<b>bold</b>", "**markdown**", "$x^2$"],
        ),
    ),
    _with_catalog("catalog_ids_match_nothing.csv", "None of the 2 item ids"),
    _with_catalog("catalog_no_title_column.csv", "has no title, category or price column"),
    _with_catalog("catalog_nonnumeric_price.csv", "the non-numeric price '$5'"),
    # JSON Lines: the same checks and sentences, naming the line and the field
    _file("good_log.jsonl", LOADS, check=good_log),
    _file("good_log.ndjson.gz", LOADS, check=good_log),
    _file("jsonl_blank_lines_crlf.jsonl", LOADS, check=good_log),
    _file("jsonl_numeric_ids.jsonl", LOADS, check=exact_ids({"1", "2"}, {"10", "20"}, 3)),
    _file("jsonl_nested_user.jsonl", "holds nested values (objects, the first on line 1)"),
    _file("jsonl_nested_later.jsonl", "has an object in field 'user_id' on line 3"),
    _file("jsonl_missing_item.jsonl", "a missing or empty item id in field 'item_id' on line 4"),
    _file("jsonl_mixed_id_types.jsonl", "has a string in field 'user_id' on line 2"),
    _file("jsonl_invalid_line.jsonl", "has invalid JSON on line 2"),
    _file("json_array.json", "is a JSON array, not JSON Lines"),
    _file("jsonl_two_objects_per_line.jsonl", "has more than one JSON object on line 1"),
    _file("jsonl_huge_int_ids.jsonl", "too large to read exactly (the first on line 1)"),
    _file("jsonl_duplicate_field.jsonl", "has the field 'user_id' twice on line 1"),
    _file("jsonl_string_lines.jsonl", "has a string on line 1, not an object"),
    _file("jsonl_latin1.jsonl", "is not UTF-8 text: byte b'\\xe9' on line 2"),
    _file("jsonl_bad_timestamp.jsonl", "the unparseable timestamp 'yesterday' in field"),
    _file("jsonl_one_field.jsonl", "has fewer than two fields"),
    _file("jsonl_unknown_event.jsonl", "the event type 'teleport' in field 'event' on line 2"),
]


# --------------------------------------------------------------------------- generated
def _good_bytes() -> bytes:
    return (CORPUS_DIR / "good_log.csv").read_bytes()


def _wide(with_ids: bool) -> bytes:
    """10,000 columns; the first two are the ids when ``with_ids``."""
    width = 10_000
    names = ["user_id", "item_id"] if with_ids else ["a", "b"]
    header = ",".join(names + [f"c{i}" for i in range(width - 2)])
    rows = [",".join([f"u{r % 2}", f"i{r % 3}"] + ["0"] * (width - 2)) for r in range(6)]
    return ("\n".join([header, *rows]) + "\n").encode()


def _huge_field(column: str) -> bytes:
    """A log whose ``column`` holds one value of a million characters."""
    rows = ["user_id,item_id,timestamp,rating,note"]
    for r in range(4):
        values = {"user_id": f"u{r % 2}", "item_id": f"i{r}", "timestamp": str(T0 + r)}
        values |= {"rating": "1", "note": "ok"}
        if r == 1:
            values[column] = "z" * 1_000_000
        rows.append(
            ",".join(values[c] for c in ("user_id", "item_id", "timestamp", "rating", "note"))
        )
    return ("\n".join(rows) + "\n").encode()


def _huge_title_catalog() -> bytes:
    return ("item_id,title\ni1," + "t" * 1_000_000 + "\ni2,Socks\ni3,Hat\n").encode()


def _huge_title(data: InteractionData) -> None:
    good_log(data)
    assert [len(t) for t in data.titles] == [1_000_000, 5, 3]


def _wide_loaded(data: InteractionData) -> None:
    assert _ids(data.user_ids) == ["u0", "u1"] and _ids(data.item_ids) == ["i0", "i1", "i2"]
    assert data.n_interactions == 6


def _huge_note_loaded(data: InteractionData) -> None:
    assert data.n_interactions == 4 and _ids(data.item_ids) == ["i0", "i1", "i2", "i3"]


PATH_LIKE_NAMES = [
    "../../x.csv",
    "/etc/passwd",
    "C:\\Windows\\x.csv",
    "..\\..\\boot.ini",
    "a\x00b.csv",
    "line\nbreak\r.csv",
    "\u202ecsv.exe",
    "x" * 5000 + ".csv",
    "",
    "   ",
    "/",
]


def generated_cases() -> list[Case]:
    cases = [
        Case(
            "10k_columns", lambda: _wide(True), LOADS, "wide.csv", _wide_loaded, origin="generated"
        ),
        Case(
            "10k_columns_no_ids",
            lambda: _wide(False),
            "holds the user and the item ids",
            "wide.csv",
            origin="generated",
        ),
        Case(
            "million_char_field",
            lambda: _huge_field("note"),
            LOADS,
            "long.csv",
            _huge_note_loaded,
            origin="generated",
        ),
        Case(
            "million_char_rating",
            lambda: _huge_field("rating"),
            "the non-numeric rating 'zzzz",
            "long.csv",
            origin="generated",
        ),
        Case(
            "million_char_title",
            _good_bytes,
            LOADS,
            "good_log.csv",
            _huge_title,
            catalog=("titles.csv", _huge_title_catalog),
            origin="generated",
        ),
        Case(
            "five_megabyte_row",
            lambda: b"user_id,item_id\nu1," + b"x" * 5_000_000 + b"\nu2,b\n",
            "has a row of several megabytes",
            "huge-row.csv",
            max_bytes=8_000_000,
            origin="generated",
        ),
        Case(
            "gzip_bomb_20MB",
            lambda: gzip.compress(b"1," * 10_000_000, compresslevel=9, mtime=0),
            "expands to more than 10.0 MB",
            "bomb.csv.gz",
            max_bytes=1_000_000,
            origin="generated",
        ),
        Case(
            "over_limit_by_one_byte",
            _good_bytes,
            "upload limit",
            "good_log.csv",
            max_bytes=len(_good_bytes()) - 1,
            origin="generated",
        ),
        Case(
            "exactly_at_limit",
            _good_bytes,
            LOADS,
            "good_log.csv",
            good_log,
            max_bytes=len(_good_bytes()),
            origin="generated",
        ),
    ]
    for i, name in enumerate(PATH_LIKE_NAMES):
        # The name is only ever shown (sanitised), never opened: the content is the bytes.
        cases.append(
            Case(f"path_name_{i}_loads", _good_bytes, LOADS, name, good_log, origin="generated")
        )
        cases.append(
            Case(f"path_name_{i}_empty", lambda: b"", "is empty", name, origin="generated")
        )
    return cases


def all_cases() -> list[Case]:
    return [*FILE_CASES, *generated_cases()]
