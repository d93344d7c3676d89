"""Load check: many SSE subscribers on one `trips serve` process during a large ingestion.

For each round the same file is ingested again (`force`) by the server's in-process worker;
"loaded" rounds hold N subscribers on `GET /ingestions/events` for the whole ingestion, "bare"
rounds hold none. Rounds alternate (B L L B B L …) so drift on a shared machine falls on both.
Checks: every subscriber receives every event of the job (compared with the table), the API
holds exactly one listening connection (pg_stat_activity), and the ingestion's throughput with
subscribers against without, as medians: rows / wall time from queued to the commit's NOTIFY
(the whole job: read, COPY, rollups, index builds), and the read+COPY phase alone (started_at to
finished_at, when events flow).

    .venv/bin/python benchmarks/sse_load.py --rows 1000000 --subscribers 500 --repeats 3

Uses a database of its own on the local cluster (created, then dropped) and loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.events.client import SseParser  # noqa: E402
from service.events.hub import APPLICATION_NAME  # noqa: E402

TRIPS = str(Path(sys.executable).parent / "trips")


def _with_db(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Subscriber:
    """A raw-socket SSE client (cheap enough that 500 of them barely load the machine)."""

    def __init__(self, port: int, path: str, sync_id: int):
        self.port, self.path, self.sync_id = port, path, sync_id
        self.parser = SseParser()
        self.events: list[tuple[int, str, int]] = []
        self.live = asyncio.Event()  # the event `sync_id` arrived: replay over, live from here
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.job_id: int | None = None

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            buf = ""
            while True:  # chunked transfer encoding
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                buf += (await reader.readexactly(size + 2))[:-2].decode()
                *lines, buf = buf.split("\n")
                for line in lines:
                    event = self.parser.feed(line.rstrip("\r"))
                    if event is None or event.id is None:
                        continue
                    if event.id == self.sync_id:
                        self.live.set()
                    job = event.json()["job_id"]
                    self.events.append((event.id, event.type, job))
                    if job == self.job_id and event.type == "started":
                        self.started.set()
                    if job == self.job_id and event.type in ("succeeded", "failed"):
                        self.done.set()
        finally:
            writer.close()

    def watch(self, job_id: int) -> None:
        """Follow this job; its first events may already have arrived before its id was known."""
        self.job_id = job_id
        for _, type_, job in self.events:
            if job == job_id and type_ == "started":
                self.started.set()
            if job == job_id and type_ in ("succeeded", "failed"):
                self.done.set()

    def of_job(self, job_id: int) -> list[tuple[int, str]]:
        return [(i, t) for i, t, j in self.events if j == job_id]


async def wait_job(url: str, job_id: int, timeout: float = 900) -> dict[str, Any]:
    """Wait for the job to finish, woken by NOTIFY (one connection of the benchmark's own)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("LISTEN trips_events")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur = await conn.execute(
                "SELECT state, rows_read, started_at, finished_at, error, created_at "
                "FROM ingestion_jobs WHERE id = %s",
                [job_id],
            )
            row = await cur.fetchone()
            if row and row[0] in ("succeeded", "failed"):
                # finished_at is the start of the loader's final transaction (now()), so
                # started_at..finished_at spans the read+COPY phase only, not index builds.
                return {
                    "state": row[0],
                    "rows": row[1],
                    "error": row[4],
                    "read_phase_s": (row[3] - row[2]).total_seconds(),
                    "queued_s": round((row[2] - row[5]).total_seconds(), 2),
                }
            async for _ in conn.notifies(timeout=2.0, stop_after=1):
                pass
    raise TimeoutError(f"job {job_id} did not finish")


