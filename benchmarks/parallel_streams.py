"""Ingest throughput with one stream of jobs against two at once, in one run.

The same K generated files are ingested into a fresh database by `trips ingest` one after
another, then into another fresh database by two streams of `trips ingest` at once (each its
own job: their read and COPY phases overlap, their rollup merges queue on the loader's advisory
lock). The wall time for all files is compared; the order is swapped with --order par,seq.

    PYTHONPATH=. python -m benchmarks.parallel_streams [--files 4] [--rows 5000000]

Writes benchmarks/results/<date>-parallel-streams-<rows>.json (`rows`: all files together).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common


def _ingest(url: str, files: list[Path], streams: int) -> dict[str, Any]:
    runs: dict[str, float] = {}
    rss: list[int] = []
    failures: list[BaseException] = []

    def stream(mine: list[Path]) -> None:
        try:
            for f in mine:
                r = common.trips_ingest(url, [f])
                runs[f.name] = round(r.seconds, 1)
                rss.append(r.peak_rss_bytes)
        except BaseException as e:  # noqa: BLE001 (reported below)
            failures.append(e)

    t = time.monotonic()
    threads = [threading.Thread(target=stream, args=(files[k::streams],)) for k in range(streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise failures[0]
    return {"seconds": round(time.monotonic() - t, 1), "files": runs, "peak_rss_bytes": max(rss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--rows", type=int, default=5_000_000, help="rows per file")
    ap.add_argument("--order", default="seq,par")
    args = ap.parse_args()
    files = [
        common.DATA_DIR / f"streams-{args.rows}-s{100 + k}.csv" for k in range(1, args.files + 1)
    ]
    for k, f in enumerate(files, 1):
        common.generate(args.rows, f, seed=100 + k)
    total = args.rows * args.files
    result: dict[str, Any] = {"rows": total, "files": args.files, "rows_per_file": args.rows}
    for mode in args.order.split(","):
        db = f"bench_streams_{mode}"
        url = common.fresh_database(db)
        run = _ingest(url, files, 1 if mode == "seq" else 2)
        run["rows_per_s"] = round(total / run["seconds"])
        result[mode] = run
        print(mode, json.dumps(run), flush=True)
        common.drop_database(db)
    for f in files:
        f.unlink(missing_ok=True)
    result["par_vs_seq"] = round(result["seq"]["seconds"] / result["par"]["seconds"], 3)
    stem = common.result_stem(datetime.now(UTC))
    out = common.ROOT / "benchmarks" / "results" / f"{stem}-parallel-streams-{total}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
