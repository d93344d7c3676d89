"""Latency of the analytics queries on a loaded store, against the plain PostGIS query.

Kinds: region, bbox_origin, bbox_destination, bbox_both, bbox_either (30+ random boxes from
~100 m to a whole city), polygon (5 polygons, origin and destination), polygon_both,
polygon_either, clusters (top 100 per region). Each area is answered twice on the same store:
by the service (`trips_weekly`, through service/analytics/weekly.py) and by the plain query
(`count(*)` per week of the trips whose end the area covers, ST_Covers through GiST, or
coordinate comparisons for a box); the two answers must be equal. Times are the second (warm)
run of each on one connection; "cold-ish" is the first run on a fresh connection after
DISCARD ALL (the server's buffer cache stays warm).

    python -m benchmarks.queries --database-url URL --out benchmarks/results/queries.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from service.analytics import clusters, tiles, weekly
from service.analytics.area import Area, BBox, Shape, parse_geometry

# On a store of PLAIN_ONCE_ROWS trips or more (or with TRIPS_BENCH_PLAIN_ONCE=1; =0: never) the
# plain query runs once per area instead of a cold and a warm run: at 100M a city-sized plain
# query takes seconds, and the benchmark would take hours.
PLAIN_ONCE_ROWS = 50_000_000
# TRIPS_BENCH_CLUSTER_TILE_MAX_Z: the highest zoom of the cluster tiles timed (default all)
CLUSTER_TILE_MAX_Z = int(os.environ.get("TRIPS_BENCH_CLUSTER_TILE_MAX_Z", "16"))
Query = Callable[[psycopg.AsyncConnection], Awaitable[Any]]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def _extents(conn: psycopg.AsyncConnection) -> list[tuple[str, float, float, float, float]]:
    """Each region's extent of origins (from the rollup), in degrees."""
    cur = await conn.execute("""
        SELECT r.name, min(w.cx), min(w.cy), max(w.cx) + 1, max(w.cy) + 1, g.cell
        FROM weekly_cell_trips w JOIN regions r ON r.id = w.region_id CROSS JOIN trip_grid g
        WHERE w.side = 'o' GROUP BY r.name, g.cell ORDER BY r.name""")
    return [(n, x0 * g, y0 * g, x1 * g, y1 * g) for n, x0, y0, x1, y1, g in await cur.fetchall()]


def _boxes(rng: random.Random, ext: list[tuple], n: int) -> list[BBox]:
    out = []
    for i in range(n):
        _, x0, y0, x1, y1 = ext[i % len(ext)]
        city = max(x1 - x0, y1 - y0)
        side = math.exp(rng.uniform(math.log(0.001), math.log(city)))  # ~100 m → the city
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        out.append(
            BBox(
                max(cx - side / 2, -180),
                max(cy - side / 2, -90),
                min(cx + side / 2, 180),
                min(cy + side / 2, 90),
            )
        )
    return out


def areas(rng: random.Random, ext: list[tuple]) -> tuple[list[BBox], list[str]]:
    """The benchmark's areas: 30 boxes or more (six per region), then five polygons (GeoJSON),
    drawn from rng in that order."""
    return _boxes(rng, ext, max(30, 6 * len(ext))), _polygons(rng, ext, 5)


# The plain PostGIS query: what a PostGIS user writes without summary tables (the baseline).
_PLAIN_END = {
    "box": "(t.{c} && {a} AND ST_X(t.{c}) BETWEEN ST_XMin({a}) AND ST_XMax({a})"
    " AND ST_Y(t.{c}) BETWEEN ST_YMin({a}) AND ST_YMax({a}))",
    "shape": "ST_Covers({a}, t.{c})",
}
_PLAIN_MATCH = {
    "origin": "{o}",
    "destination": "{d}",
    "both": "({o} AND {d})",
    "either": "({o} OR {d})",
}


