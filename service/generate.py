"""`trips generate`: realistic synthetic trip files, vectorised and streamed in chunks.

Several cities (two south or west of the equator/meridian, one with a non-ASCII name), each with
residential and business hot spots; morning trips run home → work and evening trips back, the
rest are scattered; a daily rhythm (peaks at 8:00 and 18:00) and a weekly one (quieter
weekends); a handful of datasources. Seeded: the same arguments write the same bytes.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

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
HOURLY = np.array([1, 0.5, 0.3, 0.3, 0.5, 1.5, 4, 8, 9, 6, 4, 4, 5, 4, 4, 5, 7, 9, 8, 5, 4, 3, 2,
                   1.5])
DAILY = np.array([1.0, 1.0, 1.0, 1.0, 1.1, 0.7, 0.5])
CHUNK = 1_000_000


def _city_hotspots(rng: np.random.Generator) -> list[np.ndarray]:
    spots = []
    for _, lon, lat, half, _ in CITIES:
        spots.append(np.column_stack([
            lon + rng.uniform(-0.7, 0.7, HOTSPOTS) * half,
            lat + rng.uniform(-0.7, 0.7, HOTSPOTS) * half,
        ]))
    return spots


def _chunk(rng: np.random.Generator, n: int, spots: list[np.ndarray]) -> pa.Table:
    city = rng.choice(len(CITIES), n, p=np.array([c[4] for c in CITIES]) / sum(c[4] for c in CITIES))
    week = rng.integers(0, WEEKS, n)
    day = rng.choice(7, n, p=DAILY / DAILY.sum())
    hour = rng.choice(24, n, p=HOURLY / HOURLY.sum())
    secs = (((week * 7 + day) * 24 + hour) * 3600 + rng.integers(0, 3600, n)).astype("timedelta64[s]")
    stamps = START + secs
    lon0 = np.array([c[1] for c in CITIES])[city]
    lat0 = np.array([c[2] for c in CITIES])[city]
    half = np.array([c[3] for c in CITIES])[city]
    all_spots = np.stack(spots)  # (cities, HOTSPOTS, 2)
    home = rng.integers(0, HOTSPOTS // 2, n)           # residential spots: first half
    work = rng.integers(HOTSPOTS // 2, HOTSPOTS, n)    # business spots: second half
    evening = hour >= 15
    o_spot = np.where(evening, work, home)
    d_spot = np.where(evening, home, work)

    def place(spot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hot = rng.random(n) < 0.7
        x = np.where(hot, all_spots[city, spot, 0] + rng.normal(0, 0.012, n),
                     lon0 + rng.uniform(-1, 1, n) * half)
        y = np.where(hot, all_spots[city, spot, 1] + rng.normal(0, 0.008, n),
                     lat0 + rng.uniform(-1, 1, n) * half)
        return x, y

    ox, oy = place(o_spot)
    dx, dy = place(d_spot)

    def wkt(x: np.ndarray, y: np.ndarray) -> pa.Array:
        return pc.binary_join_element_wise(
            "POINT (", pc.cast(pa.array(x), pa.string()), " ",
            pc.cast(pa.array(y), pa.string()), ")", "")

    names = pa.array([c[0] for c in CITIES])
    return pa.table({
        "region": pc.take(names, pa.array(city)),
        "origin_coord": wkt(ox, oy),
        "destination_coord": wkt(dx, dy),
        "datetime": pc.cast(pa.array(stamps), pa.string()),
        "datasource": pc.take(pa.array(DATASOURCES), pa.array(rng.choice(len(DATASOURCES), n,
                                                                       p=DS_WEIGHTS))),
    })


def generate_file(out: Path, rows: int, seed: int = 42, console=None) -> float:  # type: ignore[no-untyped-def]
    """Write `rows` trips to `out` (gzip when it ends in .gz); returns rows per second."""
    rng = np.random.default_rng(seed)
    spots = _city_hotspots(rng)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    raw: BinaryIO = gzip.open(out, "wb", compresslevel=1) if out.suffix == ".gz" \
        else open(out, "wb")  # noqa: SIM115
    with raw:
        written = 0
        first = True
        while written < rows:
            n = min(CHUNK, rows - written)
            table = _chunk(rng, n, spots)
            sink = pa.BufferOutputStream()
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=first,
                                                            quoting_style="none"))
            raw.write(sink.getvalue().to_pybytes())
            first = False
            written += n
        if rows == 0:
            raw.write(b"region,origin_coord,destination_coord,datetime,datasource\n")
    elapsed = time.monotonic() - started
    rate = rows / elapsed if elapsed else 0.0
    if console is not None:
        console.print(f"wrote {rows:,} trips to {out} in {elapsed:.1f} s ({rate:,.0f} rows/s)")
    return rate
