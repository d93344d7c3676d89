"""OGC API – Tiles: Mapbox Vector Tiles of the collections in WebMercatorQuad, and the minimal
tileset and tile matrix set metadata a client needs to find them."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from service.analytics import tiles as q
from service.api.errors import BadRequest, NotFound
from service.api.routes.ogc import COLLECTIONS, JSON, MVT

router = APIRouter(tags=["OGC API"])

TMS = "WebMercatorQuad"
TMS_URI = "http://www.opengis.net/def/tilematrixset/OGC/1.0/WebMercatorQuad"
EPSG3857 = "http://www.opengis.net/def/crs/EPSG/0/3857"
TEMPLATE = "{tileMatrix}/{tileRow}/{tileCol}"
_INT = re.compile(r"^[0-9]{1,8}$")


def _tileset(request: Request, cid: str) -> dict[str, Any]:
    base = str(request.base_url).rstrip("/")
    return {
        "title": f"{COLLECTIONS[cid][0]}, vector tiles",
        "tileMatrixSetURI": TMS_URI,
        "crs": EPSG3857,
        "dataType": "vector",
        "minzoom": 0,
        "maxzoom": q.MAX_ZOOM,
        "links": [
            {"rel": "self", "type": JSON, "href": f"{base}/collections/{cid}/tiles/{TMS}"},
            {
                "rel": "http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme",
                "type": JSON,
                "href": f"{base}/tileMatrixSets/{TMS}",
            },
            {
                "rel": "item",
                "type": MVT,
                "templated": True,
                "href": f"{base}/collections/{cid}/tiles/{TMS}/" + TEMPLATE,
            },
        ],
    }


def _check(cid: str) -> None:
    if cid not in COLLECTIONS:
        raise NotFound(f"no collection {cid!r}; there are: {', '.join(COLLECTIONS)}")


@router.get(
    "/collections/{collection_id}/tiles",
    responses={404: {"description": "no such collection or tile matrix set"}},
)
async def tilesets(request: Request, collection_id: str) -> dict[str, Any]:
    """The collection's tilesets (one: WebMercatorQuad, MVT)."""
    _check(collection_id)
    return {"tilesets": [_tileset(request, collection_id)]}


@router.get(
    "/collections/{collection_id}/tiles/{tms}",
    responses={404: {"description": "no such collection or tile matrix set"}},
)
async def tileset(request: Request, collection_id: str, tms: str) -> dict[str, Any]:
    """The collection's WebMercatorQuad tileset."""
    _check(collection_id)
    if tms != TMS:
        raise NotFound(f"no tile matrix set {tms!r}; there is {TMS}")
    return _tileset(request, collection_id)


@router.get("/tileMatrixSets")
async def tile_matrix_sets(request: Request) -> dict[str, Any]:
    """The tile matrix sets (one)."""
    base = str(request.base_url).rstrip("/")
    href = f"{base}/tileMatrixSets/{TMS}"
    return {
        "tileMatrixSets": [{"id": TMS, "uri": TMS_URI, "links": [{"rel": "self", "href": href}]}]
    }


@router.get(
    "/tileMatrixSets/{tms}",
    responses={404: {"description": "no such collection or tile matrix set"}},
)
async def tile_matrix_set(tms: str) -> dict[str, Any]:
    """WebMercatorQuad, by reference to its OGC definition (matrices 0 to MAX_ZOOM)."""
    if tms != TMS:
        raise NotFound(f"no tile matrix set {tms!r}; there is {TMS}")
    return {
        "id": TMS,
        "uri": TMS_URI,
        "crs": EPSG3857,
        "orderedAxes": ["X", "Y"],
        "tileMatrices": [
            {
                "id": str(z),
                "scaleDenominator": 559082264.0287178 / 2**z,
                "cellSize": 156543.03392804097 / 2**z,
                "pointOfOrigin": [-20037508.342789244, 20037508.342789244],
                "cornerOfOrigin": "topLeft",
                "tileWidth": 256,
                "tileHeight": 256,
                "matrixWidth": 2**z,
                "matrixHeight": 2**z,
            }
            for z in range(q.MAX_ZOOM + 1)
        ],
    }


@router.get(
    "/collections/{collection_id}/tiles/{tms}/{z}/{y}/{x}",
    response_class=Response,
    responses={
        200: {"content": {MVT: {}}, "description": "the tile"},
        204: {"description": "nothing in this tile"},
        400: {"description": "z, y or x malformed or outside the matrix"},
        404: {"description": "no such collection or tile matrix set"},
    },
)
async def get_tile(
    request: Request, collection_id: str, tms: str, z: str, y: str, x: str
) -> Response:
    """One tile: tileMatrix z, tileRow y, tileCol x (an empty tile answers 204)."""
    _check(collection_id)
    if tms != TMS:
        raise NotFound(f"no tile matrix set {tms!r}; there is {TMS}")
    if not (_INT.match(z) and _INT.match(y) and _INT.match(x)):
        raise BadRequest("z, y and x must be non-negative integers")
    zi, yi, xi = int(z), int(y), int(x)
    if zi > q.MAX_ZOOM:
        raise BadRequest(f"tileMatrix {zi} above {q.MAX_ZOOM}")
    if xi >= 2**zi or yi >= 2**zi:
        raise BadRequest(f"tile {zi}/{yi}/{xi} is outside the matrix ({2**zi} x {2**zi})")
    async with request.app.state.pool.connection() as conn:
        data = await q.tile(conn, collection_id, zi, xi, yi)
    headers = {"Cache-Control": "no-cache"}
    if not data:
        return Response(status_code=204, headers=headers)
    return Response(data, media_type=MVT, headers=headers)