def plain_query(area: Area, match: str) -> tuple[sql.Composable, dict[str, Any]]:
    """count(*) per week of the whole store's window, zeros left out."""
    params: dict[str, Any] = {}
    kind = "box" if isinstance(area, BBox) else "shape"
    a = "(SELECT g FROM area)"
    o = _PLAIN_END[kind].format(c="origin", a=a)
    d = _PLAIN_END[kind].format(c="destination", a=a)
    test = sql.SQL(_PLAIN_MATCH[match].format(o=o, d=d))  # constant text: no values in it
    q = sql.SQL(
        "WITH area AS MATERIALIZED (SELECT {area} AS g) "
        "SELECT date_trunc('week', t.started_at)::date AS week, count(*) AS trips "
        "FROM trips t WHERE {test} GROUP BY 1 ORDER BY 1"
    ).format(area=weekly.area_sql(area, params), test=test)
    return q, params


async def _plain(conn: psycopg.AsyncConnection, area: Area, match: str) -> dict[str, int]:
    q, params = plain_query(area, match)
    cur = await conn.execute(q, params)
    return {w.isoformat(): int(n) for w, n in await cur.fetchall()}


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """The WebMercatorQuad tile (x, y) holding the point at zoom z."""
    n = 2**z
    x = int((lon + 180) / 360 * n)
    r = math.radians(lat)
    y = int((1 - math.log(math.tan(r) + 1 / math.cos(r)) / math.pi) / 2 * n)
    return min(max(x, 0), n - 1), min(max(y, 0), n - 1)


def _polygons(rng: random.Random, ext: list[tuple], n: int) -> list[str]:
    out = []
    for i in range(n):
        _, x0, y0, x1, y1 = ext[i % len(ext)]
        radius = rng.uniform(0.01, max(x1 - x0, y1 - y0) / 2)
        cx, cy = (x0 + x1) / 2 + rng.uniform(-0.02, 0.02), (y0 + y1) / 2
        out.append(json.dumps({"type": "Polygon", "coordinates": [star(rng, cx, cy, radius)]}))
    return out


def star(
    rng: random.Random, cx: float, cy: float, radius: float, inner: float = 0.6, n: int = 24
) -> list[list[float]]:
    """A closed ring of n vertices around (cx, cy), each at radius * uniform(inner, 1)."""
    ring = []
    for k in range(n):
        a = 2 * math.pi * k / n
        r = radius * rng.uniform(inner, 1.0)
        ring.append([cx + r * math.cos(a), cy + r * math.sin(a)])
    return ring + [ring[0]]


