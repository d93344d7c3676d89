"""Generated trips with the awkward cases of SPEC section 2, and brute-force answers in Python."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from shapely.geometry import Point, shape

# Regions: one far south-west (negative coordinates), one non-ASCII, one in two spellings.
CENTERS = {
    "Prague": (14.42, 50.08),
    "São Paulo": (-46.63, -23.55),
    "Zürich": (8.54, 47.37),
    "prague": (14.45, 50.05),
}
DATASOURCES = ["funny_car", "cheap_mobile", "baba_car"]
FIRST_MONDAY = date(2018, 4, 30)
WEEKS = 7
EMPTY_WEEK = 3  # no trip at all in this week of the window


@dataclass(frozen=True)
class Trip:
    region: str
    ox: float
    oy: float
    dx: float
    dy: float
    at: datetime
    datasource: str


def _stamp(rng: random.Random) -> datetime:
    week = rng.choice([w for w in range(WEEKS) if w != EMPTY_WEEK])
    base = datetime.combine(FIRST_MONDAY + timedelta(weeks=week), datetime.min.time())
    kind = rng.random()
    if kind < 0.1:
        return base  # Monday 00:00:00
    if kind < 0.2:
        return base + timedelta(days=7) - timedelta(milliseconds=1)  # Sunday 23:59:59.999
    return base + timedelta(seconds=rng.randrange(7 * 86400))


def make_trips(seed: int, n: int) -> list[Trip]:
    """Trips on a coarse lattice (so many share exact coordinates: edges land on points)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        region = rng.choice(list(CENTERS))
        cx, cy = CENTERS[region]

        def coord(c: float) -> float:
            r = rng.random()
            if r < 0.5:
                return round(c + rng.randint(-20, 20) * 0.005, 3)  # lattice, shared values
            if r < 0.6:
                return math.floor(c * 100) / 100  # near a grid line
            return c + rng.uniform(-0.12, 0.12)

        out.append(
            Trip(
                region,
                coord(cx),
                coord(cy),
                coord(cx),
                coord(cy),
                _stamp(rng),
                rng.choice(DATASOURCES),
            )
        )
    # Both ends in the same spot, and the window's two extremes.
    out.append(Trip("Zürich", 8.54, 47.37, 8.54, 47.37, datetime(2018, 4, 30), "baba_car"))
    last = datetime.combine(FIRST_MONDAY + timedelta(weeks=WEEKS), datetime.min.time())
    out.append(
        Trip("Prague", 14.42, 50.08, 14.43, 50.09, last - timedelta(milliseconds=1), "funny_car")
    )
    return out


def write_csv(trips: list[Trip], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["region", "origin_coord", "destination_coord", "datetime", "datasource"])
        for t in trips:
            w.writerow(
                [
                    t.region,
                    f"POINT ({t.ox!r} {t.oy!r})",
                    f"POINT ({t.dx!r} {t.dy!r})",
                    t.at.isoformat(sep=" ", timespec="microseconds"),
                    t.datasource,
                ]
            )
    return path


def monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def in_box(box: tuple[float, float, float, float], x: float, y: float) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def brute_weekly(
    trips: list[Trip],
    *,
    region: str | None = None,
    box: tuple[float, float, float, float] | None = None,
    polygon: dict | None = None,
    match: str = "origin",
    start: date | None = None,
    end: date | None = None,
) -> dict:
    """The SPEC section 2 definition, one trip at a time."""
    geom = shape(polygon) if polygon else None

    def inside(x: float, y: float) -> bool:
        if box is not None:
            return in_box(box, x, y)
        if geom is not None:
            return geom.covers(Point(x, y))
        return True

    w0 = monday(start) if start else monday(min(t.at for t in trips).date())
    w1 = monday(end) if end else monday(max(t.at for t in trips).date())
    weeks = (w1 - w0).days // 7 + 1
    counts = dict.fromkeys((w0 + timedelta(weeks=i) for i in range(weeks)), 0)
    for t in trips:
        if region is not None and t.region.lower() != region.lower():
            continue
        w = monday(t.at.date())
        if w not in counts:
            continue
        o, d = inside(t.ox, t.oy), inside(t.dx, t.dy)
        ok = {"origin": o, "destination": d, "both": o and d, "either": o or d}[match]
        if ok:
            counts[w] += 1
    total = sum(counts.values())
    return {
        "weekly_average": total / weeks,
        "trips": total,
        "weeks": weeks,
        "from": w0.isoformat(),
        "to": w1.isoformat(),
        "match": match,
        "series": [{"week": w.isoformat(), "trips": n} for w, n in counts.items()],
    }


def brute_clusters(trips: list[Trip], cell: float, bucket_minutes: int) -> dict:
    """(region, origin node, destination node, bucket) → [trips, sum ox, sum oy, sum dx, sum dy];
    a node is rint(x / cell), halfway to even as ST_SnapToGrid rounds (Python's round)."""
    out: dict[tuple, list[float]] = {}
    for t in trips:
        secs = t.at.hour * 3600 + t.at.minute * 60 + t.at.second + t.at.microsecond / 1e6
        key = (
            t.region,
            round(t.ox / cell),
            round(t.oy / cell),
            round(t.dx / cell),
            round(t.dy / cell),
            math.floor(secs / (bucket_minutes * 60)),
        )
        acc = out.setdefault(key, [0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += 1
        acc[1] += t.ox
        acc[2] += t.oy
        acc[3] += t.dx
        acc[4] += t.dy
    return out
