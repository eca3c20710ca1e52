"""Datasets on disk: a cleaned, split InteractionData saved as Parquet and registered in the store.

A registered dataset is stored exactly as trained on (dense indices, split labels, catalog),
so any later process rebuilds the identical InteractionData and checkpoints line up with it.
Its identity is a fingerprint of that content: registering the same cleaned data twice
returns the existing dataset rather than a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core import paths
from core.dataset import InteractionData
from core.errors import DataError, StoreError
from core.store import DatasetRecord, Store

_CACHE_SIZE = 4
_cache: OrderedDict[tuple[int, str], InteractionData] = OrderedDict()
_cache_lock = threading.Lock()


def fingerprint(data: InteractionData) -> str:
    """sha256 of what a model sees: ids, interactions in order, split labels, timestamps."""
    h = hashlib.sha256()
    for arr in (data.users, data.items, data.split, data.timestamps):
        h.update(np.ascontiguousarray(arr).tobytes())
    for ids in (data.user_ids, data.item_ids, data.titles):
        h.update("\x1f".join(map(str, ids)).encode())
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
            split={"method": data.split_method, "seed": data.split_seed},
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
        events=events,
        notes=tuple(meta.get("notes", ())),
    )


def load_dataset(store: Store, dataset_id: int) -> InteractionData:
    """The InteractionData of a registered dataset (a few recent ones are kept in memory)."""
    record = store.get_dataset(dataset_id)
    key = (record.id, record.content_hash)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if record.parquet_path is None or not record.parquet_path.exists():
        raise DataError(
            f"The files of dataset {record.name!r} are missing from the data directory; load it again."
        )
    data = read_dataset(record.parquet_path)
    with _cache_lock:
        _cache[key] = data
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return data


def catalog_frame(data: InteractionData) -> pd.DataFrame:
    """The catalog with popularity, for previews."""
    frame = data.describe_items(np.arange(data.n_items))
    frame["train_interactions"] = data.item_popularity
    return frame
