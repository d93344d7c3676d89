"""GeoJSON answers: the orjson-backed `application/geo+json` response, and the models that
document in OpenAPI (and let tests validate) what GET /trips and GET /clusters return.

The features are built in the analytics modules (service/analytics/trips.py, clusters.py) and
sent as they are: the models describe them, they are not used to serialize them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi.responses import JSONResponse
from geojson_pydantic import Feature, FeatureCollection, LineString
from geojson_pydantic.types import Position2D
from pydantic import BaseModel, Field

GEOJSON = "application/geo+json"


class GeoJSONResponse(JSONResponse):
    """orjson-rendered; a JSONResponse so that FastAPI documents the route's response_model."""

    media_type = GEOJSON

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


TwoPositions = Annotated[list[Position2D], Field(min_length=2, max_length=2)]


class OriginDestination(LineString):
    """A two-point LineString: origin then destination, lon/lat (EPSG:4326)."""

    coordinates: TwoPositions  # type: ignore[assignment]  # narrower than any LineString


class Link(BaseModel):
    rel: Literal["next"]
    href: str = Field(description="this request with `after_id` moved on")
    type: Literal["application/geo+json"]


class TripProperties(BaseModel):
    id: int
    region: str
    datasource: str
    datetime: str = Field(
        description="naive local time as stored, ISO 8601",
        pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?$",
        examples=["2018-05-28T09:03:41"],
    )


class TripFeature(Feature[OriginDestination, TripProperties]):
    id: int
    geometry: OriginDestination
    properties: TripProperties


class TripCollection(FeatureCollection[TripFeature]):
    """Trips by id; pass `next_after_id` as `after_id` (or follow the `next` link) for more."""

    features: list[TripFeature]
    next_after_id: int | None = Field(description="null on the last page")
    links: list[Link] | None = Field(None, description="a `next` link when there is more")


class ClusterProperties(BaseModel):
    region: str
    origin_cell: tuple[int, int] = Field(description="(floor(x / cell), floor(y / cell))")
    destination_cell: tuple[int, int]
    time_bucket: str = Field(
        description="time-of-day bucket, local wall clock",
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        examples=["08:00-09:00"],
    )
    trips: int = Field(ge=1)


class ClusterFeature(Feature[OriginDestination, ClusterProperties]):
    """One cluster: a line from its trips' mean origin to their mean destination."""

    geometry: OriginDestination
    properties: ClusterProperties


class ClusterParams(BaseModel):
    """The parameters the stored clusters were built with."""

    cell: float = Field(gt=0, description="grid cell side, degrees")
    bucket_minutes: int = Field(ge=1, le=1440)


class ClusterCollection(FeatureCollection[ClusterFeature]):
    """Clusters, most trips first."""

    features: list[ClusterFeature]
    params: ClusterParams
