"""Mixed read load on a real `trips serve` while a large ingestion runs (issue 6, item 5).

A server on 127.0.0.1 (never another address) with a database of its own: a warm-up file is
ingested first so that reads have data, then a large file is posted and, once its job has
started, an open-loop generator sends a steady mix of reads — weekly averages, clusters,
/vehicles (and /trips when served) — at a fixed rate for a fixed time. Should the ingestion end
before the window does, the same file is posted again (`force`) so that one is always running,
at most `--max-ingestions` times. Bounded in requests, in-flight requests and time; it stops by
itself. Writes need a random bearer token (TRIPS_API_TOKEN), as in production.

    .venv/bin/python benchmarks/load_mixed.py --rows 1000000 --duration 60 --rate 20

Result: benchmarks/results/load-mixed-<date>.json (per route: requests, errors, p50/p95/p99).
Exit status 1 when any request failed or any ingestion did not succeed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATA_DIR, TRIPS, drop_database, fresh_database, generate  # noqa: E402
from service.events.client import SseParser  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
HOST = "127.0.0.1"  # loopback only: this benchmark never exposes a server
# (route label, path, query) — a route is used only when the server's OpenAPI lists it.
MIX = [
    ("/stats/weekly-average", "/stats/weekly-average", {"region": "Prague"}),
    (
        "/stats/weekly-average",
        "/stats/weekly-average",
        {"bbox": "14.35,49.95,14.55,50.15", "match": "both"},
    ),
    (
        "/stats/weekly-average",
        "/stats/weekly-average",
        {"region": "Turin", "from": "2018-03-01", "to": "2018-06-30"},
    ),
    ("/clusters", "/clusters", {"region": "Hamburg", "limit": "20"}),
    ("/clusters", "/clusters", {"bbox": "7.6,45.0,7.8,45.2", "min_trips": "2", "limit": "50"}),
    ("/vehicles", "/vehicles", {"region": "Prague", "limit": "10"}),
    ("/vehicles", "/vehicles", {"datasource": "cheap_mobile", "date": "2018-05-28"}),
    ("/vehicles/{column}/count", "/vehicles/region/count", {}),
    ("/vehicles/weekly_avg_trips/region", "/vehicles/weekly_avg_trips/region", {}),
    ("/trips", "/trips", {"region": "Turin", "limit": "100"}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_job(
    client: httpx.AsyncClient, job_id: int, timeout: float, started: asyncio.Event | None = None
) -> dict[str, Any]:
    """Follow the job's event stream (pushed, not polled) until it succeeds or fails."""
    parser = SseParser()
    async with asyncio.timeout(timeout):
        async with client.stream(
            "GET", f"/ingestions/{job_id}/events", timeout=httpx.Timeout(10, read=None)
        ) as r:
            async for line in r.aiter_lines():
                ev = parser.feed(line)
                if ev is None:
                    continue
                if ev.type == "started" and started is not None:
                    started.set()
                if ev.type in ("succeeded", "failed"):
                    return (await client.get(f"/ingestions/{job_id}")).json()
    raise RuntimeError(f"event stream of job {job_id} ended early")


async def ingest(client: httpx.AsyncClient, name: str, force: bool) -> int:
    r = await client.post("/ingestions", json={"path": name, "force": force})
    r.raise_for_status()
    return int(r.json()["id"])


