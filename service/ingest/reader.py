"""Streaming CSV reader: blocks of a file (plain or gzip) → validated, vectorised batches
(the validation itself: service/ingest/validate.py).

Memory stays flat: a file is read in blocks of a few MiB, each parsed with pyarrow's
multi-threaded CSV reader when the block is plain (no quotes, every line a record), and record by
record with the csv module otherwise (quotes, blank lines, invalid UTF-8, ragged rows), so every
record keeps its 1-based physical line number. Validation (SPEC section 1) is vectorised.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from service.ingest.validate import (  # noqa: F401  (Batch is part of this module's API)
    _CANON_DATETIME,
    _CANON_POINT,
    MAX_NAME_CHARS,
    RAW_KEEP_CHARS,
    Batch,
    validate,
)

REQUIRED = ("region", "origin_coord", "destination_coord", "datetime", "datasource")
BLOCK_BYTES = 2 << 20
PARSE_THREADS = 2  # blocks validated at once (the machine's cores)
PARSE_AHEAD = 1  # parsed blocks in flight ahead of the consumer
MAX_RECORD_BYTES = 8 << 20
BOM = b"\xef\xbb\xbf"
# Fields as long as a record may be (the csv module stops at 128 KiB by default, which would
# reject on the quote-aware path what the fast path accepts).
csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_RECORD_BYTES))

log = logging.getLogger(__name__)


class FileFormatError(ValueError):
    """The file as a whole is not an acceptable trip CSV (bad header, not text)."""


@dataclass
class Header:
    columns: list[str]
    ignored: list[str]

    def index(self, name: str) -> int:
        return self.columns.index(name)


class _Counter:
    """Wraps a binary stream and counts the bytes read from the underlying file."""

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        b = self.raw.read(n)
        self.count += len(b)
        return b

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def clean_text(raw: bytes | str) -> str:
    """Raw text fit for a PostgreSQL text column: decoded leniently, no NUL, bounded."""
    s = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    s = s.replace("\x00", "\ufffd")
    if len(s) > RAW_KEEP_CHARS:
        s = s[:RAW_KEEP_CHARS] + f"… [{len(s) - RAW_KEEP_CHARS} more characters]"
    return s


def parse_header(line: bytes) -> Header:
    if line.startswith(BOM):
        line = line[len(BOM) :]
    if b"\x00" in line:
        raise FileFormatError("not CSV text: the first line holds binary data")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileFormatError("not CSV text: the header is not valid UTF-8") from e
    text = text.rstrip("\r\n")
    if not text.strip():
        raise FileFormatError("empty file: no header row")
    try:
        columns = [c.strip() for c in next(csv.reader([text]))]
    except csv.Error as e:  # e.g. lone CR line endings: the whole file reads as one line
        raise FileFormatError(f"not CSV text: the header is not a CSV line ({e})") from e
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise FileFormatError(
            f"header lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(REQUIRED)}, found {', '.join(columns) or 'nothing'}"
        )
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise FileFormatError(f"header repeats column(s) {', '.join(dupes)}")
    return Header(columns, [c for c in columns if c not in REQUIRED])


def open_binary(path: Path) -> tuple[BinaryIO, _Counter]:
    """The file's decompressed byte stream and a counter of the file bytes consumed."""
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller through the returned stream
    counter = _Counter(raw)
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=counter, mode="rb"), counter  # type: ignore[call-overload]
    return counter, counter  # type: ignore[return-value]


