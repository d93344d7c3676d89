"""Area parsing and the box plan (pure: no database)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from psycopg import sql

from service.analytics import finegrid
from service.analytics.area import AreaError, parse_bbox, parse_geometry, parse_match
from service.analytics.clusters import bucket_label, parse_time
from service.analytics.weekly import (
    EDGE_SPLIT_ROWS,
    ShapePlan,
    _cells_of_blocks,
    _edge_halves,
    _strip_scans,
    _whole_blocks,
    box_plan,
    cell_range_bounds,
    fine_cells,
    inner_rects,
    probe_bounds,
    shape_plan,
)
from service.ingest.rollups import BLOCK


@pytest.mark.parametrize(
    "text, words",
    [
        ("1,2,3", "4 numbers"),
        ("1,2,3,4,5", "4 numbers"),
        ("a,b,c,d", "4 numbers"),
        ("2,0,1,1", "minx"),
        ("0,2,1,1", "miny"),
        ("0,0,1,95", "latitude"),
        ("-181,0,1,1", "longitude"),
        ("0,nan,1,1", "finite"),
        ("0,0,inf,1", "finite"),
    ],
)
def test_bad_boxes(text: str, words: str) -> None:
    with pytest.raises(AreaError, match=words):
        parse_bbox(text)


def test_good_geometry_and_feature() -> None:
    ring = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    assert parse_geometry({"type": "Polygon", "coordinates": [ring]}).bounds == (0, 0, 1, 1)
    feat = {
        "type": "Feature",
        "properties": None,
        "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]},
    }
    assert parse_geometry(feat).bounds == (0, 0, 1, 1)
    with pytest.raises(AreaError, match="Self-intersection"):
        parse_geometry(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
        )
    with pytest.raises(AreaError, match="Polygon or MultiPolygon"):
        parse_geometry({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
    with pytest.raises(AreaError, match="match must be one of"):
        parse_match("inside")


def test_time_buckets() -> None:
    assert bucket_label(8, 60) == "08:00-09:00" and bucket_label(47, 30) == "23:30-24:00"
    assert parse_time("24:00", "t", 0) == 1440 and parse_time(None, "t", 5) == 5
    for bad in ("25:00", "10:60", "ab", "-1:00"):
        with pytest.raises(ValueError):
            parse_time(bad, "t", 0)


@settings(max_examples=400, deadline=None)
@given(
    st.floats(-179, 179),
    st.floats(-89, 89),
    st.floats(0, 0.5),
    st.floats(0, 0.5),
    st.lists(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5)), min_size=1, max_size=8),
)
def test_box_plan_covers_exactly(
    x: float, y: float, w: float, h: float, samples: list[tuple[float, float]]
) -> None:
    """Every point where the box and the rollup's cells R disagree lies in a strip, and R never
    holds a cell less than half covered by the box on an axis."""
    g = 0.01
    box = parse_bbox(f"{x!r},{y!r},{x + w!r},{y + h!r}")
    assert box is not None
    cells, strips = box_plan(box, g)
    bw, bh = box.maxx - box.minx, box.maxy - box.miny
    xs = [box.minx, box.maxx, cells["cx0"] * g, (cells["cx1"] + 1) * g]
    ys = [box.miny, box.maxy, cells["cy0"] * g, (cells["cy1"] + 1) * g]
    points = [(box.minx + u * bw, box.miny + v * bh) for u, v in samples]
    points += [(px, py) for px in xs for py in ys]
    points += [(math.nextafter(px, d), py) for px in xs for py in ys for d in (-1e9, 1e9)]
    points += [(px, math.nextafter(py, d)) for px in xs for py in ys for d in (-1e9, 1e9)]
    for qx, qy in points:
        in_box = box.minx <= qx <= box.maxx and box.miny <= qy <= box.maxy
        cx, cy = math.floor(qx / g), math.floor(qy / g)
        in_r = cells["cx0"] <= cx <= cells["cx1"] and cells["cy0"] <= cy <= cells["cy1"]
        if in_box != in_r:
            assert any(a <= qx <= c and b <= qy <= d for a, b, c, d in strips), (qx, qy)
    if cells["cx0"] <= cells["cx1"] and cells["cy0"] <= cells["cy1"]:
        for c in (cells["cx0"], cells["cx1"]):
            assert min(box.maxx, (c + 1) * g) - max(box.minx, c * g) >= g / 2 - 1e-12
        for c in (cells["cy0"], cells["cy1"]):
            assert min(box.maxy, (c + 1) * g) - max(box.miny, c * g) >= g / 2 - 1e-12


@settings(max_examples=200, deadline=None)
@given(st.floats(-179, 179), st.floats(-89, 89), st.floats(0, 0.5), st.floats(0, 0.5))
def test_edge_halves_deal_every_row_once(x: float, y: float, w: float, h: float) -> None:
    """The two parts of a box's edge query hold, between them, each fine row of each strip once
    (a point is in one fine row, so it is read by one part), and neither is empty."""
    box = parse_bbox(f"{x!r},{y!r},{x + w!r},{y + h!r}")
    assert box is not None
    _, strips = box_plan(box, 0.01)
    params: dict[str, Any] = {}
    _strip_scans(sql.Identifier("ox"), sql.Identifier("oy"), sql.Identifier("ofr"), strips, params)
    halves = _edge_halves(params, len(strips))
    names = [f"s{k}rows" for k in range(len(strips))]
    if halves is None:  # split by strips: a small edge, or a strip read as a range
        assert not all(n in params for n in names) or (
            sum(len(params[n]) for n in names) <= EDGE_SPLIT_ROWS
        )
        return
    assert 1 <= len(halves) <= 2
    for name in names:
        dealt = [r for half in halves for r in half[name]]
        assert sorted(dealt) == sorted(params[name]) and len(set(dealt)) == len(dealt)
    for half in halves:
        assert any(half[n] for n in names)


def _plan_count(plan: ShapePlan, geom: object, points: list[tuple[float, float]], g: float) -> int:
    """What the SQL of a shape plan counts, in Python: rollup totals of the whole cells plus the
    probes' points, with the same cell and fine-cell arithmetic."""
    cell_of = [(math.floor(x / g), math.floor(y / g)) for x, y in points]
    fine_of = [(finegrid.fine(x), finegrid.fine(y)) for x, y in points]
    whole = set(plan.whole)
    total = sum(1 for c in cell_of if c in whole)
    for cx, cy, fr, c0, c1, kind in plan.probes:
        for (x, y), c, (fx, fy) in zip(points, cell_of, fine_of, strict=True):
            if c != (cx, cy) or fy != fr or not c0 <= fx <= c1:
                continue
            covered = shapely.covers(geom, shapely.Point(x, y))
            total += {1: 1, -1: -1, 2: int(covered), -2: -int(not covered)}[kind]
    return total


