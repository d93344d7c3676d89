"""`trips weekly` and `trips clusters`: the analytics routes on the command line."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import psycopg
import typer

from service.analytics import clusters as cq
from service.settings import Settings

# weekly and area (shapely) are imported by the commands that use them: `trips ingest`, which
# imports this module to register the commands, starts a quarter second sooner.


def _url(settings: Settings) -> str:
    from service.db.migrate import migrate

    url = settings.resolved_database_url()
    migrate(url)
    return url


async def _weekly(url: str, **kw: Any) -> dict[str, Any]:
    from service.analytics import weekly

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await weekly.weekly_average(conn, **kw)


async def _clusters(url: str, region: str | None, **kw: Any) -> dict[str, Any]:
    from service.analytics import weekly

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        regions = await weekly.region_ids(conn, region)
        return await cq.clusters(conn, regions=regions, **kw)


def sync_cluster_params(url: str, settings: Settings) -> None:
    """Start-up of worker and ingest: see service/analytics/clusters.py on parameters."""
    with psycopg.connect(url, autocommit=True) as conn:
        cq.sync_params(conn, settings)


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


def weekly_cmd(
    region: str = typer.Option(None, help="region name (case-insensitive)"),
    bbox: str = typer.Option(None, help="minx,miny,maxx,maxy in lon/lat"),
    polygon: Path = typer.Option(
        None, exists=True, dir_okay=False, help="GeoJSON Polygon/MultiPolygon/Feature file"
    ),
    from_: str = typer.Option(None, "--from", help="first day YYYY-MM-DD"),
    to: str = typer.Option(None, help="last day YYYY-MM-DD"),
    match: str = typer.Option("origin", help="origin, destination, both or either"),
    as_json: bool = typer.Option(False, "--json", help="print the API's JSON"),
) -> None:
    """Print the weekly average of trips for a region, a box or a polygon."""
    from service.analytics import weekly
    from service.analytics.area import (
        AreaError,
        parse_bbox,
        parse_date,
        parse_geometry,
        parse_match,
    )

    try:
        if bbox and polygon:
            raise AreaError("give --bbox or --polygon, not both")
        area = (
            parse_bbox(bbox)
            if bbox
            else (parse_geometry(polygon.read_bytes()) if polygon else None)
        )
        kw = {
            "region": region,
            "area": area,
            "start": parse_date(from_, "--from"),
            "end": parse_date(to, "--to"),
            "match": parse_match(match),
        }
        settings = Settings()
        result = asyncio.run(_weekly(_url(settings), **kw))
    except AreaError as e:
        raise _fail(str(e)) from None
    except weekly.UnknownRegion as e:
        raise _fail(str(e), 1) from None
    if as_json:
        typer.echo(orjson.dumps(result).decode())
        return
    typer.echo(
        f"weekly average {result['weekly_average']:.4f} ({result['trips']} trips over "
        f"{result['weeks']} weeks {result['from']} … {result['to']}, match "
        f"{result['match']})"
    )
    for s in result["series"]:
        typer.echo(f"  {s['week']}  {s['trips']:>10}")


def clusters_cmd(
    region: str = typer.Option(None, help="region name (case-insensitive)"),
    bbox: str = typer.Option(None, help="minx,miny,maxx,maxy containing the mean origin"),
    time_from: str = typer.Option(None, help="HH:MM"),
    time_to: str = typer.Option(None, help="HH:MM"),
    min_trips: int = typer.Option(1, min=1),
    limit: int = typer.Option(
        20, min=1, help=f"at most {cq.MAX_LIMIT}; a larger value is capped, as in the API"
    ),
    geojson: bool = typer.Option(False, "--geojson", help="print a GeoJSON FeatureCollection"),
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="recompute every cluster with the "
        "current TRIPS_CLUSTER_CELL / TRIPS_CLUSTER_BUCKET_MINUTES",
    ),
) -> None:
    """Print the largest clusters of similar trips."""
    from service.analytics import weekly
    from service.analytics.area import AreaError, parse_bbox

    settings = Settings()
    url = _url(settings)
    if rebuild:
        with psycopg.connect(url, autocommit=True) as conn:
            n = cq.rebuild(conn, settings.cluster_cell, settings.cluster_bucket_minutes)
        typer.echo(
            f"rebuilt {n} clusters with cell {settings.cluster_cell}° and "
            f"{settings.cluster_bucket_minutes}-minute buckets",
            err=True,
        )
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            cq.sync_params(conn, settings)
    try:
        t0 = cq.parse_time(time_from, "--time-from", 0)
        t1 = cq.parse_time(time_to, "--time-to", 1440)
        fc = asyncio.run(
            _clusters(
                url,
                region,
                bbox=parse_bbox(bbox),
                time_from=t0,
                time_to=t1,
                min_trips=min_trips,
                limit=min(limit, cq.MAX_LIMIT),
            )
        )
    except (AreaError, ValueError) as e:
        raise _fail(str(e)) from None
    except weekly.UnknownRegion as e:
        raise _fail(str(e), 1) from None
    if geojson:
        typer.echo(orjson.dumps(fc).decode())
        return
    typer.echo(
        f"{'trips':>8}  {'region':<16} {'bucket':<12} {'origin cell':<16} "
        f"{'destination cell':<16} mean origin → mean destination"
    )
    for f in fc["features"]:
        p, (o, d) = f["properties"], f["geometry"]["coordinates"]
        typer.echo(
            f"{p['trips']:>8}  {p['region']:<16} {p['time_bucket']:<12} "
            f"{str(tuple(p['origin_cell'])):<16} {str(tuple(p['destination_cell'])):<16} "
            f"({o[0]:.5f}, {o[1]:.5f}) → ({d[0]:.5f}, {d[1]:.5f})"
        )


def register(app: typer.Typer) -> None:
    app.command("weekly")(weekly_cmd)
    app.command("clusters")(clusters_cmd)
