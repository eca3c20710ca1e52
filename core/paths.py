"""Where Distillery keeps its files: the data directory and its sub-folders.

Everything the app writes (the SQLite run store, Parquet copies of uploaded datasets,
checkpoints, ONNX files, handoff bundles) lives under one data directory, chosen by the
``DISTILLERY_HOME`` environment variable (default ``./.distillery`` under the working
directory). These are functions rather than module constants so that tests (and the CLI)
can point ``DISTILLERY_HOME`` somewhere else after import.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.settings import HOME_ENV


def data_dir() -> Path:
    """The data directory (created if missing), as an absolute path."""
    raw = os.environ.get(HOME_ENV, "").strip()
    root = Path(raw).expanduser() if raw else Path.cwd() / ".distillery"
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _sub(name: str) -> Path:
    folder = data_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def datasets_dir() -> Path:
    """Parquet copies of ingested datasets."""
    return _sub("datasets")


def runs_dir() -> Path:
    """One folder per run: checkpoints, ONNX files and other artifacts."""
    return _sub("runs")


def bundles_dir() -> Path:
    """Handoff bundles (model card + ONNX + metrics) ready for download."""
    return _sub("bundles")


def run_dir(run_id: int) -> Path:
    """The folder of one run (not created: a run that writes nothing leaves no folder)."""
    return runs_dir() / f"run-{int(run_id):06d}"


def default_db_path() -> Path:
    """The SQLite file used when ``DISTILLERY_DB_URL`` is not set."""
    return data_dir() / "distillery.db"


def is_inside_data_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` lies strictly inside the data directory.

    Deleting files is only ever allowed for such paths, so a row pointing at, say, a
    user's own checkpoint elsewhere on disk can never cause that file to be removed.
    """
    root = data_dir()
    resolved = Path(path).expanduser().resolve()
    return resolved != root and resolved.is_relative_to(root)


def to_stored(path: str | os.PathLike[str]) -> str:
    """How a path is written to the store: relative to the data directory when inside it.

    Relative paths keep the database valid when the whole data directory is moved.
    """
    resolved = Path(path).expanduser().resolve()
    if is_inside_data_dir(resolved):
        return resolved.relative_to(data_dir()).as_posix()
    return str(resolved)


def from_stored(stored: str | None) -> Path | None:
    """The absolute path for a value written by :func:`to_stored`."""
    if stored is None:
        return None
    path = Path(stored)
    return path if path.is_absolute() else data_dir() / path