class Load:
    """An open-loop generator: one request every 1/rate s, at most `concurrency` in flight."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        mix: list[tuple[str, str, dict[str, str]]],
        rate: float,
        concurrency: int,
    ):
        self.client, self.mix, self.rate = client, mix, rate
        self.slots = asyncio.Semaphore(concurrency)
        self.samples: list[tuple[str, float, int, str | None]] = []  # route, s, status, error
        self.skipped = 0  # ticks with every slot busy (the server fell behind)

    async def one(self, label: str, path: str, params: dict[str, str]) -> None:
        t = time.perf_counter()
        try:
            r = await self.client.get(path, params=params, timeout=30)
            await r.aread()
            err = None if r.status_code == 200 else f"{r.status_code}: {r.text[:200]}"
            self.samples.append((label, time.perf_counter() - t, r.status_code, err))
        except httpx.HTTPError as e:
            self.samples.append((label, time.perf_counter() - t, 0, f"{type(e).__name__}: {e}"))
        finally:
            self.slots.release()

    async def run(self, duration: float) -> None:
        tasks = []
        start = time.perf_counter()
        for i in range(int(duration * self.rate)):
            delay = start + i / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the generator's clock, not a wait on the server
            if self.slots.locked():
                self.skipped += 1
                continue
            await self.slots.acquire()
            tasks.append(asyncio.create_task(self.one(*self.mix[i % len(self.mix)])))
        await asyncio.gather(*tasks)


def summarise(samples: list[tuple[str, float, int, str | None]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in sorted({s[0] for s in samples}):
        lat = np.array([s[1] for s in samples if s[0] == label]) * 1000
        errors = [s[3] for s in samples if s[0] == label and s[3]]
        out[label] = {
            "requests": len(lat),
            "errors": len(errors),
            "error_examples": errors[:3],
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1),
            "max_ms": round(float(lat.max()), 1),
            "mean_ms": round(float(lat.mean()), 1),
        }
    return out


async def scenario(
    args: argparse.Namespace, base: str, token: str, big: str, warm: str
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        base_url=base,
        headers=headers,
        timeout=30,
        limits=httpx.Limits(max_connections=args.concurrency + 4),
    ) as client:
        warm_job = await wait_job(client, await ingest(client, warm, False), 600)
        assert warm_job["state"] == "succeeded", warm_job
        served = set((await client.get("/openapi.json")).json()["paths"])
        mix = [m for m in MIX if m[0] in served]
        ingestions: list[dict[str, Any]] = []
        window: dict[str, float] = {}

        async def keep_ingesting() -> None:
            force = False
            for n in range(args.max_ingestions):
                started = asyncio.Event()
                t0 = time.perf_counter()
                job_id = await ingest(client, big, force)
                follow = asyncio.create_task(wait_job(client, job_id, args.ingest_timeout, started))
                await started.wait()
                if n == 0:
                    first_started.set()
                job = await follow
                ingestions.append(
                    {
                        "id": job_id,
                        "state": job["state"],
                        "error": job["error"],
                        "rows_loaded": job["rows_loaded"],
                        "started_rel_s": round(t0 - window.get("start", t0), 1),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                force = True
                if "end" in window or job["state"] != "succeeded":
                    return

        first_started = asyncio.Event()
        ingesting = asyncio.create_task(keep_ingesting())
        await asyncio.wait_for(first_started.wait(), 300)
        load = Load(client, mix, args.rate, args.concurrency)
        window["start"] = time.perf_counter()
        await load.run(args.duration)
        window["end"] = time.perf_counter()
        await asyncio.wait_for(ingesting, args.ingest_timeout * args.max_ingestions)
        trips = (await client.get("/vehicles/region/count")).json()["data"]
    return {
        "routes": summarise(load.samples),
        "requests": len(load.samples),
        "errors": sum(1 for s in load.samples if s[3]),
        "skipped_ticks_all_slots_busy": load.skipped,
        "window_s": round(window["end"] - window["start"], 1),
        "ingestions": ingestions,
        "warm_up": {"id": warm_job["id"], "rows_loaded": warm_job["rows_loaded"]},
        "trips_stored_at_end": sum(r["count"] for r in trips),
        "mix": [{"route": m[0], "path": m[1], "query": m[2]} for m in mix],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the ingested file")
    ap.add_argument("--warm-rows", type=int, default=200_000, help="rows loaded before")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--concurrency", type=int, default=16, help="requests in flight at most")
    ap.add_argument("--max-ingestions", type=int, default=3)
    ap.add_argument("--ingest-timeout", type=float, default=600.0)
    args = ap.parse_args()

    big = f"load-mixed-{args.rows}-s42.csv"
    warm = f"load-mixed-{args.warm_rows}-s7.csv"
    generate(args.rows, DATA_DIR / big, 42)
    generate(args.warm_rows, DATA_DIR / warm, 7)
    dbname = f"trips_load_mixed_{os.getpid()}"
    url = fresh_database(dbname)
    port, token = free_port(), secrets.token_urlsafe(24)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / dbname
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "TRIPS_DATA_DIR": str(DATA_DIR),
        "TRIPS_UPLOAD_DIR": str(work / "uploads"),
        "TRIPS_WATCH_INBOX": "false",
        "TRIPS_API_TOKEN": token,
        "TRIPS_API_LOG": str(work / "api.log"),
    }
    proc = None
    try:
        with open(work / "server.log", "w") as log:
            proc = subprocess.Popen(
                [TRIPS, "serve", "--host", HOST, "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
            )
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while True:  # the server's start-up: nothing to listen to yet
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start; see {work / 'server.log'}")
            time.sleep(0.2)
        t = time.monotonic()
        result = asyncio.run(scenario(args, base, token, big, warm))
        result["total_s"] = round(time.monotonic() - t, 1)
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(dbname)
    ok = result["errors"] == 0 and all(i["state"] == "succeeded" for i in result["ingestions"])
    report = {
        "benchmark": "load_mixed",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/load_mixed.py", *sys.argv[1:]]),
        "ok": ok,
        "rows": args.rows,
        "warm_rows": args.warm_rows,
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "concurrency": args.concurrency,
        "server": HOST,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"load-mixed-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    runs = [(i["rows_loaded"], i["state"], i["seconds"]) for i in result["ingestions"]]
    print(f"{result['requests']} requests, {result['errors']} errors, ingestions {runs}")
    for label, r in result["routes"].items():
        print(
            f"  {label:36} n={r['requests']:5} err={r['errors']} p50={r['p50_ms']:8.1f} ms "
            f"p95={r['p95_ms']:8.1f} ms p99={r['p99_ms']:8.1f} ms"
        )
    print(f"written to {out.relative_to(ROOT)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
