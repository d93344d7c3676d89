"""Latency of the analytics queries on a loaded store: p50/p95 per kind, warm and cold-ish.

Kinds: region, bbox_origin, bbox_destination, bbox_both, bbox_either (30+ random boxes from
~100 m to a whole city), polygon (5 polygons, origin and destination), polygon_both,
polygon_either, clusters (top 100 per region). "Cold-ish" = the first run of a query on a fresh
connection after DISCARD ALL (no plan or catalog caches; the server's buffer cache stays warm).

    python -m benchmarks.queries --database-url URL --out benchmarks/results/queries.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from service.analytics import clusters, weekly
from service.analytics.area import BBox, parse_geometry
from service.db.pool import spare_connection as pool_spare

Query = Callable[[psycopg.AsyncConnection], Awaitable[Any]]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def _extents(conn: psycopg.AsyncConnection) -> list[tuple[str, float, float, float, float]]:
    """Each region's extent of origins (from the rollup), in degrees."""
    cur = await conn.execute("""
        SELECT r.name, min(w.cx), min(w.cy), max(w.cx) + 1, max(w.cy) + 1, g.cell
        FROM weekly_cell_trips w JOIN regions r ON r.id = w.region_id CROSS JOIN rollup_grid g
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


@asynccontextmanager
async def served(url: str) -> AsyncIterator[tuple[psycopg.AsyncConnection, weekly.Spare]]:
    """A connection, and spare connections as the API gives them: from a pool of one, for the
    parts of a big area (weekly.run_parts)."""
    async with (
        AsyncConnectionPool(url, min_size=1, max_size=1, kwargs={"autocommit": True}) as pool,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
    ):
        yield conn, lambda: pool_spare(pool)


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


async def _time(url: str, conn: psycopg.AsyncConnection, q: Query) -> tuple[float, float]:
    """(cold-ish ms on a fresh connection, warm ms on the shared one)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as fresh:
        await fresh.execute("DISCARD ALL")
        t = time.perf_counter()
        await q(fresh)
        cold = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    await q(conn)
    return cold, (time.perf_counter() - t) * 1000


async def _run(url: str, seed: int, spare_connection: bool = True) -> dict[str, Any]:
    rng = random.Random(seed)
    samples: dict[str, list[tuple[float, float]]] = {}
    async with served(url) as (conn, pooled):
        spare = pooled if spare_connection else None
        ext = await _extents(conn)
        if not ext:
            return {"error": "no trips stored"}

        async def add(kind: str, q: Query) -> None:
            samples.setdefault(kind, []).append(await _time(url, conn, q))

        for name, *_ in ext:
            await add(
                "region",
                lambda c, n=name: weekly.weekly_average(
                    c, region=n, area=None, start=None, end=None, match="origin", spare=spare
                ),
            )
        boxes, polygons = areas(rng, ext)
        for box in boxes:
            for match in ("origin", "destination", "both", "either"):
                await add(
                    f"bbox_{match}",
                    lambda c, b=box, m=match: weekly.weekly_average(
                        c, region=None, area=b, start=None, end=None, match=m, spare=spare
                    ),
                )
        for text in polygons:
            shape = parse_geometry(text)
            for match in ("origin", "destination", "both", "either"):
                kind = "polygon" if match in ("origin", "destination") else f"polygon_{match}"
                await add(
                    kind,
                    lambda c, s=shape, m=match: weekly.weekly_average(
                        c, region=None, area=s, start=None, end=None, match=m, spare=spare
                    ),
                )
        for name, *_ in ext:

            async def top(c: psycopg.AsyncConnection, n: str = name) -> Any:
                ids = await weekly.region_ids(c, n)
                return await clusters.clusters(c, regions=ids, bbox=None, limit=100)

            await add("clusters", top)
            await add("clusters", top)
        await add("clusters", lambda c: clusters.clusters(c, regions=None, bbox=None, limit=100))
        cur = await conn.execute("SELECT count(*) FROM trips")
        rows = (await cur.fetchone())[0]  # type: ignore[index]
    out: dict[str, Any] = {}
    for kind, s in samples.items():
        warm, cold = [w for _, w in s], [c for c, _ in s]
        out[kind] = {
            "n": len(s),
            "p50_ms": round(statistics.median(warm), 2),
            "p95_ms": round(_pct(warm, 0.95), 2),
            "max_ms": round(max(warm), 2),
            "cold_p50_ms": round(statistics.median(cold), 2),
            "cold_p95_ms": round(_pct(cold, 0.95), 2),
        }
    out["_meta"] = {
        "rows": rows,
        "seed": seed,
        "regions": [e[0] for e in ext],
        "spare_connection": spare_connection,
        "note": "warm = second run on a pooled connection; cold = first run on a "
        "fresh connection after DISCARD ALL; a second pooled connection for big areas' parts "
        "when spare_connection",
    }
    return out


def run_query_benchmark(database_url: str, seed: int = 0, spare_connection: bool = True) -> dict:
    """p50/p95 ms per query kind (see the module docstring) on the store at `database_url`."""
    return asyncio.run(_run(database_url, seed, spare_connection))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--one-connection",
        action="store_true",
        help="no second connection for the parts of big areas (the baseline of run_parts)",
    )
    args = ap.parse_args()
    result = run_query_benchmark(args.database_url, args.seed, not args.one_connection)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
