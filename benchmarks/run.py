"""`make benchmark ROWS=N`: generate → raw COPY baseline → ingest (CLI and API worker) → queries.

    python -m benchmarks.run --rows 1000000 [--files K] [--gzip] [--seed S] [--keep]

Everything runs in a database of its own, `bench_<rows>`, created on the local cluster (or on
the server of DATABASE_URL when it is set); the dev database `trips` is never touched.
Generated files live in $TRIPS_BENCH_DATA (default /var/tmp/trips-bench), never in the repo.
The rows are split into K files (default: 2, or one per 10M rows): the first K-1 are ingested
by `trips ingest` (one process per file, under /usr/bin/time -v for the peak RSS), the last by
the worker of a `trips serve` started for the run (POST /ingestions, then its SSE event stream
until the job ends). Then the query benchmark (benchmarks/queries.py: every kind of area by the
service and by the plain PostGIS query on the same store, answers compared). Writes
benchmarks/results/<date>-<rows>.json and a .md beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from benchmarks import common

RESULTS = common.ROOT / "benchmarks" / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_job_sse(base: str, job_id: int, timeout: float) -> str:
    """Follow GET /ingestions/{id}/events until `succeeded` or `failed`; returns the state."""
    with (
        httpx.Client(timeout=httpx.Timeout(timeout, connect=10)) as client,
        client.stream("GET", f"{base}/ingestions/{job_id}/events") as resp,
    ):
        if resp.status_code == 404:
            raise LookupError("no SSE route")
        resp.raise_for_status()
        event = None
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif not line and event in ("succeeded", "failed"):
                return event
    raise RuntimeError(f"event stream of job {job_id} ended without an outcome")


def _wait_job_listen(url: str, job_id: int, timeout: float) -> str:
    """Fallback: LISTEN trips_events and re-read the job row on each notification."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("LISTEN trips_events")
        while time.monotonic() < deadline:
            state = conn.execute(
                "SELECT state FROM ingestion_jobs WHERE id = %s", [job_id]
            ).fetchone()
            if state and state[0] in ("succeeded", "failed"):
                return str(state[0])
            for _ in conn.notifies(timeout=5, stop_after=1):
                pass
    raise TimeoutError(f"job {job_id} did not finish in {timeout:.0f} s")


