"""Text in and out of the pages, in one place: what users type and what they download.

- :func:`run_title`: the one way a run is named anywhere in the UI and in exports;
- :func:`md_escape`: user text (titles, names, errors) shown through Markdown stays text;
- :func:`to_csv`: CSV whose text cells a spreadsheet will not run as formulas;
- :func:`to_markdown`: a GitHub-flavoured Markdown table, rendered by a Jinja2 template;
- :func:`format_duration` and :func:`parse_ids` (run ids from a query parameter).
"""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pandas as pd

if TYPE_CHECKING:  # text helpers stay importable without the store or the job manager
    from core.job_context import Progress
    from core.records import RunRecord

TEMPLATES = Path(__file__).with_name("templates")


# --------------------------------------------------------------------------- names
def run_title(run: RunRecord | Progress) -> str:
    """``#12 teacher sasrec d128``: the run's label, with its id when the label lacks it.

    Names alone repeat across runs (every demo student is ``student-soft ...``), so the
    id always leads; a name the user already started with ``#12 `` is not prefixed twice.
    """
    # A job's progress snapshot names its run ``run_id``; a stored run calls it ``id``.
    run_id = run.run_id if hasattr(run, "run_id") else run.id
    return run.label if run.label.startswith(f"#{run_id} ") else f"#{run_id} {run.label}"


def parse_ids(text: str | None) -> list[int]:
    """``"4,5,x,6"`` -> ``[4, 5, 6]``: query parameters are user input, bad parts are dropped."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if part.isdigit() and int(part) not in out:
            out.append(int(part))
    return out


def format_duration(seconds: float | None) -> str:
    """``"1 h 02 min"``, ``"3 min 05 s"``, ``"12 s"``; ``"-"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


# --------------------------------------------------------------------------- markdown
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$])")


def md_escape(text: str) -> str:
    """Backslash-escape Markdown (and the ``$`` of LaTeX) so user text shows as typed."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def md_cell(value: Any) -> str:
    """One Markdown table cell: empty for missing values, floats to 4 significant digits,
    pipes escaped and newlines flattened so a cell never breaks the table."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


@cache
def _templates() -> jinja2.Environment:
    # Markdown, not HTML: cells are escaped by md_cell, so HTML autoescaping stays off.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=False,
        trim_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = md_cell
    return env


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 significant digits, pipes escaped)."""
    rows = [list(row) for row in table.itertuples(index=False)]
    return _templates().get_template("table.md.j2").render(header=list(table.columns), rows=rows)


# --------------------------------------------------------------------------- csv
# A leading character that makes a spreadsheet evaluate the cell (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse(value: Any) -> Any:
    """Text a spreadsheet would run as a formula gets a leading quote; other values pass."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(table: pd.DataFrame) -> str:
    """The table as CSV; text cells are defused so opening it in Excel runs nothing."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(defuse)
    return safe.to_csv(index=False)
