"""Id columns: checked as text, factorised block by block, merged into one code space.

An id is text, exactly as written (leading zeros kept), stripped of surrounding spaces;
a missing, empty, infinite or multi-line id is a `DataError` naming its row. Integer and
float ids are factorised as numbers and spelled once at the end (`merge_ids`), so a big
file read in blocks holds no Python string per row and spells each id as a small file
would.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import DataError
from core.ingestion.messages import Rows, first

Uniques = np.ndarray | pd.Index  # a block's distinct ids: numbers, or an Arrow-backed str Index


def merge_ids(blocks: list[tuple[np.ndarray, Uniques]]) -> tuple[np.ndarray, np.ndarray]:
    """One code space for ids factorised block by block, in order of first appearance.

    Blocks keep their distinct ids as numbers or Arrow strings, never as Python objects:
    a 20-million-row log read in blocks holds millions of them until this merge.
    """
    if len(blocks) == 1:
        codes, uniques = blocks[0]
        return codes, _spell(uniques)
    parts = [u for _, u in blocks]
    if len({_kind(u) for u in parts}) > 1:  # never for one file's column; spelled to be safe
        parts = [pd.Index(_spell(u), dtype="str") for u in parts]
    if isinstance(parts[0], pd.Index):
        merged, uniques = pd.factorize(pd.concat([p.to_series() for p in parts]))
    else:
        merged, uniques = pd.factorize(np.concatenate(parts))
    codes = np.empty(sum(len(c) for c, _ in blocks), dtype=np.int32)
    row = distinct = 0
    for block_codes, block_uniques in blocks:
        remap = merged[distinct : distinct + len(block_uniques)].astype(np.int32)
        codes[row : row + len(block_codes)] = remap[block_codes]
        row += len(block_codes)
        distinct += len(block_uniques)
    return codes, _spell(uniques)


def _kind(uniques: Uniques) -> str:
    return "str" if isinstance(uniques, pd.Index) else uniques.dtype.kind


def _spell(uniques: Uniques) -> np.ndarray:
    """Distinct ids as an object array of str, spelled as the whole-file path spells them.

    Float ids are written as integers when every one of them is an exact integer. That is
    decided over the distinct ids of the whole file, so a block of only whole numbers in a
    big file does not turn the 3.0 of another block into 3.
    """
    if isinstance(uniques, pd.Index):
        return np.asarray(uniques, dtype=object)
    if uniques.dtype.kind == "f":
        series = pd.Series(uniques)
        if np.all((uniques == np.round(uniques)) & (np.abs(uniques) < 2**53)):
            # Parquet/pandas store integer ids with gaps as float; "12.0" would not match "12".
            series = series.astype("Int64")
        return series.astype("str").to_numpy(dtype=object)
    return uniques.astype(str).astype(object)


# --------------------------------------------------------------------------- ids
def id_codes(series: pd.Series, role: str, col: str, rows: Rows) -> tuple[np.ndarray, Uniques]:
    """(int32 codes, distinct ids) of one block of an id column; a bad id raises DataError.

    Integer and float ids are factorised as numbers (20 million str objects would cost more
    memory than the rest of the log) and spelled by `_spell` once every block is in; other
    ids are checked as text by `id_strings`.
    """
    dtype = series.dtype
    if pd.api.types.is_integer_dtype(dtype) and not series.isna().any():
        codes, uniques = pd.factorize(series.to_numpy(dtype=getattr(dtype, "numpy_dtype", dtype)))
    elif (
        pd.api.types.is_float_dtype(dtype)
        and np.isfinite(floats := series.to_numpy(dtype=np.float64, na_value=np.nan)).all()
    ):
        codes, uniques = pd.factorize(floats)
    else:
        codes, uniques = pd.factorize(id_strings(series, role, col, rows))
        if not isinstance(uniques, pd.Index) or uniques.dtype != "str":
            uniques = pd.Index(np.asarray(uniques, dtype=object).astype(str), dtype="str")
    return codes.astype(np.int32), uniques


def id_strings(series: pd.Series, role: str, col: str, rows: Rows) -> pd.Series:
    """Ids as stripped strings; a missing id is an error naming its row."""
    null = np.array(series.isna(), dtype=bool)
    if pd.api.types.is_float_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values)
        if infinite.any():
            pos = first(infinite)
            raise DataError(
                f"'{rows.display}' has the infinite {role} id {values[pos]} in "
                f"{rows.field(col)} {rows.at(pos)}{rows.more(infinite)}; fix or delete those rows."
            )
        # Only integers a float holds exactly (below 2**53) are written without ".0".
        if np.all(np.isnan(values) | ((values == np.round(values)) & (np.abs(values) < 2**53))):
            # Parquet/pandas store integer ids with gaps as float; "12.0" would not match "12".
            series = series.astype("Int64")
    if not pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        series = series.astype("str")
    arr = arrow_strings(series)
    # Checking first saves a full copy of the column in the usual case of no padding.
    if arr is None or pc.any(pc.match_substring_regex(arr, r"^\s|\s$")).as_py():
        series = series.str.strip()
        arr = arrow_strings(series)
    if arr is not None:
        null |= np.asarray(pc.fill_null(pc.equal(arr, ""), True), dtype=bool)
    else:
        null |= (series.str.len() == 0).fillna(True).to_numpy(dtype=bool)
    if null.any():
        pos = first(null)
        raise DataError(
            f"'{rows.display}' has {rows.empty(f'{role} id')} in {rows.field(col)} "
            f"{rows.at(pos)}{rows.more(null)}; fill in or delete those rows."
        )
    if arr is not None:
        newline = pc.or_(pc.match_substring(arr, "\n"), pc.match_substring(arr, "\r"))
        multiline = np.asarray(pc.fill_null(newline, False), dtype=bool)
    else:
        multiline = series.str.contains(r"[\r\n]").fillna(False).to_numpy(dtype=bool)
    if multiline.any():
        # An id never spans lines; this is a quote left open, which silently merges every
        # following row into one value when the file has no more delimiters to miscount.
        pos = first(multiline)
        raise DataError(
            f"'{rows.display}' has {'an' if role == 'item' else 'a'} {role} id that runs over "
            f"several lines in {rows.field(col)} "
            f"{rows.at(pos)}{rows.more(multiline)}, usually a quote that is never "
            "closed; close or remove that quote."
        )
    return series


def arrow_strings(series: pd.Series) -> pa.Array | None:
    try:
        arr = pa.array(series, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) else None
