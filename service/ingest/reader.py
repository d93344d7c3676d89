"""Streaming CSV reader: blocks of a file (plain or gzip) → validated, vectorised batches.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

REQUIRED = ("region", "origin_coord", "destination_coord", "datetime", "datasource")
BLOCK_BYTES = 2 << 20
PARSE_THREADS = 2  # blocks validated at once (the machine's cores)
PARSE_AHEAD = 1  # parsed blocks in flight ahead of the consumer
MAX_RECORD_BYTES = 8 << 20
MAX_NAME_CHARS = 200
RAW_KEEP_CHARS = 10_000
BOM = b"\xef\xbb\xbf"
# Fields as long as a record may be (the csv module stops at 128 KiB by default, which would
# reject on the quote-aware path what the fast path accepts).
csv.field_size_limit(max(csv.field_size_limit(), 4 * MAX_RECORD_BYTES))

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:[-+]?nan|[-+]?inf(?:inity)?)"
_POINT = rf"^\s*(?i:point)\s*\(\s*(?P<x>{_NUM})\s+(?P<y>{_NUM})\s*\)\s*$"
_DATETIME = (
    r"^\s*(?P<Y>\d{4})-(?P<M>\d{2})-(?P<D>\d{2})[Tt ](?P<h>\d{2}):(?P<m>\d{2}):(?P<s>\d{2})"
    r"(?P<f>\.\d+)?\s*$"
)
# Capture-free patterns of the usual spellings (a subset of the two above), for the fast path.
_CANON_POINT = r"^POINT \(-?[0-9]+(?:\.[0-9]+)? -?[0-9]+(?:\.[0-9]+)?\)$"
_CANON_DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$"
# Microseconds from 1970-01-01 to PostgreSQL's epoch 2000-01-01.
PG_EPOCH_US = 10_957 * 86_400 * 1_000_000

log = logging.getLogger(__name__)


class FileFormatError(ValueError):
    """The file as a whole is not an acceptable trip CSV (bad header, not text)."""


@dataclass
class Batch:
    """The valid rows of one block, as arrays, and the block's rejections."""

    rows_read: int
    region: pa.Array
    datasource: pa.Array
    ox: np.ndarray
    oy: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    ts_us: np.ndarray  # microseconds since 2000-01-01, naive
    rejections: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows_valid(self) -> int:
        return len(self.ox)


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


def _np(a: pa.Array, dtype: str) -> np.ndarray:
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=dtype)


def _points(col: pa.Array, name: str, reasons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of WKT points; writes the reason of each bad value."""
    n = len(col)
    x, y = np.zeros(n), np.zeros(n)
    # Most values have the canonical form 'POINT (x y)': a capture-free regex match (RE2's DFA)
    # picks them, and their numbers are cut out by position and split; only the others go
    # through the capturing regex. Same numbers, same float parser: ~2x cheaper per column.
    canon = _np(pc.fill_null(pc.match_substring_regex(col, _CANON_POINT), False), "bool")
    ok = canon.copy()
    if canon.any():
        sub = col if canon.all() else pc.filter(col, pa.array(canon))
        xy = pc.list_flatten(
            pc.split_pattern(pc.utf8_slice_codeunits(sub, 7, -1), " ", max_splits=1)
        )
        xy_np = _np(pc.cast(xy, pa.float64()), "float64").reshape(-1, 2)
        x[canon], y[canon] = xy_np[:, 0], xy_np[:, 1]
    rest = np.flatnonzero(~canon)
    if len(rest):
        m = pc.extract_regex(pc.take(col, pa.array(rest)), _POINT)
        ok_r = _np(pc.is_valid(m), "bool")
        xs = pc.if_else(ok_r, pc.struct_field(m, "x"), "0")
        ys = pc.if_else(ok_r, pc.struct_field(m, "y"), "0")
        x[rest] = _np(pc.cast(xs, pa.float64()), "float64")
        y[rest] = _np(pc.cast(ys, pa.float64()), "float64")
        ok[rest] = ok_r
    free = reasons == None  # noqa: E711 - elementwise on an object array
    bad = free & ~ok
    reasons[bad] = f"{name}: not a WKT point 'POINT (lon lat)'"
    finite = np.isfinite(x) & np.isfinite(y)
    bad = (reasons == None) & ~finite  # noqa: E711
    reasons[bad] = f"{name}: coordinates must be finite numbers"
    with np.errstate(invalid="ignore"):
        bad = (reasons == None) & ((x < -180) | (x > 180))  # noqa: E711
    for i in np.flatnonzero(bad):
        reasons[i] = f"{name}: longitude {float(x[i])!r} outside [-180, 180]"
    with np.errstate(invalid="ignore"):
        bad = (reasons == None) & ((y < -90) | (y > 90))  # noqa: E711
    for i in np.flatnonzero(bad):
        reasons[i] = f"{name}: latitude {float(y[i])!r} outside [-90, 90]"
    return x, y


def _offsets_data(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The offsets (n + 1) and the bytes of a string array (a null's slot is usually empty)."""
    offsets = np.frombuffer(col.buffers()[1], np.int32, len(col) + 1, col.offset * 4)
    data = col.buffers()[2]
    return offsets, np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)


