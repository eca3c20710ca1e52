"""Big logs, read block by block: only the mapped columns, never the whole file at once.

A file over `STREAM_BYTES` (Parquet, delimited text or JSON Lines, gzipped or not) is
opened here instead of being read whole: its first megabyte gives the header and a
``head`` frame to detect the columns from, then `Log.blocks` yields about a million rows
at a time, as pyarrow streams them (``ParquetFile.iter_batches``, ``csv.open_csv``,
``json.open_json``), for `core.ingestion.parse.LogParser`. Each block is parsed into compact
codes and let go, so the text of a 20-million-row log is never in memory together.

Messages are those of the whole-file path, with two differences a big file forces: a count
of further bad rows covers only the block of the first one ("and at least 3 more rows"),
and finding the line of a bad JSON row, or the first byte that is not UTF-8, re-reads the
file (only on the way to an error). Space-aligned text (runs of spaces as the delimiter)
is not streamed; it goes to the whole-file path, under the memory budget.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from core.errors import DataError
from core.ingestion.jsonl import BLOCK_BYTES as JSON_BLOCK_BYTES
from core.ingestion.jsonl import (
    check_utf8,
    explain,
    is_json_lines,
    json_frame,
    numbered_lines,
    read_table,
)
from core.ingestion.limits import check_rows
from core.ingestion.messages import Rows, display_name, reason
from core.ingestion.read import (
    MAX_DECOMPRESSION_FACTOR,
    Source,
    TextLayout,
    check_text,
    clean_header,
    csv_options,
    expands_error,
    explain_csv_error,
    gzip_error,
    plain_columns,
    read_bytes,
    sniff_text,
)

STREAM_BYTES = 64 * 1024 * 1024
BLOCK_ROWS = 250_000  # Parquet rows per block
BLOCK_BYTES = 8 * 1024 * 1024  # text bytes per block (~250,000 rows of a typical log)
HEAD_BYTES = 1024 * 1024
HEAD_ROWS = 2_000
_READ_BYTES = 8 * 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"

Blocks = Iterator[tuple[pd.DataFrame, Rows]]


def _size(source: Source) -> int | None:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    try:
        return os.stat(source).st_size
    except OSError:
        return None  # the whole-file path says what is wrong with the path


@dataclass
class Log:
    """A big log opened for streaming: its head (every column) and its blocks."""

    display: str
    head: pd.DataFrame
    path: Path | None
    data: bytes | None
    gzipped: bool
    _blocks: Callable[[Log, list[str]], Blocks]
    schema: pa.Schema | None = None  # JSON Lines: the types Arrow inferred from the head
    expand_limit: int | None = None  # gzip bomb cap of an upload (None: a local file)

    def blocks(self, columns: list[str]) -> Blocks:
        """(frame of ``columns``, its row numbering) for every block, in file order."""
        return self._blocks(self, columns)

    def open(self) -> pa.NativeFile:
        """The file's (decompressed) bytes as an Arrow stream, from the start."""
        if not self.gzipped:
            if self.path is not None:
                return pa.OSFile(str(self.path))
            return pa.BufferReader(self.data)
        # Owned, and closed, by the _Gunzip that wraps it.
        raw = open(self.path, "rb") if self.path is not None else io.BytesIO(self.data)  # noqa: SIM115
        # Python's gzip, not Arrow's, so damage reads exactly as on the whole-file path
        # (the same exceptions, so the same sentences) and an upload's bomb cap applies.
        gunzip = _Gunzip(raw, self.display, self.expand_limit)
        return pa.PythonFile(io.BufferedReader(gunzip, _READ_BYTES), mode="r")

    def check_compression(self) -> None:
        """Raise the gzip sentence when the file is damaged (only on the way to an error).

        A cut-off gzip file ends in half a row, whose parse error would hide the cause.
        """
        if self.gzipped:
            for _ in self.chunks():
                pass

    def chunks(self) -> Iterator[bytes]:
        """The file's (decompressed) bytes in consecutive chunks, for error scans."""
        with self.open() as stream:
            while chunk := stream.read(_READ_BYTES):
                yield bytes(chunk)


