"""Product catalogs: `read_catalog`, and joining one to the items of an interaction log.

A catalog gives items their titles, categories and prices, which is what makes a
recommendation readable ("Trail Running Shoes Summit - Blue", not "P01234"). It is optional:
items without a catalog row show their id as the title.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.errors import DataError
from core.ingestion.detect import (
    CATALOG_ITEM_COLUMNS,
    CATEGORY_COLUMNS,
    PRICE_COLUMNS,
    TITLE_COLUMNS,
    find_column,
)
from core.ingestion.ids import id_strings
from core.ingestion.messages import Rows, clip, column_list, first
from core.ingestion.parse import to_float
from core.ingestion.read import MAX_UPLOAD_BYTES, Source, read_table


def read_catalog(
    source: Source,
    name: str | None = None,
    *,
    item: str | None = None,
    title: str | None = None,
    category: str | None = None,
    price: str | None = None,
    max_bytes: int | None = MAX_UPLOAD_BYTES,
) -> pd.DataFrame:
    """Read a product catalog: DataFrame[item_id (str), title (str), category (str), price].

    Columns are detected by name unless given; missing titles fall back to the item id,
    missing categories to "" and missing prices to nan. Duplicate item ids keep their first row.
    """
    frame = read_table(source, name, max_bytes=max_bytes)
    display = frame.attrs["source_name"]
    rows = Rows.of(frame, display)
    columns = [str(c) for c in frame.columns]
    for role, col in (("item", item), ("title", title), ("category", category), ("price", price)):
        if col is not None and col not in columns:
            raise DataError(
                f"The catalog {role} column '{col}' is not in '{display}' (columns found: "
                f"{column_list(columns)}); pick one of those columns."
            )
    taken: set[str] = set()
    item = item or find_column(columns, CATALOG_ITEM_COLUMNS, taken)
    if item is None:
        raise DataError(
            f"Cannot tell which column of the catalog '{display}' holds the item ids (columns "
            f"found: {column_list(columns)}); rename it to item_id or map it by hand."
        )
    taken.add(item)
    title = title or find_column(columns, TITLE_COLUMNS, taken)
    taken.add(title or "")
    category = category or find_column(columns, CATEGORY_COLUMNS, taken)
    taken.add(category or "")
    price = price or find_column(columns, PRICE_COLUMNS, taken)
    if title is None and category is None and price is None:
        raise DataError(
            f"The catalog '{display}' has no title, category or price column (columns found: "
            f"{column_list(columns)}); add one (e.g. title) or map it by hand."
        )
    unusable = frame.attrs.get("unusable_columns") or {}
    for role, col in (("item", item), ("title", title), ("category", category), ("price", price)):
        if col in unusable:
            raise DataError(
                f"The catalog {role} column '{col}' of '{display}' holds {unusable[col]}, not "
                "plain values; map another column, or flatten it and export the file again."
            )
    ids = id_strings(frame[item], "item", item, rows)
    out = pd.DataFrame({"item_id": ids.to_numpy(dtype=object)})
    out["title"] = _text(frame, title) if title else out["item_id"]
    out["category"] = _text(frame, category) if category else ""
    if price:
        prices = to_float(frame[price])
        bad = frame[price].notna().to_numpy() & ~np.isfinite(prices)
        if bad.any():
            pos = first(bad)
            raise DataError(
                f"The catalog '{display}' has the non-numeric price {clip(frame[price].iloc[pos])} "
                f"in {rows.field(price)} {rows.at(pos)}{rows.more(bad)}; make prices plain "
                "numbers (no currency signs) or leave them empty."
            )
        out["price"] = prices
    else:
        out["price"] = np.nan
    out = out.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    out.attrs.update(
        source_name=display,
        item_column=item,
        header_rows=frame.attrs.get("header_rows"),
        line_of=frame.attrs.get("line_of"),
    )
    return out


def _text(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[column].astype("str").str.strip().fillna("").to_numpy(dtype=object)


def check_catalog_overlap(
    catalog: pd.DataFrame, item_uniques: np.ndarray, item_col: str, display: str
) -> None:
    """Refuse a catalog none of whose ids is an item of the log (the wrong file, or column)."""
    cat_ids = catalog["item_id"].astype(str)
    if cat_ids.isin(item_uniques).any():
        return
    cat_name = catalog.attrs.get("source_name", "the catalog")
    cat_col = catalog.attrs.get("item_column", "item_id")
    first_row = Rows.of(catalog, cat_name).label(0)
    raise DataError(
        f"None of the {len(cat_ids)} item ids in column '{cat_col}' of '{cat_name}' (the first "
        f"is {clip(cat_ids.iloc[0])} in {first_row}) matches an item id in column '{item_col}' "
        f"of '{display}' (e.g. {clip(item_uniques[0])}); upload the catalog that belongs to "
        "this log or map the right id columns."
    )


def join_catalog(
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
