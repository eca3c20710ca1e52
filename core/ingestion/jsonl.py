"""JSON Lines logs (``.jsonl``, ``.ndjson``, gzipped too): one JSON object per line.

Read with pyarrow's JSON reader into the same DataFrame a CSV gives, so detection,
validation and messages are shared; rows are named by their line ("on line 7", blank lines
counted). Arrow's own errors are terse and count rows per block, so when it refuses a file
the lines are scanned once more in Python to name the line and the field at fault; that
scan runs only on the way to an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from core.errors import DataError
from core.ingestion.messages import clip, column_list, reason

JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
# A line longer than a block cannot be parsed; 16 MB is far beyond any real event.
BLOCK_BYTES = 16 * 1024 * 1024
# Whole numbers at or above 2**53 lose digits in a double, which is how Arrow reads integers
# beyond int64: two different ids could become one.
_EXACT_LIMIT = 2**53
_BLANK_LINE = re.compile(rb"(?m)^[ \t\r\f\v]*$")


def is_json_lines(head: bytes, display: str) -> bool:
    """True for a JSON Lines name, or text whose first non-blank character opens an object."""
    if display.lower().removesuffix(".gz").removesuffix(".gzip").endswith(JSON_SUFFIXES):
        return True
    return head.lstrip()[:1] in (b"{", b"[")


@dataclass(frozen=True)
class LineNumbers:
    """Row position -> 1-based line number, for a file whose blank lines hold no row."""

    blank: tuple[int, ...] = ()  # 1-based numbers of the blank lines, ascending

    def __call__(self, position: int) -> int:
        line = position + 1
        for blank in self.blank:
            if blank > line:
                break
            line += 1
        return line


def blank_lines(data: bytes) -> tuple[int, ...]:
    """1-based numbers of the whitespace-only lines of ``data``."""
    found = []
    line, scanned = 1, 0
    for match in _BLANK_LINE.finditer(data):
        start = match.start()
        if start == len(data) and data.endswith(b"\n"):
            break  # the "line" after the final newline is not a line
        line += data.count(b"\n", scanned, start)
        scanned = start
        found.append(line)
    return tuple(found)


def read_jsonl(data: bytes, display: str) -> pd.DataFrame:
    """A JSON Lines file (UTF-8, already gunzipped) as a DataFrame, like `read_table`'s.

    Scalars keep Arrow's types (strings, numbers, booleans); ``frame.attrs`` records the
    format, ``line_of`` (row position -> line) and the fields that cannot serve as ids,
    ratings or timestamps (nested values, or whole numbers too large to read exactly).
    """
    if data.lstrip()[:1] == b"[":
        raise DataError(
            f"'{display}' is a JSON array, not JSON Lines; write one JSON object per line "
            "(for example with jq -c '.[]')."
        )
    table = read_table(data, display)
    check_utf8(table, lambda exc: explain(numbered_lines([data]), display, exc))
    blank = blank_lines(data)
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if table.num_rows != lines - len(blank):
        # Arrow reads `{...} {...}` on one line as two rows; the scan names that line.
        explain(numbered_lines([data]), display, None)
    line_of = LineNumbers(blank)
    return json_frame(table, display, line_of)


def read_table(data: bytes, display: str) -> pa.Table:
    """pyarrow's JSON reader over ``data``; a parse error becomes one sentence naming the line."""
    try:
        return pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=BLOCK_BYTES),
            parse_options=pa_json.ParseOptions(newlines_in_values=False),
        )
    except pa.ArrowInvalid as exc:
        explain(numbered_lines([data]), display, exc)


def check_utf8(table: pa.Table | pa.RecordBatch, fail: Any) -> None:
    """Call ``fail(exc)`` when a text column holds bytes that are not UTF-8.

    Arrow's JSON reader passes such bytes through (its CSV reader checks them), and they
    would surface later as a crash or as mojibake ids.
    """
    for column in table.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as exc:
                fail(exc)


