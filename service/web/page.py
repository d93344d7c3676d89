"""The map page and its static files, served by the API itself (no CDN).

`/static/` holds the page's own script and style; `/static/vendor/maplibre-gl/` the MapLibre GL
JS build that `npm ci` installs into service/web/node_modules (pinned in package-lock.json).
TRIPS_BASEMAP_URL, when set, is a raster tile URL template ({z}/{x}/{y}) drawn under the data;
by default the background is plain.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent
MAPLIBRE = WEB / "node_modules" / "maplibre-gl" / "dist"


def map_page() -> HTMLResponse:
    """index.html with the page's settings (the basemap) in a data attribute."""
    config = {"basemap": os.environ.get("TRIPS_BASEMAP_URL") or None}
    text = (WEB / "index.html").read_text(encoding="utf-8")
    text = text.replace("{{config}}", html.escape(json.dumps(config), quote=True))
    return HTMLResponse(text, headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Mount the static files (MapLibre only when `npm ci` has installed it)."""
    app.mount(
        "/static/vendor/maplibre-gl",
        StaticFiles(directory=MAPLIBRE, check_dir=False),
        name="maplibre",
    )
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")
