"""OGC API – Features Part 1 (Core, GeoJSON, OpenAPI 3.0) for the collections trips and clusters.

The landing page answers the map page to a browser (its Accept prefers text/html, or `f=html`),
JSON to everyone else, as tipg does. `next` links are the request's own URL with the keyset
cursor `after` moved on.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from service.analytics import features as q
from service.api import ogc_params as params
from service.api.errors import BadRequest, NotFound
from service.api.geojson import GEOJSON, GeoJSONResponse
from service.web import page

router = APIRouter(tags=["OGC API"])

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
]
COLLECTIONS = {
    "trips": ("Trips", "One LineString per trip, origin to destination; datetime: started_at."),
    "clusters": (
        "Trip clusters",
        "One LineString per cluster of similar trips, mean origin to mean destination; "
        "`trips` counts its trips.",
    ),
}
ITEM_PARAMS = {"bbox", "datetime", "limit", "after", "f"}
JSON = "application/json"
OAS = "application/vnd.oai.openapi+json;version=3.0"
MVT = "application/vnd.mapbox-vector-tile"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _link(href: str, rel: str, type_: str, title: str | None = None) -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    return out


def wants_html(request: Request) -> bool:
    """`f=html`, or an Accept that ranks text/html at least as high as any JSON type."""
    f = request.query_params.get("f")
    if f is not None:
        return f.lower() == "html"
    ranks: dict[str, float] = {}
    for item in request.headers.get("accept", "").split(","):
        kind, *opts = (s.strip() for s in item.split(";"))
        quality = 1.0
        for opt in opts:
            if opt.startswith("q="):
                try:
                    quality = float(opt[2:])
                except ValueError:
                    quality = 0.0
        ranks[kind.lower()] = max(ranks.get(kind.lower(), 0.0), quality)
    html = max(ranks.get("text/html", 0.0), ranks.get("application/xhtml+xml", 0.0))
    json = max(ranks.get(JSON, 0.0), ranks.get(GEOJSON, 0.0))
    return html > 0 and html >= json


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "a malformed parameter; `detail` says which"},
    404: {"description": "no such collection or feature"},
}


@router.get(
    "/",
    response_model=None,
    summary="Landing page (JSON), or the map page (HTML)",
    responses={200: {"content": {JSON: {}, "text/html": {}}}, 400: ERRORS[400]},
)
async def landing(
    request: Request,
    f: str | None = Query(
        None, description="json or html", json_schema_extra={"enum": ["json", "html"]}
    ),
) -> Any:
    """Links to the API definition, the conformance classes and the collections."""
    if f is not None and f.lower() not in ("json", "html"):
        raise BadRequest(f"f must be json or html, got {f!r}")
    if wants_html(request):
        return page.map_page()
    base = _base(request)
    return JSONResponse(
        {
            "title": "Trips service",
            "description": "Trips and similar-trip clusters in PostGIS: OGC API – Features "
            "and Tiles, weekly averages, ingestion with live status.",
            "links": [
                _link(f"{base}/", "self", JSON, "this document"),
                _link(f"{base}/?f=html", "alternate", "text/html", "the map"),
                _link(f"{base}/openapi.json", "service-desc", OAS, "the API definition"),
                _link(f"{base}/docs", "service-doc", "text/html", "the API documentation"),
                _link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
                _link(f"{base}/collections", "data", JSON, "the collections"),
            ],
        }
    )


@router.get("/conformance")
async def conformance() -> dict[str, list[str]]:
    """The conformance classes this API implements."""
    return {"conformsTo": CONFORMANCE}


async def _collection(request: Request, cid: str) -> dict[str, Any]:
    title, description = COLLECTIONS[cid]
    base = _base(request)
    extent: dict[str, Any] = {}
    async with request.app.state.pool.connection() as conn:
        if cid == "trips":
            s = await request.app.state.ogc_summary.get(conn)
            bbox, interval = s.bbox, s.interval
        else:
            bbox, interval = await q.clusters_extent(conn), None
    extent["spatial"] = {
        "bbox": [list(bbox) if bbox else [-180, -90, 180, 90]],
        "crs": params.CRS84,
    }
    if cid == "trips":
        span = [t.isoformat() for t in interval] if interval else [None, None]
        extent["temporal"] = {
            "interval": [span],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
    return {
        "id": cid,
        "title": title,
        "description": description,
        "itemType": "feature",
        "crs": [params.CRS84],
        "extent": extent,
        "links": [
            _link(f"{base}/collections/{cid}", "self", JSON),
            _link(f"{base}/collections/{cid}/items", "items", GEOJSON, "the features"),
            _link(
                f"{base}/collections/{cid}/tiles",
                "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                JSON,
                "vector tiles",
            ),
        ],
    }


def _check_collection(cid: str) -> None:
    if cid not in COLLECTIONS:
        raise NotFound(f"no collection {cid!r}; there are: {', '.join(COLLECTIONS)}")


@router.get("/collections")
async def collections(request: Request) -> dict[str, Any]:
    """The collections: trips and clusters, with their extents."""
    base = _base(request)
    return {
        "links": [_link(f"{base}/collections", "self", JSON)],
        "collections": [await _collection(request, cid) for cid in COLLECTIONS],
    }


@router.get("/collections/{collection_id}", responses={404: ERRORS[404]})
async def collection(request: Request, collection_id: str) -> dict[str, Any]:
    """One collection's description and extent."""
    _check_collection(collection_id)
    return await _collection(request, collection_id)