class _Gunzip(io.RawIOBase):
    """A gzip file's content with the whole-file path's sentences for damage and bombs."""

    def __init__(self, raw: BinaryIO, display: str, limit: int | None):
        self._raw = raw
        self._gzip = gzip.GzipFile(fileobj=raw)
        self._display = display
        self._limit = limit
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            n = self._gzip.readinto(buffer)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise gzip_error(exc, self._display) from exc
        self._read += n
        if self._limit is not None and self._read > self._limit:
            raise expands_error(self._limit, self._display)
        return n

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()
        super().close()


def open_log(source: Source, name: str | None, max_bytes: int | None) -> Log | None:
    """A `Log` for a big file, or None when the whole-file path should read it.

    None for a small file, one over the upload limit (whose refusal the whole-file path
    words), a path that cannot be opened, and formats or damage the streaming readers do
    not handle; the whole-file path reads those or explains what is wrong with them.
    """
    size = _size(source)
    if size is None or size <= STREAM_BYTES or (max_bytes is not None and size > max_bytes):
        return None
    if isinstance(source, bytes | bytearray | memoryview):
        path, data, display = None, bytes(source), display_name(name)
    else:
        path, data = Path(source), None
        display = display_name(name or path.name)
    with open(path, "rb") if path is not None else io.BytesIO(data) as handle:
        raw_head = handle.read(HEAD_BYTES)
    if raw_head[:4] == b"PAR1":
        return _parquet_log(path, data, display)
    if display.lower().endswith((".parquet", ".pq")):
        return None  # named like Parquet but is not: the whole-file path says so
    gzipped = raw_head[:2] == _GZIP_MAGIC
    head = _gunzip_head(path, data) if gzipped else raw_head
    if head is None or head[:2] == _GZIP_MAGIC or head[:4] == b"PAR1":
        return None
    head = check_text(head, display)
    if len(head) >= HEAD_BYTES and b"\n" in head:
        head = head[: head.rfind(b"\n") + 1]  # whole lines only
    limit = None if max_bytes is None else max_bytes * MAX_DECOMPRESSION_FACTOR
    if is_json_lines(head, display):
        log = _json_log(path, data, display, gzipped, head)
        log.expand_limit = limit
        return log
    layout = sniff_text(head, display)
    if layout.delimiter == " ":
        return None
    if head.count(b"\n") > layout.header_rows:
        frame = read_bytes(head, display, None)
    else:  # rows longer than the head: the names are all detection needs
        frame = pd.DataFrame({name: pd.Series([], dtype="str") for name in layout.names})
        frame.attrs.update(source_name=display, format="text", header_rows=layout.header_rows)
    return Log(
        display,
        frame,
        path,
        data,
        gzipped,
        # A block must hold the header line whole, however wide (10,000 columns happen).
        lambda log, cols: _csv_blocks(log, layout, cols, 4 * (head.find(b"\n") + 1)),
        expand_limit=limit,
    )


def _gunzip_head(path: Path | None, data: bytes | None) -> bytes | None:
    """The first `HEAD_BYTES` of a gzip file, decompressed; None when it is damaged."""
    decompressor = zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") if path is not None else io.BytesIO(data) as handle:
            out = b""
            while len(out) < HEAD_BYTES and (chunk := handle.read(256 * 1024)):
                out += decompressor.decompress(chunk, HEAD_BYTES - len(out))
                while decompressor.unconsumed_tail and len(out) < HEAD_BYTES:
                    out += decompressor.decompress(
                        decompressor.unconsumed_tail, HEAD_BYTES - len(out)
                    )
    except zlib.error:
        return None
    return out