def json_frame(table: pa.Table, display: str, line_of: Any) -> pd.DataFrame:
    """A table Arrow read from JSON as a DataFrame with the attrs `build_dataset` reads."""
    names = [str(name) for name in table.column_names]
    unusable, inexact = _unusable(table, line_of)
    frame = table.to_pandas()
    frame.attrs.update(
        source_name=display,
        format="jsonl",
        header_rows=None,
        line_of=line_of,
        unusable_columns=unusable,
        inexact_id_columns=inexact,
    )
    if frame.shape[1] < 2:
        found = column_list(names) if names else "none"
        raise DataError(
            f"'{display}' has fewer than two fields (fields found: {found}); an interaction "
            "log needs at least a user and an item field on every line."
        )
    return frame


def _unusable(table: pa.Table, line_of: Any) -> tuple[dict[str, str], dict[str, int]]:
    """({field: what it holds} for nested fields, {field: line} for inexact whole numbers).

    Nested fields cannot serve as any role; a float field holding whole numbers of 2**53 or
    more (how Arrow reads integers beyond int64) cannot serve as ids, whose digits it lost.
    """
    nested, inexact = {}, {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_nested(kind):
            what = "objects" if pa.types.is_struct(kind) else "lists"
            pos = _first(pc.is_valid(column))
            nested[name] = f"nested values ({what}, the first on line {line_of(pos)})"
        elif pa.types.is_floating(kind):
            values = column.to_numpy()
            lost = (np.abs(values) >= _EXACT_LIMIT) & (values == np.round(values))
            if lost.any():
                inexact[name] = line_of(int(np.flatnonzero(lost)[0]))
    return nested, inexact


def _first(mask: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False)))[0])


# --------------------------------------------------------------------------- errors
def numbered_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) over text given as consecutive chunks of bytes."""
    number, rest = 0, b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            number += 1
            yield number, line
    if rest:
        yield number + 1, rest


class _DuplicateField(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateField(key)
        seen[key] = value
    return seen


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, dict) else "a list"


def explain(
    lines: Iterable[tuple[int, bytes]], display: str, exc: BaseException | None
) -> NoReturn:
    """Raise one sentence naming the first line (and field) Arrow could not read."""
    kinds: dict[str, tuple[str, int]] = {}
    for number, raw in lines:
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(
                f"'{display}' is not UTF-8 text: byte {raw[err.start : err.start + 1]!r} on line "
                f"{number} cannot be decoded; save the file as UTF-8."
            ) from err
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicates)
        except _DuplicateField as dup:
            raise DataError(
                f"'{display}' has the field {clip(dup.key, 40)} twice on line {number}; keep one "
                "of them."
            ) from exc
        except ValueError as err:
            if getattr(err, "msg", "") == "Extra data":
                raise DataError(
                    f"'{display}' has more than one JSON object on line {number}; put each "
                    "object on its own line."
                ) from exc
            where = f"{err.msg} at character {err.colno}" if hasattr(err, "colno") else reason(err)
            raise DataError(
                f"'{display}' has invalid JSON on line {number} ({where}); fix that line or "
                "export the file again as JSON Lines, one object per line."
            ) from exc
        if not isinstance(obj, dict):
            raise DataError(
                f"'{display}' has {_kind(obj) or 'null'} on line {number}, not an object; write "
                "one JSON object per line."
            ) from exc
        for key, value in obj.items():
            kind = _kind(value)
            if kind is None:
                continue
            seen = kinds.setdefault(key, (kind, number))
            if seen[0] != kind:
                raise DataError(
                    f"'{display}' has {kind} in field {clip(key, 40)} on line {number} where "
                    f"line {seen[1]} has {seen[0]}; give every value of a field the same type "
                    "(ids all quoted or all numbers, no objects or lists)."
                ) from exc
    if exc is not None and "straddl" in str(exc):
        raise DataError(
            f"'{display}' has a line of several megabytes; shorten it or remove it."
        ) from exc
    detail = f" ({reason(exc)})" if exc is not None else ""
    raise DataError(
        f"'{display}' cannot be read as JSON Lines{detail}; check that it holds one flat JSON "
        "object per line."
    ) from exc
