"""The binary COPY rows: every trip once, in file order, each field where PostgreSQL reads it."""

from __future__ import annotations

import struct

import numpy as np

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
    # the geometries (EWKB) carry the same doubles
    for geo, v in (("ox", ox), ("oy", oy), ("dx", dx), ("dy", dy)):
        assert np.array_equal(rows[geo], v)
    assert set(rows["nfields"].tolist()) == {len(COLUMNS)}


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
    order, kind, srid, x, y = struct.unpack("<BIIdd", values["destination"])
    assert (order, kind, srid, x, y) == (1, 0x20000001, 4326, -0.125, 45.0)