# --------------------------------------------------------------------------- Parquet
def _parquet_log(path: Path | None, data: bytes | None, display: str) -> Log | None:
    try:
        parquet = pq.ParquetFile(str(path) if path is not None else pa.BufferReader(data))
        total = parquet.metadata.num_rows
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError):
        return None  # the whole-file path words the damage
    if total == 0 or len(schema.names) < 2:
        return None
    check_rows(total, display)  # before reading a single block: the footer knows the count
    names = clean_header([str(n) for n in schema.names], display)
    # Detection needs names and types only; reading rows here would decompress a row group.
    table, unusable = plain_columns(schema.empty_table(), names)
    frame = table.to_pandas()
    frame.columns = names
    frame.attrs.update(
        source_name=display, format="parquet", header_rows=None, unusable_columns=unusable
    )
    raw_of = dict(zip(names, schema.names, strict=True))

    def blocks(log: Log, columns: list[str]) -> Blocks:
        rows = Rows(display, None)
        offset = 0
        try:
            for batch in parquet.iter_batches(
                batch_size=BLOCK_ROWS, columns=[raw_of[c] for c in columns]
            ):
                table, unusable = plain_columns(pa.Table.from_batches([batch]), columns)
                for column, what in unusable.items():
                    raise DataError(
                        f"The column '{column}' of '{display}' holds {what}, not plain values; "
                        "map a column of plain ids, numbers or dates, or export the file again."
                    )
                block = table.to_pandas()
                block.columns = columns
                yield block, rows.block(offset)
                offset += len(block)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"'{display}' looks like Parquet but cannot be read ({reason(exc)}); export "
                "it again."
            ) from exc

    return Log(display, frame, path, data, False, blocks)


# --------------------------------------------------------------------------- delimited text
def _csv_blocks(log: Log, layout: TextLayout, columns: list[str], min_block: int) -> Blocks:
    rows = Rows(log.display, layout.header_rows)
    offset = 0

    def reader(handler: Callable | None = None) -> pa_csv.CSVStreamingReader:
        block_bytes = max(BLOCK_BYTES, min_block)
        options = csv_options(layout, handler, columns=columns, block_bytes=block_bytes)
        return pa_csv.open_csv(log.open(), **options)

    try:
        for batch in reader():
            block = batch.to_pandas()
            yield block, rows.block(offset)
            offset += len(block)
    except pa.ArrowInvalid as exc:
        log.check_compression()
        explain_csv_error(
            log.display,
            layout.delimiter,
            exc,
            utf8_error=lambda: _first_non_utf8(log.chunks()),
            reread=lambda handler: sum(len(b) for b in reader(handler)),
        )


def _first_non_utf8(chunks: Iterator[bytes]) -> tuple[bytes, int] | None:
    """(the first byte that is not UTF-8, its 1-based line) in a stream, or None."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    for chunk in chunks:
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as err:
            # The decoder may hold up to 3 bytes of a character begun in the chunk before.
            start = max(0, err.start - (len(err.object) - len(chunk)))
            return chunk[start : start + 1], line + chunk.count(b"\n", 0, start)
        line += chunk.count(b"\n")
    return None


# --------------------------------------------------------------------------- JSON Lines
@dataclass(frozen=True, eq=False)
class _FileLines:
    """Row position -> line number of a big JSON Lines file (scans it: errors only)."""

    log: Log

    def __call__(self, position: int) -> int:
        seen = -1
        for number, line in numbered_lines(self.log.chunks()):
            if line.strip():
                seen += 1
                if seen == position:
                    return number
        return position + 1


def _json_log(
    path: Path | None, data: bytes | None, display: str, gzipped: bool, head: bytes
) -> Log:
    table = read_table(head, display)
    log = Log(display, pd.DataFrame(), path, data, gzipped, _json_blocks, table.schema)
    log.head = json_frame(table, display, _FileLines(log))
    return log


def _json_blocks(log: Log, columns: list[str]) -> Blocks:
    assert log.schema is not None
    fields = [log.schema.field(c) for c in columns]
    # The head's types, fixed: a later value of another type is an error the scan explains.
    explicit = pa.schema([f for f in fields if not pa.types.is_null(f.type)])
    options = pa_json.ParseOptions(
        newlines_in_values=False, explicit_schema=explicit, unexpected_field_behavior="ignore"
    )
    rows = Rows(log.display, None, line_of=_FileLines(log))
    offset = 0
    try:
        reader = pa_json.open_json(
            log.open(),
            read_options=pa_json.ReadOptions(block_size=JSON_BLOCK_BYTES),
            parse_options=options,
        )
        for batch in reader:
            check_utf8(batch, lambda exc: explain(numbered_lines(log.chunks()), log.display, exc))
            block = batch.to_pandas()
            for column in columns:
                if column not in block:  # null in every line of the head
                    block[column] = None
            yield block[columns], rows.block(offset)
            offset += len(block)
    except pa.ArrowInvalid as exc:
        log.check_compression()
        explain(numbered_lines(log.chunks()), log.display, exc)