@router.get(
    "/collections/{collection_id}/items",
    response_class=GeoJSONResponse,
    responses={200: {"content": {GEOJSON: {}}}, **ERRORS},
)
async def items(
    request: Request,
    collection_id: str,
    bbox: str | None = Query(
        None, description="minx,miny,maxx,maxy (CRS84): the geometry meets it"
    ),
    datetime: str | None = Query(
        None, description="instant or interval (`start/end`, `..` open) on started_at (trips)"
    ),
    limit: str = Query(  # None: not given
        None,
        description=f"1 to {params.MAX_LIMIT} (larger values are capped)",
        # parsed here (a malformed limit is a 400), documented as the integer it is
        json_schema_extra={
            "type": "integer",
            "minimum": 1,
            "maximum": params.MAX_LIMIT,
            "default": params.DEFAULT_LIMIT,
        },
    ),
    after: str | None = Query(None, description="keyset cursor (follow the `next` link)"),
    f: str | None = Query(
        None,
        description="json or geojson (the one encoding)",
        json_schema_extra={"enum": ["json", "geojson"]},
    ),
) -> GeoJSONResponse:
    """Features of a collection, filtered by bbox (and datetime for trips), by id."""
    _check_collection(collection_id)
    if f is not None and f.lower() not in ("json", "geojson"):
        raise BadRequest(f"f must be json or geojson, got {f!r}")
    unknown = set(request.query_params) - ITEM_PARAMS
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    box = params.parse_bbox(bbox)
    when = params.parse_datetime(datetime)
    n = params.parse_limit(limit)
    async with request.app.state.pool.connection() as conn:
        if collection_id == "trips":
            start = 0
            if after is not None:
                start = params.trip_id(after) or 0
                if not start:
                    raise BadRequest(f"after: {after!r} is not a trip id")
            feats, more = await q.trips(conn, request.app.state.ogc_summary, box, when, n, start)
        else:
            if when is not None:
                raise BadRequest("clusters have no time: datetime applies to trips only")
            cursor = params.parse_after(after, q.CLUSTER_ID)
            try:
                feats, more = await q.clusters(conn, box, n, cursor)
            except ValueError as e:
                raise BadRequest(str(e)) from None
    self_url = str(request.url)
    links = [
        _link(self_url, "self", GEOJSON),
        _link(f"{_base(request)}/collections/{collection_id}", "collection", JSON),
    ]
    if more and feats:
        nxt = request.url.include_query_params(after=str(feats[-1]["id"]))
        links.append(_link(str(nxt), "next", GEOJSON, "the next page"))
    return GeoJSONResponse(
        {
            "type": "FeatureCollection",
            "features": feats,
            "numberReturned": len(feats),
            "links": links,
        }
    )


@router.get(
    "/collections/{collection_id}/items/{feature_id}",
    response_class=GeoJSONResponse,
    responses={200: {"content": {GEOJSON: {}}}, 404: ERRORS[404]},
)
async def item(request: Request, collection_id: str, feature_id: str) -> Response:
    """One feature by id (a trip's id; a cluster's region_ocx_ocy_dcx_dcy_bucket)."""
    _check_collection(collection_id)
    feat = None
    async with request.app.state.pool.connection() as conn:
        if collection_id == "trips":
            tid = params.trip_id(feature_id)
            if tid is not None:
                feat = await q.trip(conn, tid)
        elif params.re_full(q.CLUSTER_ID, feature_id):
            feat = await q.cluster(conn, feature_id)
    if feat is None:
        raise NotFound(f"no feature {feature_id!r} in {collection_id}")
    base = _base(request)
    feat["links"] = [
        _link(str(request.url), "self", GEOJSON),
        _link(f"{base}/collections/{collection_id}", "collection", JSON),
    ]
    return GeoJSONResponse(feat)
