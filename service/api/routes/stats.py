"""Weekly averages for a region, a box or a GeoJSON polygon (SPEC sections 2 and 4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from service.analytics import weekly
from service.analytics.area import (
    MATCHES,
    MAX_GEOJSON_BYTES,
    AreaError,
    parse_bbox,
    parse_date,
    parse_geometry,
    parse_match,
)
from service.api.errors import Invalid, NotFound, TooLarge

router = APIRouter(prefix="/stats", tags=["analytics"])

REGION = Query(None, max_length=200, description="region name, case-insensitive")
FROM = Query(
    None,
    alias="from",
    description="first day YYYY-MM-DD (its whole week counts); "
    "default: the week of the earliest stored trip",
)
TO = Query(
    None,
    description="last day YYYY-MM-DD (its whole week counts); default: the week "
    "of the latest stored trip",
)
MATCH = Query(
    None, description=f"which end must lie in the area: {', '.join(MATCHES)} (default origin)"
)


class WeekCount(BaseModel):
    week: str
    trips: int


class WeeklyAverage(BaseModel):
    weekly_average: float
    trips: int
    weeks: int
    from_: str | None = Field(None, alias="from")
    to: str | None
    match: str
    series: list[WeekCount]

    model_config = {
        "populate_by_name": True,
        "json_schema_extra": {
            "example": {
                "weekly_average": 7.6,
                "trips": 38,
                "weeks": 5,
                "from": "2018-04-30",
                "to": "2018-05-28",
                "match": "origin",
                "series": [{"week": "2018-04-30", "trips": 5}],
            }
        },
    }


async def _answer(
    request: Request,
    region: str | None,
    area: Any,
    start: str | None,
    end: str | None,
    match: str | None,
) -> dict[str, Any]:
    try:
        m = parse_match(match)
        d0, d1 = parse_date(start, "from"), parse_date(end, "to")
        pool = request.app.state.pool
        async with pool.connection() as conn:
            return await weekly.weekly_average(
                conn,
                region=region,
                area=area,
                start=d0,
                end=d1,
                match=m,
            )
    except AreaError as e:
        raise Invalid(str(e)) from None
    except weekly.UnknownRegion as e:
        raise NotFound(str(e)) from None


@router.get("/weekly-average", responses={200: {"model": WeeklyAverage}, 404: {}, 422: {}})
async def weekly_average(
    request: Request,
    region: str | None = REGION,
    bbox: str | None = Query(None, description="minx,miny,maxx,maxy in lon/lat, inclusive"),
    from_: str | None = FROM,
    to: str | None = TO,
    match: str | None = MATCH,
) -> dict[str, Any]:
    """Trips per week in a region and/or box over a window of whole weeks, zeros included."""
    try:
        box = parse_bbox(bbox)
    except AreaError as e:
        raise Invalid(str(e)) from None
    return await _answer(request, region, box, from_, to, match)


@router.post(
    "/weekly-average",
    responses={200: {"model": WeeklyAverage}, 404: {}, 413: {}, 422: {}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "description": "GeoJSON Polygon, MultiPolygon or a Feature holding one "
                        "(RFC 7946, lon/lat)",
                        "type": "object",
                    }
                }
            },
        }
    },
)
async def weekly_average_polygon(
    request: Request,
    region: str | None = REGION,
    from_: str | None = FROM,
    to: str | None = TO,
    match: str | None = MATCH,
) -> dict[str, Any]:
    """The same for a GeoJSON polygon body (points on its boundary are inside)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_GEOJSON_BYTES:
        raise TooLarge(f"GeoJSON body larger than {MAX_GEOJSON_BYTES >> 20} MiB")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_GEOJSON_BYTES:
            raise TooLarge(f"GeoJSON body larger than {MAX_GEOJSON_BYTES >> 20} MiB")
    try:
        shape = parse_geometry(bytes(body))
    except AreaError as e:
        raise Invalid(str(e)) from None
    return await _answer(request, region, shape, from_, to, match)
