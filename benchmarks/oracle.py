"""The service's weekly averages against a brute-force count, on a whole store (a kept benchmark
store of 10M or 100M trips, or any other).

The tests prove exactness on small generated data; this proves it on the data the benchmark
measures, where the summary cells, the cut cells read from the raw points and the blocks meet
real densities. It draws areas of every kind (boxes from 50 m to half a degree, boxes whose
edges lie exactly on stored points and on rollup cell and pair block bounds, star polygons,
polygons with a hole, MultiPolygons, polygons with a vertex on a stored point, regions and a
region with a box), windows (the whole store, or from / to dates mid-week), and every match;
answers each with `weekly.weekly_average`, and counts the same trips by brute force: one
sequential scan of the trips per batch of areas, testing each trip's `origin` and `destination`
with ST_X / ST_Y comparisons for a box and ST_Covers for a polygon, as SPEC section 2 defines
them. Every week of every answer must equal the count.

    PYTHONPATH=. python -m benchmarks.oracle URL [--areas N] [--seed S] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.queries import star
from service.analytics import weekly
from service.analytics.area import BBox, parse_geometry

MATCHES = ("origin", "destination", "both", "either")
BATCH = 8  # areas counted per sequential scan
# the kinds of area, drawn in turn
KINDS = (
    ["box"] * 5
    + ["box-on-points", "box-on-grid"] * 2
    + [
        "polygon",
        "polygon",
        "polygon-hole",
        "multipolygon",
        "polygon-on-point",
        "region",
        "region-box",
    ]
)


@dataclass
class Case:
    kind: str
    region: str | None
    area: Any  # BBox, a parsed polygon, or None
    start: date | None
    end: date | None
    geojson: str | None = None


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def _cases(
    rng: random.Random,
    points: list[tuple[Any, ...]],
    regions: list[str],
    first: date,
    last: date,
    n: int,
    kinds: list[str],
) -> list[Case]:
    def window() -> tuple[date | None, date | None]:
        if rng.random() < 0.5:
            return None, None
        span = (last - first).days
        a = first + timedelta(days=rng.randrange(span + 1))
        b = a + timedelta(days=rng.randrange(span - (a - first).days + 1))
        return a, b

    def point() -> tuple[float, float]:
        p = rng.choice(points)
        return (p[0], p[1]) if rng.random() < 0.5 else (p[2], p[3])

    def box(kind: str) -> BBox:
        x, y = point()
        if kind in ("box", "box-big"):
            low = 0.1 if kind == "box-big" else 0.0005  # box-big: mostly summary blocks
            side = math.exp(rng.uniform(math.log(low), math.log(0.5)))
            return BBox(x - side * rng.random(), y - side * rng.random(), x + side, y + side)
        if kind == "box-on-points":  # edges exactly on stored coordinates
            side = math.exp(rng.uniform(math.log(0.002), math.log(0.3)))
            near = [p for p in points if abs(p[0] - x) < side and abs(p[1] - y) < side]
            px, py = rng.choice(near)[:2] if near else (x + side, y + side)
            return BBox(min(x, px), min(y, py), max(x, px), max(y, py))
        grid = rng.choice((0.01, 0.1))  # edges on summary cell / block bounds
        k0, k1 = math.floor(x / grid), math.floor(y / grid)
        w, h = rng.randint(1, 8), rng.randint(1, 8)
        return BBox(k0 * grid, k1 * grid, (k0 + w) * grid, (k1 + h) * grid)

    def polygon(kind: str) -> str:
        x, y = point()
        radius = math.exp(rng.uniform(math.log(0.003), math.log(0.15)))
        ring = star(rng, x, y, radius, inner=0.55)
        if kind == "polygon-on-point":  # a vertex on a stored point
            ring[3] = list(min(points, key=lambda p: (p[0] - x) ** 2 + (p[1] - y) ** 2)[:2])
        if kind == "polygon-hole":
            hole = [
                [x + radius * 0.3 * math.cos(-a), y + radius * 0.3 * math.sin(-a)]
                for a in (2 * math.pi * k / 8 for k in range(8))
            ]
            return json.dumps({"type": "Polygon", "coordinates": [ring, hole + [hole[0]]]})
        if kind == "multipolygon":
            other = star(rng, x + 2 * radius, y, radius / 2, inner=0.55)  # disjoint
            return json.dumps({"type": "MultiPolygon", "coordinates": [[ring], [other]]})
        return json.dumps({"type": "Polygon", "coordinates": [ring]})

    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        start, end = window()
        if kind.startswith("box"):
            out.append(Case(kind, None, box(kind), start, end))
        elif kind == "region":
            out.append(Case(kind, rng.choice(regions), None, start, end))
        elif kind == "region-box":  # the region of the trip the box is drawn around
            p = rng.choice(points)
            side = math.exp(rng.uniform(math.log(0.002), math.log(0.5)))
            area = BBox(p[0] - side / 2, p[1] - side / 2, p[0] + side / 2, p[1] + side / 2)
            out.append(Case(kind, p[4], area, start, end))
        else:
            text = polygon(kind)
            out.append(Case(kind, None, parse_geometry(text), start, end, text))
    return out


_IN_BOUNDS = sql.SQL("(ST_X({c}) BETWEEN {x0} AND {x1} AND ST_Y({c}) BETWEEN {y0} AND {y1})")
# a trip of case k's window and regions (any, when r is null: a subquery per row would keep
# the scan from running in parallel, so the names are looked up first)
_SCOPE = sql.SQL(
    "started_at >= {w0} AND started_at < {w1} AND ({r}::int[] IS NULL OR region_id = ANY({r}))"
)


def _names(k: int, *names: str) -> dict[str, sql.Placeholder]:
    """Case k's placeholders a{k}<name>."""
    return {n: sql.Placeholder(f"a{k}{n}") for n in names}


