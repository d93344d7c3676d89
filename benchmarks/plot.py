"""The scale curve: ingest rate and query p95 against rows, from benchmarks/results/*.json.

python -m benchmarks.plot  →  benchmarks/results/scale.png
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from benchmarks.common import RUN_RESULT  # noqa: E402
from benchmarks.run import RESULTS  # noqa: E402

KINDS = (
    "region",
    "bbox_origin",
    "bbox_destination",
    "bbox_both",
    "bbox_either",
    "polygon",
    "clusters",
)


def latest_runs() -> list[dict]:  # type: ignore[type-arg]
    """The newest result file of every size (common.RUN_RESULT: names sort by time)."""
    by_rows: dict[int, dict] = {}  # type: ignore[type-arg]
    for path in sorted(RESULTS.glob("*.json")):
        if not RUN_RESULT.fullmatch(path.name):
            continue
        r = json.loads(path.read_text())
        by_rows[r["rows"]] = r
    return [by_rows[k] for k in sorted(by_rows)]


def main() -> None:
    runs = latest_runs()
    rows = [r["rows"] for r in runs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    a1.plot(rows, [r["ingest_rows_per_s"] for r in runs], "o-", label="trips ingest (indexed)")
    a1.plot(rows, [r["raw_copy_rows_per_s"] for r in runs], "s--", label="raw COPY, 5 text cols")
    for x, r in zip(rows, runs, strict=True):
        a1.annotate(
            f"{r['ingest_vs_raw_copy']:.2f}×",
            (x, r["ingest_rows_per_s"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
    a1.set(
        xscale="log",
        yscale="log",
        xlabel="trips stored",
        ylabel="rows/s",
        title="Ingest rate (label: ingest / raw COPY)",
    )
    a1.grid(True, which="both", alpha=0.3)
    a1.legend()
    # the reads as served: with the columnar copies when the run measured them
    served = [r.get("queries") or {} for r in runs]
    kinds = list(KINDS) + sorted({k for q in served for k in q if k not in KINDS and k[0] != "_"})
    for kind in kinds:
        ys = [(q.get(kind) or {}).get("p95_ms") for q in served]
        pts = [(x, y) for x, y in zip(rows, ys, strict=True) if y is not None]
        if pts:
            a2.plot(*zip(*pts, strict=True), "o-", label=kind)
    a2.axhline(100, color="grey", ls=":", lw=1)
    a2.axhline(300, color="grey", ls=":", lw=1)
    a2.axhline(1000, color="grey", ls=":", lw=1)
    a2.set(
        xscale="log",
        yscale="log",
        xlabel="trips stored",
        ylabel="p95 ms",
        title="Query p95, as served with the copies (targets dotted)",
    )
    a2.grid(True, which="both", alpha=0.3)
    if a2.get_legend_handles_labels()[0]:
        a2.legend(fontsize=8)
    peak = ", ".join(f"{r['rows']:,}: {r['peak_rss_bytes'] / 2**20:.0f} MiB" for r in runs)
    fig.suptitle(f"trips service scale curve — peak RSS of trips ingest {peak}", fontsize=10)
    fig.tight_layout()
    out = RESULTS / "scale.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
