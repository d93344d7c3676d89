"""Issue 2's gate: `trips ingest` against a raw COPY of the same file, same server, same run.

    python -m benchmarks.ingest_vs_copy [--rows 2000000] [--runs 3]

Generates the file with `trips generate`, then alternates (ingest into a fresh database,
raw COPY into an UNLOGGED five-text-column table) `runs` times. Ingest is timed end to end by
the `trips ingest` process: until the job committed with its partition indexed and attached,
so the trips are queryable with every index built. Prints and writes the median ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import UTC, datetime

from benchmarks import common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()

    path = common.DATA_DIR / f"trips-{args.rows}-s{args.seed}.csv"
    common.generate(args.rows, path, args.seed)
    db = f"bench_ivc_{args.rows}"
    runs = []
    for i in range(args.runs):
        url = common.fresh_database(db)
        ingest = common.trips_ingest(url, [path])
        copy_s = common.raw_copy(url, [path])
        run = {
            "ingest_s": round(ingest.seconds, 3),
            "raw_copy_s": round(copy_s, 3),
            "ratio": round(copy_s / ingest.seconds, 4),
            "ingest_rows_per_s": round(args.rows / ingest.seconds),
            "raw_copy_rows_per_s": round(args.rows / copy_s),
            "peak_rss_bytes": ingest.peak_rss_bytes,
        }
        runs.append(run)
        print(
            f"run {i + 1}: ingest {ingest.seconds:.2f} s, raw COPY {copy_s:.2f} s, "
            f"ratio {run['ratio']:.3f}, peak RSS {ingest.peak_rss_bytes / 2**20:.0f} MiB",
            flush=True,
        )
    common.drop_database(db)
    ratio = statistics.median(r["ratio"] for r in runs)
    print(f"median ingest/raw-COPY ratio over {args.runs} runs at {args.rows:,} rows: {ratio:.3f}")
    out = common.ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    result = {
        "benchmark": "ingest_vs_copy",
        "rows": args.rows,
        "median_ratio": ratio,
        "runs": runs,
        "at": stamp.isoformat(timespec="seconds"),
        "host": platform.node(),
        "command": f"python -m benchmarks.ingest_vs_copy --rows {args.rows} --runs {args.runs}",
    }
    (out / f"{common.result_stem(stamp)}-ingest_vs_copy-{args.rows}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
