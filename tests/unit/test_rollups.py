"""The client-side rollup aggregates: SPEC's keys exactly, and the same totals however the rows
are buffered, spilled and split."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import numpy as np
import pytest

from service.ingest import rollups
from service.ingest.encode import HEADER, TRAILER

PG_EPOCH = datetime(2000, 1, 1)


def _us(dt: datetime) -> int:
    return (dt - PG_EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(2018, 5, 28, 0, 0, 0),  # a Monday at midnight: its own week
        datetime(2018, 6, 3, 23, 59, 59, 999_999),  # the Sunday after: still that week
        datetime(1999, 12, 27, 0, 0, 0),  # before PostgreSQL's epoch (negative)
        datetime(1970, 1, 1, 12, 0, 0),
        datetime(2000, 1, 1, 0, 0, 0),  # day 0 is a Saturday
    ],
)
def test_week_is_the_monday_of_date_trunc_week(stamp: datetime) -> None:
    monday = (stamp - timedelta(days=stamp.weekday())).date()
    days = rollups.week_days(np.array([_us(stamp)], dtype=np.int64))[0]
    assert PG_EPOCH.date() + timedelta(days=int(days)) == monday


def test_bucket_is_whole_spans_since_midnight() -> None:
    stamps = [
        datetime(2018, 5, 28, 8, 59, 59, 999_999),
        datetime(2018, 5, 28, 9, 0, 0),
        datetime(1990, 3, 1, 23, 59, 59),
        datetime(1990, 3, 1, 0, 0, 0),
    ]
    ts = np.array([_us(s) for s in stamps], dtype=np.int64)
    assert rollups.buckets(ts, 60).tolist() == [8, 9, 23, 0]
    assert rollups.buckets(ts, 15).tolist() == [35, 36, 95, 0]


def test_cells_floor_like_sql() -> None:
    v = np.array([0.0, 0.009999999, 0.01, -0.0000001, -0.01, 14.4973794438191])
    assert rollups.cells(v, 0.01).tolist() == [0, 0, 1, -1, -1, 1449]


def _brute_force(
    region: np.ndarray,
    ts: np.ndarray,
    ox: np.ndarray,
    oy: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
    p: rollups.Params,
) -> tuple[Counter, Counter, dict]:
    weeks, cells, clusters = Counter(), Counter(), defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0])
    for i in range(len(ts)):
        t = PG_EPOCH + timedelta(microseconds=int(ts[i]))
        monday = (t - timedelta(days=t.weekday())).date()
        weeks[(int(region[i]), monday)] += 1
        for side, x, y in (("o", ox[i], oy[i]), ("d", dx[i], dy[i])):
            cells[(side, int(np.floor(x / p.grid)), int(np.floor(y / p.grid)), monday)] += 1
        sod = t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6
        key = (
            int(region[i]),
            *(int(np.floor(v / p.cluster_cell)) for v in (ox[i], oy[i], dx[i], dy[i])),
            int(sod // (p.bucket_minutes * 60)),
        )
        c = clusters[key]
        c[0] += 1
        for k, v in enumerate((ox[i], oy[i], dx[i], dy[i])):
            c[k + 1] += v
    return weeks, cells, clusters


_NUMPY = {"char": "u1", "int4": ">i4", "date": ">i4", "int8": ">i8", "timestamp": ">i8",
          "float8": ">f8"}  # fmt: skip


def _decode(stream: list[bytes], columns: tuple[str, ...], types: dict[str, str]) -> list[dict]:
    body = b"".join(stream)
    assert body.startswith(HEADER) and body.endswith(TRAILER)
    fields = [("nfields", ">i2")]
    for n in columns:
        fields += [(f"{n}_len", ">i4"), (n, _NUMPY[types.get(n, "int4")])]
    rows = np.frombuffer(body[len(HEADER) : -len(TRAILER)], dtype=np.dtype(fields))
    return [{n: r[n].item() for n in columns} for r in rows]


def test_totals_equal_a_brute_force_count_whatever_the_buffering(monkeypatch) -> None:
    # a tiny buffer and several splits: every row goes through spills, splits and merges
    monkeypatch.setattr(rollups, "BUFFER_ROWS", 400)
    rng = np.random.default_rng(11)
    n = 6000
    region = rng.integers(1, 4, n).astype(np.int32)
    source = rng.integers(1, 3, n).astype(np.int32)
    ts = rng.integers(-(10**14), 10**15, n).astype(np.int64)
    # few distinct cells so that keys repeat across batches; some exactly on cell edges
    ox = rng.integers(-300, 300, n) * 0.005
    oy = rng.integers(-200, 200, n) * 0.005 + rng.choice([0.0, 0.0049], n)
    dx, dy = ox + rng.normal(0, 0.02, n), oy + rng.normal(0, 0.02, n)
    p = rollups.Params(grid=0.01, cluster_cell=0.02, bucket_minutes=30)
    job = rollups.JobRollups(p, bytes_total=5 * rollups.SPLIT_BYTES)
    for lo in range(0, n, 250):
        s = slice(lo, lo + 250)
        job.add(region[s], source[s], ts[s], ox[s], oy[s], dx[s], dy[s])
    assert len(job.tables["clusters"].files) > 2, "the rows were spilled to several splits"
    weeks, cells, clusters = _brute_force(region, ts, ox, oy, dx, dy, p)
    types = rollups._TYPES

    cell_cols = ("side", "cx", "cy", "week", "region_id", "trips")
    got_cells = _decode(list(job.copy_stream("cells")), cell_cols, types)
    by_cell: Counter = Counter()
    for r in got_cells:
        week = PG_EPOCH.date() + timedelta(days=r["week"])
        by_cell[(chr(r["side"]), r["cx"], r["cy"], week)] += r["trips"]
    blocks: Counter = Counter()  # the cells' blocks (sides O and D, floor(cell / 5))
    for (side, cx, cy, week), k in cells.items():
        blocks[(side.upper(), cx // rollups.BLOCK, cy // rollups.BLOCK, week)] += k
    # the pairs of blocks of 0.05 degrees of the two ends (side P, db/migrations/022)
    pairs: Counter = Counter()
    for i in range(n):
        t = PG_EPOCH + timedelta(microseconds=int(ts[i]))
        monday = (t - timedelta(days=t.weekday())).date()
        o, d = ((math.floor(x / 0.05) * 4096 + math.floor(y / 0.05) + 2048)
                for x, y in ((ox[i], oy[i]), (dx[i], dy[i])))  # fmt: skip
        pairs[("P", o, d, monday)] += 1
        for side, x, y in (("p", ox[i], oy[i]), ("q", dx[i], dy[i])):  # their blocks (023)
            pairs[(side, math.floor(x / 0.05), math.floor(y / 0.05), monday)] += 1
    assert by_cell == cells + blocks + pairs
    assert all(k[0] in "ODPodpq" for k in by_cell)
    assert len(got_cells) == len({tuple(r.values())[:5] for r in got_cells})  # one row per key

    cols = ("region_id", "ocx", "ocy", "dcx", "dcy", "bucket", "trips", "sum_ox", "sum_oy",
            "sum_dx", "sum_dy")  # fmt: skip
    got = _decode(list(job.copy_stream("clusters")), cols, types)
    keys = [tuple(r[c] for c in cols[:6]) for r in got]
    assert keys == sorted(keys), "totals come out sorted by key (sorted B-tree inserts)"
    assert set(keys) == set(clusters) and len(keys) == len(clusters)
    for r, k in zip(got, keys, strict=True):
        assert r["trips"] == clusters[k][0]
        assert r["sum_ox"] == pytest.approx(clusters[k][1], abs=1e-9)
        assert r["sum_dy"] == pytest.approx(clusters[k][4], abs=1e-9)

    week_cols = ("region_id", "week", "datasource_id", "trips", "last_at")
    got_weeks = _decode(list(job.copy_stream("weekly")), week_cols, types)
    by_week: Counter = Counter()
    for r in got_weeks:
        by_week[(r["region_id"], PG_EPOCH.date() + timedelta(days=r["week"]))] += r["trips"]
    assert by_week == weeks
    last = {(r["region_id"], r["week"], r["datasource_id"]): r["last_at"] for r in got_weeks}
    for key, at in last.items():
        mask = (region == key[0]) & (source == key[2]) & (rollups.week_days(ts) == key[1])
        assert at == ts[mask].max()
    job.close()
