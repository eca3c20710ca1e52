"""Datasets on disk: a cleaned, split InteractionData saved as Parquet and registered in the store.

A registered dataset is stored exactly as trained on (dense indices, split labels, catalog),
so any later process rebuilds the identical InteractionData and checkpoints line up with it.
Its identity is a fingerprint of that content: registering the same cleaned data twice
returns the existing dataset rather than a copy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import paths
from core.dataset import InteractionData
from core.errors import DataError, StoreError
from core.records import DatasetRecord
from core.store import Store

# Datasets kept in memory: the pages, the job runner and the handoff reload the same few.
_CACHE_SIZE = 4


def fingerprint(data: InteractionData) -> str:
    """sha256 of what a model sees: ids, interactions in order, split labels, timestamps."""
    h = hashlib.sha256()
    for arr in (data.users, data.items, data.split, data.timestamps):
        h.update(np.ascontiguousarray(arr).tobytes())
    for ids in (data.user_ids, data.item_ids, data.titles):
        h.update("\x1f".join(map(str, ids)).encode())
    if data.history_mask != "auto":  # another evaluation protocol: another dataset
        h.update(f"history_mask={data.history_mask}".encode())
    return h.hexdigest()


def _write_dataset(data: InteractionData, folder: Path) -> None:
    # A unique temporary name: two sessions registering the same upload must not write
    # into (or delete) each other's half-written folder.
    tmp = folder.with_name(f"{folder.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        _write_files(data, tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk must not leave half a dataset
        raise


def _write_files(data: InteractionData, tmp: Path) -> None:
    interactions = {
        "user": data.users,
        "item": data.items,
        "timestamp": data.timestamps,
        "weight": data.weights,
        "split": data.split,
    }
    if data.events is not None:
        interactions["event"] = np.asarray(data.events).astype(str)
    pq.write_table(pa.table(interactions), tmp / "interactions.parquet")
    pq.write_table(
        pa.table({"user_id": np.asarray(data.user_ids).astype(str)}), tmp / "users.parquet"
    )
    catalog = pa.table(
        {
            "item_id": np.asarray(data.item_ids).astype(str),
            "title": np.asarray(data.titles).astype(str),
            "category": np.asarray(data.categories).astype(str),
            "price": np.asarray(data.prices, dtype=np.float64),
        }
    )
    pq.write_table(catalog, tmp / "items.parquet")
    meta = {
        "name": data.name,
        "has_timestamps": data.has_timestamps,
        "content_hash": data.content_hash,
        "split_method": data.split_method,
        "split_seed": data.split_seed,
        "history_mask": data.history_mask,
        "notes": list(data.notes),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def register_dataset(store: Store, data: InteractionData, *, source: str) -> DatasetRecord:
    """Save ``data`` under the data directory and record it; an identical one is reused."""
    key = fingerprint(data)
    existing = store.find_dataset(key)
    if (
        existing is not None
        and existing.parquet_path is not None
        and existing.parquet_path.exists()
    ):
        return existing
    folder = paths.datasets_dir() / key[:16]
    _write_dataset(data, folder)
    try:
        return store.add_dataset(
            name=data.name,
            source=source,
            content_hash=key,
            n_users=data.n_users,
            n_items=data.n_items,
            n_interactions=data.n_interactions,
            stats={
                **data.stats(),
                "raw_content_hash": data.content_hash,
                "notes": list(data.notes),
            },
            split={
                "method": data.split_method,
                "seed": data.split_seed,
                "history_mask": data.history_mask,
                "masks_history": data.masks_history,
            },
            parquet_path=folder,
        )
    except BaseException:
        # Unrecorded files are invisible to the app and would never be cleaned up. A row
        # that already names this folder (a dataset whose files had gone missing) keeps it.
        if _unrecorded(store, key):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _unrecorded(store: Store, key: str) -> bool:
    """True when no dataset row has this fingerprint (False when the store cannot say)."""
    try:
        return store.find_dataset(key) is None
    except StoreError:
        return False  # cannot tell: keep the files rather than orphan a row


def read_dataset(folder: Path) -> InteractionData:
    """Rebuild the InteractionData written by ``register_dataset``."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        inter = pq.read_table(folder / "interactions.parquet").to_pandas()
        users = pq.read_table(folder / "users.parquet").to_pandas()
        items = pq.read_table(folder / "items.parquet").to_pandas()
    except (OSError, ValueError) as exc:
        raise DataError(
            f"The stored copy of this dataset in {folder} cannot be read ({exc}); load the data again."
        ) from exc
    events = inter["event"].to_numpy(dtype=object) if "event" in inter else None
    return InteractionData(
        name=meta["name"],
        user_ids=users["user_id"].to_numpy(dtype=object),
        item_ids=items["item_id"].to_numpy(dtype=object),
        users=inter["user"].to_numpy(np.int64),
        items=inter["item"].to_numpy(np.int64),
        timestamps=inter["timestamp"].to_numpy(np.int64),
        weights=inter["weight"].to_numpy(np.float32),
        split=inter["split"].to_numpy(np.int8),
        has_timestamps=bool(meta["has_timestamps"]),
        titles=items["title"].to_numpy(dtype=object),
        categories=items["category"].to_numpy(dtype=object),
        prices=items["price"].to_numpy(np.float64),
        content_hash=meta["content_hash"],
        split_method=meta["split_method"],
        split_seed=int(meta["split_seed"]),
        history_mask=str(meta.get("history_mask", "auto")),
        events=events,
        notes=tuple(meta.get("notes", ())),
    )


def load_dataset(store: Store, dataset_id: int) -> InteractionData:
    """The InteractionData of a registered dataset (a few recent ones are kept in memory)."""
    record = store.get_dataset(dataset_id)
    folder = record.parquet_path
    if folder is None or not folder.exists():
        raise DataError(
            f"The files of dataset {record.name!r} are missing from the data directory; load it again."
        )
    try:
        written_ns = (folder / "meta.json").stat().st_mtime_ns
    except OSError:
        written_ns = 0  # read_dataset says what is wrong with the folder
    return _cached_dataset(folder.resolve(), record.content_hash, written_ns)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_dataset(folder: Path, content_hash: str, written_ns: int) -> InteractionData:
    """`read_dataset`, remembered per (folder, fingerprint, time the folder was written).

    The folder lies under the data directory, so another ``DISTILLERY_HOME`` is another
    entry; a folder written again (a dataset whose files had gone missing) has a new time.
    Neither can return a stale dataset. A failed read raises and is not remembered.
    """
    return read_dataset(folder)