@st.composite
def star_cases(
    draw: st.DrawFn, radius: tuple[float, float]
) -> tuple[Any, list[tuple[float, float]]]:
    """A valid star polygon and points: random ones around it, its vertices, the midpoints of its
    edges and a hair (one ulp) beside each vertex."""
    x, y = draw(st.floats(-170, 170)), draw(st.floats(-80, 80))
    r0 = draw(st.floats(*radius))
    radii = draw(st.lists(st.floats(0.3, 1.0), min_size=3, max_size=9))
    ring = [
        (x + r0 * r * math.cos(2 * math.pi * k / len(radii)),
         y + r0 * r * math.sin(2 * math.pi * k / len(radii)))
        for k, r in enumerate(radii)
    ]  # fmt: skip
    geom = shapely.Polygon(ring)
    assume(geom.is_valid and geom.area > 0)
    samples = draw(
        st.lists(st.tuples(st.floats(-1.2, 1.2), st.floats(-1.2, 1.2)), min_size=1, max_size=60)
    )
    points = [(x + u * r0, y + v * r0) for u, v in samples]
    edges = zip(ring, ring[1:] + ring[:1], strict=True)
    points += ring + [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in edges]
    points += [(math.nextafter(px, d), py) for px, py in ring for d in (-1e9, 1e9)]
    return geom, points


@settings(max_examples=150, deadline=None)
@given(star_cases((0.004, 0.05)), st.sampled_from([0.01, 0.005, 0.0025, 0.02]))
def test_shape_plan_counts_exactly(case: tuple[Any, list[tuple[float, float]]], g: float) -> None:
    """Over random star polygons and points, the plan counts exactly the points the polygon
    covers, for rollup grids that do and do not line up with the fine grid."""
    geom, points = case
    cells = {(math.floor(px / g), math.floor(py / g)) for px, py in points}
    plan = shape_plan(geom, sorted(cells), g)
    expected = sum(shapely.covers(geom, shapely.Point(p)) for p in points)
    assert _plan_count(plan, geom, points, g) == expected