async def _time(url: str, conn: psycopg.AsyncConnection, q: Query) -> tuple[float, float, Any]:
    """(cold-ish ms on a fresh connection, warm ms on the shared one, the answer)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as fresh:
        await fresh.execute("DISCARD ALL")
        t = time.perf_counter()
        await q(fresh)
        cold = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    answer = await q(conn)
    return cold, (time.perf_counter() - t) * 1000, answer


def _summary(s: list[tuple[float, float]]) -> dict[str, Any]:
    warm, cold = [w for _, w in s], [c for c, _ in s]
    return {
        "n": len(s),
        "p50_ms": round(statistics.median(warm), 2),
        "p95_ms": round(_pct(warm, 0.95), 2),
        "max_ms": round(max(warm), 2),
        "cold_p50_ms": round(statistics.median(cold), 2),
        "cold_p95_ms": round(_pct(cold, 0.95), 2),
    }


async def _run(url: str, seed: int, plain: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    samples: dict[str, list[tuple[float, float]]] = {}
    baseline: dict[str, list[tuple[float, float]]] = {}
    ratios: dict[str, list[float]] = {}
    mismatches: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        ext = await _extents(conn)
        if not ext:
            return {"error": "no trips stored"}
        stored = (await (await conn.execute("SELECT trips FROM trip_extent")).fetchone())[0]  # type: ignore[index]
        flag = os.environ.get("TRIPS_BENCH_PLAIN_ONCE")
        plain_once = flag == "1" or (flag != "0" and stored >= PLAIN_ONCE_ROWS)

        async def add(kind: str, q: Query) -> Any:
            cold, warm, answer = await _time(url, conn, q)
            samples.setdefault(kind, []).append((cold, warm))
            return answer, warm

        async def area(kind: str, a: Area, match: str) -> None:
            answer, ms = await add(
                kind,
                lambda c: weekly.weekly_average(
                    c, region=None, area=a, start=None, end=None, match=match
                ),
            )
            if not plain:
                return
            if plain_once:  # one run on the shared connection, the service's read just before
                t = time.perf_counter()
                truth = await _plain(conn, a, match)
                cold = warm = (time.perf_counter() - t) * 1000
            else:
                cold, warm, truth = await _time(url, conn, lambda c: _plain(c, a, match))
            baseline.setdefault(kind, []).append((cold, warm))
            ratios.setdefault(kind, []).append(warm / max(ms, 1e-3))
            got = {s["week"]: s["trips"] for s in answer["series"] if s["trips"]}
            if got != truth:
                mismatches.append({"kind": kind, "match": match, "area": repr(a)})

        for name, *_ in ext:
            await add(
                "region",
                lambda c, n=name: weekly.weekly_average(
                    c, region=n, area=None, start=None, end=None, match="origin"
                ),
            )
        boxes, polygons = areas(rng, ext)
        for box in boxes:
            for match in ("origin", "destination", "both", "either"):
                await area(f"bbox_{match}", box, match)
        for text in polygons:
            shape: Shape = parse_geometry(text)
            for match in ("origin", "destination", "both", "either"):
                kind = "polygon" if match in ("origin", "destination") else f"polygon_{match}"
                await area(kind, shape, match)
        for name, *_ in ext:

            async def top(c: psycopg.AsyncConnection, n: str = name) -> Any:
                ids = await weekly.region_ids(c, n)
                return await clusters.clusters(c, regions=ids, bbox=None, limit=100)

            await add("clusters", top)
            await add("clusters", top)
        await add("clusters", lambda c: clusters.clusters(c, regions=None, bbox=None, limit=100))
        tile_bytes: dict[str, list[int]] = {}
        for _name, x0, y0, x1, y1 in ext:  # the tiles around each region's centre, every zoom
            for z in range(0, 17, 2):
                for collection in ("trips", "clusters"):
                    if collection == "clusters" and z > CLUSTER_TILE_MAX_Z:
                        continue
                    for dx, dy in ((0, 0), (1, 0), (0, 1)):
                        x, y = _tile_of((x0 + x1) / 2, (y0 + y1) / 2, z)
                        x, y = min(x + dx, 2**z - 1), min(y + dy, 2**z - 1)
                        body, _ = await add(
                            f"tile_{collection}_z{z:02d}",
                            lambda c, k=collection, z=z, x=x, y=y: tiles.tile(c, k, z, x, y),
                        )
                        tile_bytes.setdefault(f"tile_{collection}_z{z:02d}", []).append(len(body))
        cur = await conn.execute("SELECT count(*) FROM trips")
        rows = (await cur.fetchone())[0]  # type: ignore[index]
    out: dict[str, Any] = {kind: _summary(s) for kind, s in samples.items()}
    for kind, sizes in tile_bytes.items():
        out[kind]["bytes_max"] = max(sizes)
        out[kind]["bytes_median"] = statistics.median(sizes)
    for kind, s in baseline.items():
        out[kind]["plain"] = _summary(s)
        out[kind]["speedup_median"] = round(statistics.median(ratios[kind]), 2)
        slow = [r for r, (_, w) in zip(ratios[kind], s, strict=True) if w >= 100]
        out[kind]["speedup_median_where_plain_ge_100ms"] = (
            round(statistics.median(slow), 2) if slow else None
        )
    out["_meta"] = {
        "rows": rows,
        "seed": seed,
        "regions": [e[0] for e in ext],
        "mismatches": mismatches,
        "plain_runs": 1 if plain_once else 2,
        "note": "warm = second run on one connection; cold = first run on a fresh connection "
        "after DISCARD ALL; plain = count(*) per week with ST_Covers / coordinates through GiST "
        "on the same store; speedup = plain warm ms / service warm ms, per area",
    }
    return out


def run_query_benchmark(database_url: str, seed: int = 0, plain: bool = True) -> dict:
    """p50/p95 ms per query kind (see the module docstring) on the store at `database_url`."""
    return asyncio.run(_run(database_url, seed, plain))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-plain", action="store_true", help="skip the plain PostGIS baseline")
    args = ap.parse_args()
    result = run_query_benchmark(args.database_url, args.seed, not args.no_plain)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
