"""PostgreSQL binary COPY rows for `trips`, built with numpy in one vectorised step per batch.

Every field is fixed-width once region and datasource are ids, so a batch is one structured
array: no per-row Python. Points are little-endian EWKB with SRID 4326, which PostGIS's binary
input (geometry_recv) accepts as is; the same doubles go to the plain coordinate columns (ox, oy,
dx, dy) that the raw-point indexes are built on (db/migrations/014), and the fine rows of the
two ends (ofr, dfr: finegrid.fine_array, the indexes' keys, db/migrations/020).
"""

from __future__ import annotations

import numpy as np

from service.analytics import finegrid

COLUMNS = (
    "id",
    "part",
    "ingestion_id",
    "region_id",
    "datasource_id",
    "started_at",
    "origin",
    "destination",
    "ox",
    "oy",
    "dx",
    "dy",
    "ofr",
    "dfr",
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
        ("ox_len", ">i4"),
        ("ox_plain", ">f8"),
        ("oy_len", ">i4"),
        ("oy_plain", ">f8"),
        ("dx_len", ">i4"),
        ("dx_plain", ">f8"),
        ("dy_len", ">i4"),
        ("dy_plain", ">f8"),
        ("ofr_len", ">i4"),
        ("ofr", ">i4"),
        ("dfr_len", ">i4"),
        ("dfr", ">i4"),
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
    "ox_len": 8,
    "oy_len": 8,
    "dx_len": 8,
    "dy_len": 8,
    "ofr_len": 4,
    "dfr_len": 4,
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
    rows["ox_plain"], rows["oy_plain"], rows["dx_plain"], rows["dy_plain"] = ox, oy, dx, dy
    rows["ofr"], rows["dfr"] = finegrid.fine_array(oy), finegrid.fine_array(dy)
    # File order: the raw-point reads are index-only scans (db/migrations/014), which the order
    # of the heap does not affect; a space-filling sort of each batch no longer pays.
    return rows.tobytes()


# Binary COPY field types of the rollups' staging tables: (numpy big-endian type, byte length).
# `date` is days and `timestamp` microseconds since 2000-01-01; `char` is PostgreSQL's "char".
_FIELD = {
    "char": ("u1", 1),
    "int4": (">i4", 4),
    "int8": (">i8", 8),
    "float8": (">f8", 8),
    "date": (">i4", 4),
    "timestamp": (">i8", 8),
}


def binary_rows(columns: list[tuple[str, np.ndarray]]) -> bytes:
    """Binary COPY rows (no header or trailer) of equal-length columns of fixed-width types."""
    n = len(columns[0][1])
    fields = [("nfields", ">i2")]
    for i, (kind, _) in enumerate(columns):
        fields += [(f"l{i}", ">i4"), (f"v{i}", _FIELD[kind][0])]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["nfields"] = len(columns)
    for i, (kind, values) in enumerate(columns):
        rows[f"l{i}"] = _FIELD[kind][1]
        rows[f"v{i}"] = values
    return rows.tobytes()