def _end_test(case: Case, end: str, k: int, params: dict[str, Any]) -> sql.Composable:
    """The SPEC test of one end (the geometry column `end`) of a trip for case k's area."""
    col = sql.Identifier(end)
    if case.area is None:
        return sql.SQL("true")
    if isinstance(case.area, BBox):
        a = case.area
        params |= {f"a{k}x0": a.minx, f"a{k}y0": a.miny, f"a{k}x1": a.maxx, f"a{k}y1": a.maxy}
        return _IN_BOUNDS.format(c=col, **_names(k, "x0", "y0", "x1", "y1"))
    x0, y0, x1, y1 = case.area.bounds
    params |= {f"a{k}g": case.geojson, f"a{k}x0": x0, f"a{k}y0": y0, f"a{k}x1": x1, f"a{k}y1": y1}
    # the bounds (the extreme vertices, exact doubles) only skip the points no polygon can cover
    names = _names(k, "x0", "y0", "x1", "y1", "g")
    return sql.SQL("({} AND ST_Covers(ST_SetSRID(ST_GeomFromGeoJSON({g}), 4326), {c}))").format(
        _IN_BOUNDS.format(c=col, **names), c=col, g=names["g"]
    )


async def _brute(
    conn: psycopg.AsyncConnection,
    cases: list[Case],
    windows: list[tuple[date, date]],
    region_ids: dict[str, list[int]],
) -> list[dict[str, dict[date, int]]]:
    """Per case and match, trips per week, from one scan of all trips; region_ids: the ids of
    the regions each name matches (SPEC: case-insensitively)."""
    params: dict[str, Any] = {}
    columns, wheres = [], []
    for k, (case, (w0, w1)) in enumerate(zip(cases, windows, strict=True)):
        ids = None if case.region is None else region_ids[case.region]
        params |= {f"w{k}0": w0, f"w{k}1": w1 + timedelta(days=7), f"r{k}": ids}
        scope = _SCOPE.format(
            w0=sql.Placeholder(f"w{k}0"), w1=sql.Placeholder(f"w{k}1"), r=sql.Placeholder(f"r{k}")
        )
        o, d = _end_test(case, "origin", k, params), _end_test(case, "destination", k, params)
        tests = {
            "origin": o,
            "destination": d,
            "both": sql.SQL("({} AND {})").format(o, d),
            "either": sql.SQL("({} OR {})").format(o, d),
        }
        for m in MATCHES:
            columns.append(sql.SQL("count(*) FILTER (WHERE {} AND {})").format(scope, tests[m]))
        wheres.append(scope)
    query = sql.SQL(
        "SELECT date_trunc('week', started_at)::date, {} FROM trips WHERE {} GROUP BY 1"
    ).format(sql.SQL(", ").join(columns), sql.SQL(" OR ").join(wheres))
    out: list[dict[str, dict[date, int]]] = [{m: {} for m in MATCHES} for _ in cases]
    cur = await conn.execute(query, params)
    for row in await cur.fetchall():
        week, counts = row[0], row[1:]
        for k in range(len(cases)):
            for j, m in enumerate(MATCHES):
                if counts[k * 4 + j]:
                    out[k][m][week] = counts[k * 4 + j]
    return out