@settings(max_examples=150, deadline=None)
@given(star_cases((0.0005, 0.02)))
def test_fine_cells_class_points_exactly(case: tuple[Any, list[tuple[float, float]]]) -> None:
    """A point in an `inside` cell is covered; a covered point is in an inside or cut cell and
    within the x range of its fine row (what _BOTH_FINE reads and tests)."""
    geom, points = case
    fine = fine_cells(geom)
    assert fine is not None
    ranges = dict(zip(fine.rows, zip(fine.x0, fine.x1, strict=True), strict=True))
    minx, miny, maxx, maxy = geom.bounds
    for px, py in points:
        covered = bool(shapely.covers(geom, shapely.Point(px, py)))
        if not (minx - 1e-9 <= px <= maxx + 1e-9 and miny - 1e-9 <= py <= maxy + 1e-9):
            assert not covered
            continue
        kx, ky = math.floor(px / 0.001) - fine.kx0, math.floor(py / 0.001) - fine.ky0
        cls = fine.classes[kx * fine.kh + ky]
        assert cls in (0, 1, 2)
        if cls == 1:
            assert covered, (px, py)
        if covered:
            assert cls in (1, 2), (px, py)
            x0, x1 = ranges[finegrid.fine(py)]
            assert x0 <= px <= x1, (px, py)


@settings(max_examples=150, deadline=None)
@given(star_cases((0.0005, 0.02)))
def test_inside_spans_are_covered(case: tuple[Any, list[tuple[float, float]]]) -> None:
    """A point of fine row f with ia <= x < ib (the row's inside span, read by _BOTH_FINE with no
    origin test) is covered: the case's points, and the corners of every span (its first x and
    the last double before ib, on the row's bounds and middle)."""
    geom, points = case
    fine = fine_cells(geom)
    assert fine is not None
    spans = dict(zip(fine.rows, zip(fine.ia, fine.ib, strict=True), strict=True))
    probes = [(x, y) for x, y in points if finegrid.fine(y) in spans]
    for f, (ia, ib) in spans.items():
        if ia >= ib:
            continue
        lo, hi = (float(b[0]) for b in finegrid.bounds(np.array([f])))
        ys = [
            y for y in (lo, math.nextafter(hi, -math.inf), (lo + hi) / 2) if finegrid.fine(y) == f
        ]
        probes += [(x, y) for x in (ia, math.nextafter(ib, -math.inf), (ia + ib) / 2) for y in ys]
    for px, py in probes:
        ia, ib = spans[finegrid.fine(py)]
        if ia <= px < ib:
            assert shapely.covers(geom, shapely.Point(px, py)), (px, py, ia, ib)


@settings(max_examples=500, deadline=None)
@given(
    st.floats(-180, 180),
    st.sampled_from([0.01, 0.05, 0.02, 0.0075, 0.001, 0.3]),
    st.integers(-3, 3),
)
def test_cell_range_bounds_are_the_cells_least_doubles(v: float, g: float, ulps: int) -> None:
    """cell_range_bounds of cell c alone gives the least double whose floor(x / g) is c or more,
    and that of c + 1: a cell's range [tx0, tx1) holds exactly its doubles, near the cells'
    bounds too (v on a multiple of g, a few ulps beside)."""
    for x in (v, round(v / g) * g):
        for _ in range(abs(ulps)):
            x = math.nextafter(x, math.copysign(math.inf, ulps))
        c = math.floor(x / g)
        bounds = cell_range_bounds({"cx0": c, "cx1": c, "cy0": c, "cy1": c}, g)
        lo, hi = bounds["tx0"], bounds["tx1"]
        assert (bounds["ty0"], bounds["ty1"]) == (lo, hi)
        assert lo <= x < hi
        assert math.floor(lo / g) == c and math.floor(math.nextafter(lo, -math.inf) / g) < c
        assert math.floor(math.nextafter(hi, -math.inf) / g) == c


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-179, 179),
    st.sampled_from([0.01, 0.02, 0.0075]),
    st.integers(0, 9),
    st.integers(0, 9),
    st.integers(-3, 3),
)
def test_probe_bounds_are_the_probes_doubles(v: float, g: float, a: int, b: int, ulps: int) -> None:
    """A probe's [x0, x1) holds exactly the doubles of its cell and fine columns, [y0, y1) those
    of its cell: checked on values at and a few ulps beside the bounds of fine cells."""
    cx, cy = math.floor(v / g), math.floor(-v / 2 / g)
    f = finegrid.fine(v)
    c0, c1 = sorted((f - a, f + b))
    x0, x1, y0, y1 = (
        float(w[0])
        for w in probe_bounds(*(np.array([k]) for k in (cx, cy, c0, c1)), g)  # type: ignore[arg-type]
    )
    lo, hi = finegrid.bounds(np.array([c0 - 1, c0, c1, c1 + 1]))
    for base in [v, -v / 2, *lo.tolist(), *hi.tolist(), cx * g, (cx + 1) * g, cy * g]:
        x = base
        for _ in range(abs(ulps)):
            x = math.nextafter(x, math.copysign(math.inf, ulps))
        in_probe = math.floor(x / g) == cx and c0 <= finegrid.fine(x) <= c1
        assert (x0 <= x < x1) == in_probe, (x, x0, x1)
        assert (y0 <= x < y1) == (math.floor(x / g) == cy), (x, y0, y1)


