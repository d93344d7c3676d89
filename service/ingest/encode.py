"""PostgreSQL binary COPY rows for `trips`, built with numpy in one vectorised step per batch.

Every field is fixed-width once region and datasource are ids, so a batch is one structured
array: no per-row Python. Points are little-endian EWKB with SRID 4326, which PostGIS's binary
input (geometry_recv) accepts as is.
"""

from __future__ import annotations

import numpy as np

COLUMNS = (
    "id",
    "part",
    "ingestion_id",
    "region_id",
    "datasource_id",
    "started_at",
    "origin",
    "destination",
)
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
_EWKB_POINT_SRID = 0x20000001
_SRID = 4326

ROW = np.dtype(
    [
        ("nfields", ">i2"),
        ("id_len", ">i4"),
        ("id", ">i8"),
        ("part_len", ">i4"),
        ("part", ">i8"),
        ("job_len", ">i4"),
        ("job", ">i8"),
        ("region_len", ">i4"),
        ("region", ">i4"),
        ("ds_len", ">i4"),
        ("ds", ">i4"),
        ("ts_len", ">i4"),
        ("ts", ">i8"),
        ("o_len", ">i4"),
        ("o_order", "u1"),
        ("o_type", "<u4"),
        ("o_srid", "<u4"),
        ("ox", "<f8"),
        ("oy", "<f8"),
        ("d_len", ">i4"),
        ("d_order", "u1"),
        ("d_type", "<u4"),
        ("d_srid", "<u4"),
        ("dx", "<f8"),
        ("dy", "<f8"),
    ]
)
_CONST = {
    "nfields": len(COLUMNS),
    "id_len": 8,
    "part_len": 8,
    "job_len": 8,
    "region_len": 4,
    "ds_len": 4,
    "ts_len": 8,
    "o_len": 25,
    "o_order": 1,
    "o_type": _EWKB_POINT_SRID,
    "o_srid": _SRID,
    "d_len": 25,
    "d_order": 1,
    "d_type": _EWKB_POINT_SRID,
    "d_srid": _SRID,
}


_ROW0 = np.zeros(1, dtype=ROW)
for _name, _value in _CONST.items():
    _ROW0[_name] = _value
_TEMPLATE = _ROW0.view(np.uint8)


def encode_rows(
    first_id: int,
    part: int,
    job: int,
    region: np.ndarray,
    datasource: np.ndarray,
    ts_us: np.ndarray,
    ox: np.ndarray,
    oy: np.ndarray,
    dx: np.ndarray,
    dy: np.ndarray,
) -> bytes:
    """The binary COPY body (no header or trailer) for one batch of valid trips."""
    n = len(ts_us)
    rows = np.empty(n, dtype=ROW)
    rows.view(np.uint8).reshape(n, ROW.itemsize)[:] = _TEMPLATE  # the constant fields, one pass
    rows["id"] = np.arange(first_id, first_id + n, dtype=np.int64)
    rows["part"] = part
    rows["job"] = job
    rows["region"] = region
    rows["ds"] = datasource
    rows["ts"] = ts_us
    rows["ox"], rows["oy"], rows["dx"], rows["dy"] = ox, oy, dx, dy
    return rows.tobytes()
