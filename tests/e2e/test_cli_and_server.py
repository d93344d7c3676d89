"""The `trips` command and a real `trips serve` process, as a user runs them."""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import query

ROOT = Path(__file__).resolve().parents[2]
TRIPS = str(Path(sys.executable).parent / "trips")


def _env(db_url: str, inbox: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPS_")}
    env.update(
        {
            "DATABASE_URL": db_url,
            "TRIPS_DATA_DIR": str(inbox),
            "TRIPS_API_LOG": "",
            "TRIPS_UPLOAD_DIR": str(inbox.parent / "uploads"),
            **extra,
        }
    )
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ingest_command_summary_and_exit_codes(
    db_url: str, inbox: Path, sample_csv: Path, tmp_path: Path
) -> None:
    env = _env(db_url, inbox)
    ok = subprocess.run(
        [TRIPS, "ingest", str(sample_csv)], env=env, capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stderr
    assert "100 rows read, 100 loaded, 0 rejected" in ok.stderr.replace("\n", " ")
    again = subprocess.run(
        [TRIPS, "ingest", str(sample_csv)], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "already ingested" in again.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("just,a,header\n")
    failed = subprocess.run(
        [TRIPS, "ingest", str(bad)], env=env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1 and "lacks column" in failed.stderr.replace("\n", " ")
    url = subprocess.run([TRIPS, "db", "url"], env=env, capture_output=True, text=True)
    assert url.stdout.strip() == db_url


@pytest.fixture
def server(db_url: str, inbox: Path, sample_csv: Path) -> Iterator[str]:
    shutil.copy(sample_csv, inbox / "trips.csv")
    port = _free_port()
    proc = subprocess.Popen(
        [TRIPS, "serve", "--port", str(port)],
        env=_env(db_url, inbox),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_line(proc, "Application startup complete", timeout=60)
        # keep draining the server's output so a full pipe never blocks it
        threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for_line(proc: subprocess.Popen[str], marker: str, timeout: float) -> None:
    """Block until the process prints `marker` (its own readiness event), or fail."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return
    raise RuntimeError(f"no {marker!r} from the server: {''.join(seen)[-3000:]}")


def _wait_for_trips(db_url: str, n: int, timeout: float = 60) -> None:
    """Wait (on NOTIFY, not sleep) until `n` trips are stored by succeeded jobs."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN trips_events")
        while True:
            row = conn.execute(
                "SELECT coalesce(sum(rows_loaded), 0) FROM ingestion_jobs WHERE state = 'succeeded'"
            ).fetchone()
            if row and row[0] >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {row} trips after {timeout}s")
            for _ in conn.notifies(timeout=1.0, stop_after=1):
                pass


def test_serve_ingests_inbox_and_answers(
    server: str, db_url: str, inbox: Path, sample_csv: Path
) -> None:
    _wait_for_trips(db_url, 100)
    counts = httpx.get(f"{server}/vehicles/region/count").json()["data"]
    assert {c["region"] for c in counts} == {"Hamburg", "Prague", "Turin"}
    assert sum(c["count"] for c in counts) == 100
    # a file dropped into the inbox while serving is ingested automatically, once
    text = sample_csv.read_text().splitlines()
    (inbox / "more.csv.part").write_text("\n".join(text[:11]) + "\n")
    (inbox / "more.csv.part").rename(inbox / "more.csv")
    _wait_for_trips(db_url, 110)
    jobs = query(db_url, "SELECT source, state FROM ingestion_jobs ORDER BY id")
    assert [(j["source"], j["state"]) for j in jobs] == [
        ("trips.csv", "succeeded"),
        ("more.csv", "succeeded"),
    ]
    assert httpx.get(f"{server}/docs").status_code == 200
    assert "/vehicles" in httpx.get(f"{server}/openapi.json").json()["paths"]
