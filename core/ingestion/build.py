"""From a log to an `InteractionData`: read, parse, clean, k-core, dense ids and the split.

    load_interactions  read -> detect (or validate a given mapping) -> build, from a path or
                       an upload's bytes; what the Data page and the CLI call. Big inputs
                       are streamed block by block (`core.ingestion.stream`)
    build_dataset      a DataFrame + ColumnMapping -> a validated, cleaned, k-cored, split
                       InteractionData
    assemble           parsed columns -> InteractionData (what both of the above end with)

Nothing here writes anywhere; `core.ingestion.registry` stores the result. The cleaning
steps themselves live in `core.ingestion.clean`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from core.dataset import InteractionData
from core.errors import DataError
from core.files import bytes_sha256, file_sha256
from core.ingestion import stream
from core.ingestion.catalog import check_catalog_overlap, join_catalog, read_catalog
from core.ingestion.clean import dense_ids, keep_rows, natural_ranks, split_labels, time_order
from core.ingestion.detect import detect_columns, validate_mapping
from core.ingestion.limits import check_rows
from core.ingestion.messages import Rows, clip, column_list, display_name
from core.ingestion.options import CleanOptions, ColumnMapping, SplitOptions
from core.ingestion.parse import LogParser, Parsed, parse_columns
from core.ingestion.read import MAX_UPLOAD_BYTES, Source, read_bytes, source_bytes

# The options are frozen, so one shared default instance is safe.
DEFAULT_CLEAN = CleanOptions()
DEFAULT_SPLIT = SplitOptions()


def load_interactions(
    source: Source,
    name: str | None = None,
    *,
    mapping: ColumnMapping | None = None,
    columns: Mapping[str, str] | None = None,
    catalog_source: Source | None = None,
    catalog_name: str | None = None,
    clean: CleanOptions = DEFAULT_CLEAN,
    split: SplitOptions = DEFAULT_SPLIT,
    max_bytes: int | None = MAX_UPLOAD_BYTES,
    dataset_name: str | None = None,
) -> InteractionData:
    """Read -> detect (unless ``mapping``) -> validate -> build, from a path or upload bytes.

    ``name`` is the upload's file name, used only in messages and as a format hint.
    ``mapping`` maps every role by hand; ``columns`` ({role: column}) maps some roles by
    hand and detects the rest. ``max_bytes`` is the upload limit; None (a file named on the
    command line) lifts it, and the machine's memory budget (`core.ingestion.limits`) still
    applies. A file over `stream.STREAM_BYTES` is read block by block, never whole. The
    content hash is the sha256 of the raw file bytes either way.
    """
    log = stream.open_log(source, name, max_bytes)
    if log is not None:
        return _load_streaming(
            log,
            source,
            mapping=mapping,
            columns=columns,
            catalog_source=catalog_source,
            catalog_name=catalog_name,
            clean=clean,
            split=split,
            max_bytes=max_bytes,
            dataset_name=dataset_name,
        )
    data, display = source_bytes(source, name, max_bytes)
    frame = read_bytes(data, display, max_bytes)
    content_hash = bytes_sha256(data)
    del data  # the raw bytes are not needed past this point; let a large upload go
    check_rows(len(frame), display)
    mapping = _mapping(frame, display, mapping, columns)
    catalog = _catalog(catalog_source, catalog_name, max_bytes)
    return build_dataset(
        frame,
        mapping,
        catalog=catalog,
        clean=clean,
        split=split,
        name=dataset_name or _dataset_name(display),
        content_hash=content_hash,
        source_name=display,
    )


def _load_streaming(
    log: stream.Log,
    source: Source,
    *,
    mapping: ColumnMapping | None,
    columns: Mapping[str, str] | None,
    catalog_source: Source | None,
    catalog_name: str | None,
    clean: CleanOptions,
    split: SplitOptions,
    max_bytes: int | None,
    dataset_name: str | None,
) -> InteractionData:
    """`load_interactions` for a big file: only the mapped columns, one block at a time."""
    mapping = _mapping(log.head, log.display, mapping, columns)
    catalog = _catalog(catalog_source, catalog_name, max_bytes)
    parser = LogParser(mapping, clean)
    for block, rows in log.blocks(list(mapping.columns().values())):
        parser.add(block, rows)
        check_rows(parser.n_rows, log.display, so_far=True)
    # Arrow's allocator keeps freed blocks for reuse; the rows ahead are numpy's.
    pa.default_memory_pool().release_unused()
    if parser.n_rows == 0:
        if log.head.attrs.get("header_rows") == 1:
            raise DataError(
                f"'{log.display}' has a header row ({column_list(list(log.head.columns))}) but "
                "no data rows; upload the file with its data."
            )
        raise DataError(f"'{log.display}' has no data rows; upload a file with interactions.")
    content_hash = file_sha256(source) if log.path is not None else bytes_sha256(source)
    return assemble(
        parser.finish(),
        mapping,
        catalog=catalog,
        clean=clean,
        split=split,
        name=dataset_name or _dataset_name(log.display),
        content_hash=content_hash,
        display=log.display,
    )


def _mapping(
    frame: pd.DataFrame,
    display: str,
    mapping: ColumnMapping | None,
    columns: Mapping[str, str] | None,
) -> ColumnMapping:
    if mapping is None:
        mapping = detect_columns(frame, display, given=columns)
    validate_mapping(frame, mapping, display)
    return mapping


def _catalog(source: Source | None, name: str | None, max_bytes: int | None) -> pd.DataFrame | None:
    if source is None:
        return None
    return read_catalog(source, name, max_bytes=max_bytes)


def _dataset_name(display: str) -> str:
    stem = display
    for suffix in (".gz", ".gzip", ".csv", ".tsv", ".txt", ".parquet", ".pq", ".inter", ".data"):
        stem = stem.removesuffix(suffix)
    for suffix in (".jsonl", ".ndjson", ".json"):
        stem = stem.removesuffix(suffix)
    return stem or "dataset"


def build_dataset(
    frame: pd.DataFrame,
    mapping: ColumnMapping,
    *,
    catalog: pd.DataFrame | None = None,
    clean: CleanOptions = DEFAULT_CLEAN,
    split: SplitOptions = DEFAULT_SPLIT,
    name: str = "dataset",
    content_hash: str | None = None,
    source_name: str = "upload",
) -> InteractionData:
    """Validate, clean, k-core, index and split an interaction frame.

    ``frame`` is what `read_table` returns (or any DataFrame; its ``attrs`` say how to number
    rows in messages); ``catalog`` is what `read_catalog` returns. Weights are the rating when
    one is mapped, else the event weight, else 1. Arrays are sorted by (user, time, file
    order); without a timestamp column the file order is the time.
    """
    display = frame.attrs.get("source_name") or display_name(source_name)
    validate_mapping(frame, mapping, display)
    if len(frame) == 0:
        raise DataError(f"'{display}' has no data rows; upload a file with interactions.")
    frame = frame.reset_index(drop=True)
    parsed = parse_columns(frame, mapping, clean, Rows.of(frame, display))
    return assemble(
        parsed,
        mapping,
        catalog=catalog,
        clean=clean,
        split=split,
        name=name,
        content_hash=content_hash or _frame_hash(frame),
        display=display,
    )


def assemble(
    parsed: Parsed,
    mapping: ColumnMapping,
    *,
    catalog: pd.DataFrame | None,
    clean: CleanOptions,
    split: SplitOptions,
    name: str,
    content_hash: str,
    display: str,
) -> InteractionData:
    """Clean, k-core, index and split parsed columns (see `build_dataset`).

    Rows are put in their final order (user, time, file position) once, up front; every
    later step only drops rows, so no step needs another sort.
    """
    if catalog is not None:
        check_catalog_overlap(catalog, parsed.item_uniques, mapping.item, display)
    user_rank = natural_ranks(parsed.user_uniques)
    order = time_order(user_rank[parsed.user_codes], parsed.timestamps)
    rows, notes = keep_rows(parsed, order, mapping, clean, display)
    del order
    users, user_ids = dense_ids(parsed.take("user_codes")[rows], parsed.user_uniques, user_rank)
    items, item_ids = dense_ids(parsed.take("item_codes")[rows], parsed.item_uniques)
    for role, col, ids in (("user", mapping.user, user_ids), ("item", mapping.item, item_ids)):
        if len(ids) < 2:
            raise DataError(
                f"'{display}' has only one {role} ({clip(ids[0])} in column '{col}') after "
                "cleaning and filtering; a recommender needs at least two users and two items, "
                "so upload more data or relax the filters."
            )
    timestamps = parsed.take("timestamps")[rows]
    ratings = None if parsed.ratings is None else parsed.take("ratings")[rows]
    codes = None if parsed.event_codes is None else parsed.take("event_codes")[rows]
    del rows
    notes = [*parsed.notes, *notes]
    titles, categories, prices, uncatalogued = join_catalog(item_ids, catalog)
    if uncatalogued:
        notes.append(f"{uncatalogued} items have no catalog entry: their id is shown as the title")
    weights, weight_note = _weights(parsed, len(users), ratings, codes, mapping)
    if weight_note:
        notes.append(weight_note)
    del ratings
    return InteractionData(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        users=users,
        items=items,
        timestamps=timestamps,
        weights=weights,
        split=split_labels(users, len(user_ids), split),
        has_timestamps=mapping.timestamp is not None,
        titles=titles,
        categories=categories,
        prices=prices,
        content_hash=content_hash,
        split_method=split.method,
        split_seed=split.seed,
        history_mask=split.history_mask,
        events=None if codes is None else np.asarray(parsed.event_names, dtype=object)[codes],
        notes=tuple(notes),
    )


def _weights(
    parsed: Parsed,
    n: int,
    ratings: np.ndarray | None,
    codes: np.ndarray | None,
    mapping: ColumnMapping,
) -> tuple[np.ndarray, str]:
    """float32 interaction weights of the kept rows and a note saying where they came from."""
    if ratings is not None:
        note = f"weights: the rating in column '{mapping.rating}'"
        if codes is not None:
            note += f" (event types in column '{mapping.event}' kept, not weighted)"
        return ratings.astype(np.float32), note
    if codes is None:
        return np.ones(n, dtype=np.float32), ""
    present = np.flatnonzero(np.bincount(codes, minlength=len(parsed.event_names)))
    # Lightest first, so the note reads like the funnel: view 1, cart 2, purchase 3.
    present = sorted(present, key=lambda c: (parsed.event_table[c], parsed.event_names[c]))
    listed = ", ".join(f"{parsed.event_names[c]} {parsed.event_table[c]:g}" for c in present)
    return parsed.event_table.astype(np.float32)[codes], f"event weights used: {listed}"


def _frame_hash(frame: pd.DataFrame) -> str:
    """Content hash of a frame built in memory (an upload's hash is that of its bytes)."""
    digest = hashlib.sha256("\x1f".join(map(str, frame.columns)).encode())
    try:
        hashed = pd.util.hash_pandas_object(frame, index=False)
    except TypeError:  # unhashable cells, e.g. an unmapped Parquet list column
        hashed = pd.util.hash_pandas_object(frame.astype("str"), index=False)
    digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()
