"""Area and time parsing (pure: no database)."""

from __future__ import annotations

import pytest

from service.analytics.area import AreaError, parse_bbox, parse_geometry, parse_match
from service.analytics.clusters import bucket_label, parse_time


@pytest.mark.parametrize(
    "text, words",
    [
        ("1,2,3", "4 numbers"),
        ("1,2,3,4,5", "4 numbers"),
        ("a,b,c,d", "4 numbers"),
        ("2,0,1,1", "minx"),
        ("0,2,1,1", "miny"),
        ("0,0,1,95", "latitude"),
        ("-181,0,1,1", "longitude"),
        ("0,nan,1,1", "finite"),
        ("0,0,inf,1", "finite"),
    ],
)
def test_bad_boxes(text: str, words: str) -> None:
    with pytest.raises(AreaError, match=words):
        parse_bbox(text)


def test_good_geometry_and_feature() -> None:
    ring = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
    assert parse_geometry({"type": "Polygon", "coordinates": [ring]}).bounds == (0, 0, 1, 1)
    feat = {
        "type": "Feature",
        "properties": None,
        "geometry": {"type": "MultiPolygon", "coordinates": [[ring]]},
    }
    assert parse_geometry(feat).bounds == (0, 0, 1, 1)
    with pytest.raises(AreaError, match="Self-intersection"):
        parse_geometry(
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
        )
    with pytest.raises(AreaError, match="Polygon or MultiPolygon"):
        parse_geometry({"type": "LineString", "coordinates": [[0, 0], [1, 1]]})
    with pytest.raises(AreaError, match="match must be one of"):
        parse_match("inside")


def test_time_buckets() -> None:
    assert bucket_label(8, 60) == "08:00-09:00" and bucket_label(47, 30) == "23:30-24:00"
    assert parse_time("24:00", "t", 0) == 1440 and parse_time(None, "t", 5) == 5
    for bad in ("25:00", "10:60", "ab", "-1:00"):
        with pytest.raises(ValueError):
            parse_time(bad, "t", 0)
