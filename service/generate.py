"""`trips generate`: realistic synthetic trip files, vectorised and streamed in chunks.

Several cities (two south or west of the equator/meridian, one with a non-ASCII name), each with
residential and business hot spots; morning trips run home → work and evening trips back, the
rest are scattered; a daily rhythm (peaks at 8:00 and 18:00) and a weekly one (quieter
weekends); a handful of datasources. Seeded: the same arguments write the same bytes (each
chunk has its own generator derived from the seed and the chunk's index, so chunks can be built
on two threads — numpy and pyarrow release the GIL — and still come out identical).

Speed: no CSV writer and no per-value string objects. Each chunk is one fixed-width byte matrix
(a row per line, NUL in the unused bytes of shorter fields) filled with vectorised digit
arithmetic; its non-NUL bytes are the CSV text. Coordinates have 7 decimals (about 1 cm).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

CITIES = [
    # name, lon, lat, half-width in degrees, weight
    ("Prague", 14.42, 50.08, 0.15, 0.24),
    ("Turin", 7.68, 45.07, 0.10, 0.20),
    ("Hamburg", 9.99, 53.55, 0.18, 0.22),
    ("São Paulo", -46.63, -23.55, 0.25, 0.22),
    ("Montréal", -73.57, 45.50, 0.15, 0.12),
]
DATASOURCES = ["funny_car", "baba_car", "cheap_mobile", "bad_diesel_vehicles", "pt_search_app"]
DS_WEIGHTS = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
START = np.datetime64("2018-01-01T00:00:00", "s")
WEEKS = 52
HOTSPOTS = 8
# Relative trip intensity per hour of day, and per weekday (Monday first).
HOURLY = np.array(
    [1, 0.5, 0.3, 0.3, 0.5, 1.5, 4, 8, 9, 6, 4, 4, 5, 4, 4, 5, 7, 9, 8, 5, 4, 3, 2, 1.5]
)
DAILY = np.array([1.0, 1.0, 1.0, 1.0, 1.1, 0.7, 0.5])
HEADER = b"region,origin_coord,destination_coord,datetime,datasource\n"
CHUNK = 500_000
DECIMALS = 7

_LON0 = np.array([c[1] for c in CITIES])
_LAT0 = np.array([c[2] for c in CITIES])
_HALF = np.array([c[3] for c in CITIES])
_CITY_P = np.array([c[4] for c in CITIES]) / sum(c[4] for c in CITIES)


def _city_hotspots(rng: np.random.Generator) -> np.ndarray:
    """(cities, HOTSPOTS, 2) hot spot centres; the first half residential, the rest business."""
    offsets = rng.uniform(-0.7, 0.7, (len(CITIES), HOTSPOTS, 2)) * _HALF[:, None, None]
    return np.stack([_LON0, _LAT0], axis=-1)[:, None, :] + offsets


def _digits(mag: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII digits of non-negative integers below 2**31, zero-padded on the left."""
    q = mag.astype(np.int32)
    out = np.empty((len(q), width), np.uint8)
    for k in range(width - 1, -1, -1):
        q, r = np.divmod(q, 10)
        out[:, k] = r
    out += 48
    return out


def _coordinate(v: np.ndarray) -> np.ndarray:
    """(n, 12) text of coordinates with DECIMALS places; NUL pads the unused leading bytes."""
    scaled = np.rint(v * 10**DECIMALS).astype(np.int64)
    mag = np.abs(scaled)
    whole = mag // 10**DECIMALS
    out = np.zeros((len(v), 4 + 1 + DECIMALS), np.uint8)
    out[:, 1:4] = _digits(whole, 3)
    # blank the leading zeros of the whole part (keep at least one digit), then place the sign
    out[:, 1] = np.where(whole >= 100, out[:, 1], 0)
    out[:, 2] = np.where(whole >= 10, out[:, 2], 0)
    sign_at = np.where(whole >= 100, 0, np.where(whole >= 10, 1, 2))
    neg = scaled < 0
    out[np.flatnonzero(neg), sign_at[neg]] = ord("-")
    out[:, 4] = ord(".")
    out[:, 5:] = _digits(mag % 10**DECIMALS, DECIMALS)
    return out


