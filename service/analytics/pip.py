"""ST_Covers(polygon, point) as PostGIS 3 computes it, in numpy: the columnar copies' points of
a polygon's cut fine cells tested outside PostgreSQL with the contract's predicate, unchanged.

For a (multi)polygon and a point, PostGIS's ST_Covers (postgis/lwgeom_geos.c, `covers`) does no
GEOS call: after a bounding-box test it runs its own point-in-polygon
(postgis/lwgeom_functions_analytic.c, `point_in_polygon` / `point_in_multipolygon` and their
rtree-cached twins), a winding number in plain double arithmetic:

- side = (x2 - x1) * (py - y1) - (px - x1) * (y2 - y1) for each segment of a ring;
- a segment of zero length is skipped;
- side == 0.0 exactly and the point within the segment's x and y ranges: on the boundary (the
  ring answers 0);
- otherwise +1 when y1 <= py < y2 and side > 0, -1 when y2 <= py < y1 and side < 0; the ring
  answers 1 (inside) for a winding number other than 0, else -1;
- a polygon answers by its exterior ring, unless the point is inside one of its holes (-1) or on
  one's boundary (0); a multipolygon by the first of its polygons that does not answer -1;
- covered: any answer but -1.

numpy does each operation of `side` in IEEE doubles, as the C code does (x86-64's baseline has
no fused multiply-add for the compiler to contract them into): the same bits, so the same sign
and the same zeros. The rtree-cached variant only narrows the segments to those whose y range
(widened by 1e-12) holds py; a segment whose y range does not hold py can neither count nor
hold the point, so testing every segment of the point's band (below) gives the same answer.

Two differences between the variants are kept out rather than reproduced: the cached one skips
segments shorter than 1e-12 that the other tests (a polygon with such a segment gets None from
`Covers.of`: PostgreSQL tests its points), and the bounding-box test, which is reproduced
(`gbox_contains_2d` against the polygon's box stored in single precision, rounded outwards).

The polygon's coordinates are PostGIS's own (ST_AsBinary of the query's ST_GeomFromGeoJSON):
the doubles its test sees, whatever the JSON's spelling. Only the PostGIS versions whose code
this is (VERSIONS) are stood in for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

# The SQL of the doubles PostGIS tests: the polygon as its query builds it, in WKB, and the
# version of the PostGIS library that tests it.
WKB = "SELECT ST_AsBinary(ST_GeomFromGeoJSON(%(geojson)s)), postgis_lib_version()"
# The PostGIS versions whose ST_Covers is the point-in-polygon above (pip_short_circuit, read in
# their source; the installed one is tested against ST_Covers itself). Later ones test a point
# with an interval tree of their own (itree_pip_covers): their points stay in PostgreSQL.
VERSIONS = ("3.1", "3.2", "3.3")


def supported(version: str) -> bool:
    """Whether this PostGIS library version's ST_Covers is the one Covers repeats."""
    return ".".join(version.split(".")[:2]) in VERSIONS


# Segments shorter than this (squared) are skipped by the rtree variant only (see the module).
_TINY2 = 1e-12 * 1e-12
# Bands of the point's y in which every segment that can meet the point is tested.
_BANDS = 4096


def _float_down(v: float) -> float:
    """The largest single-precision value <= v (liblwgeom's next_float_down)."""
    f = np.float32(v)
    if float(f) > v:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


def _float_up(v: float) -> float:
    f = np.float32(v)
    if float(f) < v:
        f = np.nextafter(f, np.float32(np.inf))
    return float(f)


