"""Which column holds what: candidate names, `detect_columns` and `validate_mapping`.

Detection is by name only (after lower-casing and dropping everything but letters and
digits), in a fixed priority order, so the guess is predictable and a user can always map
the columns by hand instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd

from core.errors import DataError
from core.ingestion.messages import clip, column_list, display_name
from core.ingestion.options import ColumnMapping

# Candidate names, compared after `normalise`, in priority order (the first one present wins).
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


def normalise(column: str) -> str:
    """A column name as candidates are written: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(column).lower())


def find_column(columns: list[str], candidates: tuple[str, ...], taken: set[str]) -> str | None:
    """The first column (not already ``taken``) whose normalised name is a candidate."""
    by_norm: dict[str, str] = {}
    for col in columns:
        by_norm.setdefault(normalise(col), col)
    for cand in candidates:
        col = by_norm.get(cand)
        if col is not None and col not in taken:
            return col
    return None


def _display(frame: pd.DataFrame, name: str | None) -> str:
    return display_name(name) if name else frame.attrs.get("source_name", "upload")


ROLES = ("user", "item", "timestamp", "rating", "event")


def detect_columns(
    frame: pd.DataFrame, name: str | None = None, given: Mapping[str, str] | None = None
) -> ColumnMapping:
    """Guess the user, item, timestamp, rating and event columns from their names.

    ``given`` ({role: column}, e.g. from the CLI's --user-col) maps some roles by hand; the
    other roles are detected among the remaining columns. Raises DataError for a given
    column the frame lacks, an unknown role, or when no user or no item column is found.
    """
    display = _display(frame, name)
    columns = [str(c) for c in frame.columns]
    given = {role: col for role, col in (given or {}).items() if col is not None}
    for role, col in given.items():
        if role not in ROLES:
            raise DataError(
                f"There is no column role '{role}'; map one of {', '.join(ROLES)} for '{display}'."
            )
        if col not in columns:
            raise DataError(
                f"The {role} column {clip(col, 40)} is not in '{display}' (columns found: "
                f"{column_list(columns)}); pick one of those columns."
            )
    taken: set[str] = set(given.values())
    found: dict[str, str | None] = {}
    for role, candidates in (
        ("user", USER_COLUMNS),
        ("item", ITEM_COLUMNS),
        ("timestamp", TIMESTAMP_COLUMNS),
        ("rating", RATING_COLUMNS),
        ("event", EVENT_COLUMNS),
    ):
        col = given.get(role) or find_column(columns, candidates, taken)
        found[role] = col
        if col is not None:
            taken.add(col)
    missing = [role for role in ("user", "item") if found[role] is None]
    if missing:
        raise DataError(
            f"Cannot tell which column of '{display}' holds the {' and the '.join(missing)} ids "
            f"(columns found: {column_list(columns)}); rename the column(s) "
            "(e.g. user_id, item_id) or map them by hand."
        )
    mapping = ColumnMapping(
        user=found["user"],  # type: ignore[arg-type]
        item=found["item"],  # type: ignore[arg-type]
        timestamp=found["timestamp"],
        rating=found["rating"],
        event=found["event"],
    )
    if given:
        validate_mapping(frame, mapping, name)
    return mapping


def validate_mapping(frame: pd.DataFrame, mapping: ColumnMapping, name: str | None = None) -> None:
    """Raise DataError if the mapping names a column the frame lacks or cannot use, or
    reuses one column for two roles."""
    display = _display(frame, name)
    columns = [str(c) for c in frame.columns]
    unusable = frame.attrs.get("unusable_columns") or {}
    inexact = frame.attrs.get("inexact_id_columns") or {}
    for role, col in mapping.columns().items():
        if col not in columns:
            raise DataError(
                f"The {role} column {clip(col, 40)} is not in '{display}' (columns found: "
                f"{column_list(columns)}); pick one of those columns."
            )
        if col in unusable:
            raise DataError(
                f"The {role} column '{col}' of '{display}' holds {unusable[col]}, not plain "
                "values; map a column of plain ids, numbers or dates, or flatten it and export "
                "the file again."
            )
        if col in inexact and role in ("user", "item"):
            raise DataError(
                f"The {role} field '{col}' of '{display}' holds whole numbers too large to read "
                f"exactly (the first on line {inexact[col]}), so different ids could merge; "
                "write the ids in quotes and export the file again."
            )
    used = list(mapping.columns().values())
    for col in used:
        if used.count(col) > 1:
            roles = [r for r, c in mapping.columns().items() if c == col]
            raise DataError(
                f"Column '{col}' of '{display}' is mapped as both {' and '.join(roles)}; "
                "map each role to its own column."
            )
