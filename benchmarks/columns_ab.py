"""The columnar copies against PostgreSQL alone, in one run, on one kept store.

For every area of the query benchmark (benchmarks.queries, seed 42 by default: 30+ boxes of
100 m to a city, 5 polygons) and every match, the weekly average is read as served (two
connections, service/analytics/weekly.py) with the copies (columns.STORE set) and without
(None), alternating, `--runs` times each; each area's time is the median of its runs, and the
two answers must be equal, week by week (the script exits non-zero otherwise). The copies are
built first when missing (`trips columns build` does the same), and the build is timed.

    PYTHONPATH=. python -m benchmarks.columns_ab URL --dir /var/tmp/trips-columns [--runs 3]

Writes benchmarks/results/<date>-columns-ab-<rows>.json: per kind, p50 / p95 / max over the
areas of each side, the ratio of the p95s, and the differences (0).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.queries import _extents, _pct, areas, served
from benchmarks.run import build_columns
from service.analytics import columns, weekly
from service.analytics.area import parse_geometry

MATCHES = ("origin", "destination", "both", "either")


def _kind(area: Any, match: str) -> str:
    name = "bbox" if isinstance(area, weekly.BBox) else "polygon"
    return name if (name == "polygon" and match == "origin") else f"{name}_{match}"


async def _run(url: str, store: columns.Store, runs: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    out: dict[str, Any] = {"kinds": {}, "differences": 0}
    async with served(url) as (conn, spare):
        boxes, texts = areas(rng, await _extents(conn))
        polygons = [parse_geometry(t) for t in texts]
        for match in MATCHES:
            for area in [*boxes, *polygons]:
                times: dict[str, list[float]] = {"copies": [], "postgres": []}
                answers: dict[str, Any] = {}
                for k in range(runs):
                    for side in ("copies", "postgres") if k % 2 == 0 else ("postgres", "copies"):
                        columns.STORE = store if side == "copies" else None
                        t = time.perf_counter()
                        answers[side] = await weekly.weekly_average(
                            conn,
                            region=None,
                            area=area,
                            start=None,
                            end=None,
                            match=match,
                            spare=spare,
                        )
                        times[side].append((time.perf_counter() - t) * 1000)
                kind = out["kinds"].setdefault(
                    _kind(area, match), {"copies": [], "postgres": [], "trips": 0, "differences": 0}
                )
                for side in times:
                    kind[side].append(statistics.median(times[side]))
                kind["trips"] += answers["postgres"]["trips"]
                if answers["copies"] != answers["postgres"]:
                    kind["differences"] += 1
                    out["differences"] += 1
    columns.STORE = None
    for kind in out["kinds"].values():
        for side in ("copies", "postgres"):
            v = kind.pop(side)
            kind[side] = {
                "p50_ms": round(statistics.median(v), 1),
                "p95_ms": round(_pct(v, 0.95), 1),
                "max_ms": round(max(v), 1),
                "areas": len(v),
            }
        kind["p95_ratio"] = round(kind["copies"]["p95_ms"] / kind["postgres"]["p95_ms"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--dir", type=Path, required=True, help="the copies' directory")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, Any] = {"db": args.url.rsplit("/", 1)[-1], "seed": args.seed}
    result["runs"] = args.runs
    result["rows"] = common.count_trips(args.url)
    store, result["build"] = build_columns(args.url, args.dir)
    result["copy_bytes"] = result["build"]["bytes"]
    result |= asyncio.run(_run(args.url, store, args.runs, args.seed))
    common.write_checked(result, "columns-ab", args.out)


if __name__ == "__main__":
    main()
