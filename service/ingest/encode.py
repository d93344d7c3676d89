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
    for name, value in _CONST.items():
        rows[name] = value
    rows["id"] = np.arange(first_id, first_id + n, dtype=np.int64)
    rows["part"] = part
    rows["job"] = job
    rows["region"] = region
    rows["ds"] = datasource
    rows["ts"] = ts_us
    rows["ox"], rows["oy"], rows["dx"], rows["dy"] = ox, oy, dx, dy
    # Stored in space order, ids still in file order: a box's edge reads then find the points
    # of a cell together on a few pages instead of one point per page all over the partition.
    return rows[np.argsort(z_order(ox, oy), kind="stable")].tobytes()


def _spread(v: np.ndarray) -> np.ndarray:
    """The 16 low bits of v moved to the even bit positions of a uint32."""
    v = v.astype(np.uint32) & 0xFFFF
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555


def z_order(x: np.ndarray, y: np.ndarray, cell: float = 0.01) -> np.ndarray:
    """Morton (Z-order) key of the `cell`-degree grid cell of each point (lon, lat)."""
    cx = np.floor(x / cell).astype(np.int64) + 18_000  # 0 … 36 000: 16 bits
    cy = np.floor(y / cell).astype(np.int64) + 9_000  # 0 … 18 000: 15 bits
    return _spread(cx) | (_spread(cy) << 1)


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
