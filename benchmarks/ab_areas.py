"""Latency of one build of the weekly-average code over the benchmark's areas, for A/B runs.

For each match, over the areas of benchmarks.queries (30+ boxes, 5 polygons, drawn with SEED:
default 42, the seed `make benchmark` uses; the logs of 2026-12-03 used 0, whose polygons are
bigger: `both` counts 1.77M trips over its five on 10M trips, 314k over seed 42's), the median
of three runs of each area, then p50 / p95 / max over the areas, and the sum of the answers
(equal between builds, or one of them is wrong). Run it alternately on two checkouts against
one kept store (`make benchmark ... --keep-db`):

    PYTHONPATH=. python -m benchmarks.ab_areas URL origin,destination LABEL [SEED]
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time

from benchmarks.queries import _extents, _pct, areas, served
from service.analytics import weekly
from service.analytics.area import parse_geometry


async def _main(url: str, matches: list[str], label: str, seed: int) -> None:
    rng = random.Random(seed)
    out = {}
    async with served(url) as (conn, spare):
        boxes, texts = areas(rng, await _extents(conn))
        polygons = [parse_geometry(t) for t in texts]
        for m in matches:
            for name, kind in (("bbox", boxes), ("polygon", polygons)):
                medians, trips = [], 0
                for area in kind:
                    runs = []
                    for _ in range(3):
                        t = time.perf_counter()
                        answer = await weekly.weekly_average(
                            conn,
                            region=None,
                            area=area,
                            start=None,
                            end=None,
                            match=m,
                            spare=spare,
                        )
                        runs.append((time.perf_counter() - t) * 1000)
                    medians.append(statistics.median(runs))
                    trips += answer["trips"]
                out[f"{name}_{m}"] = {
                    "p50": round(statistics.median(medians), 1),
                    "p95": round(_pct(medians, 0.95), 1),
                    "max": round(max(medians), 1),
                    "sum_trips": trips,
                }
    print(label, json.dumps(out))


if __name__ == "__main__":
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 42
    asyncio.run(_main(sys.argv[1], sys.argv[2].split(","), sys.argv[3], seed))