def _stamp(secs: np.ndarray) -> np.ndarray:
    """(n, 19) text 'YYYY-MM-DD HH:MM:SS' of seconds since START."""
    t = START + secs.astype("timedelta64[s]")
    days = t.astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months).astype(np.int64) + 1
    sod = (t - days).astype(np.int64)
    out = np.empty((len(secs), 19), np.uint8)
    out[:, 0:4] = _digits(year, 4)
    out[:, 5:7] = _digits(month, 2)
    out[:, 8:10] = _digits(day, 2)
    out[:, 11:13] = _digits(sod // 3600, 2)
    out[:, 14:16] = _digits(sod // 60 % 60, 2)
    out[:, 17:19] = _digits(sod % 60, 2)
    out[:, [4, 7]] = ord("-")
    out[:, 10] = ord(" ")
    out[:, [13, 16]] = ord(":")
    return out


def _names_table(names: list[str]) -> np.ndarray:
    """(len(names), width) UTF-8 bytes of names, NUL-padded on the right."""
    raw = [n.encode() for n in names]
    out = np.zeros((len(raw), max(map(len, raw))), np.uint8)
    for i, b in enumerate(raw):
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


_REGION_TEXT = _names_table([c[0] for c in CITIES])
_SOURCE_TEXT = _names_table(DATASOURCES)


def _const(text: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), np.uint8), (n, len(text)))


def _chunk(seed: int, index: int, n: int, spots: np.ndarray) -> bytes:
    """The CSV lines (no header) of chunk `index`: a pure function of (seed, index, n)."""
    rng = np.random.default_rng([seed, index])
    city = np.searchsorted(np.cumsum(_CITY_P), rng.random(n), side="right").clip(0, len(CITIES) - 1)
    week = rng.integers(0, WEEKS, n)
    day = rng.choice(7, n, p=DAILY / DAILY.sum())
    hour = rng.choice(24, n, p=HOURLY / HOURLY.sum())
    secs = ((week * 7 + day) * 24 + hour) * 3600 + rng.integers(0, 3600, n)
    home = rng.integers(0, HOTSPOTS // 2, n)  # residential spots: first half
    work = rng.integers(HOTSPOTS // 2, HOTSPOTS, n)  # business spots: second half
    evening = hour >= 15  # commuting: home → work, then back
    o_spot = np.where(evening, work, home)
    d_spot = np.where(evening, home, work)
    lon0, lat0, half = _LON0[city], _LAT0[city], _HALF[city]

    def place(spot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hot = rng.random(n) < 0.7
        x = np.where(
            hot, spots[city, spot, 0] + rng.normal(0, 0.012, n), lon0 + rng.uniform(-1, 1, n) * half
        )
        y = np.where(
            hot, spots[city, spot, 1] + rng.normal(0, 0.008, n), lat0 + rng.uniform(-1, 1, n) * half
        )
        return _coordinate(x), _coordinate(y)

    ox, oy = place(o_spot)
    dx, dy = place(d_spot)
    source = np.searchsorted(
        np.cumsum(DS_WEIGHTS / DS_WEIGHTS.sum()), rng.random(n), side="right"
    ).clip(0, len(DATASOURCES) - 1)
    # One fixed-width byte matrix per line, NUL where a field is shorter than its width; the
    # non-NUL bytes in row-major order are exactly the CSV text.
    matrix = np.concatenate(
        [
            _REGION_TEXT[city],
            _const(",POINT (", n),
            ox,
            _const(" ", n),
            oy,
            _const("),POINT (", n),
            dx,
            _const(" ", n),
            dy,
            _const("),", n),
            _stamp(secs),
            _const(",", n),
            _SOURCE_TEXT[source],
            _const("\n", n),
        ],
        axis=1,
    )
    return matrix[matrix != 0].tobytes()


def _member(seed: int, index: int, n: int, spots: np.ndarray, gz: bool) -> bytes:
    body = _chunk(seed, index, n, spots)
    # A gzip file may hold several members back to back: each chunk is compressed on its own
    # thread (zlib releases the GIL) and the members are concatenated in order.
    return gzip.compress(body, compresslevel=1, mtime=0) if gz else body


def iter_chunks(rows: int, seed: int = 42, threads: int = 2, gz: bool = False) -> Iterator[bytes]:
    """The file's body in order, chunk by chunk, built `threads` chunks ahead at most."""
    spots = _city_hotspots(np.random.default_rng(seed))
    sizes = [min(CHUNK, rows - i) for i in range(0, rows, CHUNK)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending = []
        for index, n in enumerate(sizes):
            pending.append(pool.submit(_member, seed, index, n, spots, gz))
            if len(pending) > threads:
                yield pending.pop(0).result()
        for f in pending:
            yield f.result()


def generate_file(out: Path, rows: int, seed: int = 42, console: Any = None) -> float:
    """Write `rows` trips to `out` (gzip when it ends in .gz); returns rows per second."""
    out.parent.mkdir(parents=True, exist_ok=True)
    gz = out.suffix == ".gz"
    started = time.monotonic()
    with open(out, "wb") as f:
        f.write(gzip.compress(HEADER, compresslevel=1, mtime=0) if gz else HEADER)
        for body in iter_chunks(rows, seed, gz=gz):
            f.write(body)
    elapsed = time.monotonic() - started
    rate = rows / elapsed if elapsed else 0.0
    if console is not None:
        console.print(f"wrote {rows:,} trips to {out} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    return rate
