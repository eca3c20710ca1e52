"""Read, validate, clean and split interaction logs into an `InteractionData`.

Ingestion is a chain of pure functions on bytes or paths; nothing here writes anywhere:

    read_table      bytes/path -> DataFrame of strings (CSV/TSV/any of , ; TAB | space, gzip,
                    Parquet, MovieLens ``u.data``, RecBole ``.inter``/``.item``)
    detect_columns  DataFrame -> ColumnMapping (user, item, timestamp, rating, event)
    read_catalog    bytes/path -> DataFrame[item_id, title, category, price]
    build_dataset   DataFrame + mapping -> validated, cleaned, k-cored, split InteractionData
    load_interactions  all of the above in one call, as the Data page and the CLI use it

Every problem with an upload raises `DataError` whose message is one sentence naming the
file, the column, the first offending row and what to do. Row numbers follow spreadsheet
numbering for text files (the header line is row 1, so the first data row is row 2); files
without a header row and Parquet files count data rows from 1. Each message says which.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import re
import time
import unicodedata
import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.dataset import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VALID, InteractionData
from core.errors import ConfigError, DataError

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# A gzip bomb guard: a compressed upload may expand to at most this many times the limit.
MAX_DECOMPRESSION_FACTOR = 10

# Interaction weight per event type. Names are matched case-insensitively; the aliases cover
# the public logs people upload most (RetailRocket: addtocart/transaction, Taobao: pv/buy).
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "cart": 2.0,
        "purchase": 3.0,
        "click": 1.0,
        "pv": 1.0,
        "page_view": 1.0,
        "pageview": 1.0,
        "addtocart": 2.0,
        "add_to_cart": 2.0,
        "buy": 3.0,
        "transaction": 3.0,
    }
)

# Timestamps outside [1990-01-01, now + 1 day] are rejected: they are almost always a wrong
# unit or a wrong column, and they would silently wreck the leave-one-out order.
MIN_TIMESTAMP = 631_152_000
FUTURE_SLACK_S = 86_400

# Candidate names, compared after lower-casing and dropping everything but letters/digits,
# in priority order (the first one present wins).
USER_COLUMNS = (
    "userid", "user", "visitorid", "customerid", "customer", "uid", "clientid", "memberid",
    "buyerid", "reviewerid", "accountid", "sessionid",
)  # fmt: skip
ITEM_COLUMNS = (
    "itemid", "item", "productid", "product", "movieid", "movie", "sku", "asin", "articleid",
    "article", "goodsid", "iid", "contentid", "trackid", "bookid", "isbn", "stockcode",
    "offerid", "businessid",
)  # fmt: skip
TIMESTAMP_COLUMNS = (
    "timestamp", "ts", "time", "datetime", "date", "eventtime", "eventtimestamp", "createdat",
    "unixreviewtime", "unixtime", "invoicedate", "orderdate", "purchasedate", "tdat",
    "clicktime", "eventdate",
)  # fmt: skip
RATING_COLUMNS = ("rating", "ratings", "score", "stars", "star", "overall", "starrating", "rate")
EVENT_COLUMNS = (
    "event", "eventtype", "action", "actiontype", "behavior", "behaviour", "behaviortype",
    "behaviourtype", "interaction", "interactiontype", "eventname", "type",
)  # fmt: skip
CATALOG_ITEM_COLUMNS = (*ITEM_COLUMNS, "id")
TITLE_COLUMNS = (
    "title", "movietitle", "name", "productname", "itemname", "producttitle", "booktitle",
    "description",
)  # fmt: skip
CATEGORY_COLUMNS = (
    "category", "categories", "categorycode", "categoryname", "genre", "genres", "class",
    "department", "productcategory", "section",
)  # fmt: skip
PRICE_COLUMNS = ("price", "unitprice", "listprice", "saleprice", "cost", "amount")

_DELIMITERS = (",", "\t", ";", "|", " ")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", " ": "space"}
_SNIFF_BYTES = 64 * 1024
_SNIFF_LINES = 50
_RECBOLE_SUFFIX = re.compile(r":(token|token_seq|float|float_seq)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
# Messages quote file names, values and column lists; these caps keep a hostile file (a
# million-character cell, ten thousand columns) from turning one sentence into megabytes.
_MAX_NAME_CHARS = 80
_MAX_VALUE_CHARS = 60
_MAX_LISTED_COLUMNS = 12


# --------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ColumnMapping:
    """Which column of the log holds what; optional roles are None when absent."""

    user: str
    item: str
    timestamp: str | None = None
    rating: str | None = None
    event: str | None = None

    def columns(self) -> dict[str, str]:
        """Role -> column for the roles that are mapped."""
        roles = {
            "user": self.user,
            "item": self.item,
            "timestamp": self.timestamp,
            "rating": self.rating,
            "event": self.event,
        }
        return {role: col for role, col in roles.items() if col is not None}


@dataclass(frozen=True)
class CleanOptions:
    """How the log is filtered before it is split."""

    # Implicit feedback from explicit ratings: keep only rows with rating >= min_rating.
    min_rating: float | None = None
    # Drop exact duplicate rows (same user, item, timestamp, rating and event); the count is
    # reported in InteractionData.notes either way.
    dedupe: bool = True
    # k-core: repeat until every user and item has at least this many interactions.
    min_user_interactions: int = 1
    min_item_interactions: int = 1
    # Weight per event type, merged over DEFAULT_EVENT_WEIGHTS; weight 0 drops that event type.
    event_weights: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.min_user_interactions < 1 or self.min_item_interactions < 1:
            raise ConfigError("Minimum interactions per user and per item must be at least 1.")
        for event, weight in (self.event_weights or {}).items():
            if not np.isfinite(weight) or weight < 0:
                raise ConfigError(
                    f"The weight of event type '{event}' must be a non-negative number, not {weight}."
                )

    def resolved_event_weights(self) -> dict[str, float]:
        weights = dict(DEFAULT_EVENT_WEIGHTS)
        weights.update({_event_key(k): float(v) for k, v in (self.event_weights or {}).items()})
        return weights


@dataclass(frozen=True)
class SplitOptions:
    """How interactions are split into train / valid / test (see DESIGN.md, evaluation)."""

    method: Literal["loo", "random"] = "loo"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("loo", "random"):
            raise ConfigError(f"Split method must be 'loo' or 'random', not '{self.method}'.")


# --------------------------------------------------------------------------- reading
def file_sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of raw file bytes (the dataset's content hash)."""
    return hashlib.sha256(data).hexdigest()


