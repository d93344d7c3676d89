"""The fine grid of the raw-point indexes (db/migrations/014), the same in Python and SQL.

Each 0.01-degree cell (floor(v / 0.01), the rollup grid's cells) is cut into ten fine rows (and
columns) of 0.001 degrees, counted from the cell's own lower bound and clamped to 0..9:

    fine(v) = floor(v / 0.01) * 10 + clamp(floor((v - floor(v / 0.01) * 0.01) / 0.001), 0, 9)

so a point's fine row always lies in its cell (fine(v) // 10 == floor(v / 0.01)), whatever the
rounding: the grids nest exactly, and a probe of one fine row of a cell reads no point of a
neighbouring cell. fine() is monotone (so the points of [y0, y1] have their rows in
[fine(y0), fine(y1)]) and uses the same IEEE operations on both sides.
"""

from __future__ import annotations

import math

import numpy as np

BASE = 0.01  # the cell that the fine grid divides (= the rollup grid, rollup_grid.cell)
STEP = 0.001  # one fine row or column
PER = 10  # fine rows per cell

# fine() in SQL; {v} is a column. The loader stores fine_array of each end's y as trips.ofr and
# trips.dfr (db/migrations/020: the same expression backfilled stored rows), which key the
# raw-point indexes; a test checks the stored values against it. Queries test a fine column as
# a range of doubles (weekly.probe_bounds: fine() is monotone).
SQL = (
    "(floor({v} / 0.01::double precision)::integer * 10"
    " + least(9, greatest(0, floor(({v} - floor({v} / 0.01::double precision)"
    " * 0.01::double precision) / 0.001::double precision)::integer)))"
)


def fine(v: float) -> int:
    c = math.floor(v / BASE)
    return c * PER + min(PER - 1, max(0, math.floor((v - c * BASE) / STEP)))


def fine_array(v: np.ndarray) -> np.ndarray:
    c = np.floor(v / BASE)
    j = np.clip(np.floor((v - c * BASE) / STEP), 0, PER - 1)
    return (c * PER + j).astype(np.int64)


def bounds(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi] of fine cells f: every value v with fine(v) == f lies in it up to rounding far
    below weekly.EPS (the clamped first and last ones reach the cell's bounds)."""
    c, j = np.floor_divide(f, PER), np.mod(f, PER)
    lo = np.where(j == 0, c * BASE, c * BASE + j * STEP)
    hi = np.where(j == PER - 1, (c + 1) * BASE, c * BASE + (j + 1) * STEP)
    return lo, hi
