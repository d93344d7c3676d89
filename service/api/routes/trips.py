"""Trips as a GeoJSON FeatureCollection of LineStrings, keyset-paged by id (SPEC section 4)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from service.analytics import trips as q
from service.analytics.area import AreaError, parse_bbox, parse_date, parse_match
from service.analytics.weekly import UnknownRegion, region_ids
from service.api.errors import Invalid, NotFound
from service.api.geojson import GEOJSON, GeoJSONResponse, TripCollection

router = APIRouter(tags=["analytics"])


@router.get(
    "/trips",
    response_class=GeoJSONResponse,
    response_model=TripCollection,
    responses={404: {}, 422: {}},
)
async def get_trips(
    request: Request,
    region: str | None = Query(None, max_length=200, description="case-insensitive"),
    datasource: str | None = Query(None, max_length=200),
    bbox: str | None = Query(None, description="minx,miny,maxx,maxy, inclusive"),
    match: str | None = Query(
        None,
        description="which end must lie in the bbox: origin (default), destination, both, either",
    ),
    from_: str | None = Query(None, alias="from", description="first day YYYY-MM-DD"),
    to: str | None = Query(None, description="last day YYYY-MM-DD (inclusive)"),
    limit: int = Query(100, ge=1, description=f"at most {q.MAX_LIMIT} (larger values are capped)"),
    after_id: int = Query(0, ge=0, le=2**63 - 1, description="trips with a larger id (paging)"),
) -> GeoJSONResponse:
    """Trips by id; `next_after_id` and a `next` link continue the listing."""
    try:
        box = parse_bbox(bbox)
        m = parse_match(match)
        d0, d1 = parse_date(from_, "from"), parse_date(to, "to")
        if d0 and d1 and d0 > d1:
            raise AreaError(f"from ({d0}) is after to ({d1})")
        async with request.app.state.pool.connection() as conn:
            regions = await region_ids(conn, region)
            fc = await q.trips(
                conn,
                regions=regions,
                datasource=datasource,
                bbox=box,
                match=m,
                start=d0,
                end=d1,
                limit=limit,
                after_id=after_id,
            )
    except AreaError as e:
        raise Invalid(str(e)) from None
    except UnknownRegion as e:
        raise NotFound(str(e)) from None
    if fc["next_after_id"] is not None:
        nxt = request.url.include_query_params(after_id=fc["next_after_id"])
        fc["links"] = [{"rel": "next", "href": str(nxt), "type": GEOJSON}]
    return GeoJSONResponse(fc)