class TripReader:
    """Iterates a trip file as validated batches; `bytes_read` tracks progress in file bytes."""

    def __init__(self, path: Path, block_bytes: int = BLOCK_BYTES):
        self.path = Path(path)
        self.bytes_total = self.path.stat().st_size
        self.block_bytes = block_bytes
        self._stream, self._counter = open_binary(self.path)
        self.header = self._read_header()

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def close(self) -> None:
        self._stream.close()
        self._counter.close()

    def __enter__(self) -> TripReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        try:
            return self._stream.read(n)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise FileFormatError(f"cannot decompress: {e}") from e

    def _read_header(self) -> Header:
        buf = b""
        while b"\n" not in buf:
            chunk = self._read(64 << 10)
            if not chunk:
                break
            buf += chunk
            if len(buf) > 1 << 20:
                raise FileFormatError("not CSV text: no line break in the first MiB")
        line, sep, rest = buf.partition(b"\n")
        header = parse_header(line)
        self._carry = rest
        self._eof = not sep
        return header

    def __iter__(self) -> Iterator[Batch]:
        """The file's batches, in order.

        A block without quotes or NUL bytes holds whole records, one per line, so the line
        number of the block after it is known before it is parsed: such blocks are parsed on
        PARSE_THREADS threads (pyarrow's kernels release the GIL), PARSE_AHEAD of them at most
        in flight. A block with quotes may end inside a record and is parsed here, in order,
        once the blocks before it are out."""
        with ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="parse") as pool:
            pending: deque[Future[Batch]] = deque()
            for item in self._blocks(pool):
                if isinstance(item, Future):
                    pending.append(item)
                    if len(pending) <= PARSE_AHEAD:
                        continue
                    item = pending.popleft().result()
                else:
                    while pending:
                        batch = pending.popleft().result()
                        if batch.rows_read:
                            yield batch
                if item.rows_read:
                    yield item
            while pending:
                batch = pending.popleft().result()
                if batch.rows_read:
                    yield batch

    def _parse_whole_lines(self, data: bytes, line: int, eof: bool) -> Batch:
        batch, consumed, leftover = self._parse_block(data, line, eof)
        assert not leftover and consumed == _lines_in(data), "a quote-free block is whole lines"
        return batch

    def _blocks(self, pool: ThreadPoolExecutor) -> Iterator[Batch | Future[Batch]]:
        """Batches parsed here and futures of batches parsed on the pool, in file order."""
        line = 2  # physical line number of the first byte of the carry
        carry = self._carry
        eof = self._eof
        skipping_from: int | None = None  # a record too long to keep, being skipped
        while not (eof and not carry):
            if not eof:
                chunk = self._read(self.block_bytes)
                if not chunk:
                    eof = True
                carry += chunk
            if skipping_from is not None:
                cut = carry.find(b"\n")
                if cut < 0 and not eof:
                    carry = b""
                    continue
                carry = carry[cut + 1 :] if cut >= 0 else b""
                yield _empty_batch(1, [(skipping_from, "line longer than 8 MiB", "")])
                line = skipping_from + 1
                skipping_from = None
                continue
            if eof:
                data, carry = carry, b""
            else:
                cut = carry.rfind(b"\n")
                if cut < 0:
                    if len(carry) > MAX_RECORD_BYTES:
                        skipping_from = line
                    continue
                data, carry = carry[: cut + 1], carry[cut + 1 :]
            if not data:
                continue
            if b'"' not in data and b"\x00" not in data:
                yield pool.submit(self._parse_whole_lines, data, line, eof)
                line += _lines_in(data)
                continue
            batch, consumed_lines, leftover = self._parse_block(data, line, eof)
            if leftover:
                if len(leftover) > MAX_RECORD_BYTES and not eof:
                    # An unterminated quoted field: give up on that record at its first line.
                    end = leftover.find(b"\n")
                    batch.rejections.append(
                        (
                            line + consumed_lines,
                            "unterminated quoted field longer than 8 MiB",
                            clean_text(leftover[: max(end, 0)]),
                        )
                    )
                    batch.rows_read += 1
                    leftover = leftover[end + 1 :]
                    consumed_lines += 1
                carry = leftover + carry
            line += consumed_lines
            if batch.rows_read:
                yield batch

    def _parse_block(self, data: bytes, line: int, eof: bool) -> tuple[Batch, int, bytes]:
        """Parse whole lines; returns the batch, lines consumed and bytes carried over."""
        n_lines = _lines_in(data)
        if b'"' not in data and b"\x00" not in data:
            fast = self._fast(data, line, n_lines)
            if fast is not None:
                return fast, n_lines, b""
        return self._slow(data, line, eof)

    def _arrow_table(self, data: bytes, use_threads: bool) -> pa.Table:
        cols = self.header.columns
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=cols, use_threads=use_threads, block_size=1 << 20
            ),
            parse_options=pacsv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in cols},
                include_columns=list(REQUIRED),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                null_values=[],
            ),
        )

    def _fast(self, data: bytes, line: int, n_lines: int) -> Batch | None:
        try:
            try:
                table = self._arrow_table(data, use_threads=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                raise  # the block's data: the record-by-record path says which line and why
            except pa.ArrowException as e:
                # Not the data: pyarrow's threaded CSV reader failed internally (seen once in a
                # 100M-row run: "a chunk failed converting for an unknown reason"; the same
                # block then parses). Parse it again on one thread; the slow path is the last
                # resort. Either way the block's rows are all kept or rejected with a reason.
                log.warning("pyarrow threaded CSV read failed (%s); re-reading on one thread", e)
                table = self._arrow_table(data, use_threads=False)
        except pa.ArrowException:
            return None
        if table.num_rows != n_lines:
            return None
        arrays = {c: table.column(c).combine_chunks() for c in REQUIRED}
        lines = np.arange(line, line + n_lines, dtype=np.int64)

        def raw_of(idx: np.ndarray) -> list[str]:
            starts = np.concatenate(([0], np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1))
            out = []
            for i in idx:
                s = starts[i]
                e = starts[i + 1] - 1 if i + 1 < len(starts) else len(data)
                out.append(clean_text(data[s:e].rstrip(b"\r")))
            return out

        return validate(arrays, lines, raw_of)

    def _slow(self, data: bytes, line: int, eof: bool) -> tuple[Batch, int, bytes]:
        ncols = len(self.header.columns)
        idx = [self.header.index(c) for c in REQUIRED]
        values: list[list[str]] = [[] for _ in REQUIRED]
        lines: list[int] = []
        raws: list[bytes] = []
        rejections: list[tuple[int, str, str]] = []
        physical = data.split(b"\n")
        if data.endswith(b"\n"):
            physical.pop()
        i = 0
        rows_read = 0
        while i < len(physical):
            start = i
            rec = physical[i].rstrip(b"\r")
            quotes = rec.count(b'"')
            i += 1
            if quotes % 2 and not _opens_quoted_field(rec):
                quotes = 0  # a stray quote inside an unquoted field is text, not a newline
            while quotes % 2 and i < len(physical):
                nxt = physical[i].rstrip(b"\r")
                rec += b"\n" + nxt
                quotes += nxt.count(b'"')
                i += 1
            if quotes % 2 and not eof:
                leftover = b"\n".join(physical[start:]) + (b"\n" if data.endswith(b"\n") else b"")
                batch = _finish(values, lines, raws, rejections, rows_read)
                return batch, start, leftover
            lineno = line + start
            if not rec.strip():
                continue  # blank line: not a record
            rows_read += 1
            try:
                text = rec.decode("utf-8")
            except UnicodeDecodeError as e:
                rejections.append(
                    (lineno, f"not valid UTF-8 (byte {e.start + 1})", clean_text(rec))
                )
                continue
            if "\x00" in text:
                rejections.append((lineno, "contains a NUL byte", clean_text(rec)))
                continue
            try:
                fields = next(csv.reader([text], strict=True))
            except csv.Error as e:
                rejections.append((lineno, f"malformed CSV: {e}", clean_text(rec)))
                continue
            if len(fields) != ncols:
                rejections.append(
                    (lineno, f"expected {ncols} fields, found {len(fields)}", clean_text(rec))
                )
                continue
            for v, j in zip(values, idx, strict=True):
                v.append(fields[j])
            lines.append(lineno)
            raws.append(rec)
        return _finish(values, lines, raws, rejections, rows_read), len(physical), b""


def _lines_in(data: bytes) -> int:
    """Physical lines of a block (its last may lack its line break)."""
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _opens_quoted_field(rec: bytes) -> bool:
    """True when the line ends inside a quoted field, so the record goes on."""
    try:
        next(csv.reader([rec.decode("utf-8", "replace")], strict=True))
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def _finish(
    values: list[list[str]],
    lines: list[int],
    raws: list[bytes],
    rejections: list[tuple[int, str, str]],
    rows_read: int,
) -> Batch:
    arrays = {c: pa.array(v, pa.string()) for c, v in zip(REQUIRED, values, strict=True)}
    batch = validate(
        arrays, np.array(lines, dtype=np.int64), lambda idx: [clean_text(raws[i]) for i in idx]
    )
    batch.rejections = sorted(rejections + batch.rejections)
    batch.rows_read = rows_read
    return batch


def _empty_batch(rows_read: int, rejections: list[tuple[int, str, str]]) -> Batch:
    empty = np.empty(0)
    return Batch(
        rows_read,
        pa.array([], pa.string()),
        pa.array([], pa.string()),
        empty,
        empty,
        empty,
        empty,
        np.empty(0, np.int64),
        rejections,
    )
