"""The bad-file corpus (tests/data/bad/, outcomes in expected.json) ingested into real PostGIS.

Each file ends as SPEC section 1 says: a whole-file failure stores nothing; otherwise every good
row is stored exactly and every bad row is a rejection with its 1-based physical line number.
Files of megabytes are generated here rather than committed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.helpers import ingest, query

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED: dict[str, dict[str, Any]] = json.loads((BAD / "expected.json").read_text())
HEADER = "region,origin_coord,destination_coord,datetime,datasource\n"
GOOD = "Prague,POINT (14.4 50.1),POINT (14.5 50.2),2018-05-28 09:03:41,funny_car\n"
MIB = 1 << 20


def stored_rows(url: str) -> list[tuple[Any, ...]]:
    rows = query(
        url,
        """
        SELECT r.name AS region, ST_X(t.origin) AS ox, ST_Y(t.origin) AS oy,
               ST_X(t.destination) AS dx, ST_Y(t.destination) AS dy,
               to_char(t.started_at, 'YYYY-MM-DD HH24:MI:SS.US') AS ts, d.name AS datasource
        FROM trips t JOIN regions r ON r.id = t.region_id
        JOIN datasources d ON d.id = t.datasource_id""",
    )
    return sorted(tuple(r.values()) for r in rows)


def expected_rows(stored: list[list[Any]]) -> list[tuple[Any, ...]]:
    def ts(s: str) -> str:
        whole, _, frac = s.partition(".")
        return f"{whole}.{(frac + '000000')[:6]}"

    return sorted(
        (r, float(ox), float(oy), float(dx), float(dy), ts(t), d)
        for r, ox, oy, dx, dy, t, d in stored
    )


def physical_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [b""] + data.split(b"\n")  # 1-based


def test_corpus_covers_every_case() -> None:
    files = {p.name for p in BAD.iterdir() if p.name != "expected.json"}
    assert files == set(EXPECTED), "every corpus file has an expected outcome and vice versa"
    assert len(EXPECTED) >= 25


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file(name: str, db_url: str, settings: Settings) -> None:
    exp = EXPECTED[name]
    path = BAD / name
    job = ingest(db_url, settings, path)
    assert job["state"] == exp["state"], job["error"]
    n_trips = query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"]
    rejections = query(
        db_url,
        "SELECT line, reason, raw FROM ingestion_rejections WHERE job_id = %s ORDER BY line",
        [job["id"]],
    )
    if exp["state"] == "failed":
        assert exp["error"] in job["error"]
        assert n_trips == 0 and rejections == []
        assert query(db_url, "SELECT count(*) AS n FROM weekly_trips")[0]["n"] == 0
        return
    assert job["error"] is None
    assert (job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        exp["rows_read"],
        exp["rows_loaded"],
        exp["rows_rejected"],
    )
    assert job["ignored_columns"] == exp["ignored_columns"]
    assert [r["line"] for r in rejections] == [line for line, _ in exp["rejections"]]
    lines = physical_lines(path) if not name.endswith(".gz") else None
    for got, (line, fragment) in zip(rejections, exp["rejections"], strict=True):
        assert fragment in got["reason"], (line, got["reason"])
        if lines is not None:
            text = lines[line].rstrip(b"\r").decode("utf-8", "replace").replace("\x00", "\ufffd")
            assert got["raw"] == text
    assert n_trips == exp["rows_loaded"]
    assert stored_rows(db_url) == expected_rows(exp["stored"])
    weekly = query(db_url, "SELECT coalesce(sum(trips), 0) AS n FROM weekly_trips")[0]["n"]
    assert weekly == exp["rows_loaded"]


def test_megabyte_lines(db_url: str, settings: Settings, tmp_path: Path) -> None:
    """1 MB values: too long for a name (rejected), harmless in an ignored column (loaded)."""
    p = tmp_path / "wide.csv"
    big = "x" * MIB
    p.write_text(
        "region,origin_coord,destination_coord,datetime,datasource,note\n"
        + GOOD.rstrip("\n")
        + ",\n"  # 2
        + f"{big},POINT (1 2),POINT (3 4),2018-05-28 09:03:41,car,\n"  # 3
        + GOOD.rstrip("\n")
        + f",{big}\n"  # 4 ignored
        + f"Prague,POINT (1 2),POINT (3 4),2018-05-28 09:03:41,{big},\n"  # 5
        + f"Prague,POINT ({'1' * MIB} 2),POINT (3 4),2018-05-28 09:03:41,car,\n"  # 6
        + big
        + "\n"  # 7
        + GOOD.rstrip("\n")
        + ",\n"
    )  # 8
    job = ingest(db_url, settings, p)
    assert (job["state"], job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        "succeeded",
        7,
        3,
        4,
    )
    assert job["ignored_columns"] == ["note"]
    rej = query(
        db_url, "SELECT line, reason, length(raw) AS n FROM ingestion_rejections ORDER BY line"
    )
    assert [(r["line"], r["reason"]) for r in rej] == [
        (3, "region longer than 200 characters"),
        (5, "datasource longer than 200 characters"),
        (6, "origin_coord: coordinates must be finite numbers"),
        (7, "expected 6 fields, found 1"),
    ]
    assert all(r["n"] < 11_000 for r in rej), "raw text of a rejection is bounded"
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == 3


def test_line_longer_than_the_record_cap(db_url: str, settings: Settings, tmp_path: Path) -> None:
    """A 20 MB line is skipped as one rejection; the lines after it keep their numbers."""
    p = tmp_path / "endless.csv"
    with open(p, "w") as f:
        f.write(HEADER + GOOD)
        f.write("y" * (20 * MIB) + "\n")  # line 3
        f.write(GOOD + "Prague,POINT (1 2),POINT (3 4),yesterday,car\n" + GOOD)  # lines 4-6
    job = ingest(db_url, settings, p)
    assert (job["state"], job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        "succeeded",
        5,
        3,
        2,
    )
    rej = query(db_url, "SELECT line, reason FROM ingestion_rejections ORDER BY line")
    assert [r["line"] for r in rej] == [3, 5]
    assert "8 MiB" in rej[0]["reason"] and rej[1]["reason"].startswith("datetime")


def test_line_numbers_across_blocks(db_url: str, settings: Settings, tmp_path: Path) -> None:
    """Bad rows scattered over a file of several read blocks, one block forced onto the slow
    (quote-aware) path: every rejection has its exact line, every other row is stored."""
    n = 150_000
    bad_at = {3, 9_999, 38_001, 38_002, 66_000, 66_001, 133_333, 149_999, n + 1}
    quoted_at = {38_000, 38_003}
    regions: Counter[str] = Counter()
    with open(p := tmp_path / "big.csv", "w") as f:
        f.write(HEADER)
        for line in range(2, n + 2):
            if line in bad_at:
                f.write(
                    f"R{line % 7},POINT (14.4 {90 + line}),POINT (1 2),2018-05-28 09:03:41,car\n"
                )
            elif line in quoted_at:
                f.write(f'"Quoted, {line}",POINT (1 2),POINT (3 4),2018-05-28 09:03:41,car\n')
                regions[f"Quoted, {line}"] += 1
            else:
                f.write(
                    f"R{line % 7},POINT (14.4 50.1),POINT (14.5 50.2),2018-05-28 09:03:41,car\n"
                )
                regions[f"R{line % 7}"] += 1
    assert p.stat().st_size > 2 * (4 << 20)
    job = ingest(db_url, settings, p)
    assert (job["state"], job["rows_read"], job["rows_loaded"], job["rows_rejected"]) == (
        "succeeded",
        n,
        n - len(bad_at),
        len(bad_at),
    )
    rej = query(db_url, "SELECT line, reason FROM ingestion_rejections ORDER BY line")
    assert [(r["line"], r["reason"]) for r in rej] == [
        (line, f"origin_coord: latitude {90.0 + line!r} outside [-90, 90]")
        for line in sorted(bad_at)
    ]
    got = query(
        db_url,
        """SELECT r.name, count(*) AS n FROM trips t
                           JOIN regions r ON r.id = t.region_id GROUP BY r.name""",
    )
    assert {g["name"]: g["n"] for g in got} == dict(regions)