def display_name(name: str | None, fallback: str = "upload") -> str:
    """An uploaded file's name made safe to show in messages and to keep as a dataset name.

    Upload names come from the client and may be anything (``../../x.csv``, ``C:\\x.csv``,
    a NUL byte, a right-to-left override, thousands of characters). Only the last path
    component is kept, control and invisible formatting characters are dropped and the
    result is shortened, keeping the extension. The name is never used as a path.
    """
    base = re.split(r"[\\/]", str(name or ""))[-1]
    cleaned = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if len(cleaned) > _MAX_NAME_CHARS:
        cleaned = f"{cleaned[: _MAX_NAME_CHARS - 21]}…{cleaned[-20:]}"
    return cleaned or fallback


def _clip(value: object, limit: int = _MAX_VALUE_CHARS) -> str:
    """repr() of a value quoted in a message, cut to ``limit`` characters."""
    text = str(value)
    return repr(text if len(text) <= limit else f"{text[:limit]}…")


def _column_list(columns: list[str]) -> str:
    """The columns found, for a message: the first few, each clipped, and a count of the rest."""
    shown = ", ".join(_clip(c, 40) for c in columns[:_MAX_LISTED_COLUMNS])
    rest = len(columns) - _MAX_LISTED_COLUMNS
    return f"{shown} and {rest:,} more" if rest > 0 else shown


