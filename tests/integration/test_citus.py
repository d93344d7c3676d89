"""The service on a Citus coordinator (the Citus pass, TRIPS_TEST_CITUS=1; skipped otherwise):
`trips` and the summary tables are distributed and co-located, and the answers (weekly averages
for every kind of area and match, the clusters) are those of one plain PostGIS node on the same
trips, computed here by the brute-force definitions of tests/integration/analytics_data.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.settings import Settings
from tests import citus_mode
from tests.helpers import ingest, query
from tests.integration.analytics_data import (
    Trip,
    brute_clusters,
    brute_weekly,
    make_trips,
    write_csv,
)

pytestmark = pytest.mark.skipif(
    not citus_mode.ON, reason="the Citus pass only (TRIPS_TEST_CITUS=1)"
)

MATCHES = ["origin", "destination", "both", "either"]
BOX = (14.40, 50.03, 14.46, 50.09)  # cuts Prague's and prague's lattices
RING = [[14.38, 50.02], [14.47, 50.03], [14.44, 50.11], [14.40, 50.08], [14.38, 50.02]]
POLYGON = {"type": "Polygon", "coordinates": [RING]}
MULTI = {
    "type": "MultiPolygon",
    "coordinates": [[RING], [[[8.50, 47.33], [8.58, 47.33], [8.58, 47.41], [8.50, 47.33]]]],
}


@pytest.fixture
def trips(settings: Settings, db_url: str, tmp_path: Path) -> list[Trip]:
    """A large job (a partition of its own, attached) and a small one (into trips_p0)."""
    first, second = make_trips(11, 2000), make_trips(12, 500)
    big = settings.model_copy(update={"small_job_rows": 0})
    assert ingest(db_url, big, write_csv(first, tmp_path / "a.csv"))["state"] == "succeeded"
    assert ingest(db_url, settings, write_csv(second, tmp_path / "b.csv"))["state"] == "succeeded"
    return first + second


def test_trips_and_summaries_are_distributed_and_colocated(db_url: str, trips: list) -> None:
    rows = query(
        db_url,
        """SELECT logicalrelid::text AS rel, partmethod, colocationid,
                  column_to_column_name(logicalrelid, partkey) AS col
           FROM pg_dist_partition""",
    )
    by = {r["rel"]: r for r in rows}
    distributed = ["trips", "trips_p0", "weekly_trips", "weekly_cell_trips", "trip_clusters"]
    for rel in distributed + ["trips_job_1"]:  # the large job's attached partition too
        assert by[rel]["partmethod"] == "h" and by[rel]["col"] == "region_id", rel
    assert len({by[rel]["colocationid"] for rel in distributed}) == 1
    for rel in ["regions", "datasources", "trip_grid", "trip_cluster_params", "trip_cells"]:
        assert by[rel]["partmethod"] == "n", rel  # reference tables
    for rel in ["ingestion_jobs", "ingestion_events", "ingestion_rejections", "trip_id_counter"]:
        assert rel not in by  # local to the coordinator
    # the rows are on the workers' shards
    placed = query(
        db_url,
        """SELECT count(DISTINCT nodeport) AS n FROM citus_shards
           WHERE table_name = 'trips_p0'::regclass AND shard_size > 0""",
    )
    assert placed[0]["n"] >= 1
    assert query(db_url, "SELECT count(*) AS n FROM trips")[0]["n"] == len(trips)


def _trips_weekly(url: str, match: str, **case: object) -> list[dict]:
    """trips_weekly() in SQL, as GET /stats/weekly-average and psql users call it."""
    area, params = "NULL::geometry", []
    if "box" in case:
        area, params = "ST_MakeEnvelope(%s, %s, %s, %s, 4326)", list(case["box"])  # type: ignore[call-overload]
    elif "polygon" in case:
        area, params = "ST_SetSRID(ST_GeomFromGeoJSON(%s), 4326)", [json.dumps(case["polygon"])]
    rows = query(
        url,
        f"SELECT week, trips FROM trips_weekly({area}, %s, region => %s)",  # noqa: S608
        [*params, match, case.get("region")],
    )
    return [{"week": r["week"].isoformat(), "trips": r["trips"]} for r in rows]


@pytest.mark.parametrize("match", MATCHES)
def test_weekly_averages_equal_one_plain_node(db_url: str, trips: list[Trip], match: str) -> None:
    cases: list[dict] = [
        {"box": BOX},
        {"polygon": POLYGON},
        {"polygon": MULTI},
        {"region": "prague", "box": BOX},
        {"region": "Zürich", "polygon": MULTI},
        {"box": (14.42, 50.05, 14.42, 50.10)},  # a box without width
    ]
    for case in cases:
        want = brute_weekly(trips, match=match, **case)["series"]
        assert _trips_weekly(db_url, match, **case) == want, case
    for region in ["Prague", "são paulo", "ZÜRICH"]:
        want = brute_weekly(trips, region=region)["series"]
        assert _trips_weekly(db_url, match, region=region) == want, region


def test_clusters_equal_one_plain_node(db_url: str, trips: list[Trip]) -> None:
    want = brute_clusters(trips, 0.01, 60)
    rows = query(
        db_url,
        """SELECT r.name, c.ocx, c.ocy, c.dcx, c.dcy, c.bucket,
                  c.trips, c.sum_ox, c.sum_oy, c.sum_dx, c.sum_dy
           FROM trip_clusters c JOIN regions r ON r.id = c.region_id""",
    )
    got = {
        (r["name"], r["ocx"], r["ocy"], r["dcx"], r["dcy"], r["bucket"]): [
            r["trips"],
            r["sum_ox"],
            r["sum_oy"],
            r["sum_dx"],
            r["sum_dy"],
        ]
        for r in rows
    }
    assert got.keys() == want.keys()
    for key, acc in want.items():
        assert got[key][0] == acc[0], key
        assert got[key][1:] == pytest.approx(acc[1:], abs=1e-9), key
