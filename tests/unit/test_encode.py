"""The binary COPY rows: every trip once, in file order, each field where PostgreSQL reads it."""

from __future__ import annotations

import struct

import numpy as np

from service.analytics import finegrid
from service.ingest.encode import COLUMNS, ROW, encode_rows


def test_rows_keep_file_order_and_every_field() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    ox, oy = rng.uniform(-180, 180, n), rng.uniform(-90, 90, n)
    dx, dy = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    ts = rng.integers(0, 10**15, n)
    region, ds = rng.integers(1, 5, n).astype(np.int32), rng.integers(1, 3, n).astype(np.int32)
    body = encode_rows(100, 7, 8, region, ds, ts, ox, oy, dx, dy)
    rows = np.frombuffer(body, dtype=ROW)
    assert len(rows) == n
    assert rows["id"].tolist() == list(range(100, 100 + n))
    assert set(rows["part"].tolist()) == {7} and set(rows["job"].tolist()) == {8}
    assert np.array_equal(rows["ts"], ts) and np.array_equal(rows["region"], region)
    assert np.array_equal(rows["ds"], ds)
    # the geometries (EWKB) and the plain columns carry the same doubles
    for geo, plain, v in (("ox", "ox_plain", ox), ("oy", "oy_plain", oy), ("dy", "dy_plain", dy)):
        assert np.array_equal(rows[geo], v) and np.array_equal(rows[plain], v)
    assert set(rows["nfields"].tolist()) == {len(COLUMNS)}
    # the fine rows of the two ends (the raw-point indexes' first keys, db/migrations/020)
    assert np.array_equal(rows["ofr"], finegrid.fine_array(oy))
    assert np.array_equal(rows["dfr"], finegrid.fine_array(dy))


def test_first_row_decodes_as_postgresql_reads_it() -> None:
    """Walk the binary COPY tuple field by field: length-prefixed, big-endian, EWKB points."""
    body = encode_rows(
        5,
        1,
        1,
        np.array([3], np.int32),
        np.array([2], np.int32),
        np.array([86_400_000_000]),
        np.array([10.5]),
        np.array([-53.25]),
        np.array([-0.125]),
        np.array([45.0]),
    )
    (nfields,) = struct.unpack_from(">h", body, 0)
    pos, fields = 2, []
    for _ in range(nfields):
        (length,) = struct.unpack_from(">i", body, pos)
        fields.append(body[pos + 4 : pos + 4 + length])
        pos += 4 + length
    assert pos == len(body)
    values = dict(zip(COLUMNS, fields, strict=True))
    assert struct.unpack(">q", values["id"])[0] == 5
    assert struct.unpack(">q", values["started_at"])[0] == 86_400_000_000
    order, kind, srid, x, y = struct.unpack("<BIIdd", values["origin"])
    assert (order, kind, srid, x, y) == (1, 0x20000001, 4326, 10.5, -53.25)
    assert struct.unpack(">d", values["ox"])[0] == 10.5
    assert struct.unpack(">d", values["oy"])[0] == -53.25
    assert struct.unpack(">d", values["dx"])[0] == -0.125
    assert struct.unpack(">d", values["dy"])[0] == 45.0
    # fine rows: floor(-53.25 / 0.01) = -5325 -> fine row -53250; 45.0 -> 45000
    assert struct.unpack(">i", values["ofr"])[0] == -53250
    assert struct.unpack(">i", values["dfr"])[0] == 45000
