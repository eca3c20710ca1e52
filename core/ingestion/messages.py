"""The pieces every one-sentence `DataError` of ingestion is written from.

A message names the file (as `display_name` shows it), the column, the first offending row
(`Rows.label`) and what to do. Upload names, values and column lists come from the client,
so everything quoted is clipped: a hostile file (a million-character cell, ten thousand
columns) must not turn one sentence into megabytes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

_MAX_NAME_CHARS = 80
_MAX_VALUE_CHARS = 60
_MAX_LISTED_COLUMNS = 12


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


def clip(value: object, limit: int = _MAX_VALUE_CHARS) -> str:
    """repr() of a value quoted in a message, cut to ``limit`` characters."""
    text = str(value)
    return repr(text if len(text) <= limit else f"{text[:limit]}…")


def column_list(columns: list[str]) -> str:
    """The columns found, for a message: the first few, each clipped, and a count of the rest."""
    shown = ", ".join(clip(c, 40) for c in columns[:_MAX_LISTED_COLUMNS])
    rest = len(columns) - _MAX_LISTED_COLUMNS
    return f"{shown} and {rest:,} more" if rest > 0 else shown


def reason(exc: BaseException, limit: int = 120) -> str:
    """The first sentence of a library's error message, for the parenthesis of ours."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.split(r"(?<=[a-z0-9)])\. (?=[A-Z])", text)[0].rstrip(".")
    return text if len(text) <= limit else f"{text[:limit]}…"


def human_size(n: int) -> str:
    """A byte count as people read it: "1.5 MB", "812 bytes"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def first(mask: np.ndarray) -> int:
    """Position of the first True in a boolean mask (the row a message names)."""
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True)
class Rows:
    """Turns a 0-based position in a frame into the row number a user sees.

    Text files use spreadsheet numbering (the header line is row 1, so the first data row
    is row 2); files without a header row and Parquet files count data rows from 1; JSON
    Lines files name the line (``line_of`` maps a position to its 1-based line, since blank
    lines hold no row). Each label says which, so nobody has to guess.

    A big file is parsed in blocks: ``offset`` is the position of the block's first row in
    the file, and ``whole`` is False because a block cannot count the rows after it.
    """

    display: str
    header_rows: int | None
    offset: int = 0
    whole: bool = True
    line_of: Callable[[int], int] | None = None

    @classmethod
    def of(cls, frame: pd.DataFrame, display: str | None = None) -> Rows:
        """The numbering `core.ingestion.read` recorded in ``frame.attrs``."""
        attrs = frame.attrs
        return cls(
            display or attrs.get("source_name", "upload"),
            attrs.get("header_rows"),
            line_of=attrs.get("line_of"),
        )

    def block(self, offset: int) -> Rows:
        """The numbering of a block of a big file that starts at row position ``offset``."""
        return replace(self, offset=offset, whole=False)

    def label(self, position: int) -> str:
        position += self.offset
        if self.line_of is not None:
            return f"line {self.line_of(position)}"
        if self.header_rows == 1:
            return f"row {position + 2} (spreadsheet numbering, the header is row 1)"
        if self.header_rows == 0:
            return f"row {position + 1} (the file has no header row)"
        return f"data row {position + 1} (counting data rows from 1)"

    def at(self, position: int) -> str:
        """Where a value is: "in row 3 (...)" or, in JSON Lines, "on line 3"."""
        return f"{'on' if self.line_of is not None else 'in'} {self.label(position)}"

    def field(self, column: str) -> str:
        """A column as the file calls it: "column 'x'", or "field 'x'" in JSON Lines."""
        return f"{'field' if self.line_of is not None else 'column'} '{column}'"

    def empty(self, noun: str) -> str:
        """A value that is not there: a JSON field may also be missing or null."""
        return f"a missing or empty {noun}" if self.line_of is not None else f"an empty {noun}"

    def more(self, mask: np.ndarray) -> str:
        extra = int(mask.sum()) - 1
        if extra <= 0:
            return ""
        return f" and {'' if self.whole else 'at least '}{extra} more row(s)"
