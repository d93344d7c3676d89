"""Similar-trip clusters as a GeoJSON FeatureCollection (SPEC section 4)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from service.analytics import clusters as q
from service.analytics.area import AreaError, parse_bbox
from service.analytics.weekly import UnknownRegion, region_ids
from service.api.errors import Invalid, NotFound
from service.api.geojson import ClusterCollection, GeoJSONResponse

router = APIRouter(tags=["analytics"])


@router.get(
    "/clusters",
    response_class=GeoJSONResponse,
    response_model=ClusterCollection,
    responses={404: {}, 422: {}},
)
async def get_clusters(
    request: Request,
    region: str | None = Query(None, max_length=200, description="case-insensitive"),
    bbox: str | None = Query(
        None,
        description="minx,miny,maxx,maxy: the cluster's mean origin must lie in it (inclusive)",
    ),
    time_from: str | None = Query(None, description="HH:MM; buckets ending after it"),
    time_to: str | None = Query(None, description="HH:MM; buckets starting before it"),
    min_trips: int = Query(1, ge=1, le=2**62),
    limit: int = Query(100, ge=1, description=f"at most {q.MAX_LIMIT} (larger values are capped)"),
) -> GeoJSONResponse:
    """One LineString per cluster, mean origin → mean destination, most trips first."""
    try:
        box = parse_bbox(bbox)
        t0 = q.parse_time(time_from, "time_from", 0)
        t1 = q.parse_time(time_to, "time_to", 1440)
        if t1 <= t0:
            raise AreaError(f"time_to ({time_to}) must be after time_from ({time_from})")
        async with request.app.state.pool.connection() as conn:
            regions = await region_ids(conn, region)
            fc = await q.clusters(
                conn,
                regions=regions,
                bbox=box,
                time_from=t0,
                time_to=t1,
                min_trips=min_trips,
                limit=limit,
            )
    except (AreaError, ValueError) as e:
        raise Invalid(str(e)) from None
    except UnknownRegion as e:
        raise NotFound(str(e)) from None
    return GeoJSONResponse(fc)