def _reason(exc: BaseException, limit: int = 120) -> str:
    """The first sentence of a library's error message, for the parenthesis of ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.split(r"(?<=[a-z0-9)])\. (?=[A-Z])", text)[0].rstrip(".")
    return text if len(text) <= limit else f"{text[:limit]}…"


def _source_bytes(source: Source, name: str | None, max_bytes: int) -> tuple[bytes, str]:
    """Raw bytes and a display name, refusing oversized input before reading it."""
    if isinstance(source, bytes | bytearray | memoryview):
        display = display_name(name)
        size = len(source)
        _check_size(size, display, max_bytes)
        return bytes(source), display
    path = Path(source)
    display = display_name(name or path.name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"Cannot open '{display}' ({exc.strerror}); check the path.") from exc
    _check_size(size, display, max_bytes)
    return path.read_bytes(), display


def _human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _check_size(size: int, display: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise DataError(
            f"'{display}' is {_human_size(size)}, over the {_human_size(max_bytes)} upload limit; "
            "upload a smaller sample (or a gzip-compressed copy) of the file."
        )


def _gunzip(data: bytes, display: str, max_bytes: int) -> bytes:
    limit = max_bytes * MAX_DECOMPRESSION_FACTOR
    parts: list[bytes] = []
    size = 0
    rest = data
    # A gzip file may hold several members back to back (``cat a.gz b.gz``); gzip reads
    # them all, and so must we, or the rows of every member but the first would be lost.
    while rest:
        # wbits=47 accepts gzip or zlib headers; max_length caps what a hostile file can
        # expand to, summed over all members.
        decomp = zlib.decompressobj(wbits=47)
        try:
            out = decomp.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise DataError(
                f"'{display}' starts like a gzip file but cannot be decompressed "
                f"({_reason(exc)}); upload the file again or upload it uncompressed."
            ) from exc
        size += len(out)
        parts.append(out)
        if size > limit:
            raise DataError(
                f"'{display}' expands to more than {_human_size(limit)} when decompressed; "
                "upload a smaller sample of the file."
            )
        if not decomp.eof:
            # All input consumed but the stream never ended: the upload was cut short.
            raise DataError(
                f"'{display}' is an incomplete gzip file (its compressed data stops before "
                "the end); upload the complete file again or upload it uncompressed."
            )
        rest = decomp.unused_data
        if not rest.strip(b"\x00"):  # gzip ignores zero padding after the last member
            break
        if not rest.startswith(_GZIP_MAGIC):
            raise DataError(
                f"'{display}' has data that is not gzip after its compressed content; "
                "upload the file again or upload it uncompressed."
            )
    return b"".join(parts)


def read_table(
    source: Source, name: str | None = None, *, max_bytes: int = MAX_UPLOAD_BYTES
) -> pd.DataFrame:
    """Read a delimited text, gzip or Parquet table into a DataFrame.

    ``source`` is a path or raw bytes; ``name`` (an upload's file name) is used only in
    messages and as a format hint, never opened. Text columns come back as strings (ids stay
    exactly as written); Parquet columns keep their types. ``frame.attrs`` records
    ``source_name``, ``format`` and ``header_rows`` (1, 0, or None for Parquet), which
    `build_dataset` uses to number rows in its messages.
    """
    data, display = _source_bytes(source, name, max_bytes)
    return _read_bytes(data, display, max_bytes)


def _read_bytes(data: bytes, display: str, max_bytes: int) -> pd.DataFrame:
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, display, max_bytes)
        if data[:2] == _GZIP_MAGIC:
            raise DataError(f"'{display}' is compressed twice; decompress it once and upload it.")
    if data[:4] == b"PAR1":
        return _read_parquet(data, display)
    lower = display.lower()
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        raise DataError(
            f"'{display}' is named like a Parquet file but does not start with the Parquet "
            "signature; upload the original file or a CSV export."
        )
    return _read_text(data, display)


def _read_parquet(data: bytes, display: str) -> pd.DataFrame:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        # Checked before reading: duplicate names get their own sentence, not an Arrow dump.
        names = _clean_header([str(c) for c in parquet.schema_arrow.names], display)
        table, unusable = _plain_columns(parquet.read(), names)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"'{display}' looks like Parquet but cannot be read ({_reason(exc)}); export it again."
        ) from exc
    frame.columns = names
    frame = frame.reset_index(drop=True)
    frame.attrs.update(
        source_name=display, format="parquet", header_rows=None, unusable_columns=unusable
    )
    if frame.shape[1] < 2:
        raise DataError(
            f"'{display}' has only one column ({_column_list(list(frame.columns))}); "
            "an interaction log needs at least a user and an item column."
        )
    if len(frame) == 0:
        raise DataError(f"'{display}' has columns but no rows; upload a file with data.")
    return frame


def _plain_columns(table: pa.Table, names: list[str]) -> tuple[pa.Table, dict[str, str]]:
    """Binary columns decoded as UTF-8 text where they are text; what the rest hold.

    Returns the table and ``{column: what it holds}`` for columns that cannot serve as ids,
    ratings or timestamps: nested values (lists, structs, maps) and binary data that is not
    UTF-8. Mapping a role to one of them is refused by `validate_mapping`.
    """
    unusable: dict[str, str] = {}
    for i, field in enumerate(table.schema):
        kind = field.type
        if pa.types.is_nested(kind):
            unusable[names[i]] = "nested values (lists or structs)"
        elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            # Some writers (older Spark, Hive) store text as plain binary.
            try:
                table = table.set_column(i, field.name, pc.cast(table.column(i), pa.large_string()))
            except pa.ArrowException:
                unusable[names[i]] = "binary data that is not UTF-8 text"
        elif pa.types.is_fixed_size_binary(kind):
            unusable[names[i]] = "fixed-size binary data"
    return table, unusable


def _reject_binary(data: bytes, display: str) -> None:
    head = data[:8]
    hints = {
        b"PK\x03\x04": "a ZIP archive (or an Excel .xlsx workbook); unzip it or save the sheet as CSV",
        b"\xd0\xcf\x11\xe0": "an Excel .xls workbook; save the sheet as CSV",
        b"%PDF": "a PDF document; export the table inside it as CSV",
        b"\xff\xfe": "UTF-16 text; save it as UTF-8 CSV",
        b"\xfe\xff": "UTF-16 text; save it as UTF-8 CSV",
        b"BZh": "bzip2-compressed; decompress it or recompress it with gzip",
        b"\xfd7zXZ": "xz-compressed; decompress it or recompress it with gzip",
    }
    for magic, what in hints.items():
        if head.startswith(magic):
            raise DataError(f"'{display}' is {what} before uploading.")
    # UTF-16 without a byte-order mark: mostly-ASCII text has a NUL in every other byte
    # (and almost none in the bytes between).
    sample = data[:4096]
    nuls = sorted(half.count(0) / max(1, len(half)) for half in (sample[0::2], sample[1::2]))
    if len(sample) >= 8 and nuls[0] < 0.1 and nuls[1] > 0.9:
        raise DataError(f"'{display}' is UTF-16 text; save it as UTF-8 CSV before uploading.")
    if b"\x00" in data[:8192]:
        raise DataError(
            f"'{display}' is a binary file, not a text table; upload a CSV, TSV, gzip or Parquet file."
        )


def _raise_not_utf8(data: bytes, display: str, exc: UnicodeDecodeError) -> NoReturn:
    pos = exc.start
    line = data.count(b"\n", 0, pos) + 1
    raise DataError(
        f"'{display}' is not UTF-8 text: byte {data[pos : pos + 1]!r} on line {line} "
        "(counting the first line of the file as 1) cannot be decoded; save the file as UTF-8."
    ) from exc


def _sample_text(data: bytes, display: str) -> str:
    sample = data[:_SNIFF_BYTES]
    if len(data) > _SNIFF_BYTES and b"\n" in sample:
        # Cut at a newline so no multi-byte character or half line reaches the sniffer.
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        return sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        _raise_not_utf8(data, display, exc)


def _field_counts(lines: list[str], delimiter: str) -> list[int]:
    if delimiter == " ":
        return [len(line.split()) for line in lines]
    return [len(row) for row in csv.reader(lines, delimiter=delimiter)]


def _sniff_delimiter(lines: list[str], display: str) -> str | None:
    """The delimiter that splits the header into 2+ fields and most lines into as many."""

    def consistency(delimiter: str) -> float:
        counts = _field_counts(lines, delimiter)
        if not counts or counts[0] < 2:
            return 0.0
        return sum(c == counts[0] for c in counts) / len(counts)

    candidates = list(_DELIMITERS)
    lower = display.lower().removesuffix(".gz")
    if lower.endswith((".tsv", ".tab", ".inter", ".item", ".user", ".data")):
        candidates.remove("\t")
        candidates.insert(0, "\t")
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed is not None and consistency(sniffed) == 1.0:
        return sniffed
    scores = [(consistency(d), -i, d) for i, d in enumerate(candidates)]
    best_score, _, best = max(scores)
    return best if best_score > 0 else None


def _clean_header(names: list[str], display: str) -> list[str]:
    cleaned = []
    for i, raw in enumerate(names):
        col = _RECBOLE_SUFFIX.sub("", raw.strip().lstrip("\ufeff").strip())
        cleaned.append(col or f"column_{i + 1}")
    seen: set[str] = set()
    for col in cleaned:
        if col in seen:
            raise DataError(
                f"'{display}' has two columns named {_clip(col, 40)}; rename one of them so every "
                "column name is unique."
            )
        seen.add(col)
    return cleaned


def _headerless_names(lines: list[str], delimiter: str) -> list[str]:
    """Column names for a file whose first row is data (MovieLens u.data and kin)."""
    rows = [r for r in (_split_line(line, delimiter) for line in lines) if r]
    width = len(rows[0])
    if width == 4:
        return ["user_id", "item_id", "rating", "timestamp"]
    if width == 3:
        # user, item and either a rating or a unix time: magnitude tells them apart.
        third = [float(r[2]) for r in rows if len(r) == 3 and _NUMBER.match(r[2])]
        kind = "timestamp" if third and float(np.median(third)) > 1e8 else "rating"
        return ["user_id", "item_id", kind]
    if width == 2:
        return ["user_id", "item_id"]
    return [f"column_{i + 1}" for i in range(width)]


def _split_line(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":
        return line.split()
    return next(csv.reader([line], delimiter=delimiter), [])


def _read_text(data: bytes, display: str) -> pd.DataFrame:
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data or data.isspace():
        raise DataError(f"'{display}' is empty; upload a file with a header row and data rows.")
    _reject_binary(data, display)
    text = _sample_text(data, display)
    lines = [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]
    delimiter = _sniff_delimiter(lines, display)
    if delimiter is None:
        raise DataError(
            f"'{display}' has only one column (first line: {_clip(lines[0], 80)}); separate the "
            "columns with a comma, semicolon, tab, pipe or space and use the same one on every row."
        )
    if delimiter == " ":
        # Space-aligned files use runs of spaces; pyarrow wants exactly one separator.
        data = re.sub(rb"[ ]+", b" ", data)
        data = re.sub(rb"(?m)^ | (?=\r?$)", b"", data)
    first = _split_line(lines[0], delimiter)
    has_header = not all(_NUMBER.match(field.strip()) for field in first)
    names = _clean_header(first, display) if has_header else _headerless_names(lines, delimiter)
    frame = _arrow_read(data, display, delimiter, names, skip_rows=1 if has_header else 0)
    frame.attrs.update(
        source_name=display, format="text", header_rows=1 if has_header else 0, delimiter=delimiter
    )
    if len(frame) == 0:
        raise DataError(
            f"'{display}' has a header row ({_column_list(names)}) but no data rows; "
            "upload the file with its data."
        )
    return frame


def _arrow_read(
    data: bytes, display: str, delimiter: str, names: list[str], skip_rows: int
) -> pd.DataFrame:
    def options(handler: Callable[[Any], str] | None) -> dict[str, Any]:
        return dict(
            read_options=pa_csv.ReadOptions(
                skip_rows=skip_rows, column_names=names, use_threads=handler is None
            ),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, invalid_row_handler=handler),
            # Every column as text: ids must keep leading zeros and exact spelling, and the
            # numeric columns are parsed later where a failure can name its row. large_string
            # is what pandas' str dtype stores, so to_pandas() below does not copy.
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()), strings_can_be_null=True
            ),
        )

    try:
        table = pa_csv.read_csv(pa.BufferReader(data), **options(None))
    except pa.ArrowInvalid as exc:
        _explain_parse_error(data, display, delimiter, exc, options)
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _explain_parse_error(
    data: bytes,
    display: str,
    delimiter: str,
    exc: pa.ArrowInvalid,
    options: Callable[[Callable[[Any], str] | None], dict[str, Any]],
) -> NoReturn:
    """Turn a pyarrow parse failure into one sentence naming the first bad row."""
    message = str(exc)
    if "UTF8" in message or "utf8" in message.lower():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            _raise_not_utf8(data, display, err)
    # Re-read single-threaded so the first offending row (not the first a thread saw) is named.
    bad: list[Any] = []

    def first_bad(row: Any) -> str:  # a pyarrow InvalidRow
        bad.append(row)
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        pa_csv.read_csv(pa.BufferReader(data), **options(first_bad))
    if bad:
        row = bad[0]
        where = f"row {row.number}" if row.number is not None else f"row {_clip(row.text)}"
        raise DataError(
            f"'{display}' has {row.actual_columns} field(s) in {where} (counting the first line "
            f"of the file as row 1) but {row.expected_columns} column(s) in the first row "
            f"({_DELIMITER_NAMES[delimiter]}-separated); use one delimiter throughout and quote "
            "values that contain it."
        ) from exc
    if "straddl" in message:  # one row longer than pyarrow's read block
        raise DataError(
            f"'{display}' has a row of several megabytes (a huge value or a quote that is never "
            "closed); close the quote or shorten the value."
        ) from exc
    raise DataError(
        f"'{display}' cannot be read as a table ({_reason(exc)}); check its format."
    ) from exc


# --------------------------------------------------------------------------- columns
def _norm(column: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(column).lower())


def _find(columns: list[str], candidates: tuple[str, ...], taken: set[str]) -> str | None:
    by_norm: dict[str, str] = {}
    for col in columns:
        by_norm.setdefault(_norm(col), col)
    for cand in candidates:
        col = by_norm.get(cand)
        if col is not None and col not in taken:
            return col
    return None


def detect_columns(frame: pd.DataFrame, name: str | None = None) -> ColumnMapping:
    """Guess the user, item, timestamp, rating and event columns from their names.

    Raises DataError listing the columns found when no user or no item column is recognised.
    """
    display = display_name(name) if name else frame.attrs.get("source_name", "upload")
    columns = [str(c) for c in frame.columns]
    taken: set[str] = set()
    found: dict[str, str | None] = {}
    for role, candidates in (
        ("user", USER_COLUMNS),
        ("item", ITEM_COLUMNS),
        ("timestamp", TIMESTAMP_COLUMNS),
        ("rating", RATING_COLUMNS),
        ("event", EVENT_COLUMNS),
    ):
        col = _find(columns, candidates, taken)
        found[role] = col
        if col is not None:
            taken.add(col)
    missing = [role for role in ("user", "item") if found[role] is None]
    if missing:
        raise DataError(
            f"Cannot tell which column of '{display}' holds the {' and the '.join(missing)} ids "
            f"(columns found: {_column_list(columns)}); rename the column(s) "
            "(e.g. user_id, item_id) or map them by hand."
        )
    return ColumnMapping(
        user=found["user"],  # type: ignore[arg-type]
        item=found["item"],  # type: ignore[arg-type]
        timestamp=found["timestamp"],
        rating=found["rating"],
        event=found["event"],
    )


def validate_mapping(frame: pd.DataFrame, mapping: ColumnMapping, name: str | None = None) -> None:
    """Raise DataError if the mapping names a column the frame lacks or cannot use, or
    reuses one column for two roles."""
    display = display_name(name) if name else frame.attrs.get("source_name", "upload")
    columns = [str(c) for c in frame.columns]
    unusable = frame.attrs.get("unusable_columns") or {}
    for role, col in mapping.columns().items():
        if col not in columns:
            raise DataError(
                f"The {role} column {_clip(col, 40)} is not in '{display}' (columns found: "
                f"{_column_list(columns)}); pick one of those columns."
            )
        if col in unusable:
            raise DataError(
                f"The {role} column '{col}' of '{display}' holds {unusable[col]}, not plain "
                "values; map a column of plain ids, numbers or dates, or flatten it and export "
                "the file again."
            )
    used = list(mapping.columns().values())
    for col in used:
        if used.count(col) > 1:
            roles = [r for r, c in mapping.columns().items() if c == col]
            raise DataError(
                f"Column '{col}' of '{display}' is mapped as both {' and '.join(roles)}; "
                "map each role to its own column."
            )


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class _Rows:
    """Turns a 0-based position in the frame into the row number a user sees."""

    display: str
    header_rows: int | None

    def label(self, position: int) -> str:
        if self.header_rows == 1:
            return f"row {position + 2} (spreadsheet numbering, the header is row 1)"
        if self.header_rows == 0:
            return f"row {position + 1} (the file has no header row)"
        return f"data row {position + 1} (counting data rows from 1)"

    def more(self, mask: np.ndarray) -> str:
        extra = int(mask.sum()) - 1
        return f" and {extra} more row(s)" if extra > 0 else ""


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _id_strings(series: pd.Series, role: str, col: str, rows: _Rows) -> pd.Series:
    """Ids as stripped strings; a missing id is an error naming its row."""
    null = np.array(series.isna(), dtype=bool)
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values)
        if infinite.any():
            pos = _first(infinite)
            raise DataError(
                f"'{rows.display}' has the infinite {role} id {values[pos]} in column '{col}' in "
                f"{rows.label(pos)}{rows.more(infinite)}; fix or delete those rows."
            )
        # Only integers a float holds exactly (below 2**53) are written without ".0".
        if np.all(np.isnan(values) | ((values == np.round(values)) & (np.abs(values) < 2**53))):
            # Parquet/pandas store integer ids with gaps as float; "12.0" would not match "12".
            series = series.astype("Int64")
    if not pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        series = series.astype("str")
    arr = _arrow_strings(series)
    # Checking first saves a full copy of the column in the usual case of no padding.
    if arr is None or pc.any(pc.match_substring_regex(arr, r"^\s|\s$")).as_py():
        series = series.str.strip()
        arr = _arrow_strings(series)
    if arr is not None:
        null |= np.asarray(pc.fill_null(pc.equal(arr, ""), True), dtype=bool)
    else:
        null |= (series.str.len() == 0).fillna(True).to_numpy(dtype=bool)
    if null.any():
        pos = _first(null)
        raise DataError(
            f"'{rows.display}' has an empty {role} id in column '{col}' in {rows.label(pos)}"
            f"{rows.more(null)}; fill in or delete those rows."
        )
    if arr is not None:
        newline = pc.or_(pc.match_substring(arr, "\n"), pc.match_substring(arr, "\r"))
        multiline = np.asarray(pc.fill_null(newline, False), dtype=bool)
    else:
        multiline = series.str.contains(r"[\r\n]").fillna(False).to_numpy(dtype=bool)
    if multiline.any():
        # An id never spans lines; this is a quote left open, which silently merges every
        # following row into one value when the file has no more delimiters to miscount.
        pos = _first(multiline)
        raise DataError(
            f"'{rows.display}' has {'an' if role == 'item' else 'a'} {role} id that runs over "
            f"several lines in column '{col}' "
            f"in {rows.label(pos)}{rows.more(multiline)}, usually a quote that is never "
            "closed; close or remove that quote."
        )
    return series


def _arrow_strings(series: pd.Series) -> pa.Array | None:
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else None


def _to_float(series: pd.Series) -> np.ndarray:
    """float64 values; nan where a value is missing or not a number."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = _arrow_strings(series)
    if arr is not None:
        try:
            # Fast path: pyarrow parses a million numbers in milliseconds.
            cast = pc.cast(pc.utf8_trim_whitespace(arr), pa.float64())
            return cast.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        except pa.ArrowInvalid:
            pass
    return pd.to_numeric(series.astype("str").str.strip(), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _to_int_exact(series: pd.Series) -> np.ndarray | None:
    """int64 values when every value is an integer literal (keeps ns timestamps exact)."""
    if pd.api.types.is_integer_dtype(series.dtype) and not series.isna().any():
        return series.to_numpy(dtype=np.int64)
    arr = _arrow_strings(series)
    if arr is None or arr.null_count:
        return None
    try:
        return pc.cast(arr, pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        pass
    try:  # trimming copies the column, so only when the plain cast failed
        return pc.cast(pc.utf8_trim_whitespace(arr), pa.int64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        return None


def _ratings(series: pd.Series, col: str, rows: _Rows) -> np.ndarray:
    values = _to_float(series)
    bad = ~np.isfinite(values)
    if bad.any():
        pos = _first(bad)
        raw = series.iloc[pos]
        what = "an empty rating" if pd.isna(raw) else f"the non-numeric rating {_clip(raw)}"
        raise DataError(
            f"'{rows.display}' has {what} in column '{col}' in {rows.label(pos)}{rows.more(bad)}; "
            "make every rating a number or map a different rating column."
        )
    return values


_UNIT_DIVISORS = {"seconds": 1, "milliseconds": 10**3, "microseconds": 10**6, "nanoseconds": 10**9}


def _numeric_unit(values: np.ndarray) -> str:
    # Unix time in seconds is ~1e9 for any plausible date; each finer unit adds 3 digits.
    magnitude = float(np.median(np.abs(values)))
    if magnitude < 1e11:
        return "seconds"
    if magnitude < 1e14:
        return "milliseconds"
    if magnitude < 1e17:
        return "microseconds"
    return "nanoseconds"


def _datetimes_to_seconds(dt: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 unix seconds, NaT mask) for a datetime series of any resolution or zone."""
    if isinstance(dt.dtype, pd.DatetimeTZDtype):
        dt = dt.dt.tz_convert("UTC").dt.tz_localize(None)
    nat = dt.isna().to_numpy()
    # Via the column's own resolution: forcing nanoseconds would overflow outside 1677-2262.
    seconds = dt.to_numpy().astype("datetime64[s]").astype(np.int64)
    seconds[nat] = 0
    return seconds, nat


def _parse_dates(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 unix seconds, unparsed mask) for date strings; naive dates are read as UTC."""
    arr = _arrow_strings(series)
    if arr is not None and not arr.null_count:
        # pyarrow's ISO 8601 cast is ~10x faster than pandas; naive first, then zoned values.
        for target in (pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
            try:
                micros = pc.cast(pc.cast(arr, target), pa.int64()).to_numpy(zero_copy_only=False)
            except pa.ArrowInvalid:
                continue
            return np.floor_divide(micros, 10**6), np.zeros(len(micros), dtype=bool)
    best: tuple[np.ndarray, np.ndarray] | None = None
    # ISO 8601 first: fast, and it accepts "2024-01-31" next to "2024-01-31 14:05:00", which
    # pandas' inferred single format would not. Then whatever format pandas infers.
    for fmt in ("ISO8601", None):
        with warnings.catch_warnings():
            # pandas warns when it falls back to per-value parsing; bad values are reported
            # with their row by the caller, which is what the user needs.
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(series, utc=True, errors="coerce", format=fmt)
        seconds, bad = _datetimes_to_seconds(parsed)
        if best is None or bad.sum() < best[1].sum():
            best = (seconds, bad)
        if not bad.any():
            break
    assert best is not None
    return best


def _timestamps(series: pd.Series, col: str, rows: _Rows, now: float) -> tuple[np.ndarray, str]:
    """int64 unix seconds and a note saying how the column was read."""
    missing = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        seconds, bad = _datetimes_to_seconds(series)
        note = "timestamps read as dates"
    else:
        exact = _to_int_exact(series)
        if exact is not None:
            unit = _numeric_unit(exact)
            seconds = exact // _UNIT_DIVISORS[unit]
            bad = np.zeros(len(exact), dtype=bool)
            note = f"timestamps read as unix {unit}"
        elif (numeric := np.isfinite(numbers := _to_float(series))).sum() > (~missing).sum() / 2:
            unit = _numeric_unit(numbers[numeric])
            divisor = _UNIT_DIVISORS[unit]
            scaled = np.floor(np.where(numeric, numbers, 0.0) / divisor)
            # Clipped so absurd magnitudes reach the range check below instead of overflowing.
            seconds = np.clip(scaled, -(2.0**62), 2.0**62).astype(np.int64)
            bad = ~numeric
            note = f"timestamps read as unix {unit}"
        else:
            # Date strings; utc=True puts zone-aware and naive values (read as UTC) on one clock.
            seconds, bad = _parse_dates(series)
            note = "timestamps read as dates"
    if bad.any():
        pos = _first(bad)
        raw = series.iloc[pos]
        what = "an empty timestamp" if pd.isna(raw) else f"the unparseable timestamp {_clip(raw)}"
        raise DataError(
            f"'{rows.display}' has {what} in column '{col}' in {rows.label(pos)}{rows.more(bad)}; "
            "use unix seconds, unix milliseconds or dates like 2024-01-31 14:05:00 throughout."
        )
    latest = int(now) + FUTURE_SLACK_S
    absurd = (seconds < MIN_TIMESTAMP) | (seconds > latest)
    if absurd.any():
        pos = _first(absurd)
        value = int(seconds[pos])
        # Years 1698-2242 print as a date; beyond that the number itself says enough.
        when = f" ({pd.Timestamp(value, unit='s'):%Y-%m-%d})" if abs(value) < 2**33 else ""
        raise DataError(
            f"'{rows.display}' has the timestamp {_clip(series.iloc[pos])}{when} in "
            f"column '{col}' in {rows.label(pos)}{rows.more(absurd)}, which is before 1990 or "
            "more than a day in the future; check the column and its unit or remove those rows."
        )
    return seconds, note


def _event_key(event: str) -> str:
    return re.sub(r"[\s\-]+", "_", str(event).strip().lower())


def _event_weights(
    series: pd.Series, col: str, rows: _Rows, weights: dict[str, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float weights, normalised event names, their integer codes) for an event column."""
    null = series.isna().to_numpy()
    if null.any():
        pos = _first(null)
        raise DataError(
            f"'{rows.display}' has an empty event type in column '{col}' in {rows.label(pos)}"
            f"{rows.more(null)}; fill in or delete those rows."
        )
    codes, uniques = pd.factorize(series.astype("str"))
    keys = np.array([_event_key(u) for u in uniques], dtype=object)
    known = np.array([k in weights for k in keys], dtype=bool)
    if not known.all():
        unknown_codes = np.flatnonzero(~known)
        bad = np.isin(codes, unknown_codes)
        pos = _first(bad)
        value = str(series.iloc[pos])
        raise DataError(
            f"'{rows.display}' has the event type {_clip(value)} in column '{col}' in "
            f"{rows.label(pos)}, which has no weight (known: {', '.join(sorted(weights))}); "
            f"give it a weight (e.g. event_weights={{{_clip(_event_key(value))}: 1.0}}) or remove "
            "those rows."
        )
    per_code = np.array([weights[k] for k in keys], dtype=np.float64)
    _, key_codes = np.unique(keys.astype(str), return_inverse=True)
    # An object array of shared str objects: 8 bytes a row instead of a fixed-width copy.
    return per_code[codes], keys[codes], key_codes[codes]


# --------------------------------------------------------------------------- catalog
def read_catalog(
    source: Source,
    name: str | None = None,
    *,
    item: str | None = None,
    title: str | None = None,
    category: str | None = None,
    price: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
) -> pd.DataFrame:
    """Read a product catalog: DataFrame[item_id (str), title (str), category (str), price].

    Columns are detected by name unless given; missing titles fall back to the item id,
    missing categories to "" and missing prices to nan. Duplicate item ids keep their first row.
    """
    frame = read_table(source, name, max_bytes=max_bytes)
    display = frame.attrs["source_name"]
    rows = _Rows(display, frame.attrs.get("header_rows"))
    columns = [str(c) for c in frame.columns]
    for role, col in (("item", item), ("title", title), ("category", category), ("price", price)):
        if col is not None and col not in columns:
            raise DataError(
                f"The catalog {role} column '{col}' is not in '{display}' (columns found: "
                f"{_column_list(columns)}); pick one of those columns."
            )
    taken: set[str] = set()
    item = item or _find(columns, CATALOG_ITEM_COLUMNS, taken)
    if item is None:
        raise DataError(
            f"Cannot tell which column of the catalog '{display}' holds the item ids (columns "
            f"found: {_column_list(columns)}); rename it to item_id or map it by hand."
        )
    taken.add(item)
    title = title or _find(columns, TITLE_COLUMNS, taken)
    taken.add(title or "")
    category = category or _find(columns, CATEGORY_COLUMNS, taken)
    taken.add(category or "")
    price = price or _find(columns, PRICE_COLUMNS, taken)
    if title is None and category is None and price is None:
        raise DataError(
            f"The catalog '{display}' has no title, category or price column (columns found: "
            f"{_column_list(columns)}); add one (e.g. title) or map it by hand."
        )
    unusable = frame.attrs.get("unusable_columns") or {}
    for role, col in (("item", item), ("title", title), ("category", category), ("price", price)):
        if col in unusable:
            raise DataError(
                f"The catalog {role} column '{col}' of '{display}' holds {unusable[col]}, not "
                "plain values; map another column, or flatten it and export the file again."
            )
    ids = _id_strings(frame[item], "item", item, rows)
    out = pd.DataFrame({"item_id": ids.to_numpy(dtype=object)})
    out["title"] = (
        frame[title].astype("str").str.strip().fillna("").to_numpy(dtype=object)
        if title
        else out["item_id"]
    )
    out["category"] = (
        frame[category].astype("str").str.strip().fillna("").to_numpy(dtype=object)
        if category
        else ""
    )
    if price:
        prices = _to_float(frame[price])
        bad = frame[price].notna().to_numpy() & ~np.isfinite(prices)
        if bad.any():
            pos = _first(bad)
            raise DataError(
                f"The catalog '{display}' has the non-numeric price {_clip(frame[price].iloc[pos])} "
                f"in column '{price}' in {rows.label(pos)}{rows.more(bad)}; make prices plain "
                "numbers (no currency signs) or leave them empty."
            )
        out["price"] = prices
    else:
        out["price"] = np.nan
    out = out.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    out.attrs.update(
        source_name=display, item_column=item, header_rows=frame.attrs.get("header_rows")
    )
    return out


def _join_catalog(
    item_ids: np.ndarray, catalog: pd.DataFrame | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(titles, categories, prices, items without a catalog row) aligned with item_ids."""
    ids = item_ids.astype(str)
    if catalog is None:
        return ids, np.full(len(ids), "", dtype=str), np.full(len(ids), np.nan), 0
    cat = (
        catalog.assign(item_id=catalog["item_id"].astype(str))
        .drop_duplicates("item_id")
        .set_index("item_id")
    )
    missing = int((cat.index.get_indexer(ids) < 0).sum())
    aligned = cat.reindex(ids)
    unknown = pd.Series(np.nan, index=aligned.index, dtype=object)
    titles = aligned.get("title", unknown).astype("str")
    titles = titles.where(titles.notna() & (titles != ""), ids)
    categories = aligned.get("category", unknown).astype("str").fillna("")
    prices = pd.to_numeric(aligned.get("price", unknown), errors="coerce")
    return (
        titles.to_numpy(dtype=str),
        categories.to_numpy(dtype=str),
        prices.to_numpy(dtype=np.float64, na_value=np.nan),
        missing,
    )


# --------------------------------------------------------------------------- building
def _natural_order(labels: np.ndarray) -> np.ndarray:
    """Order raw ids numerically when they are all integers, else as strings."""
    if len(labels):
        as_str = pd.Series(labels, dtype="str")
        # 18 digits always fit in int64.
        if as_str.str.fullmatch(r"\d{1,18}").all():
            return np.lexsort((labels, as_str.astype(np.int64).to_numpy()))
    return np.argsort(labels, kind="stable")


def _dense(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-index the codes still present to 0..n-1, ordered by raw id."""
    present = np.zeros(len(uniques), dtype=bool)
    present[codes] = True
    kept = np.flatnonzero(present)
    labels = uniques[kept]
    order = _natural_order(labels)
    remap = np.full(len(uniques), -1, dtype=np.int64)
    remap[kept[order]] = np.arange(len(kept), dtype=np.int64)
    return remap[codes], labels[order].astype(str)


def _k_core(
    users: np.ndarray, items: np.ndarray, min_user: int, min_item: int
) -> tuple[np.ndarray, int]:
    """Keep-mask after iterating user/item minimum counts to a fixed point, and pass count."""
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep, 0
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    passes = 0
    while True:
        passes += 1
        user_count = np.bincount(users[keep], minlength=n_users)
        item_count = np.bincount(items[keep], minlength=n_items)
        drop = keep & ((user_count[users] < min_user) | (item_count[items] < min_item))
        if not drop.any():
            return keep, passes
        keep &= ~drop


def _split_labels(users: np.ndarray, options: SplitOptions) -> np.ndarray:
    """Per-interaction split codes for interactions sorted by (user, time, file order)."""
    n = len(users)
    counts = np.bincount(users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    per_user = counts[users]
    eligible = per_user >= 3
    labels = np.full(n, SPLIT_TRAIN, dtype=np.int8)
    if options.method == "loo":
        position = np.arange(n) - starts[users]
        labels[eligible & (position == per_user - 1)] = SPLIT_TEST
        labels[eligible & (position == per_user - 2)] = SPLIT_VALID
        return labels
    # Random 80/10/10 within each user: rank each user's interactions by a seeded random key.
    rng = np.random.default_rng(options.seed)
    keys = rng.random(n)
    order = np.lexsort((keys, users))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[users[order]]
    held = np.maximum(1, np.floor(0.1 * per_user + 0.5)).astype(np.int64)
    labels[eligible & (rank < held)] = SPLIT_TEST
    labels[eligible & (rank >= held) & (rank < 2 * held)] = SPLIT_VALID
    return labels


def _frame_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False)
    except TypeError:  # unhashable cells, e.g. an unmapped Parquet list column
        hashed = pd.util.hash_pandas_object(frame.astype("str"), index=False)
    digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class _Parsed:
    """The validated columns of a log, one entry per input row, ids as integer codes."""

    user_codes: np.ndarray  # [n] int64 index into user_uniques
    user_uniques: np.ndarray  # object array of raw user ids (str)
    item_codes: np.ndarray
    item_uniques: np.ndarray
    timestamps: np.ndarray  # [n] int64 unix seconds, or the row position without timestamps
    ratings: np.ndarray | None  # [n] float64
    event_weights: np.ndarray | None  # [n] float64
    events: np.ndarray | None  # [n] object: normalised event names
    event_codes: np.ndarray | None  # [n] int64
    notes: tuple[str, ...]


def _parse(
    frame: pd.DataFrame, mapping: ColumnMapping, clean: CleanOptions, rows: _Rows
) -> _Parsed:
    """Check and convert every mapped column; the first bad value raises DataError."""
    user_s = _id_strings(frame[mapping.user], "user", mapping.user, rows)
    item_s = _id_strings(frame[mapping.item], "item", mapping.item, rows)
    ratings = _ratings(frame[mapping.rating], mapping.rating, rows) if mapping.rating else None
    if mapping.timestamp:
        ts, note = _timestamps(frame[mapping.timestamp], mapping.timestamp, rows, time.time())
    else:
        ts, note = np.arange(len(frame), dtype=np.int64), "no timestamps: file order used"
    event_w = events = event_codes = None
    if mapping.event:
        event_w, events, event_codes = _event_weights(
            frame[mapping.event], mapping.event, rows, clean.resolved_event_weights()
        )
    user_codes, user_uniques = pd.factorize(user_s)
    item_codes, item_uniques = pd.factorize(item_s)
    return _Parsed(
        user_codes=user_codes.astype(np.int64, copy=False),
        user_uniques=np.asarray(user_uniques, dtype=object),
        item_codes=item_codes.astype(np.int64, copy=False),
        item_uniques=np.asarray(item_uniques, dtype=object),
        timestamps=ts,
        ratings=ratings,
        event_weights=event_w,
        events=events,
        event_codes=event_codes,
        notes=(note,),
    )


def _duplicate_rows(pair: np.ndarray, others: list[np.ndarray], keep: np.ndarray) -> np.ndarray:
    """Mask of kept rows equal on every key to an earlier kept row (the first one stays)."""
    rows = np.flatnonzero(keep)
    # Only rows whose (user, item) pair repeats can be duplicates; checking those alone
    # keeps the full-key comparison (and its memory) small on typical logs.
    rows = rows[pd.Series(pair[rows]).duplicated(keep=False).to_numpy()]
    duplicated = np.zeros(len(keep), dtype=bool)
    if len(rows):
        keys = pd.DataFrame({f"k{j}": key[rows] for j, key in enumerate([pair, *others])})
        duplicated[rows[keys.duplicated(keep="first").to_numpy()]] = True
    return duplicated


def _filter(
    parsed: _Parsed, mapping: ColumnMapping, clean: CleanOptions, display: str
) -> tuple[np.ndarray, list[str]]:
    """Row positions that survive the rating threshold, zero weights, dedupe and k-core."""
    notes: list[str] = []
    keep = np.ones(len(parsed.user_codes), dtype=bool)
    if clean.min_rating is not None:
        if parsed.ratings is None:
            raise DataError(
                f"A rating threshold was set but no rating column is mapped for '{display}'; "
                "map the rating column or clear the threshold."
            )
        keep &= parsed.ratings >= clean.min_rating
        if not keep.any():
            raise DataError(
                f"No row of '{display}' has a rating of at least {clean.min_rating:g} in column "
                f"'{mapping.rating}'; lower the rating threshold."
            )
        if dropped := int((~keep).sum()):
            notes.append(f"{dropped} rows with rating below {clean.min_rating:g} dropped")
    if parsed.event_weights is not None:
        zero = keep & (parsed.event_weights <= 0)
        if zero.any():
            keep &= ~zero
            if not keep.any():
                raise DataError(
                    f"Every row of '{display}' has an event type with weight 0 in column "
                    f"'{mapping.event}'; give at least one event type a positive weight."
                )
            notes.append(f"{int(zero.sum())} rows with event weight 0 dropped")

    pair = parsed.user_codes * len(parsed.item_uniques) + parsed.item_codes
    others = [parsed.timestamps] if mapping.timestamp else []
    others += [a for a in (parsed.ratings, parsed.event_codes) if a is not None]
    duplicated = _duplicate_rows(pair, others, keep)
    if n_dup := int(duplicated.sum()):
        if clean.dedupe:
            keep &= ~duplicated
            notes.append(f"{n_dup} exact duplicate rows removed")
        else:
            notes.append(f"{n_dup} exact duplicate rows found and kept (de-duplication is off)")

    kept = np.flatnonzero(keep)
    core, passes = _k_core(
        parsed.user_codes[kept],
        parsed.item_codes[kept],
        clean.min_user_interactions,
        clean.min_item_interactions,
    )
    if not core.any():
        raise DataError(
            f"K-core filtering (at least {clean.min_user_interactions} interactions per user and "
            f"{clean.min_item_interactions} per item) removed every row of '{display}'; lower "
            "the minimum interaction counts."
        )
    if removed := int((~core).sum()):
        notes.append(f"k-core filtering removed {removed} rows in {passes} passes")
    return kept[core], notes


def _check_catalog_overlap(
    catalog: pd.DataFrame, item_uniques: np.ndarray, item_col: str, display: str
) -> None:
    cat_ids = catalog["item_id"].astype(str)
    if cat_ids.isin(item_uniques).any():
        return
    cat_name = catalog.attrs.get("source_name", "the catalog")
    cat_col = catalog.attrs.get("item_column", "item_id")
    first = _Rows(cat_name, catalog.attrs.get("header_rows")).label(0)
    raise DataError(
        f"None of the {len(cat_ids)} item ids in column '{cat_col}' of '{cat_name}' (the first "
        f"is {_clip(cat_ids.iloc[0])} in {first}) matches an item id in column '{item_col}' of "
        f"'{display}' (e.g. {_clip(item_uniques[0])}); upload the catalog that belongs to this "
        "log or map the right id columns."
    )


def build_dataset(
    frame: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    catalog: pd.DataFrame | None = None,
    clean: CleanOptions = CleanOptions(),
    split: SplitOptions = SplitOptions(),
    name: str = "dataset",
    content_hash: str | None = None,
    source_name: str = "upload",
) -> InteractionData:
    """Validate, clean, k-core, index and split an interaction frame.

    ``frame`` is what `read_table` returns (or any DataFrame; its ``attrs`` say how to number
    rows in messages); ``catalog`` is what `read_catalog` returns. Weights are the rating when
    one is mapped, else the event weight, else 1. Arrays are sorted by (user, time, file
    order); without a timestamp column the file order is the time.
    """
    display = frame.attrs.get("source_name") or display_name(source_name)
    rows = _Rows(display, frame.attrs.get("header_rows"))
    validate_mapping(frame, mapping, display)
    if len(frame) == 0:
        raise DataError(f"'{display}' has no data rows; upload a file with interactions.")
    frame = frame.reset_index(drop=True)
    parsed = _parse(frame, mapping, clean, rows)
    if catalog is not None:
        _check_catalog_overlap(catalog, parsed.item_uniques, mapping.item, display)
    kept, filter_notes = _filter(parsed, mapping, clean, display)

    users, user_ids = _dense(parsed.user_codes[kept], parsed.user_uniques)
    items, item_ids = _dense(parsed.item_codes[kept], parsed.item_uniques)
    for role, col, ids in (("user", mapping.user, user_ids), ("item", mapping.item, item_ids)):
        if len(ids) < 2:
            raise DataError(
                f"'{display}' has only one {role} ({_clip(ids[0])} in column '{col}') after "
                "cleaning and filtering; a recommender needs at least two users and two items, "
                "so upload more data or relax the filters."
            )
    # Stable order: user, then time, then file position (ties in time keep file order).
    order = np.lexsort((kept, parsed.timestamps[kept], users))
    kept, users, items = kept[order], users[order], items[order]

    notes = [*parsed.notes, *filter_notes]
    titles, categories, prices, uncatalogued = _join_catalog(item_ids, catalog)
    if uncatalogued:
        notes.append(f"{uncatalogued} items have no catalog entry: their id is shown as the title")
    if parsed.ratings is not None:
        weights = parsed.ratings[kept]
    elif parsed.event_weights is not None:
        weights = parsed.event_weights[kept]
    else:
        weights = np.ones(len(kept))
    return InteractionData(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=parsed.timestamps[kept],
        weights=weights.astype(np.float32),
        split=_split_labels(users, split),
        has_timestamps=mapping.timestamp is not None,
        titles=titles,
        categories=categories,
        prices=prices,
        content_hash=content_hash or _frame_hash(frame),
        split_method=split.method,
        split_seed=split.seed,
        events=parsed.events[kept] if parsed.events is not None else None,
        notes=tuple(notes),
    )


def _dataset_name(display: str) -> str:
    stem = display
    for suffix in (".gz", ".gzip", ".csv", ".tsv", ".txt", ".parquet", ".pq", ".inter", ".data"):
        stem = stem.removesuffix(suffix)
    return stem or "dataset"


def load_interactions(
    source: Source,
    name: str | None = None,
    *,
    mapping: ColumnMapping | None = None,
    catalog_source: Source | None = None,
    catalog_name: str | None = None,
    clean: CleanOptions = CleanOptions(),
    split: SplitOptions = SplitOptions(),
    max_bytes: int = MAX_UPLOAD_BYTES,
    dataset_name: str | None = None,
) -> InteractionData:
    """Read -> detect (unless ``mapping``) -> validate -> build, from a path or upload bytes.

    ``name`` is the upload's file name, used only in messages and as a format hint. The
    content hash is the sha256 of the raw file bytes.
    """
    data, display = _source_bytes(source, name, max_bytes)
    frame = _read_bytes(data, display, max_bytes)
    content_hash = file_sha256(data)
    del data  # the raw bytes are not needed past this point; let a large upload go
    if mapping is None:
        mapping = detect_columns(frame, display)
    else:
        validate_mapping(frame, mapping, display)
    catalog = None
    if catalog_source is not None:
        catalog = read_catalog(catalog_source, catalog_name, max_bytes=max_bytes)
    return build_dataset(
        frame,
        mapping,
        catalog=catalog,
        clean=clean,
        split=split,
        name=dataset_name or _dataset_name(display),
        content_hash=content_hash,
        source_name=display,
    )
