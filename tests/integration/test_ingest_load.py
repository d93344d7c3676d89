"""The load path's own edges: many rejections, generated files, orphan job tables."""

from __future__ import annotations

from pathlib import Path

import psycopg

from service.generate import generate_file
from service.ingest.reader import TripReader
from service.settings import Settings
from tests.helpers import ingest, query

HEADER = "region,origin_coord,destination_coord,datetime,datasource\n"


def test_more_rejections_than_fit_a_batch(db_url: str, settings: Settings, tmp_path: Path) -> None:
    # Rejections are spooled while the COPY streams (the previous loader wrote them on the
    # busy load connection past 10,000 and hung).
    p = tmp_path / "bad.csv"
    p.write_text(
        HEADER
        + "".join(f"A,POINT (1 2),POINT (1 2),bad{i},x\n" for i in range(12_000))
        + "A,POINT (1 2),POINT (1 2),2018-01-01 00:00:00,x\n"
    )
    job = ingest(db_url, settings, p)
    assert job["state"] == "succeeded", job["error"]
    assert (job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (12_001, 1, 12_000)
    got = query(
        db_url, "SELECT count(*) AS n, min(line) AS lo, max(line) AS hi FROM ingestion_rejections"
    )[0]
    assert (got["n"], got["lo"], got["hi"]) == (12_000, 2, 12_001)


def test_generated_file_is_seeded_unquoted_and_valid(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv.gz"
    generate_file(a, 1_200_000 // 100, seed=3)
    generate_file(b, 1_200_000 // 100, seed=3)
    import gzip

    assert gzip.decompress(b.read_bytes()) == a.read_bytes()
    assert a.read_bytes().startswith(HEADER.encode())
    with TripReader(a) as r:
        batches = list(r)
    assert sum(x.rows_read for x in batches) == 12_000
    assert not any(x.rejections for x in batches)
    regions = {s for x in batches for s in x.region.to_pylist()}
    assert {"São Paulo", "Montréal", "Prague"} <= regions
    assert min(x.ox.min() for x in batches) < 0 and min(x.oy.min() for x in batches) < 0


def test_unattached_job_table_of_a_failed_job_is_dropped(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO ingestion_jobs (id, source, path, sha256, bytes, state)
                        VALUES (900, 'x', 'x', 'x', 0, 'failed')""")
        conn.execute("CREATE TABLE trips_job_900 (LIKE trips)")
    p = tmp_path / "one.csv"
    p.write_text(HEADER + "A,POINT (1 2),POINT (1 2),2018-01-01 00:00:00,x\n")
    assert ingest(db_url, settings, p)["state"] == "succeeded"
    left = query(db_url, "SELECT count(*) AS n FROM pg_class WHERE relname = 'trips_job_900'")
    assert left[0]["n"] == 0
