"""OGC API – Features query parameters: `bbox`, `datetime`, `limit`, parsed or refused (400)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from service.api.errors import BadRequest

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class Box:
    minx: float
    miny: float
    maxx: float
    maxy: float


@dataclass(frozen=True)
class Interval:
    """Half-open [start, end) on the naive `started_at`; None is an open end."""

    start: datetime | None
    end: datetime | None


def parse_bbox(text: str | None) -> Box | None:
    """`minx,miny,maxx,maxy` (or the 6-number 3D form, heights ignored), CRS84, inclusive."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) not in (4, 6):
        raise BadRequest(f"bbox must be 4 (or 6) comma-separated numbers, got {text!r}")
    try:
        nums = [float(p) for p in parts]
    except ValueError:
        raise BadRequest(f"bbox must be numbers, got {text!r}") from None
    if not all(math.isfinite(n) for n in nums):
        raise BadRequest(f"bbox numbers must be finite, got {text!r}")
    x0, y0, x1, y1 = (
        (nums[0], nums[1], nums[2], nums[3]) if len(nums) == 4 else nums[:2] + nums[3:5]
    )
    if x0 > x1:
        raise BadRequest("bbox: minx > maxx (boxes across the antimeridian are not supported)")
    if y0 > y1:
        raise BadRequest("bbox: miny > maxy")
    return Box(x0, y0, x1, y1)


_STAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)(?:[Zz]|[+-]\d{2}:\d{2})?)?$"
)


def _stamp(text: str, is_end: bool) -> datetime:
    """A date or an RFC 3339 date-time. The offset is dropped: trips store a naive local
    wall-clock time (SPEC section 1), and the wall clock given is compared with it as is.
    A date as an end means the whole day; a date-time as an end is inclusive."""
    m = _STAMP.match(text.strip())
    if not m:
        raise BadRequest(f"datetime: {text!r} is neither a date nor an RFC 3339 date-time")
    try:
        day = date.fromisoformat(m.group(1))
        if m.group(2) is None:
            start = datetime.combine(day, datetime.min.time())
            return start + timedelta(days=1) if is_end else start
        at = datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}")
    except ValueError as e:
        raise BadRequest(f"datetime: {text!r}: {e}") from None
    return at + timedelta(microseconds=1) if is_end else at


def parse_datetime(text: str | None) -> Interval | None:
    """An instant, or an interval `start/end` with `..` (or nothing) for an open end."""
    if text is None:
        return None
    if "/" not in text:
        return Interval(_stamp(text, False), _stamp(text, True))
    a, _, b = text.partition("/")
    if "/" in b:
        raise BadRequest(f"datetime: at most one '/', got {text!r}")
    start = None if a.strip() in ("", "..") else _stamp(a, False)
    end = None if b.strip() in ("", "..") else _stamp(b, True)
    if start is None and end is None:
        raise BadRequest("datetime: an interval needs at least one closed end")
    if start is not None and end is not None and start >= end:
        raise BadRequest(f"datetime: the interval {text!r} ends before it starts")
    return Interval(start, end)


def parse_limit(text: str | None) -> int:
    """1 to MAX_LIMIT; larger values are capped (as every listing of this service does)."""
    if text is None:
        return DEFAULT_LIMIT
    try:
        n = int(text)
    except ValueError:
        raise BadRequest(f"limit must be an integer, got {text!r}") from None
    if n < 1:
        raise BadRequest(f"limit must be at least 1, got {n}")
    return min(n, MAX_LIMIT)


def parse_after(text: str | None, pattern: str) -> str | None:
    """The keyset cursor of a `next` link, checked against the collection's id pattern."""
    if text is None:
        return None
    if not re.fullmatch(pattern, text):
        raise BadRequest(f"after: {text!r} is not a feature id of this collection")
    return text


def re_full(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None


def trip_id(text: str | None) -> int | None:
    """A trip id (1 to 2^63 - 1), or None when `text` is not one."""
    if text is None or not re.fullmatch(r"[1-9][0-9]{0,18}", text) or int(text) >= 2**63:
        return None
    return int(text)
