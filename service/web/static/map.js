// The map: trips and clusters from the service's vector tiles, and the area tools (a box by
// shift-drag or two clicks, a polygon by clicks and a double-click). window.tripsMap is the
// page's handle for the panel (panel.js) and for tests.
"use strict";

(function () {
  const config = JSON.parse(document.body.dataset.config || "{}");
  const origin = window.location.origin;
  const tileUrl = (cid, v) =>
    `${origin}/collections/${cid}/tiles/WebMercatorQuad/{z}/{y}/{x}` + (v ? `?v=${v}` : "");

  const sources = {
    trips: { type: "vector", tiles: [tileUrl("trips")], minzoom: 0, maxzoom: 16 },
    clusters: { type: "vector", tiles: [tileUrl("clusters")], minzoom: 0, maxzoom: 16 },
    selection: { type: "geojson", data: { type: "FeatureCollection", features: [] } },
  };
  const layers = [{ id: "background", type: "background", paint: { "background-color": "#f4f3ef" } }];
  if (config.basemap) {
    sources.basemap = { type: "raster", tiles: [config.basemap], tileSize: 256 };
    layers.push({ id: "basemap", type: "raster", source: "basemap" });
  }
  layers.push(
    {
      id: "trip-cells",
      type: "circle",
      source: "trips",
      "source-layer": "trips",
      filter: ["==", ["geometry-type"], "Point"],
      paint: {
        "circle-color": "#1d6fd8",
        "circle-opacity": 0.6,
        "circle-radius": ["interpolate", ["linear"], ["sqrt", ["get", "trips"]], 1, 2, 10, 6, 30, 14],
      },
    },
    {
      id: "trip-lines",
      type: "line",
      source: "trips",
      "source-layer": "trips",
      filter: ["==", ["geometry-type"], "LineString"],
      paint: { "line-color": "#1d6fd8", "line-opacity": 0.35, "line-width": 1 },
    },
    {
      id: "clusters",
      type: "line",
      source: "clusters",
      "source-layer": "clusters",
      paint: {
        "line-color": "#e8590c",
        "line-opacity": ["interpolate", ["linear"], ["get", "trips"], 1, 0.15, 5, 0.5, 20, 0.9],
        "line-width": ["interpolate", ["linear"], ["get", "trips"], 1, 0.5, 5, 1.5, 20, 3, 100, 8],
      },
    },
    {
      id: "selection-fill",
      type: "fill",
      source: "selection",
      paint: { "fill-color": "#222", "fill-opacity": 0.08 },
    },
    {
      id: "selection-line",
      type: "line",
      source: "selection",
      paint: { "line-color": "#222", "line-width": 2, "line-dasharray": [2, 1] },
    },
  );

  const map = new maplibregl.Map({
    container: "map",
    style: { version: 8, sources, layers },
    center: [0, 20],
    zoom: 1,
    boxZoom: false, // shift-drag draws the area instead
    doubleClickZoom: false, // a double-click finishes a polygon
    attributionControl: false,
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }));

  const handle = {
    map,
    tilesLoaded: 0,
    ready: false,
    onArea: null, // set by panel.js: called with {bbox} or {polygon} or null
    renderedTrips() {
      return map.queryRenderedFeatures({ layers: ["trip-cells", "trip-lines"] }).length;
    },
    renderedClusters() {
      return map.queryRenderedFeatures({ layers: ["clusters"] }).length;
    },
    refresh() {
      const v = Date.now();
      map.getSource("trips").setTiles([tileUrl("trips", v)]);
      map.getSource("clusters").setTiles([tileUrl("clusters", v)]);
    },
  };
  window.tripsMap = handle;

  map.on("data", (e) => {
    if (e.dataType === "source" && e.tile) handle.tilesLoaded += 1;
  });

  map.on("load", async () => {
    try {
      const r = await fetch("/collections/trips", { headers: { Accept: "application/json" } });
      const bbox = (await r.json()).extent.spatial.bbox[0];
      const world = bbox[0] <= -180 && bbox[2] >= 180;
      if (!world) {
        map.fitBounds(
          [
            [bbox[0], bbox[1]],
            [bbox[2], bbox[3]],
          ],
          { padding: 30, animate: false, maxZoom: 15 },
        );
      }
    } finally {
      handle.ready = true;
    }
  });

  // ---- drawing --------------------------------------------------------------------------
  let mode = null; // "box" | "polygon" | null
  let corner = null; // first corner of a box
  let ring = []; // polygon vertices so far
  let dragging = false;
  const hint = document.getElementById("hint");
  const buttons = {
    box: document.getElementById("draw-box"),
    polygon: document.getElementById("draw-polygon"),
  };

  function setMode(m) {
    mode = m;
    corner = null;
    ring = [];
    for (const [k, b] of Object.entries(buttons)) b.classList.toggle("active", k === m);
    map.getCanvas().style.cursor = m ? "crosshair" : "";
    hint.textContent =
      m === "box"
        ? "Click two opposite corners."
        : m === "polygon"
          ? "Click the corners; double-click to finish."
          : "Shift-drag a box, use the buttons, or pick a region.";
  }

  function show(geometry) {
    const features = geometry ? [{ type: "Feature", geometry, properties: {} }] : [];
    map.getSource("selection").setData({ type: "FeatureCollection", features });
  }

  function boxGeometry(a, b) {
    const [x0, x1] = [Math.min(a.lng, b.lng), Math.max(a.lng, b.lng)];
    const [y0, y1] = [Math.min(a.lat, b.lat), Math.max(a.lat, b.lat)];
    return { bbox: [x0, y0, x1, y1], geometry: boxPolygon(x0, y0, x1, y1) };
  }

  function boxPolygon(x0, y0, x1, y1) {
    return { type: "Polygon", coordinates: [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] };
  }

  function finishBox(a, b) {
    const { bbox } = boxGeometry(a, b);
    setMode(null);
    return handle.selectBox(...bbox);
  }

  map.on("mousedown", (e) => {
    if (!e.originalEvent.shiftKey) return;
    e.preventDefault();
    dragging = true;
    corner = e.lngLat;
    map.dragPan.disable();
  });
  map.on("mousemove", (e) => {
    if ((dragging || mode === "box") && corner) show(boxGeometry(corner, e.lngLat).geometry);
    if (mode === "polygon" && ring.length) {
      const pts = [...ring, [e.lngLat.lng, e.lngLat.lat]];
      show(pts.length > 2 ? { type: "Polygon", coordinates: [[...pts, pts[0]]] } : { type: "LineString", coordinates: pts });
    }
  });
  map.on("mouseup", (e) => {
    if (!dragging) return;
    dragging = false;
    map.dragPan.enable();
    const a = corner;
    corner = null;
    if (a && (a.lng !== e.lngLat.lng || a.lat !== e.lngLat.lat)) finishBox(a, e.lngLat);
  });
  map.on("click", (e) => {
    if (mode === "box") {
      if (!corner) corner = e.lngLat;
      else finishBox(corner, e.lngLat);
    } else if (mode === "polygon") {
      const p = [e.lngLat.lng, e.lngLat.lat];
      const last = ring[ring.length - 1];
      if (!last || last[0] !== p[0] || last[1] !== p[1]) ring.push(p);
    }
  });
  map.on("dblclick", () => {
    if (mode !== "polygon") return;
    const pts = ring;
    setMode(null);
    if (pts.length >= 3) handle.selectPolygon(pts);
    else show(null);
  });

  buttons.box.addEventListener("click", () => setMode(mode === "box" ? null : "box"));
  buttons.polygon.addEventListener("click", () => setMode(mode === "polygon" ? null : "polygon"));
  document.getElementById("clear").addEventListener("click", () => handle.clear());

  // ---- the area, for the panel and for tests ------------------------------------------
  handle.selectBox = (minx, miny, maxx, maxy) => {
    show(boxPolygon(minx, miny, maxx, maxy));
    return handle.onArea ? handle.onArea({ bbox: [minx, miny, maxx, maxy] }) : null;
  };
  handle.selectPolygon = (points) => {
    const geometry = { type: "Polygon", coordinates: [[...points, points[0]]] };
    show(geometry);
    return handle.onArea ? handle.onArea({ polygon: geometry }) : null;
  };
  handle.clear = () => {
    setMode(null);
    show(null);
    return handle.onArea ? handle.onArea(null) : null;
  };
})();
