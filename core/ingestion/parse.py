"""The mapped columns of a log, checked and converted: ids, ratings, timestamps, events.

`LogParser` turns the mapped columns of a log into compact arrays, one entry per input row:
ids as integer codes (`core.ingestion.ids`), timestamps as unix seconds, event types as
small codes. A small file
is one block (`parse_columns`); a big one is fed block by block (`core.ingestion.stream`)
and gives the same result, so the two paths cannot drift apart. Conversions go through
pyarrow first (a million values in milliseconds) and fall back to pandas only for what Arrow
refuses; the first bad value raises a `DataError` naming its column and row (see
`core.ingestion.messages.Rows`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import DataError
from core.ingestion.ids import Uniques, arrow_strings, id_codes, merge_ids
from core.ingestion.messages import Rows, clip, first
from core.ingestion.options import CleanOptions, ColumnMapping, event_key

# Timestamps outside [1990-01-01, now + 1 day] are rejected: they are almost always a wrong
# unit or a wrong column, and they would silently wreck the leave-one-out order.
MIN_TIMESTAMP = 631_152_000
FUTURE_SLACK_S = 86_400

_UNIT_DIVISORS = {"seconds": 1, "milliseconds": 10**3, "microseconds": 10**6, "nanoseconds": 10**9}
NO_TIMESTAMPS_NOTE = "no timestamps: file order used"


@dataclass
class Parsed:
    """The validated columns of a log, one entry per input row, ids as integer codes.

    Codes are int32 (a log in memory never has 2**31 distinct ids) to halve the memory of a
    20-million-row log; event types are codes into ``event_names`` for the same reason.
    `core.ingestion.build.assemble` consumes it: it `take`s each column as soon as it holds
    the column's final copy, so the log is never held twice at the peak.
    """

    user_codes: np.ndarray  # [n] int32 index into user_uniques
    user_uniques: np.ndarray  # object array of raw user ids (str), in order of appearance
    item_codes: np.ndarray
    item_uniques: np.ndarray
    timestamps: np.ndarray  # [n] int64 unix seconds, or the row position without timestamps
    ratings: np.ndarray | None  # [n] float64
    event_codes: np.ndarray | None  # [n] int16 (int32 past 32,767 types) into event_names
    event_names: tuple[str, ...]  # every event type that has a weight, sorted
    event_table: np.ndarray  # [len(event_names)] float64 weight of each event type
    notes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.user_codes)

    def take(self, column: str) -> np.ndarray:
        """A column, removed from this object: its memory goes when the caller drops it."""
        value = getattr(self, column)
        setattr(self, column, None)
        return value


def parse_columns(
    frame: pd.DataFrame, mapping: ColumnMapping, clean: CleanOptions, rows: Rows
) -> Parsed:
    """Check and convert every mapped column; the first bad value raises DataError."""
    parser = LogParser(mapping, clean)
    parser.add(frame, rows)
    return parser.finish()


class LogParser:
    """Parses a log block by block into one `Parsed` (a small file is a single block).

    Blocks must come in file order with ``rows.offset`` set to each block's first position,
    so that messages name the row in the file and row positions stand in for time when
    there is no timestamp column. Ids are factorised per block and the blocks' distinct
    ids merged at the end; the timestamp unit is decided by the first block and kept.
    """

    def __init__(self, mapping: ColumnMapping, clean: CleanOptions, now: float | None = None):
        self.mapping = mapping
        self.now = time.time() if now is None else now
        weights = clean.resolved_event_weights()
        self.event_names = tuple(sorted(weights))
        self.event_table = np.array([weights[k] for k in self.event_names], dtype=np.float64)
        self.n_rows = 0
        self._users: list[tuple[np.ndarray, Uniques]] = []
        self._items: list[tuple[np.ndarray, Uniques]] = []
        self._timestamps: list[np.ndarray] = []
        self._ratings: list[np.ndarray] = []
        self._events: list[np.ndarray] = []
        self._unit: str | None = None
        self._note = NO_TIMESTAMPS_NOTE

    def add(self, frame: pd.DataFrame, rows: Rows) -> None:
        """Check and convert one block; the first bad value raises DataError."""
        m = self.mapping
        self._users.append(id_codes(frame[m.user], "user", m.user, rows))
        self._items.append(id_codes(frame[m.item], "item", m.item, rows))
        if m.rating:
            self._ratings.append(_ratings(frame[m.rating], m.rating, rows))
        if m.timestamp:
            seconds, note, self._unit = _timestamps(
                frame[m.timestamp], m.timestamp, rows, self.now, self._unit
            )
            if not self._timestamps:
                self._note = note
            self._timestamps.append(seconds)
        else:
            self._timestamps.append(np.arange(self.n_rows, self.n_rows + len(frame)))
        if m.event:
            self._events.append(_event_codes(frame[m.event], m.event, rows, self.event_names))
        self.n_rows += len(frame)

    def finish(self) -> Parsed:
        """The whole log; the parser is spent afterwards (its blocks are released).

        Column by column, each block list dropped as soon as it is joined, so the peak is
        one column twice over rather than the whole log twice over.
        """
        user_codes, user_uniques = merge_ids(self._users)
        self._users = []
        item_codes, item_uniques = merge_ids(self._items)
        self._items = []
        timestamps = _concat(self._timestamps, np.int64)
        self._timestamps = []
        ratings = _concat(self._ratings, np.float64) if self.mapping.rating else None
        self._ratings = []
        events = (
            _concat(self._events, _code_dtype(self.event_names)) if self.mapping.event else None
        )
        self._events = []
        return Parsed(
            user_codes=user_codes,
            user_uniques=user_uniques,
            item_codes=item_codes,
            item_uniques=item_uniques,
            timestamps=timestamps,
            ratings=ratings,
            event_codes=events,
            event_names=self.event_names,
            event_table=self.event_table,
            notes=(self._note,),
        )


def _concat(blocks: list[np.ndarray], dtype: type) -> np.ndarray:
    if len(blocks) == 1:
        return blocks[0].astype(dtype, copy=False)
    return np.concatenate(blocks, dtype=dtype) if blocks else np.zeros(0, dtype)


# --------------------------------------------------------------------------- numbers
def to_float(series: pd.Series) -> np.ndarray:
    """float64 values; nan where a value is missing or not a number."""
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = arrow_strings(series)
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
    arr = arrow_strings(series)
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


def _refuse_bad_values(
    series: pd.Series, bad: np.ndarray, col: str, rows: Rows, *, noun: str, wrong: str, fix: str
) -> None:
    """Raise for the first ``bad`` value: "an empty <noun>" or "the <wrong> <noun> <value>"."""
    if not bad.any():
        return
    pos = first(bad)
    raw = series.iloc[pos]
    what = rows.empty(noun) if pd.isna(raw) else f"the {wrong} {noun} {clip(raw)}"
    raise DataError(
        f"'{rows.display}' has {what} in {rows.field(col)} {rows.at(pos)}{rows.more(bad)}; {fix}."
    )


def _ratings(series: pd.Series, col: str, rows: Rows) -> np.ndarray:
    values = to_float(series)
    _refuse_bad_values(
        series,
        ~np.isfinite(values),
        col,
        rows,
        noun="rating",
        wrong="non-numeric",
        fix="make every rating a number or map a different rating column",
    )
    return values


# --------------------------------------------------------------------------- timestamps
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
    arr = arrow_strings(series)
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


def _timestamps(
    series: pd.Series, col: str, rows: Rows, now: float, unit: str | None = None
) -> tuple[np.ndarray, str, str | None]:
    """int64 unix seconds, a note saying how the column was read, and the numeric unit.

    ``unit`` is the unit an earlier block of the same file was read in; numbers are read in
    it too, so one file is never read in two units.
    """
    missing = series.isna().to_numpy()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        seconds, bad = _datetimes_to_seconds(series)
        note = "timestamps read as dates"
    else:
        exact = _to_int_exact(series)
        if exact is not None:
            unit = unit or _numeric_unit(exact)
            seconds = exact // _UNIT_DIVISORS[unit]
            bad = np.zeros(len(exact), dtype=bool)
            note = f"timestamps read as unix {unit}"
        elif (numeric := np.isfinite(numbers := to_float(series))).sum() > (~missing).sum() / 2:
            unit = unit or _numeric_unit(numbers[numeric])
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
    _refuse_bad_values(
        series,
        bad,
        col,
        rows,
        noun="timestamp",
        wrong="unparseable",
        fix="use unix seconds, unix milliseconds or dates like 2024-01-31 14:05:00 throughout",
    )
    latest = int(now) + FUTURE_SLACK_S
    absurd = (seconds < MIN_TIMESTAMP) | (seconds > latest)
    if absurd.any():
        pos = first(absurd)
        value = int(seconds[pos])
        # Years 1698-2242 print as a date; beyond that the number itself says enough.
        when = f" ({pd.Timestamp(value, unit='s'):%Y-%m-%d})" if abs(value) < 2**33 else ""
        raise DataError(
            f"'{rows.display}' has the timestamp {clip(series.iloc[pos])}{when} in "
            f"{rows.field(col)} {rows.at(pos)}{rows.more(absurd)}, which is before 1990 or "
            "more than a day in the future; check the column and its unit or remove those rows."
        )
    return seconds.astype(np.int64, copy=False), note, unit


# --------------------------------------------------------------------------- events
def _event_codes(series: pd.Series, col: str, rows: Rows, names: tuple[str, ...]) -> np.ndarray:
    """[n] int16 index into ``names`` (the sorted event types that have a weight)."""
    null = series.isna().to_numpy()
    if null.any():
        pos = first(null)
        raise DataError(
            f"'{rows.display}' has {rows.empty('event type')} in {rows.field(col)} "
            f"{rows.at(pos)}{rows.more(null)}; fill in or delete those rows."
        )
    codes, uniques = pd.factorize(series.astype("str"))
    keys = [event_key(u) for u in uniques]
    index = {name: i for i, name in enumerate(names)}
    unknown = [i for i, key in enumerate(keys) if key not in index]
    if unknown:
        bad = np.isin(codes, unknown)
        pos = first(bad)
        value = str(series.iloc[pos])
        raise DataError(
            f"'{rows.display}' has the event type {clip(value)} in {rows.field(col)} "
            f"{rows.at(pos)}, which has no weight (known: {', '.join(names)}); "
            f"give it a weight (e.g. event_weights={{{clip(event_key(value))}: 1.0}}) or remove "
            "those rows."
        )
    return np.array([index[key] for key in keys], dtype=_code_dtype(names))[codes]


def _code_dtype(names: tuple[str, ...]) -> type:
    """int16 codes for the usual handful of event types; int32 for an absurd many."""
    return np.int16 if len(names) < 2**15 else np.int32
