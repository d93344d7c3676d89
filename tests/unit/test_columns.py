"""The columnar copies' search primitives against numpy's own, on random sorted runs."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.analytics import columns


@st.composite
def segmented(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Values sorted within each of a few segments (with ties), the segments' bounds, and
    queries: (segment, value) pairs, some equal to stored values."""
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=8))
    pool = st.sampled_from([-2.0, -0.5, 0.0, 0.25, 0.25, 1.0, 3.5, 7.0])
    parts = [sorted(draw(st.lists(pool, min_size=n, max_size=n))) for n in sizes]
    x = np.array([v for p in parts for v in p], dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n = draw(st.integers(1, 20))
    seg = np.array(draw(st.lists(st.integers(0, len(sizes) - 1), min_size=n, max_size=n)))
    v = np.array(draw(st.lists(pool | st.floats(-3, 8), min_size=n, max_size=n)))
    return x, starts, seg, v


@settings(max_examples=300, deadline=None)
@given(segmented(), st.booleans())
def test_search_is_searchsorted_per_segment(case: tuple, right: bool) -> None:
    x, starts, seg, v = case
    a, b = starts[seg], starts[seg + 1]
    got = columns._search(x, a, b, v, right=right)
    side = "right" if right else "left"
    want = [
        int(a0 + np.searchsorted(x[a0:b0], q, side=side)) for a0, b0, q in zip(a, b, v, strict=True)
    ]
    assert got.tolist() == want


def test_runs_take_closed_or_half_open_ranges_per_fine_row() -> None:
    # fine rows 10, 11 (empty), 12; x sorted within each
    x = np.array([0.1, 0.2, 0.2, 0.5, 0.2, 0.3])
    end = columns.End(10, np.array([0, 4, 4, 6]), {"x": x})
    rows = np.array([10, 11, 12, 9, 13])
    lo, hi, which = end.runs(rows, np.full(5, 0.2), np.full(5, 0.3), closed=True)
    assert list(zip(lo, hi, which, strict=True)) == [(1, 3, 0), (4, 6, 2)]
    lo, hi, which = end.runs(rows, np.full(5, 0.2), np.full(5, 0.3), closed=False)
    assert list(zip(lo, hi, which, strict=True)) == [(1, 3, 0), (4, 5, 2)]


def test_gather_concatenates_runs() -> None:
    idx, run = columns.gather(np.array([3, 7, 7]), np.array([5, 7, 9]))
    assert idx.tolist() == [3, 4, 7, 8] and run.tolist() == [0, 0, 2, 2]


def test_weeks_fold_days_into_mondays() -> None:
    monday = date(2018, 5, 28)
    days = np.array([(monday - columns.EPOCH).days + k for k in (0, 6, 7, -1)])
    got = columns.weeks(days, np.array([1.0, 1.0, -1.0, 1.0]))
    assert got == {monday: 2, monday + timedelta(7): -1, monday - timedelta(7): 1}
    d0, d1 = columns.days(monday, monday + timedelta(7))
    assert (d0, d1) == (days[0], days[0] + 13)


def test_a_copy_is_filed_by_store_migration_and_format(tmp_path: object) -> None:
    ident = columns.Identity("abc", 24, ((5, "trips_p0"), (9, "trips_job_3")))
    assert ident.jobs == [(9, "trips_job_3")]
    newer = columns.Identity("abc", 25, ident.tables)
    assert ident.name(9, "trips_job_3") != newer.name(9, "trips_job_3")
    assert columns.identity((None, None, "abc", 24)) is None
