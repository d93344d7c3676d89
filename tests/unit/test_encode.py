"""The binary COPY rows: every trip once, ids in file order, rows in space (Z-) order."""

from __future__ import annotations

import numpy as np

from service.ingest.encode import ROW, encode_rows, z_order


def test_rows_are_in_space_order_and_keep_their_file_order_ids() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    ox, oy = rng.uniform(-180, 180, n), rng.uniform(-90, 90, n)
    dx, dy = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    ts = rng.integers(0, 10**15, n)
    region, ds = rng.integers(1, 5, n).astype(np.int32), rng.integers(1, 3, n).astype(np.int32)
    rows = np.frombuffer(encode_rows(100, 7, 7, region, ds, ts, ox, oy, dx, dy), dtype=ROW)
    assert len(rows) == n
    line = rows["id"].astype(np.int64) - 100  # the row's position in the file's batch
    assert sorted(line.tolist()) == list(range(n))
    # every field travelled with its row
    assert np.array_equal(rows["ox"], ox[line]) and np.array_equal(rows["dy"], dy[line])
    assert np.array_equal(rows["ts"], ts[line]) and np.array_equal(rows["region"], region[line])
    keys = z_order(rows["ox"].astype(float), rows["oy"].astype(float))
    assert np.all(np.diff(keys.astype(np.int64)) >= 0)
    # ties (same cell) keep file order
    same = np.diff(keys.astype(np.int64)) == 0
    assert np.all(np.diff(line)[same] > 0)


def test_z_order_keys_are_cells_interleaved() -> None:
    x = np.array([-180.0, 180.0, 0.0, 0.005, 0.01, -0.0001, 0.0])
    y = np.array([-90.0, 90.0, 0.0, 0.005, 0.0, 0.0, 0.01])
    k = z_order(x, y).astype(np.int64)
    assert k[0] == 0  # the corner cell (-18000, -9000)
    assert k[2] == k[3]  # one cell
    assert k[4] == k[2] + 1  # one cell east: the lowest bit
    assert k[6] == k[2] + 2  # one cell north: the next bit
    assert k[5] < k[2]  # a hair west of 0 is the cell west of it
    assert len(set(k.tolist())) == 6