def api_ingest(url: str, path: Path, timeout: float = 7200) -> dict[str, Any]:
    """Ingest one file through `trips serve`'s worker: POST /ingestions, follow its events."""
    inbox = Path(tempfile.mkdtemp(prefix="trips-bench-inbox-", dir=str(common.DATA_DIR)))
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": url, "TRIPS_DATA_DIR": str(inbox)}
    log = open(common.DATA_DIR / "bench-serve.log", "ab")  # noqa: SIM115
    server = subprocess.Popen(
        [common.TRIPS, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("trips serve did not become ready; see bench-serve.log")
            time.sleep(0.2)
        started = time.monotonic()
        # Same bytes, no copy. The inbox watcher may queue it first: then the POST (not forced)
        # answers that same job, so the file is loaded exactly once either way.
        os.link(path, inbox / path.name)
        resp = httpx.post(f"{base}/ingestions", json={"path": path.name}, timeout=600)
        resp.raise_for_status()
        job_id = int(resp.json()["id"])
        try:
            state = _wait_job_sse(base, job_id, timeout)
            via = "sse"
        except LookupError:
            state = _wait_job_listen(url, job_id, timeout)
            via = "listen"
        seconds = time.monotonic() - started
        job = httpx.get(f"{base}/ingestions/{job_id}", timeout=30).json()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(inbox, ignore_errors=True)
    if state != "succeeded":
        raise RuntimeError(f"API job {job_id} {state}: {job.get('error')}")
    return {"seconds": seconds, "job": job_id, "rows": job["rows_loaded"], "waited_via": via}


SIZES_SQL = """
WITH parts AS (
    SELECT c.oid, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'trips'::regclass
), idx AS (
    SELECT pi.relname AS parent_index, sum(pg_relation_size(ci.oid)) AS bytes
    FROM pg_inherits ii
    JOIN pg_class ci ON ci.oid = ii.inhrelid
    JOIN pg_class pi ON pi.oid = ii.inhparent
    WHERE pi.relkind = 'I' AND pi.relname LIKE 'trips\\_%%'
      AND ci.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM parts))
    GROUP BY 1
)
SELECT 'table' AS what, sum(pg_table_size(oid))::bigint FROM parts
UNION ALL SELECT parent_index, bytes::bigint FROM idx
UNION ALL SELECT 'partitions', count(*)::bigint FROM parts
UNION ALL SELECT 'rollups:' || label,
    coalesce((SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(r::regclass)),
             pg_total_relation_size(r::regclass))::bigint
    FROM unnest(ARRAY['weekly_trips', 'weekly_cell_trips', 'trip_cells', 'trip_clusters'])
         AS u(r), LATERAL (SELECT r AS label) l
UNION ALL SELECT 'database', pg_database_size(current_database())
"""


def store_sizes(url: str, rows: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        sizes = {what: int(n or 0) for what, n in conn.execute(SIZES_SQL)}
    per_row = {k: round(v / rows, 1) for k, v in sizes.items() if k not in ("partitions",)}
    return {"bytes": sizes, "bytes_per_row": per_row}


def machine(url: str) -> dict[str, Any]:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    with psycopg.connect(url) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        postgis = conn.execute("SELECT postgis_lib_version()").fetchone()[0]  # type: ignore[index]
        settings = dict(
            conn.execute(
                """SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN
               ('shared_buffers', 'work_mem', 'maintenance_work_mem', 'wal_level',
                'synchronous_commit', 'max_parallel_workers_per_gather', 'max_wal_size')"""
            ).fetchall()
        )
    return {
        "cores": os.cpu_count(),
        "memory": mem,
        "postgresql": pg,
        "postgis": postgis,
        "python": platform.python_version(),
        "host": platform.node(),
        "server_settings": settings,
    }


def query_benchmark(url: str, seed: int) -> dict[str, Any]:
    from benchmarks.queries import run_query_benchmark

    return run_query_benchmark(url, seed)  # type: ignore[no-any-return]


def write_markdown(result: dict[str, Any], path: Path) -> None:
    r = result
    lines = [
        f"# Benchmark: {r['rows']:,} trips ({r['at']})",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Machine: {r['machine']['cores']} cores, {r['machine']['memory'] / 2**30:.0f} GiB, "
        f"PostgreSQL {r['machine']['postgresql']}, PostGIS {r['machine']['postgis']} "
        "(shared with other work while it ran: figures are noisy).",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| files | {r['files']} × {r['rows'] // r['files']:,} rows |",
        f"| generate | {r['generate_rows_per_s'] or 0:,.0f} rows/s |",
        f"| raw COPY (unlogged, 5 text columns) | {r['raw_copy_rows_per_s']:,.0f} rows/s |",
        f"| ingest, end to end, indexed and attached | {r['ingest_rows_per_s']:,.0f} rows/s |",
        f"| ingest / raw COPY | **{r['ingest_vs_raw_copy']:.3f}** |",
        f"| `trips ingest` ({r['cli']['files']} files) | {r['cli']['rows_per_s']:,.0f} rows/s, "
        f"peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB |",
    ]
    if r.get("api"):
        lines.append(
            f"| API worker (1 file, waited via {r['api']['waited_via']}) | "
            f"{r['api']['rows_per_s']:,.0f} rows/s |"
        )
    lines.append(
        f"| database size | {r['db_bytes'] / 2**30:.2f} GiB "
        f"({r['db_bytes'] / r['rows']:.0f} B/row) |"
    )
    for k, v in r["store"]["bytes_per_row"].items():
        lines.append(f"| {k} | {v} B/row |")
    lines += [
        "",
        "| query kind | p50 ms | p95 ms | plain PostGIS p50 ms | p95 ms | speedup (median) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for kind, q in (r.get("queries") or {}).items():
        if isinstance(q, dict) and "p95_ms" in q:
            p = q.get("plain") or {}
            plain = f"{p['p50_ms']:.1f} | {p['p95_ms']:.1f}" if p else " | "
            ratio = q.get("speedup_median")
            lines.append(
                f"| {kind} | {q['p50_ms']:.1f} | {q['p95_ms']:.1f} | {plain} | "
                f"{'' if ratio is None else f'{ratio:.1f}x'} |"
            )
    if not r.get("queries"):
        lines.append("| (query benchmark not available in this run) | | | | | |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=0, help="default: 2, or one per 10M rows")
    ap.add_argument("--gzip", action="store_true", help="write .csv.gz files")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--keep", action="store_true", help="keep the database and the files")
    ap.add_argument("--keep-db", action="store_true", help="keep the database (for --queries-only)")
    ap.add_argument(
        "--queries-only",
        action="store_true",
        help="rerun only the query benchmark on the kept bench_<rows> database, into "
        "results/<date>-queries-<rows>-seed<seed>-rerun.json (the run's own file stays)",
    )
    ap.add_argument("--no-api", action="store_true", help="ingest every file with trips ingest")
    ap.add_argument(
        "--citus-workers",
        type=int,
        default=0,
        help="run on a throwaway Citus cluster of a coordinator and N workers (its `trips` "
        "database; removed at the end, so --keep-db does not apply)",
    )
    args = ap.parse_args()
    rows = args.rows
    if args.queries_only:
        rerun_queries(rows, args.seed)
        return
    k = args.files or max(2, rows // 10_000_000)
    at = datetime.now(UTC)
    cmd = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    print(f"[{at:%H:%M:%S}] benchmark {rows:,} rows in {k} files", flush=True)

    # 1. generate (each file its own seed, so no two have the same bytes)
    suffix = ".csv.gz" if args.gzip else ".csv"
    per = [rows // k + (1 if i < rows % k else 0) for i in range(k)]
    files = [common.DATA_DIR / f"trips-{rows}-s{args.seed}-{i + 1}of{k}{suffix}" for i in range(k)]
    gen_s = sum(
        common.generate(n, f, args.seed * 1000 + i)
        for i, (n, f) in enumerate(zip(per, files, strict=True))
    )
    # None when the files were already there (kept by an earlier run): nothing was generated.
    gen_rate = round(rows / gen_s) if gen_s else None
    print(f"generated in {gen_s:.1f} s ({gen_rate or 0:,} rows/s)", flush=True)

    db = f"bench_{rows}"
    with contextlib.ExitStack() as stack:
        url = _store(stack, db, args.citus_workers)

        # 2. raw COPY of the same files, same server, same run
        copy_s = common.raw_copy(url, files)
        print(f"raw COPY {copy_s:.1f} s ({rows / copy_s:,.0f} rows/s)", flush=True)

        # 3. ingest: trips ingest for the first K-1 files, the API worker for the last
        cli_files, api_file = (files, None) if args.no_api or k < 2 else (files[:-1], files[-1])
        cli_rows = sum(per[: len(cli_files)])
        # One `trips ingest` process per file: the peak RSS is the largest of them, and a file
        # is deleted once loaded (unless --keep) so that 100M rows fit the disk beside the store.
        ingest = common.IngestRun(0.0, 0, "")
        for f, n in zip(cli_files, per, strict=False):
            one = common.trips_ingest(url, [f])
            ingest.seconds += one.seconds
            ingest.peak_rss_bytes = max(ingest.peak_rss_bytes, one.peak_rss_bytes)
            print(
                f"  {f.name}: {one.seconds:.1f} s ({n / one.seconds:,.0f} rows/s), "
                f"peak RSS {one.peak_rss_bytes / 2**20:.0f} MiB",
                flush=True,
            )
            if not args.keep:
                f.unlink(missing_ok=True)
        print(
            f"trips ingest {ingest.seconds:.1f} s ({cli_rows / ingest.seconds:,.0f} rows/s), "
            f"peak RSS {ingest.peak_rss_bytes / 2**20:.0f} MiB",
            flush=True,
        )
        api = None
        if api_file is not None:
            api = api_ingest(url, api_file)
            api["rows_per_s"] = api["rows"] / api["seconds"]
            print(
                f"API worker {api['seconds']:.1f} s ({api['rows_per_s']:,.0f} rows/s) "
                f"via {api['waited_via']}",
                flush=True,
            )
        ingest_s = ingest.seconds + (api["seconds"] if api else 0.0)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM trips").fetchone()[0]  # type: ignore[index]
        if stored != rows:
            print(f"WARNING: {stored:,} trips stored, {rows:,} expected", flush=True)

        # 4. store size, machine, queries
        store = store_sizes(url, rows)
        print(f"store {store['bytes']['database'] / 2**30:.2f} GiB", flush=True)
        queries = query_benchmark(url, args.seed)

        ingest_rate = rows / ingest_s
        copy_rate = rows / copy_s
        result: dict[str, Any] = {
            "rows": rows,
            "files": k,
            "at": at.isoformat(timespec="seconds"),
            "command": cmd,
            "generate_rows_per_s": gen_rate,
            "ingest_rows_per_s": round(ingest_rate),
            "raw_copy_rows_per_s": round(copy_rate),
            "ingest_vs_raw_copy": round(ingest_rate / copy_rate, 4),
            "ingest_seconds": round(ingest_s, 2),
            "raw_copy_seconds": round(copy_s, 2),
            "cli": {
                "files": len(cli_files),
                "rows": cli_rows,
                "seconds": round(ingest.seconds, 2),
                "rows_per_s": round(cli_rows / ingest.seconds),
                "peak_rss_bytes": ingest.peak_rss_bytes,
            },
            "api": api,
            "peak_rss_bytes": ingest.peak_rss_bytes,
            "trips_stored": stored,
            "db_bytes": store["bytes"]["database"],
            "store": store,
            "queries": queries,
            "code": _code(),
            "machine": machine(url),
            "engine": "citus" if args.citus_workers else "postgis",
            "citus_workers": args.citus_workers,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        # A Citus run's name does not match common.RUN_RESULT: the scale plot stays single-node.
        engine = f"-citus{args.citus_workers}" if args.citus_workers else ""
        out = RESULTS / f"{common.result_stem(at)}-{rows}{engine}.json"
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        write_markdown(result, out.with_suffix(".md"))
        print(f"ingest/raw COPY = {result['ingest_vs_raw_copy']:.3f}; wrote {out}", flush=True)
        if not (args.keep or args.keep_db):
            if not args.citus_workers:
                common.drop_database(db)
        if not args.keep:
            for f in files:
                f.unlink(missing_ok=True)


def _store(stack: contextlib.ExitStack, db: str, citus_workers: int) -> str:
    """The benchmark's database: bench_<rows> on the benchmark server, migrated; or, with
    Citus workers, the `trips` database of a throwaway CitusCluster (CREATE DATABASE is not
    propagated to workers), migrated: db/migrations/002_citus.sql distributes it."""
    if not citus_workers:
        return common.fresh_database(db)
    from service.db.citus import CitusCluster
    from service.db.migrate import migrate

    url = stack.enter_context(CitusCluster(workers=citus_workers))
    print(f"Citus: a coordinator and {citus_workers} workers at {url}", flush=True)
    migrate(url)
    return url


def rerun_queries(rows: int, seed: int) -> None:
    """The query benchmark again on the kept bench_<rows> store, into a file of its own beside
    the run that built the store (which stays as it was measured)."""
    run = sorted(
        p
        for p in RESULTS.glob(f"*-{rows}.json")
        if (m := common.RUN_RESULT.fullmatch(p.name)) and m.group(2) == str(rows)
    )[-1]
    url = common.with_db(common.server_url(), f"bench_{rows}")
    at = datetime.now(UTC)
    result = {
        "rows": rows,
        "store_from_run": run.stem,
        "code": _code(),
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "seed": seed,
        "queries_at": at.isoformat(timespec="seconds"),
        "queries": query_benchmark(url, seed),
    }
    out = RESULTS / f"{at:%Y-%m-%dT%H%M}-queries-{rows}-seed{seed}-rerun.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}", flush=True)


def _code() -> str | None:
    """The checkout's commit, with "+changes" when its tree differs (None outside git)."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], check=False).returncode
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+changes" if dirty else "")


if __name__ == "__main__":
    main()
