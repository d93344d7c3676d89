"""Vectorised validation of a parsed block (SPEC section 1): points, timestamps and names as
numpy arrays, every rejected row with its line number, raw text and the first rule it broke."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_NAME_CHARS = 200
RAW_KEEP_CHARS = 10_000
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
