"""pip.Covers against PostGIS's ST_Covers itself: the same answer for every point, on the
boundary, a hair off it, on vertices, in holes and in the parts of multipolygons."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
import shapely
from shapely.geometry import mapping

from service.analytics.pip import WKB, Covers, supported

_ST_COVERS = """
    WITH a AS (SELECT ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326) AS g)
    SELECT ST_Covers(a.g, ST_SetSRID(ST_MakePoint(u.x, u.y), 4326))
    FROM a, unnest(%s::float8[], %s::float8[]) WITH ORDINALITY AS u(x, y, o)
    ORDER BY u.o"""


def _polygons(rng: np.random.Generator) -> Iterator[Any]:
    """Star-shaped polygons (some with vertices on a 0.001 grid: axis-aligned and collinear
    edges), boxes with holes, multipolygons, negative coordinates."""
    for k in range(12):
        cx, cy = rng.uniform(-10, 10, 2)
        n = int(rng.integers(3, 40))
        angle = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.01, 0.2) * rng.uniform(0.5, 1.0, n)
        pts = np.c_[cx + r * np.cos(angle), cy + r * np.sin(angle)]
        if k % 3 == 0:
            pts = np.round(pts, 3)
        poly: Any = shapely.Polygon(pts)
        if k % 4 == 1:
            outer = shapely.box(cx, cy, cx + 0.05, cy + 0.03)
            poly = outer.difference(shapely.box(cx + 0.01, cy + 0.01, cx + 0.02, cy + 0.02))
        if k % 5 == 2 and poly.geom_type == "Polygon":
            poly = shapely.MultiPolygon([poly, shapely.box(cx + 0.5, cy, cx + 0.6, cy + 0.1)])
        poly = shapely.make_valid(poly)
        if poly.geom_type in ("Polygon", "MultiPolygon"):
            yield poly


def _points(poly: Any, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points around the polygon, on its vertices, on its edges, on the edges' midpoints and a
    hair beside each of them."""
    minx, miny, maxx, maxy = poly.bounds
    n = 3000
    x = rng.uniform(minx - 0.01, maxx + 0.01, n)
    y = rng.uniform(miny - 0.01, maxy + 0.01, n)
    c = shapely.get_coordinates(poly.boundary)
    t = rng.uniform(0, 1, len(c) - 1)
    ex, ey = c[:-1, 0] + t * (c[1:, 0] - c[:-1, 0]), c[:-1, 1] + t * (c[1:, 1] - c[:-1, 1])
    mx, my = (c[:-1, 0] + c[1:, 0]) / 2, (c[:-1, 1] + c[1:, 1]) / 2
    xs = [x, c[:, 0], ex, np.nextafter(c[:, 0], np.inf), c[:, 0], mx, np.nextafter(mx, np.inf)]
    ys = [y, c[:, 1], ey, c[:, 1], np.nextafter(c[:, 1], -np.inf), my, my]
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_covers_equals_st_covers(db_url: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    on_edge = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        for poly in _polygons(rng):
            text = json.dumps(mapping(poly))
            wkb = conn.execute(WKB, {"geojson": text}).fetchone()
            assert wkb is not None
            if not supported(wkb[1]):
                pytest.skip(f"PostGIS {wkb[1]}: its ST_Covers is not the one Covers repeats")
            covers = Covers.of(bytes(wkb[0]))
            assert covers is not None
            x, y = _points(poly, rng)
            want = np.array(
                [r[0] for r in conn.execute(_ST_COVERS, (text, x.tolist(), y.tolist()))]
            )
            got = covers(x, y)
            assert (got == want).all(), f"{int((got != want).sum())} points differ in {poly.wkt}"
            boundary = shapely.distance(poly.boundary, shapely.points(x, y)) == 0
            on_edge += int((boundary & want).sum())
    assert on_edge > 100  # the points exactly on an edge, which only `side == 0.0` decides


def test_tiny_segments_are_left_to_postgis(db_url: str) -> None:
    """A segment shorter than 1e-12 is skipped by one of PostGIS's two variants only: such a
    polygon is not tested in numpy."""
    poly = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1e-13], [1, 1], [0, 0]]]}
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(WKB, {"geojson": json.dumps(poly)}).fetchone()
    assert row is not None
    assert Covers.of(bytes(row[0])) is None
    assert Covers.of(shapely.to_wkb(shapely.box(0, 0, 1, 1))) is not None


def test_versions() -> None:
    assert supported("3.3.2") and supported("3.1.0")
    assert not supported("3.4.2") and not supported("3.0.0") and not supported("2.5.5")