@settings(max_examples=300, deadline=None)
@given(st.floats(-180, 180), st.floats(-180, 180), st.integers(-3, 3))
def test_fine_grid_nests_in_cells_and_is_monotone(a: float, b: float, ulps: int) -> None:
    """A value's fine row lies in its 0.01 cell, fine() is monotone, and numpy agrees."""
    for v in (a, b, round(a, 2), round(a, 3)):
        for _ in range(abs(ulps)):
            v = math.nextafter(v, math.copysign(math.inf, ulps))
        f = finegrid.fine(v)
        assert f // finegrid.PER == math.floor(v / finegrid.BASE)
        assert int(finegrid.fine_array(np.array([v]))[0]) == f
        lo, hi = finegrid.bounds(np.array([f]))
        assert lo[0] - 1e-12 <= v <= hi[0] + 1e-12
    lo_v, hi_v = sorted((a, b))
    assert finegrid.fine(lo_v) <= finegrid.fine(hi_v)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(-40, 40),
    st.integers(0, 30),
    st.integers(-40, 40),
    st.integers(0, 30),
)
def test_inner_rects_cover_the_cells_once(cx0: int, w: int, cy0: int, h: int) -> None:
    """The whole blocks and the fringe strips of a box's cell rectangle hold each of its cells
    exactly once (negative cells included: blocks are floor(cell / 5))."""
    cx1, cy1 = cx0 + w, cy0 + h
    seen: list[tuple[int, int]] = []
    for block, x0, x1, y0, y1 in inner_rects(cx0, cx1, cy0, cy1):
        assert x0 <= x1 and y0 <= y1
        for a in range(x0, x1 + 1):
            for b in range(y0, y1 + 1):
                if block:
                    seen += [
                        (a * BLOCK + i, b * BLOCK + j) for i in range(BLOCK) for j in range(BLOCK)
                    ]
                else:
                    seen.append((a, b))
    expected = [(a, b) for a in range(cx0, cx1 + 1) for b in range(cy0, cy1 + 1)]
    assert sorted(seen) == expected
    if w >= 2 * BLOCK - 1 and h >= 2 * BLOCK - 1:  # room for a whole block: it is used
        assert inner_rects(cx0, cx1, cy0, cy1)[0][0]


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.tuples(st.integers(-40, 40), st.integers(-40, 40)), max_size=30),
    st.integers(-30, 30),
    st.integers(0, 25),
    st.integers(-30, 30),
    st.integers(0, 25),
)
def test_cells_of_blocks_hold_every_cell_with_trips(
    held: set[tuple[int, int]], cx0: int, w: int, cy0: int, h: int
) -> None:
    """A polygon's candidate cells, from the blocks that hold trips: every cell of the range that
    holds trips is among them, each once, and none outside the range or the blocks."""
    cx1, cy1 = cx0 + w, cy0 + h
    blocks = sorted({(x // BLOCK, y // BLOCK) for x, y in held})
    cells = _cells_of_blocks(blocks, cx0, cx1, cy0, cy1)
    assert len(cells) == len(set(cells))
    assert {c for c in held if cx0 <= c[0] <= cx1 and cy0 <= c[1] <= cy1} <= set(cells)
    for x, y in cells:
        assert cx0 <= x <= cx1 and cy0 <= y <= cy1 and (x // BLOCK, y // BLOCK) in blocks


@settings(max_examples=200, deadline=None)
@given(st.sets(st.tuples(st.integers(-12, 12), st.integers(-12, 12)), max_size=400))
def test_whole_blocks_read_each_whole_cell_once(whole: set[tuple[int, int]]) -> None:
    """A polygon's whole cells read as whole blocks plus the cells left: each whole cell once,
    no other cell, and a block only when all its cells are whole."""
    blocks, cells = _whole_blocks(sorted(whole))
    read = [(x, y) for bx, by in blocks for x in range(bx * BLOCK, (bx + 1) * BLOCK)
            for y in range(by * BLOCK, (by + 1) * BLOCK)] + cells  # fmt: skip
    assert sorted(read) == sorted(whole)
