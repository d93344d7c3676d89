"""Area parsing and the box plan (pure: no database)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.analytics.area import AreaError, parse_bbox, parse_geometry, parse_match
from service.analytics.clusters import bucket_label, parse_time
from service.analytics.weekly import box_plan


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


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-179, 179),
    st.floats(-89, 89),
    st.floats(0, 0.5),
    st.floats(0, 0.5),
    st.floats(-200, 200),
    st.floats(-100, 100),
)
def test_box_plan_covers_exactly(
    x: float, y: float, w: float, h: float, px: float, py: float
) -> None:
    """Whole cells lie inside the box; every other point of the box lies in a strip."""
    g = 0.01
    box = parse_bbox(f"{x!r},{y!r},{x + w!r},{y + h!r}")
    assert box is not None
    cells, strips = box_plan(box, g)
    px = box.minx + (px % 1) * (box.maxx - box.minx)
    py = box.miny + (py % 1) * (box.maxy - box.miny)
    for qx, qy in [(px, py), (box.minx, box.miny), (box.maxx, box.maxy), (box.minx, box.maxy)]:
        cx, cy = math.floor(qx / g), math.floor(qy / g)
        whole = cells["cx0"] <= cx <= cells["cx1"] and cells["cy0"] <= cy <= cells["cy1"]
        in_strip = any(a <= qx <= c and b <= qy <= d for a, b, c, d in strips)
        assert whole or in_strip
    if cells["cx0"] <= cells["cx1"]:
        assert cells["cx0"] * g >= box.minx - 1e-12 and (cells["cx1"] + 1) * g <= box.maxx + 1e-12