@dataclass
class Covers:
    """A polygon's segments, ready to test points: x1, y1, x2, y2 and the ring of each (rings
    numbered across the polygons: `first[p]` is polygon p's exterior ring, followed by its
    holes), and the segments of each band of y (pairs sorted by band, `starts`)."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    ring: np.ndarray
    rings: int
    first: list[int]
    counts: list[int]
    box: tuple[float, float, float, float]
    y0: float
    h: float
    starts: np.ndarray
    seg: np.ndarray

    @classmethod
    def of(cls, wkb: bytes) -> Covers | None:
        """The test of a Polygon or MultiPolygon in WKB; None when it has a segment of non-zero
        length below 1e-12 (see the module) or is of another type."""
        geom = shapely.from_wkb(wkb)
        if shapely.get_type_id(geom) not in (3, 6) or shapely.is_empty(geom):
            return None
        polys = list(shapely.get_parts(geom)) if shapely.get_type_id(geom) == 6 else [geom]
        xs1, ys1, xs2, ys2, ring_of = [], [], [], [], []
        first, counts, r = [], [], 0
        for poly in polys:
            rings = [shapely.get_exterior_ring(poly)] + list(
                shapely.get_interior_ring(poly, range(shapely.get_num_interior_rings(poly)))
            )
            first.append(r)
            counts.append(len(rings))
            for ring in rings:
                c = shapely.get_coordinates(ring)
                a, b = c[:-1], c[1:]
                dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
                same = (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 1])
                if ((dx * dx + dy * dy < _TINY2) & ~same).any():
                    return None
                keep = ~same
                xs1.append(a[keep, 0])
                ys1.append(a[keep, 1])
                xs2.append(b[keep, 0])
                ys2.append(b[keep, 1])
                ring_of.append(np.full(int(keep.sum()), r))
                r += 1
        x1, y1, x2, y2 = (np.concatenate(v) for v in (xs1, ys1, xs2, ys2))
        ring = np.concatenate(ring_of).astype(np.int64)
        minx, miny, maxx, maxy = shapely.bounds(geom).tolist()
        box = (_float_down(minx), _float_down(miny), _float_up(maxx), _float_up(maxy))
        lo, hi = np.minimum(y1, y2), np.maximum(y1, y2)
        h = max((maxy - miny) / _BANDS, 1e-9)
        b0, b1 = _band(lo, miny, h), _band(hi, miny, h)
        n = b1 - b0 + 1
        seg = np.repeat(np.arange(len(x1)), n)
        band = np.repeat(b0, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
        order = np.argsort(band, kind="stable")
        starts = np.searchsorted(band[order], np.arange(_BANDS + 1), side="left")
        return cls(x1, y1, x2, y2, ring, r, first, counts, box, miny, h, starts, seg[order])

    def __call__(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Whether ST_Covers(polygon, point) holds for each point (px, py)."""
        n = len(px)
        out = np.zeros(n, dtype=bool)
        bx0, by0, bx1, by1 = self.box
        boxed = np.flatnonzero((px >= bx0) & (px <= bx1) & (py >= by0) & (py <= by1))
        if not len(boxed):
            return out
        x, y = px[boxed], py[boxed]
        b = _band(y, self.y0, self.h)
        a, z = self.starts[b], self.starts[b + 1]
        k = z - a
        total = int(k.sum())
        pt = np.repeat(np.arange(len(x)), k)
        s = self.seg[np.repeat(a - (np.cumsum(k) - k), k) + np.arange(total)]
        x1, y1, x2, y2 = self.x1[s], self.y1[s], self.x2[s], self.y2[s]
        qx, qy = x[pt], y[pt]
        side = (x2 - x1) * (qy - y1) - (qx - x1) * (y2 - y1)
        on = (
            (side == 0.0)
            & (qx >= np.minimum(x1, x2))
            & (qx <= np.maximum(x1, x2))
            & (qy >= np.minimum(y1, y2))
            & (qy <= np.maximum(y1, y2))
        )
        up = (y1 <= qy) & (qy < y2) & (side > 0)
        down = (y2 <= qy) & (qy < y1) & (side < 0)
        key = pt * self.rings + self.ring[s]
        size = len(x) * self.rings
        wn = np.bincount(key, weights=up.astype(np.float64) - down, minlength=size)
        hit = np.bincount(key, weights=on, minlength=size)
        # each ring's answer per point: 0 on its boundary, 1 inside, -1 outside
        res = np.where(hit > 0, 0, np.where(wn != 0, 1, -1)).reshape(len(x), self.rings)
        covered = np.zeros(len(x), dtype=bool)
        for f, c in zip(self.first, self.counts, strict=True):
            ext = res[:, f]
            mine = ext == 0
            inside = ext == 1
            # the holes in order: the first one that does not answer -1 decides
            open_ = inside.copy()
            for h in range(f + 1, f + c):
                hole = res[:, h]
                mine |= open_ & (hole == 0)
                open_ &= hole == -1
            covered |= mine | open_
        out[boxed] = covered
        return out


def _band(y: Any, y0: float, h: float) -> Any:
    """The band of each y: floor((y - y0) / h) clamped to 0.._BANDS - 1, monotone in y, so a
    segment's band range [band(min y), band(max y)] holds the band of every y it spans."""
    return np.clip(np.floor((np.asarray(y) - y0) / h), 0, _BANDS - 1).astype(np.int64)
