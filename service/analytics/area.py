"""Areas of a query (box, polygon) and their validation: every bad input is an `AreaError`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import orjson
import shapely
from geojson_pydantic import Feature, MultiPolygon, Polygon
from pydantic import ValidationError
from shapely.geometry import shape
from shapely.validation import explain_validity

Match = Literal["origin", "destination", "both", "either"]
MATCHES: tuple[str, ...] = ("origin", "destination", "both", "either")
MAX_GEOJSON_BYTES = 2 << 20


class AreaError(ValueError):
    """An area, a match or a date that cannot be used; the message says why."""


@dataclass(frozen=True)
class BBox:
    minx: float
    miny: float
    maxx: float
    maxy: float


@dataclass(frozen=True)
class Shape:
    """A validated Polygon or MultiPolygon, kept as GeoJSON text for ST_GeomFromGeoJSON."""

    geojson: str
    bounds: tuple[float, float, float, float]


Area = BBox | Shape


def _check_lon_lat(x: float, y: float, what: str) -> None:
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AreaError(f"{what}: coordinates must be finite numbers, got {x!r}, {y!r}")
    if not -180 <= x <= 180:
        raise AreaError(f"{what}: longitude {x!r} outside [-180, 180]")
    if not -90 <= y <= 90:
        raise AreaError(f"{what}: latitude {y!r} outside [-90, 90]")


def parse_bbox(text: str | None) -> BBox | None:
    """`minx,miny,maxx,maxy` in lon/lat, inclusive; min <= max on both axes."""
    if text is None or text == "":
        return None
    parts = text.split(",")
    if len(parts) != 4:
        raise AreaError(f"bbox must be 4 numbers minx,miny,maxx,maxy; got {len(parts)}: {text!r}")
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError:
        raise AreaError(f"bbox must be 4 numbers minx,miny,maxx,maxy; got {text!r}") from None
    _check_lon_lat(minx, miny, "bbox")
    _check_lon_lat(maxx, maxy, "bbox")
    if minx > maxx:
        raise AreaError(f"bbox minx {minx!r} is greater than maxx {maxx!r}")
    if miny > maxy:
        raise AreaError(f"bbox miny {miny!r} is greater than maxy {maxy!r}")
    return BBox(minx, miny, maxx, maxy)


def parse_geometry(body: bytes | str | dict[str, Any]) -> Shape:
    """A GeoJSON Polygon or MultiPolygon (or a Feature holding one), valid, in lon/lat."""
    if isinstance(body, bytes | str):
        if len(body) > MAX_GEOJSON_BYTES:
            raise AreaError(f"GeoJSON body larger than {MAX_GEOJSON_BYTES >> 20} MiB")
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise AreaError(f"body is not JSON: {e}") from None
    else:
        obj = body
    if not isinstance(obj, dict):
        raise AreaError("body must be a GeoJSON Polygon, MultiPolygon or Feature object")
    kind = obj.get("type")
    if kind == "Feature":
        try:
            feature: Any = Feature.model_validate(obj)
        except ValidationError as e:
            raise AreaError(f"invalid GeoJSON Feature: {_first_error(e)}") from None
        if feature.geometry is None:
            raise AreaError("the Feature has no geometry; a Polygon or MultiPolygon is needed")
        obj = feature.geometry.model_dump(exclude_none=True)
        kind = obj.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise AreaError(f"geometry must be a Polygon or MultiPolygon, got {kind!r}")
    model = Polygon if kind == "Polygon" else MultiPolygon
    try:
        geom = model.model_validate(obj)
    except ValidationError as e:
        raise AreaError(f"invalid GeoJSON {kind}: {_first_error(e)}") from None
    coords = shapely.get_coordinates(shp := shape(geom.model_dump(exclude_none=True)))
    for x, y in coords:
        _check_lon_lat(float(x), float(y), kind)
    if shp.is_empty:
        raise AreaError(f"the {kind} is empty")
    if not shp.is_valid:
        raise AreaError(f"invalid {kind}: {explain_validity(shp)}")
    if shp.area == 0:
        raise AreaError(f"the {kind} has no area")
    return Shape(
        orjson.dumps(geom.model_dump(exclude_none=True)).decode(),
        tuple(float(v) for v in shp.bounds),  # type: ignore[arg-type]
    )


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def parse_match(value: str | None) -> str:
    if value is None or value == "":
        return "origin"
    if value not in MATCHES:
        raise AreaError(f"match must be one of {', '.join(MATCHES)}; got {value!r}")
    return value


def parse_date(value: str | None, name: str) -> date | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise AreaError(f"{name} must be a date YYYY-MM-DD; got {value!r}") from None