async def check(url: str, n: int, seed: int, kinds: list[str] = KINDS) -> dict[str, Any]:
    rng = random.Random(seed)
    mismatches, checked, trips_counted = [], 0, 0
    by_kind: dict[str, int] = {}
    t_start = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT coalesce(sum(trips), 0)::float8 FROM weekly_trips")
        stored = (await cur.fetchone())[0]  # type: ignore[index]
        share = min(100.0, 100.0 * 20_000 / max(stored, 1))  # ~20k sampled pages' trips
        cur = await conn.execute(
            "SELECT ST_X(t.origin), ST_Y(t.origin), ST_X(t.destination), ST_Y(t.destination),"
            " r.name FROM trips t TABLESAMPLE SYSTEM (%s)"
            " REPEATABLE (%s) JOIN regions r ON r.id = t.region_id ORDER BY t.id LIMIT 5000",
            [share, seed],
        )
        points = [tuple(r) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT r.name, array_agg(o.id) FROM regions r"
            " JOIN regions o ON lower(o.name) = lower(r.name) GROUP BY r.name ORDER BY r.name"
        )
        region_ids = {name: ids for name, ids in await cur.fetchall()}
        regions = list(region_ids)
        # the store's first and last weeks from the trips themselves, not the service's rollup
        cur = await conn.execute(
            "SELECT date_trunc('week', min(started_at))::date,"
            " date_trunc('week', max(started_at))::date FROM trips"
        )
        first, last_week = await cur.fetchone()  # type: ignore[misc]
        last = last_week + timedelta(days=6)
        cases = _cases(rng, points, regions, first, last, n, kinds)
        for b in range(0, len(cases), BATCH):
            batch = cases[b : b + BATCH]
            answers = []
            for case in batch:
                per_match = {}
                for m in MATCHES:
                    per_match[m] = await weekly.weekly_average(
                        conn,
                        region=case.region,
                        area=case.area,
                        start=case.start,
                        end=case.end,
                        match=m,
                    )
                answers.append(per_match)
            # SPEC: the weeks of from and to, by default of the first and last trip stored
            windows = [(_monday(c.start or first), _monday(c.end or last)) for c in batch]
            truth = await _brute(conn, batch, windows, region_ids)
            for case, per_match, counted, (w0, w1) in zip(
                batch, answers, truth, windows, strict=True
            ):
                by_kind[case.kind] = by_kind.get(case.kind, 0) + 1
                for m in MATCHES:
                    answer = per_match[m]
                    got = {date.fromisoformat(s["week"]): s["trips"] for s in answer["series"]}
                    weeks = [w0 + timedelta(days=7 * i) for i in range((w1 - w0).days // 7 + 1)]
                    want = {w: counted[m].get(w, 0) for w in weeks}
                    checked += 1
                    trips_counted += sum(want.values())
                    if (
                        got != want
                        or (answer["from"], answer["to"]) != (w0.isoformat(), w1.isoformat())
                        or answer["trips"] != sum(want.values())
                        or answer["weekly_average"] != sum(want.values()) / len(weeks)
                    ):
                        mismatches.append(
                            {
                                "kind": case.kind,
                                "match": m,
                                "region": case.region,
                                "area": case.geojson or repr(case.area),
                                "from": str(case.start),
                                "to": str(case.end),
                                "service": [answer["from"], answer["to"], answer["trips"]],
                                "brute_force": [str(w0), str(w1), sum(want.values())],
                            }
                        )
            print(f"{b + len(batch)}/{len(cases)} areas, {len(mismatches)} mismatches", flush=True)
    return {
        "areas": len(cases),
        "kinds": kinds,
        "answers_checked": checked,
        "trips_counted": trips_counted,
        "areas_by_kind": by_kind,
        "mismatches": mismatches,
        "seconds": round(time.perf_counter() - t_start, 1),
        "seed": seed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--areas", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument(
        "--kinds",
        help="comma-separated kinds drawn in turn instead of the default mix: "
        + ", ".join(sorted({*KINDS, "box-big"})),
    )
    args = ap.parse_args()
    kinds = args.kinds.split(",") if args.kinds else KINDS
    unknown = set(kinds) - {*KINDS, "box-big"}
    if unknown:
        ap.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    result = asyncio.run(check(args.url, args.areas, args.seed, kinds))
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    raise SystemExit(1 if result["mismatches"] else 0)


if __name__ == "__main__":
    main()
