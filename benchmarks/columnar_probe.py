"""Probe, not part of the service: would a columnar copy of the raw points meet the targets
that the PostgreSQL raw-point reads miss at 100M trips (issue 5: p95 bbox_origin / destination
at most 100 ms, polygon 300 ms, bbox_both / either 1 s)?

The copy is DuckDB's (`pip install duckdb`: the `probe` extra; the service does not use it):
each end's points (x, y, the other end, day, region) stored twice, sorted by (fine row of y,
x) and by (fine column of x, y), so that a strip of an area's edge, flat or tall, is a narrow
run of each copy and DuckDB's zone maps skip the rest. The rollups stay in PostgreSQL: the
probe answers each area as the service does, rollup cells plus raw points where they disagree,
with the raw points read from the copy, and checks every week against the service's answer.

    PYTHONPATH=. python -m benchmarks.columnar_probe URL --copy /var/tmp/probe.duckdb [--seed 42]

1. The copy (skipped when the file exists): `COPY (SELECT ...) TO STDOUT` of all trips into a
   CSV file beside it, DuckDB's CSV reader, then the four sorted tables; each step timed.
2. Boxes (the query benchmark's, same seed). Origin and destination: the cell rectangle R of
   box_plan from the rollup (the service's own query), the strips where the box and R disagree
   from the copy (the flat ones from the rows copy, the tall ones from the columns copy).
   Both and either: the pair rows and the pair ends from PostgreSQL (the service's own
   weekly._both_pairs parts), the trips with an end in the strips of the pair grid from the
   copies (each carries the other end); a box the pairs do not answer, wholly from the copy.
3. Polygons: the cells the polygon covers from the rollup, the points of the cells it cuts
   from the copy, classed by the polygon's cells of 0.001 degrees (weekly.fine_cells) and, in
   the cut ones, by shapely.intersects_xy (for a point and a polygon, covers = intersects).
Each area's time is the median of three runs, beside the service's own (median of three) in
the same run. Results: benchmarks/results/<date>-columnar-probe-<rows>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import shapely

from benchmarks import common
from benchmarks.queries import _extents, _pct, areas, served
from service.analytics import weekly
from service.analytics.area import BBox, parse_geometry
from service.ingest.rollups import PAIR_GRID

EPOCH = date(1900, 1, 1)  # day numbers of the copy count from here
_COLUMNS = "ox DOUBLE, oy DOUBLE, dx DOUBLE, dy DOUBLE, day INTEGER, region_id INTEGER"
_EXPORT = """COPY (SELECT ox, oy, dx, dy, started_at::date - date '1900-01-01', region_id
                   FROM trips) TO STDOUT (FORMAT csv)"""


def _build(url: str, path: Path) -> dict[str, float]:
    import duckdb

    seconds: dict[str, float] = {}
    csv = path.with_suffix(".csv")
    t = time.monotonic()
    with psycopg.connect(url) as conn, conn.cursor().copy(_EXPORT) as copy, csv.open("wb") as f:
        for block in copy:
            f.write(block)
    seconds["export_s"] = time.monotonic() - t
    con = duckdb.connect(str(path))
    con.execute("SET threads = 2; SET memory_limit = '4GB'")
    t = time.monotonic()
    con.execute(
        "CREATE TABLE raw AS SELECT * FROM read_csv(?, header = false, columns = ?)",
        [str(csv), dict(c.split() for c in _COLUMNS.split(", "))],
    )
    seconds["load_s"] = time.monotonic() - t
    for end in "od":
        for name, order in (
            ("rows", f"floor({end}y / 0.001), {end}x"),
            ("cols", f"floor({end}x / 0.001), {end}y"),
        ):
            t = time.monotonic()
            # names and order from the fixed lists above
            con.execute(f"CREATE TABLE {end}_{name} AS SELECT * FROM raw ORDER BY {order}")  # noqa: S608
            seconds[f"sort_{end}_{name}_s"] = time.monotonic() - t
    con.execute("DROP TABLE raw; CHECKPOINT")
    con.close()
    csv.unlink()
    return seconds


# The service's _BOX_EDGE: +1 for a point of the box outside R, -1 for a point of R outside it.
_EDGE = """
    SELECT day, sum(CASE WHEN inb THEN 1 ELSE -1 END) FROM (
        SELECT day, (x BETWEEN ? AND ? AND y BETWEEN ? AND ?) AS inb,
               (x >= ? AND x < ? AND y >= ? AND y < ?) AS inr
        FROM ({scans}) s) p
    WHERE inb IS DISTINCT FROM inr GROUP BY day"""


def _weeks(rows: list[tuple[int, int]]) -> Counter[date]:
    out: Counter[date] = Counter()
    for day, n in rows:
        out[weekly.monday(EPOCH + timedelta(days=int(day)))] += int(n)
    return out


def _in_strip(x: str, y: str) -> str:
    return f"({x} BETWEEN ? AND ? AND {y} BETWEEN ? AND ?)"


def _strip_params(strip: tuple[float, float, float, float]) -> list[float]:
    x0, y0, x1, y1 = strip
    return [x0, x1, y0, y1]


def _strip_scans(
    end: str,
    strips: list[tuple[float, float, float, float]],
    select: str,
    extra: str = "",
    extra_params: list[float] | None = None,
) -> tuple[str, list[float]]:
    """The service's _strip_scans on the copy: one scan per strip, each leaving out the points
    of the strips before it, the flat ones from the rows copy, the tall ones (0 and 1 of four)
    from the columns copy; `select` and `extra` (" AND ...") use fixed column names."""
    x, y = f"{end}x", f"{end}y"
    scans, params = [], []
    for k, strip in enumerate(strips):
        table = f"{end}_cols" if k < 2 and len(strips) == 4 else f"{end}_rows"
        not_before = "".join(f" AND NOT {_in_strip(x, y)}" for _ in range(k))
        scans.append(  # names from the fixed ends and tables; every value a parameter
            f"SELECT {select} FROM {table} WHERE {_in_strip(x, y)}{not_before}{extra}"  # noqa: S608
        )
        params += _strip_params(strip)
        for j in range(k):
            params += _strip_params(strips[j])
        params += extra_params or []
    return " UNION ALL ".join(scans), params


def _box_edge(con: Any, box: BBox, end: str, g: float) -> tuple[Counter[date], dict[str, int]]:
    """The strips' correction of the rollup rectangle R (the service's _BOX_EDGE), from the copy."""
    cells, strips = weekly.box_plan(box, g)
    r = weekly.cell_range_bounds(cells, g)
    scans, params = _strip_scans(end, strips, f"day, {end}x AS x, {end}y AS y")
    query = _EDGE.format(scans=scans)
    head = [box.minx, box.maxx, box.miny, box.maxy, r["tx0"], r["tx1"], r["ty0"], r["ty1"]]
    return _weeks(con.execute(query, head + params).fetchall()), cells


# The service's _PAIR_EDGE on the copy: f(op) of each trip with an end in the strips.
_PAIR_EDGE = """
    SELECT day, sum(f) FROM (
        SELECT day,
               (ox BETWEEN ? AND ? AND oy BETWEEN ? AND ? {op}
                dx BETWEEN ? AND ? AND dy BETWEEN ? AND ?)::INTEGER
             - (ox >= ? AND ox < ? AND oy >= ? AND oy < ? {op}
                dx >= ? AND dx < ? AND dy >= ? AND dy < ?)::INTEGER AS f
        FROM ({scans}) s) e
    WHERE f <> 0 GROUP BY day"""


async def _box_pair(
    conn: psycopg.AsyncConnection, con: Any, box: BBox, either: bool, base: dict[str, Any]
) -> Counter[date]:
    """A box's `both` / `either` the service's way (weekly._both_pairs): the pair rows and the
    pair ends from PostgreSQL, the trips with an end in the strips from the copy; or, when the
    pairs do not answer the box, every trip with an end in it from the copy."""
    parts = weekly._both_pairs(box, dict(base), either)
    if parts is None:
        return _box_whole(con, box, either)
    counts: Counter[date] = Counter()
    for part in parts[2:]:  # [0], [1]: the strip scans, read from the copy below
        counts.update(await weekly._rows(conn, part))
    blocks, strips = weekly.box_plan(box, PAIR_GRID)
    r = weekly.cell_range_bounds(blocks, PAIR_GRID)
    select = "day, ox, oy, dx, dy"
    by_origin = _strip_scans("o", strips, select)
    none = " OR ".join(_in_strip("ox", "oy") for _ in strips)
    in_none = [v for strip in strips for v in _strip_params(strip)]
    by_destination = _strip_scans("d", strips, select, f" AND NOT ({none})", in_none)
    b = [box.minx, box.maxx, box.miny, box.maxy]
    t = [r["tx0"], r["tx1"], r["ty0"], r["ty1"]]
    for scans, params in (by_origin, by_destination):
        query = _PAIR_EDGE.format(op="OR" if either else "AND", scans=scans)
        counts.update(_weeks(con.execute(query, b + b + t + t + params).fetchall()))
    return counts


def _box_whole(con: Any, box: BBox, either: bool) -> Counter[date]:
    b = [box.minx, box.maxx, box.miny, box.maxy]
    o, d = _in_strip("ox", "oy"), _in_strip("dx", "dy")
    if not either:
        q = f"SELECT day, count(*) FROM o_rows WHERE {o} AND {d} GROUP BY day"  # noqa: S608
        return _weeks(con.execute(q, b + b).fetchall())
    q = f"SELECT day, count(*) FROM o_rows WHERE {o} GROUP BY day"  # noqa: S608
    counts = _weeks(con.execute(q, b).fetchall())
    q = f"SELECT day, count(*) FROM d_rows WHERE {d} AND NOT {o} GROUP BY day"  # noqa: S608
    counts.update(_weeks(con.execute(q, b + b).fetchall()))
    return counts


async def _box(
    conn: psycopg.AsyncConnection, con: Any, box: BBox, end: str, base: dict[str, Any], g: float
) -> Counter[date]:
    edge, cells = _box_edge(con, box, end, g)
    if cells["cx0"] <= cells["cx1"] and cells["cy0"] <= cells["cy1"]:
        p = base | cells | {"side": end, "bside": end.upper()}
        edge.update(await weekly._rows(conn, weekly.Part(weekly._inner_query(cells, p), p)))
    return edge


async def _polygon(
    conn: psycopg.AsyncConnection, con: Any, geom: Any, base: dict[str, Any], g: float
) -> Counter[date]:
    e = weekly.EPS
    minx, miny, maxx, maxy = geom.bounds
    cx, cy = (
        a.ravel()
        for a in np.meshgrid(
            np.arange(math.floor(minx / g), math.floor(maxx / g) + 1),
            np.arange(math.floor(miny / g), math.floor(maxy / g) + 1),
            indexing="ij",
        )
    )
    whole, touches = weekly.cell_classes(geom, cx, cy, g)
    cut = touches & ~whole
    p = base | {"wcx": cx[whole].tolist(), "wcy": cy[whole].tolist(), "side": "o"}
    counts = await weekly._rows(conn, weekly.Part(weekly._whole_rows("wcx", "wcy", "side"), p))
    con.register("cut_cells", {"cx": cx[cut], "cy": cy[cut]})
    r = con.execute(
        """
        SELECT ox, oy, day FROM o_rows SEMI JOIN cut_cells
          ON cut_cells.cx = floor(ox / ?)::BIGINT AND cut_cells.cy = floor(oy / ?)::BIGINT
        WHERE oy BETWEEN ? AND ? AND ox BETWEEN ? AND ?""",
        [g, g, miny - e, maxy + e, minx - e, maxx + e],
    ).fetchnumpy()
    fine = weekly.fine_cells(geom)
    assert fine is not None
    classes = np.frombuffer(fine.classes, dtype=np.uint8).reshape(-1, fine.kh)
    x, y = r["ox"], r["oy"]
    kx = np.floor(x / 0.001).astype(np.int64) - fine.kx0
    ky = np.floor(y / 0.001).astype(np.int64) - fine.ky0
    held = (kx >= 0) & (kx < classes.shape[0]) & (ky >= 0) & (ky < classes.shape[1])
    c = np.zeros(len(x), np.uint8)
    c[held] = classes[kx[held], ky[held]]
    inside = c == 1
    edge = c == 2
    inside[edge] = shapely.intersects_xy(geom, x[edge], y[edge])
    days, n = np.unique(r["day"][inside], return_counts=True)
    counts.update(_weeks(list(zip(days.tolist(), n.tolist(), strict=True))))
    return counts


async def _timed(fn: Any, runs: int = 3) -> tuple[Any, float]:
    times, answer = [], None
    for _ in range(runs):
        t = time.perf_counter()
        answer = await fn()
        times.append((time.perf_counter() - t) * 1000)
    return answer, statistics.median(times)


async def _probe(url: str, path: Path, seed: int) -> dict[str, Any]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET threads = 2")
    rng = random.Random(seed)
    out: dict[str, Any] = {"kinds": {}, "differences": 0}
    async with served(url) as (conn, spare):
        boxes, texts = areas(rng, await _extents(conn))
        polygons = [parse_geometry(t) for t in texts]
        g = await weekly.grid_cell(conn)
        w0, w1 = await weekly._window(conn, None, None)  # type: ignore[misc]
        base = {"regions": None, "w0": w0, "w1": w1}

        def service(area: Any, match: str) -> Any:
            return lambda: weekly.weekly_counts(  # as served: parts on two connections
                conn,
                regions=None,
                area=area,
                match=match,
                w0=w0,
                w1=w1,
                spare=spare,
            )

        cases: list[tuple[str, Any, Any, Any]] = []
        for match in ("both", "either"):
            for box in boxes:
                cases.append(
                    (
                        f"bbox_{match}",
                        box,
                        match,
                        lambda b=box, e=match == "either": _box_pair(conn, con, b, e, base),
                    )
                )
        for end, match in (("o", "origin"), ("d", "destination")):
            for box in boxes:
                cases.append(
                    (
                        f"bbox_{match}",
                        box,
                        match,
                        lambda b=box, e=end: _box(conn, con, b, e, base, g),
                    )
                )
        for shape in polygons:
            geom = shapely.from_geojson(shape.geojson)
            shapely.prepare(geom)
            cases.append(
                ("polygon", shape, "origin", lambda s=geom: _polygon(conn, con, s, base, g))
            )
        for kind, area, match, copy in cases:
            want, service_ms = await _timed(service(area, match))
            got, copy_ms = await _timed(copy)
            k = out["kinds"].setdefault(
                kind, {"service_ms": [], "copy_ms": [], "trips": 0, "differences": 0}
            )
            k["service_ms"].append(service_ms)
            k["copy_ms"].append(copy_ms)
            k["trips"] += sum(want.values())
            weeks = set(want) | set(got)
            wrong = sum(1 for w in weeks if w0 <= w <= w1 and want[w] != got[w])
            k["differences"] += wrong
            out["differences"] += wrong
    for k in out["kinds"].values():
        for name in ("service_ms", "copy_ms"):
            v = k.pop(name)
            k[name.replace("_ms", "")] = {
                "p50_ms": round(statistics.median(v), 1),
                "p95_ms": round(_pct(v, 0.95), 1),
                "max_ms": round(max(v), 1),
                "areas": len(v),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--copy", type=Path, required=True, help="the DuckDB file (built when missing)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {"url_db": args.url.rsplit("/", 1)[-1], "seed": args.seed}
    result["rows"] = common.count_trips(args.url)
    if not args.copy.exists():
        result["build"] = _build(args.url, args.copy)
    result["copy_bytes"] = args.copy.stat().st_size
    result |= asyncio.run(_probe(args.url, args.copy, args.seed))
    common.write_checked(result, "columnar-probe", args.out)


if __name__ == "__main__":
    main()
