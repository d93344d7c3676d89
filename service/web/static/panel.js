// The side panel: the weekly average of the drawn area or the picked region (with its weekly
// series drawn as bars), the upload form, and the ingestion jobs followed live from the SSE
// stream (GET /ingestions/events).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const handle = window.tripsMap;
  let area = null; // {bbox: [...]} or {polygon: {...}} or null

  // ---- weekly average ---------------------------------------------------------------------
  async function loadRegions() {
    const r = await fetch("/vehicles/region/count");
    if (!r.ok) return;
    const select = $("region");
    const chosen = select.value;
    select.length = 1;
    for (const { region } of (await r.json()).data) {
      select.add(new Option(region, region, false, region === chosen));
    }
  }

  function query() {
    const p = new URLSearchParams();
    if ($("region").value) p.set("region", $("region").value);
    p.set("match", $("match").value);
    if ($("from").value) p.set("from", $("from").value);
    if ($("to").value) p.set("to", $("to").value);
    return p;
  }

  async function update() {
    const p = query();
    if (!area && !p.has("region")) {
      $("result").hidden = true;
      $("error").hidden = true;
      handle.lastStats = null;
      return null;
    }
    let r;
    if (area && area.polygon) {
      r = await fetch(`/stats/weekly-average?${p}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(area.polygon),
      });
    } else {
      if (area) p.set("bbox", area.bbox.join(","));
      r = await fetch(`/stats/weekly-average?${p}`);
    }
    const body = await r.json();
    if (!r.ok) {
      $("error").textContent = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      $("error").hidden = false;
      $("result").hidden = true;
      handle.lastStats = { error: body.detail };
      return handle.lastStats;
    }
    $("error").hidden = true;
    $("r-average").textContent = body.weekly_average.toFixed(2);
    $("r-trips").textContent = body.trips;
    $("r-weeks").textContent = body.weeks;
    $("r-window").textContent = `${body.from} – ${body.to}`;
    chart(body.series);
    $("result").hidden = false;
    handle.lastStats = body;
    return body;
  }

  function chart(series) {
    const svg = $("chart");
    const W = 300, H = 120, top = 12, bottom = 16;
    const max = Math.max(1, ...series.map((s) => s.trips));
    const w = W / Math.max(1, series.length);
    const ns = "http://www.w3.org/2000/svg";
    svg.replaceChildren();
    const el = (name, attrs, text) => {
      const e = document.createElementNS(ns, name);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    series.forEach((s, i) => {
      const h = ((H - top - bottom) * s.trips) / max;
      const bar = el("rect", { x: i * w + 1, y: H - bottom - h, width: Math.max(1, w - 2), height: h });
      const title = document.createElementNS(ns, "title");
      title.textContent = `week of ${s.week}: ${s.trips} trips`;
      bar.appendChild(title);
    });
    el("text", { x: 0, y: 9 }, `max ${max}`);
    if (series.length) {
      el("text", { x: 0, y: H - 3 }, series[0].week);
      el("text", { x: W, y: H - 3, "text-anchor": "end" }, series[series.length - 1].week);
    }
  }

  handle.onArea = (a) => {
    area = a;
    handle.area = a;
    return update();
  };
  handle.selectRegion = (name) => {
    $("region").value = name;
    return update();
  };
  for (const id of ["region", "match", "from", "to"]) $(id).addEventListener("change", update);

  // ---- ingestion ----------------------------------------------------------------------------
  const jobs = new Map(); // id -> {job, li}

  function row(job) {
    let entry = jobs.get(job.id);
    if (!entry) {
      const li = document.createElement("li");
      li.id = `job-${job.id}`;
      li.innerHTML =
        '<span class="state"></span><div class="name"></div>' +
        '<progress max="100" value="0"></progress><div class="meta"></div>';
      $("jobs").prepend(li);
      entry = { job, li };
      jobs.set(job.id, entry);
    }
    entry.job = { ...entry.job, ...job };
    render(entry);
    return entry;
  }

  function render({ job, li }) {
    li.dataset.state = job.state;
    li.querySelector(".name").textContent = job.source;
    const state = li.querySelector(".state");
    state.textContent = job.state;
    state.className = `state ${job.state}`;
    const bar = li.querySelector("progress");
    if (job.state === "succeeded") bar.value = 100;
    else if (job.percent !== undefined) bar.value = job.percent;
    const meta = [`${(job.rows_loaded || 0).toLocaleString()} rows loaded`];
    if (job.state === "running" && job.rows_per_s) meta.push(`${Math.round(job.rows_per_s).toLocaleString()} rows/s`);
    if (job.state === "running" && job.eta_s !== undefined && job.eta_s !== null) meta.push(`ETA ${Math.ceil(job.eta_s)} s`);
    if (job.rows_rejected) meta.push(`${job.rows_rejected} rejected`);
    if (job.error) meta.push(job.error);
    const m = li.querySelector(".meta");
    m.textContent = meta.join(" · ");
    if ((job.state === "succeeded" || job.state === "failed") && !li.querySelector("button")) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "show-rejections";
      b.textContent = "rejected rows";
      b.addEventListener("click", () => showRejections(job.id));
      li.appendChild(b);
    }
  }

  async function refreshJob(id) {
    const r = await fetch(`/ingestions/${id}`);
    if (r.ok) return row(await r.json());
    return null;
  }

  async function showRejections(id) {
    const r = await fetch(`/ingestions/${id}/rejections`);
    const rows = r.ok ? await r.json() : [];
    const entry = jobs.get(id);
    $("rejections-title").textContent = `${entry ? entry.job.source : id}: ${rows.length} rejected row(s)`;
    const tbody = $("rejections").querySelector("tbody");
    tbody.replaceChildren();
    for (const x of rows) {
      const tr = tbody.insertRow();
      for (const v of [x.line, x.reason, x.raw]) tr.insertCell().textContent = v;
    }
    $("rejections").hidden = false;
  }
  $("rejections-close").addEventListener("click", () => ($("rejections").hidden = true));

  async function onEvent(type, e) {
    const data = JSON.parse(e.data);
    const id = data.job_id;
    if (type === "progress" && jobs.has(id)) {
      row({ id, state: "running", ...data });
      return;
    }
    const entry = await refreshJob(id);
    if (entry && type === "succeeded") {
      handle.refresh();
      loadRegions();
      if (area || $("region").value) update();
    }
  }

  function follow() {
    const source = new EventSource("/ingestions/events");
    for (const type of ["queued", "started", "progress", "succeeded", "failed"]) {
      source.addEventListener(type, (e) => onEvent(type, e));
    }
    handle.events = source;
  }

  async function loadJobs() {
    const r = await fetch("/ingestions?limit=20");
    if (!r.ok) return;
    const list = await r.json();
    for (const job of list.reverse()) row(job);
  }

  $("upload").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("file").files[0];
    const err = $("upload-error");
    err.hidden = true;
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    const force = $("force").checked ? "?force=true" : "";
    const r = await fetch(`/ingestions${force}`, { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) {
      err.textContent = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      err.hidden = false;
      return;
    }
    row(body);
    refreshJob(body.id); // events may have passed before the row existed
    $("upload").reset();
  });

  follow();
  loadJobs();
  loadRegions();
})();
