"""Bytes or a path -> a DataFrame: size checks, gzip, Parquet, text sniffing, Arrow parsing.

`read_table` reads a delimited text file (any of , ; TAB | space, with or without a header
row: MovieLens ``u.data``, RecBole ``.inter``/``.item``), JSON Lines (`core.ingestion.jsonl`),
a gzip of either, or Parquet, whole. Text columns come back as strings, exactly as written;
numbers and dates are parsed later, by `core.ingestion.parse`, where a failure can name its
row. Big files are not read here but streamed (`core.ingestion.stream`), which reuses the
sniffing and the CSV options below. Nothing here writes anywhere, and every problem raises
a one-sentence `DataError`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.errors import DataError
from core.ingestion.jsonl import is_json_lines, read_jsonl
from core.ingestion.limits import TEXT_BYTES_PER_FILE_BYTE, check_text_bytes, memory_budget
from core.ingestion.messages import clip, column_list, display_name, human_size, reason

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

MAX_UPLOAD_BYTES = 200 * 1024 * 1024
# A gzip bomb guard: a compressed upload may expand to at most this many times the limit.
MAX_DECOMPRESSION_FACTOR = 10

_DELIMITERS = (",", "\t", ";", "|", " ")
_DELIMITER_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe", " ": "space"}
_SNIFF_BYTES = 64 * 1024
_SNIFF_LINES = 50
_RECBOLE_SUFFIX = re.compile(r":(token|token_seq|float|float_seq)$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_UTF8_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"


def read_table(
    source: Source, name: str | None = None, *, max_bytes: int | None = MAX_UPLOAD_BYTES
) -> pd.DataFrame:
    """Read a delimited text, gzip or Parquet table into a DataFrame.

    ``source`` is a path or raw bytes; ``name`` (an upload's file name) is used only in
    messages and as a format hint, never opened. Text columns come back as strings (ids stay
    exactly as written); Parquet columns keep their types. ``frame.attrs`` records
    ``source_name``, ``format`` and ``header_rows`` (1, 0, or None for Parquet), which
    `build_dataset` uses to number rows in its messages. ``max_bytes`` is the upload limit;
    None lifts it (a local file), and the memory budget (`core.ingestion.limits`) applies.
    """
    data, display = source_bytes(source, name, max_bytes)
    return read_bytes(data, display, max_bytes)


def source_bytes(source: Source, name: str | None, max_bytes: int | None) -> tuple[bytes, str]:
    """Raw bytes and a display name, refusing oversized input before reading it."""
    if isinstance(source, bytes | bytearray | memoryview):
        display = display_name(name)
        _check_size(len(source), display, max_bytes)
        return bytes(source), display
    path = Path(source)
    display = display_name(name or path.name)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"Cannot open '{display}' ({exc.strerror}); check the path.") from exc
    _check_size(size, display, max_bytes)
    return path.read_bytes(), display


def _check_size(size: int, display: str, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise DataError(
            f"'{display}' is {human_size(size)}, over the {human_size(max_bytes)} upload limit; "
            "upload a smaller sample (or a gzip-compressed copy) of the file."
        )
    check_text_bytes(size, display)


def read_bytes(data: bytes, display: str, max_bytes: int | None) -> pd.DataFrame:
    """`read_table` on bytes already read and size-checked (`source_bytes`)."""
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, display, max_bytes)
        check_text_bytes(len(data), display)
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


def _gunzip(data: bytes, display: str, max_bytes: int | None) -> bytes:
    """Every member of a gzip file (``cat a.gz b.gz`` holds two), within the bomb cap."""
    if max_bytes is None:  # a local file: as much as the memory budget can read whole
        limit = memory_budget() // TEXT_BYTES_PER_FILE_BYTE
    else:
        limit = max_bytes * MAX_DECOMPRESSION_FACTOR
    try:
        # gzip reads all members and skips zero padding after the last one; asking for one
        # byte past the cap is how a hostile file is caught without expanding it further.
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            out = stream.read(limit + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise gzip_error(exc, display) from exc
    if len(out) > limit:
        raise expands_error(limit, display)
    return out


def gzip_error(exc: Exception, display: str) -> DataError:
    """The sentence for a gzip file that cannot be decompressed (EOFError, BadGzipFile...)."""
    if isinstance(exc, EOFError):
        return DataError(
            f"'{display}' is an incomplete gzip file (its compressed data stops before "
            "the end); upload the complete file again or upload it uncompressed."
        )
    # The first member's magic bytes were checked by the caller, so "not gzipped" can
    # only be about what follows the last complete member.
    if str(exc).startswith("Not a gzipped file"):
        return DataError(
            f"'{display}' has data that is not gzip after its compressed content; "
            "upload the file again or upload it uncompressed."
        )
    return DataError(
        f"'{display}' starts like a gzip file but cannot be decompressed "
        f"({reason(exc)}); upload the file again or upload it uncompressed."
    )


def expands_error(limit: int, display: str) -> DataError:
    return DataError(
        f"'{display}' expands to more than {human_size(limit)} when decompressed; "
        "upload a smaller sample of the file."
    )


# --------------------------------------------------------------------------- Parquet
def _read_parquet(data: bytes, display: str) -> pd.DataFrame:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        # Checked before reading: duplicate names get their own sentence, not an Arrow dump.
        names = clean_header([str(c) for c in parquet.schema_arrow.names], display)
        table, unusable = plain_columns(parquet.read(), names)
        frame = table.to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(
            f"'{display}' looks like Parquet but cannot be read ({reason(exc)}); export it again."
        ) from exc
    frame.columns = names
    frame = frame.reset_index(drop=True)
    frame.attrs.update(
        source_name=display, format="parquet", header_rows=None, unusable_columns=unusable
    )
    if frame.shape[1] < 2:
        raise DataError(
            f"'{display}' has only one column ({column_list(list(frame.columns))}); "
            "an interaction log needs at least a user and an item column."
        )
    if len(frame) == 0:
        raise DataError(f"'{display}' has columns but no rows; upload a file with data.")
    return frame


def plain_columns(table: pa.Table, names: list[str]) -> tuple[pa.Table, dict[str, str]]:
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


# --------------------------------------------------------------------------- text sniffing
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


def _sample_text(data: bytes, display: str) -> str:
    sample = data[:_SNIFF_BYTES]
    if len(data) > _SNIFF_BYTES and b"\n" in sample:
        # Cut at a newline so no multi-byte character or half line reaches the sniffer.
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        return sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        pos = exc.start
        raise_not_utf8(display, data[pos : pos + 1], data.count(b"\n", 0, pos) + 1, exc)


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


def clean_header(names: list[str], display: str) -> list[str]:
    cleaned = []
    for i, raw in enumerate(names):
        col = _RECBOLE_SUFFIX.sub("", raw.strip().lstrip("\ufeff").strip())
        cleaned.append(col or f"column_{i + 1}")
    seen: set[str] = set()
    for col in cleaned:
        if col in seen:
            raise DataError(
                f"'{display}' has two columns named {clip(col, 40)}; rename one of them so every "
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


@dataclass(frozen=True)
class TextLayout:
    """How a delimited text file is laid out, as sniffed from its first 64 KB."""

    delimiter: str
    names: list[str]
    header_rows: int  # 1: the first line names the columns; 0: it is data


def check_text(data: bytes, display: str) -> bytes:
    """``data`` without a UTF-8 byte-order mark; an empty or binary file raises DataError."""
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    if not data or data.isspace():
        raise DataError(f"'{display}' is empty; upload a file with a header row and data rows.")
    _reject_binary(data, display)
    return data


def sniff_text(data: bytes, display: str) -> TextLayout:
    """The delimiter, column names and header row of delimited text (no BOM)."""
    text = _sample_text(data, display)
    lines = [line for line in text.splitlines() if line.strip()][:_SNIFF_LINES]
    if not lines:  # only characters Python counts as blank (e.g. \x1c, a line separator)
        raise DataError(f"'{display}' is empty; upload a file with a header row and data rows.")
    delimiter = _sniff_delimiter(lines, display)
    if delimiter is None:
        raise DataError(
            f"'{display}' has only one column (first line: {clip(lines[0], 80)}); separate the "
            "columns with a comma, semicolon, tab, pipe or space and use the same one on every row."
        )
    first = _split_line(lines[0], delimiter)
    has_header = not all(_NUMBER.match(field.strip()) for field in first)
    names = clean_header(first, display) if has_header else _headerless_names(lines, delimiter)
    return TextLayout(delimiter, names, 1 if has_header else 0)


def _read_text(data: bytes, display: str) -> pd.DataFrame:
    data = check_text(data, display)
    if is_json_lines(data[:_SNIFF_BYTES], display):
        return read_jsonl(data, display)
    layout = sniff_text(data, display)
    if layout.delimiter == " ":
        # Space-aligned files use runs of spaces; pyarrow wants exactly one separator.
        data = re.sub(rb"[ ]+", b" ", data)
        data = re.sub(rb"(?m)^ | (?=\r?$)", b"", data)
    frame = _arrow_read(data, display, layout)
    frame.attrs.update(
        source_name=display,
        format="text",
        header_rows=layout.header_rows,
        delimiter=layout.delimiter,
    )
    if len(frame) == 0:
        raise DataError(
            f"'{display}' has a header row ({column_list(layout.names)}) but no data rows; "
            "upload the file with its data."
        )
    return frame


# --------------------------------------------------------------------------- Arrow parsing
def csv_options(
    layout: TextLayout,
    handler: Callable[[Any], str] | None = None,
    columns: list[str] | None = None,
    block_bytes: int | None = None,
) -> dict[str, Any]:
    """pyarrow.csv options reading every column (or ``columns``) as text.

    With a ``handler`` (the re-read that names a bad row) parsing is single-threaded, so
    the first offending row in the file is the first the handler sees.
    """
    read = dict(
        skip_rows=layout.header_rows, column_names=layout.names, use_threads=handler is None
    )
    if block_bytes is not None:
        read["block_size"] = block_bytes
    wanted = layout.names if columns is None else columns
    return dict(
        read_options=pa_csv.ReadOptions(**read),
        parse_options=pa_csv.ParseOptions(delimiter=layout.delimiter, invalid_row_handler=handler),
        # Every column as text: ids must keep leading zeros and exact spelling, and the
        # numeric columns are parsed later where a failure can name its row. large_string
        # is what pandas' str dtype stores, so to_pandas() below does not copy.
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(wanted, pa.large_string()),
            strings_can_be_null=True,
            include_columns=columns,
        ),
    )


def _arrow_read(data: bytes, display: str, layout: TextLayout) -> pd.DataFrame:
    try:
        table = pa_csv.read_csv(pa.BufferReader(data), **csv_options(layout))
    except pa.ArrowInvalid as exc:
        explain_csv_error(
            display,
            layout.delimiter,
            exc,
            utf8_error=lambda: _utf8_error(data),
            reread=lambda handler: pa_csv.read_csv(
                pa.BufferReader(data), **csv_options(layout, handler)
            ),
        )
    return table.to_pandas(self_destruct=True, split_blocks=True)


def _utf8_error(data: bytes) -> tuple[bytes, int] | None:
    """(the first byte that is not UTF-8, its 1-based line), or None when all is UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data[err.start : err.start + 1], data.count(b"\n", 0, err.start) + 1
    return None


def raise_not_utf8(display: str, byte: bytes, line: int, exc: BaseException) -> NoReturn:
    raise DataError(
        f"'{display}' is not UTF-8 text: byte {byte!r} on line {line} "
        "(counting the first line of the file as 1) cannot be decoded; save the file as UTF-8."
    ) from exc


def explain_csv_error(
    display: str,
    delimiter: str,
    exc: pa.ArrowInvalid,
    *,
    utf8_error: Callable[[], tuple[bytes, int] | None],
    reread: Callable[[Callable[[Any], str]], object],
) -> NoReturn:
    """Turn a pyarrow parse failure into one sentence naming the first bad row.

    ``utf8_error`` finds the first byte that is not UTF-8; ``reread`` parses the whole
    input again with an invalid-row handler (only on the way to an error).
    """
    message = str(exc)
    if "UTF8" in message or "utf8" in message.lower():
        found = utf8_error()
        if found is not None:
            raise_not_utf8(display, *found, exc)
    # Re-read single-threaded so the first offending row (not the first a thread saw) is named.
    bad: list[Any] = []

    def first_bad(row: Any) -> str:  # a pyarrow InvalidRow
        bad.append(row)
        return "error"

    with contextlib.suppress(pa.ArrowInvalid):
        reread(first_bad)
    if bad:
        row = bad[0]
        where = f"row {row.number}" if row.number is not None else f"row {clip(row.text)}"
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
        f"'{display}' cannot be read as a table ({reason(exc)}); check its format."
    ) from exc
