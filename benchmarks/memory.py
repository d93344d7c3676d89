"""Issue 2's memory gate: peak RSS of `trips ingest` for a 1M-row and a 10M-row file.

    python -m benchmarks.memory  →  benchmarks/results/<date>-memory.json

Each file is ingested by its own `trips ingest` process under /usr/bin/time -v, into a fresh
database `bench_mem`. The two peaks must be under 300 MB and within 20% of each other.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from benchmarks import common


def main() -> None:
    out: dict[str, dict[str, float]] = {}
    for rows in (1_000_000, 10_000_000):
        f = common.DATA_DIR / f"mem-{rows}.csv"
        common.generate(rows, f, 7)
        url = common.fresh_database("bench_mem")
        run = common.trips_ingest(url, [f])
        out[str(rows)] = {"seconds": round(run.seconds, 1), "peak_rss_bytes": run.peak_rss_bytes}
        print(
            f"{rows:,} rows: {run.seconds:.1f} s, peak RSS {run.peak_rss_bytes / 2**20:.0f} MiB",
            flush=True,
        )
        f.unlink()
    common.drop_database("bench_mem")
    small, big = (out[k]["peak_rss_bytes"] for k in ("1000000", "10000000"))
    result = {
        "benchmark": "memory",
        "runs": out,
        "ratio_10m_to_1m": round(big / small, 3),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.memory",
    }
    print(json.dumps(result, indent=2))
    stem = common.result_stem(datetime.now(UTC))
    path = common.ROOT / "benchmarks" / "results" / f"{stem}-memory.json"
    path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