def connections(url: str, dbname: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(nullif(application_name, ''), '(none)'), count(*) "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() GROUP BY 1",
            [dbname],
        ).fetchall()
    return {name: int(n) for name, n in rows}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_round(
    base: str, port: int, url: str, dbname: str, subscribers: int, api_pid: int
) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(max(id), 0) FROM ingestion_events").fetchone()
        start_id = int(row[0]) if row else 0
    # Each subscriber resumes just before the last stored event: once that one has arrived, its
    # replay from the table is over and it is live, so no replay overlaps the ingestion.
    subs = [
        Subscriber(port, f"/ingestions/events?last_event_id={start_id - 1}", start_id)
        for _ in range(subscribers)
    ]
    t0 = time.monotonic()
    tasks = [asyncio.create_task(s.run()) for s in subs]
    await asyncio.wait_for(asyncio.gather(*(s.live.wait() for s in subs)), 120)
    connect_s = time.monotonic() - t0
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post("/ingestions", json={"path": "bench.csv", "force": True})
        r.raise_for_status()
        job_id = r.json()["id"]
    t0 = time.monotonic()  # queued (the claim follows within milliseconds)
    api_cpu0, own_cpu0 = cpu_seconds(api_pid), time.process_time()
    for s in subs:
        s.watch(job_id)
    conns_during: dict[str, int] = {}
    if subs:  # sample the API's connections while the ingestion runs
        await asyncio.wait_for(subs[0].started.wait(), 120)
        conns_during = await asyncio.to_thread(connections, url, dbname)
    result = await wait_job(url, job_id)  # woken by the commit's NOTIFY
    wall_s = time.monotonic() - t0
    api_cpu_s = cpu_seconds(api_pid) - api_cpu0  # the API process: its worker and the SSE
    own_cpu_s = time.process_time() - own_cpu0  # this process: the subscribers
    await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), 120)
    with psycopg.connect(url, autocommit=True) as conn:
        table = [
            (int(i), t)
            for i, t in conn.execute(
                "SELECT id, type FROM ingestion_events WHERE job_id = %s ORDER BY id", [job_id]
            )
        ]
        # Keep rounds alike: drop this round's trips partition before the next one.
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(f"trips_job_{job_id}"))
        )
    complete = sum(1 for s in subs if s.of_job(job_id) == table)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "job_id": job_id,
        "subscribers": subscribers,
        **result,
        "wall_s": round(wall_s, 2),
        "rows_per_s": round(result["rows"] / wall_s),
        "read_phase_rows_per_s": round(result["rows"] / result["read_phase_s"]),
        "job_events": len(table),
        "progress_events": sum(t == "progress" for _, t in table),
        "subscribers_with_every_event": complete,
        "events_received": sum(len(s.of_job(job_id)) for s in subs),
        "connections_during": conns_during,
        "subscribers_live_s": round(connect_s, 2),
        "api_cpu_s": round(api_cpu_s, 2),
        "subscribers_cpu_s": round(own_cpu_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--subscribers", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    server_url = subprocess.run(
        [TRIPS, "db", "url"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dbname = f"trips_sse_bench_{uuid.uuid4().hex[:8]}"
    admin = _with_db(server_url, "postgres")
    url = _with_db(server_url, dbname)
    work = Path(tempfile.mkdtemp(prefix="trips-sse-bench-"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    proc = None
    try:
        subprocess.run(
            [TRIPS, "generate", "--rows", str(args.rows), "--out", str(work / "bench.csv")],
            check=True,
            capture_output=True,
        )
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPS_")}
        env.update(
            {
                "DATABASE_URL": url,
                "TRIPS_DATA_DIR": str(work),
                "TRIPS_API_LOG": "",
                "TRIPS_WATCH_INBOX": "false",
                "TRIPS_UPLOAD_DIR": str(work / "uploads"),
            }
        )
        log = open(work / "server.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [TRIPS, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"server did not start; see {work / 'server.log'}")
            time.sleep(0.2)

        async def run_all() -> list[dict[str, Any]]:
            await one_round(base, port, url, dbname, 0, proc.pid)  # warm-up, not counted
            order = []
            for i in range(args.repeats):
                order += [0, args.subscribers] if i % 2 == 0 else [args.subscribers, 0]
            rounds = []
            for n in order:
                r = await one_round(base, port, url, dbname, n, proc.pid)
                print(json.dumps(r, default=str), flush=True)
                rounds.append(r)
            return rounds

        write_results(args, asyncio.run(run_all()))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SET statement_timeout = '120s'")  # a shared cluster may be busy
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
            )
        shutil.rmtree(work, ignore_errors=True)  # the generated file and the server log


def write_results(args: argparse.Namespace, rounds: list[dict[str, Any]]) -> None:
    loaded = [r for r in rounds if r["subscribers"] > 0]

    def median(key: str, with_subscribers: bool) -> float:
        return statistics.median(
            r[key] for r in rounds if (r["subscribers"] > 0) == with_subscribers
        )

    ratio = median("rows_per_s", True) / median("rows_per_s", False)
    read_ratio = median("read_phase_rows_per_s", True) / median("read_phase_rows_per_s", False)
    summary = {
        "rows": args.rows,
        "subscribers": args.subscribers,
        "repeats": args.repeats,
        "median_rows_per_s_without_subscribers": median("rows_per_s", False),
        "median_rows_per_s_with_subscribers": median("rows_per_s", True),
        "throughput_ratio": round(ratio, 3),
        "throughput_drop_pct": round(100 * (1 - ratio), 1),
        "read_phase_median_rows_per_s_without": median("read_phase_rows_per_s", False),
        "read_phase_median_rows_per_s_with": median("read_phase_rows_per_s", True),
        "read_phase_ratio": round(read_ratio, 3),
        "median_api_cpu_s_without": median("api_cpu_s", False),
        "median_api_cpu_s_with": median("api_cpu_s", True),
        "every_subscriber_got_every_event": all(
            r["subscribers_with_every_event"] == r["subscribers"] for r in loaded
        ),
        "listen_connections_during": sorted(
            {r["connections_during"].get(APPLICATION_NAME, 0) for r in loaded}
        ),
        "passed": None,
    }
    summary["passed"] = (
        summary["every_subscriber_got_every_event"]
        and summary["listen_connections_during"] == [1]
        and ratio > 0.9
    )
    out = args.out or ROOT / "benchmarks" / "results" / f"sse-load-{dt.date.today()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "summary": summary,
                "rounds": rounds,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "command": " ".join(["benchmarks/sse_load.py", *sys.argv[1:]]),
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(json.dumps(summary, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