# _CANON_DATETIME by position: 19 bytes, ASCII digits but at these separators.
_DT_WIDTH = 19
_DT_SEPARATORS = {4: ord("-"), 7: ord("-"), 10: ord(" "), 13: ord(":"), 16: ord(":")}
_DT_DIGITS = [k for k in range(_DT_WIDTH) if k not in _DT_SEPARATORS]


def _canon_datetimes(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(canon, digits): which values match _CANON_DATETIME, and the (canonical values, 19)
    matrix of their byte values minus '0'. The same test as the regex, on the bytes: a value of
    19 bytes with an ASCII digit or the separator at each position (a non-ASCII character takes
    several bytes, none of them a digit or separator); a null is not canonical. A block whose
    values are all 19 bytes long is one matrix of its string data, with no gather (the usual
    case)."""
    n = len(col)
    offsets, data = _offsets_data(col)
    width = np.diff(offsets) == _DT_WIDTH
    if col.null_count:
        width &= _np(col.is_valid(), "bool")
    if width.all():
        start = int(offsets[0])
        rows = data[start : start + n * _DT_WIDTH].reshape(n, _DT_WIDTH)
    else:
        rows = data[offsets[:-1][width][:, None] + np.arange(_DT_WIDTH)]
    good = np.ones(len(rows), dtype=bool)
    for k, c in _DT_SEPARATORS.items():
        good &= rows[:, k] == c
    rows = rows - np.uint8(48)  # wraps below '0': a digit is then a value below 10
    good &= (rows[:, _DT_DIGITS] < 10).all(axis=1)
    canon = width.copy()
    canon[width] = good
    return canon, rows[good]


def _timestamps(col: pa.Array, reasons: np.ndarray) -> np.ndarray:
    """Naive timestamps as microseconds since 2000-01-01 (PostgreSQL's rounding of fractions)."""
    n = len(col)
    y, mo, d, h, mi, s = (np.ones(n, np.int64) for _ in range(6))
    frac_us = np.zeros(n, np.int64)
    # Canonical 'YYYY-MM-DD HH:MM:SS' values are read by position straight from the string
    # data; only the others go through the capturing regex.
    col = col.cast(pa.string()) if col.type != pa.string() else col
    canon, digits = _canon_datetimes(col)
    ok = canon.copy()
    if canon.any():

        def num(a: int, b: int) -> np.ndarray:
            v = digits[:, a].astype(np.int64)
            for k in range(a + 1, b):
                v = v * 10 + digits[:, k]
            return v

        y[canon], mo[canon], d[canon] = num(0, 4), num(5, 7), num(8, 10)
        h[canon], mi[canon], s[canon] = num(11, 13), num(14, 16), num(17, 19)
    rest = np.flatnonzero(~canon)
    if len(rest):
        m = pc.extract_regex(pc.take(col, pa.array(rest)), _DATETIME)
        ok_r = _np(pc.is_valid(m), "bool")

        def part(name: str) -> np.ndarray:
            return _np(
                pc.cast(pc.if_else(ok_r, pc.struct_field(m, name), "1"), pa.int64()), "int64"
            )

        y[rest], mo[rest], d[rest], h[rest], mi[rest], s[rest] = (part(k) for k in "YMDhms")
        frac_s = pc.if_else(
            pc.and_(ok_r, pc.not_equal(pc.utf8_length(pc.struct_field(m, "f")), 0)),
            pc.binary_join_element_wise("0", pc.struct_field(m, "f"), ""),
            "0",
        )
        frac = np.nan_to_num(_np(pc.cast(frac_s, pa.float64()), "float64"))
        frac_us[rest] = np.rint(frac * 1e6).astype(np.int64)
        ok[rest] = ok_r
    reasons[(reasons == None) & ~ok] = (  # noqa: E711
        "datetime: not 'YYYY-MM-DD HH:MM:SS[.fraction]'"
    )
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    dim = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(mo, 0, 12)]
    dim = dim + ((mo == 2) & leap)
    bad_date = (y < 1) | (mo < 1) | (mo > 12) | (d < 1) | (d > dim)
    for i in np.flatnonzero((reasons == None) & bad_date):  # noqa: E711
        reasons[i] = f"datetime: no such date {y[i]:04d}-{mo[i]:02d}-{d[i]:02d}"
    bad_time = (h > 23) | (mi > 59) | (s > 59)
    for i in np.flatnonzero((reasons == None) & bad_time):  # noqa: E711
        reasons[i] = f"datetime: no such time {h[i]:02d}:{mi[i]:02d}:{s[i]:02d}"
    # days from civil (proleptic Gregorian), vectorised
    yy = y - (mo <= 2)
    era = np.floor_divide(yy, 400)
    yoe = yy - era * 400
    doy = (153 * (mo + np.where(mo > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146_097 + doe - 719_468
    us = days * 86_400_000_000 + ((h * 60 + mi) * 60 + s) * 1_000_000 + frac_us
    return us - PG_EPOCH_US


# The first bytes of the UTF-8 whitespace characters that utf8_trim_whitespace removes (ASCII
# controls and space; U+0085 and U+00A0; U+1680 and U+180E; U+2000-U+205F; U+3000; and U+FEFF,
# to be safe): a value that is only whitespace starts with one of them.
_SPACE_LEADS = np.zeros(256, dtype=bool)
_SPACE_LEADS[:0x21] = True
_SPACE_LEADS[[0xC2, 0xE1, 0xE2, 0xE3, 0xEF]] = True


def _names(col: pa.Array, name: str, reasons: np.ndarray) -> None:
    """Empty (after trimming whitespace) or too long names. The exact tests run only on the
    values that could fail them: those empty or starting with a whitespace byte, and those
    longer in bytes than the limit in characters."""
    if col.null_count or col.type != pa.string():
        idx_empty = idx_long = np.arange(len(col))
    else:
        offsets, data = _offsets_data(col)
        nbytes = np.diff(offsets)
        first = data[np.minimum(offsets[:-1], max(len(data) - 1, 0))] if len(data) else nbytes
        idx_empty = np.flatnonzero((nbytes == 0) | _SPACE_LEADS[first])
        idx_long = np.flatnonzero(nbytes > MAX_NAME_CHARS)
    if len(idx_empty):
        sub = pc.take(col, pa.array(idx_empty))
        trimmed_len = _np(pc.utf8_length(pc.utf8_trim_whitespace(sub)), "int64")
        hit = idx_empty[trimmed_len == 0]
        reasons[hit[reasons[hit] == None]] = f"{name} is empty"  # noqa: E711
    if len(idx_long):
        sub = pc.take(col, pa.array(idx_long))
        hit = idx_long[_np(pc.utf8_length(sub), "int64") > MAX_NAME_CHARS]
        reasons[hit[reasons[hit] == None]] = (  # noqa: E711
            f"{name} longer than {MAX_NAME_CHARS} characters"
        )


def validate(arrays: dict[str, pa.Array], lines: np.ndarray, raw_of: Any) -> Batch:
    """Apply SPEC section 1 to a block's columns; the first broken rule names the rejection."""
    n = len(lines)
    reasons = np.full(n, None, dtype=object)
    if n:
        _names(arrays["region"], "region", reasons)
        ox, oy = _points(arrays["origin_coord"], "origin_coord", reasons)
        dx, dy = _points(arrays["destination_coord"], "destination_coord", reasons)
        ts = _timestamps(arrays["datetime"], reasons)
        _names(arrays["datasource"], "datasource", reasons)
    else:
        ox = oy = dx = dy = np.empty(0)
        ts = np.empty(0, np.int64)
    good = reasons == None  # noqa: E711
    bad_idx = np.flatnonzero(~good)
    rejections = []
    if len(bad_idx):
        raws = raw_of(bad_idx)
        rejections = [
            (int(lines[i]), str(reasons[i]), raw) for i, raw in zip(bad_idx, raws, strict=True)
        ]
    mask = pa.array(good)
    return Batch(
        rows_read=n,
        region=pc.filter(arrays["region"], mask) if n else arrays["region"],
        datasource=pc.filter(arrays["datasource"], mask) if n else arrays["datasource"],
        ox=ox[good],
        oy=oy[good],
        dx=dx[good],
        dy=dy[good],
        ts_us=ts[good],
        rejections=rejections,
    )
