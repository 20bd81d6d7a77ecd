// The embedstore page: search with filters, a grid of results, the version's embedding map, a
// detail view with boxes and a Grad-CAM overlay. Talks only to the server that served it; no
// network beyond it (Vega comes from the server's /static/vega.js, the report's bundle).
// A module, so that its names stay out of the global scope the Vega bundle declares its own in.
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;

async function getJSON(url) {
  const r = await fetch(url, { headers });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function status(text) { $("status").textContent = text; }

async function loadVersions() {
  const versions = await getJSON("/versions");
  const select = $("version");
  select.innerHTML = "";
  for (const v of versions.slice().reverse()) {
    const o = document.createElement("option");
    o.value = v.version;
    o.textContent = `${v.version} (${v.model_name})`;
    select.appendChild(o);
  }
}

function fill(select, names) {
  for (const name of names) {
    const o = document.createElement("option");
    o.value = o.textContent = name;
    select.appendChild(o);
  }
}

async function loadFindings() {
  const names = (await getJSON("/findings")).map((f) => f.finding);
  for (const id of ["present", "absent", "map-colour"]) fill($(id), names);
  return names;
}

// The finding a text names (case-insensitive), else "".
function findingOf(text) {
  const t = text.trim().toLowerCase();
  return [...$("map-colour").options].map((o) => o.value).find((f) => f && f.toLowerCase() === t) || "";
}

async function search(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({ text: $("search").value.trim(), k: $("k").value });
  // the structured filters of /query; the server builds the query, the page sends names only
  for (const name of ["split", "view", "present", "absent", "version"]) if ($(name).value) params.set(name, $(name).value);
  status("searching…");
  try {
    const hits = await getJSON("/query?" + params);
    showResults(hits);
    const named = findingOf(params.get("text"));
    if (named) $("map-colour").value = named;
    mapSignals({ finding: $("map-colour").value, hits: hits.map((h) => h.image_id) });
    status(`${hits.length} result(s) for “${params.get("text")}”`);
  } catch (err) {
    status("error: " + err.message);
  }
}

function showResults(hits) {
  const grid = $("results");
  grid.innerHTML = "";
  for (const h of hits) {
    const card = document.createElement("div");
    card.className = "card";
    card.dataset.imageId = h.image_id;
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = h.image_id;
    img.src = withToken(`/images/${encodeURIComponent(h.image_id)}/thumbnail?size=192`);
    const text = document.createElement("div");
    text.innerHTML = `<div>#${h.rank} ${h.image_id}</div><div>score ${h.score.toFixed(3)} · ${h.view || "?"}</div>`;
    const labels = document.createElement("div");
    labels.className = "labels";
    labels.textContent = h.labels || "no finding";
    card.append(img, text, labels);
    card.addEventListener("click", () => openDetail(h.image_id));
    grid.appendChild(card);
  }
}

async function openDetail(imageId) {
  const d = await getJSON(`/images/${encodeURIComponent(imageId)}`);
  $("detail").hidden = false;
  $("detail-title").textContent = imageId;
  $("detail-image").src = withToken(`/images/${encodeURIComponent(imageId)}/thumbnail?size=512`);
  const svg = $("boxes");
  svg.setAttribute("viewBox", `0 0 ${d.width || 1} ${d.height || 1}`);
  svg.innerHTML = "";
  for (const b of d.boxes) {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    r.setAttribute("x", b.x_min); r.setAttribute("y", b.y_min);
    r.setAttribute("width", b.x_max - b.x_min); r.setAttribute("height", b.y_max - b.y_min);
    r.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(r);
  }
  const positive = Object.keys(d.labels).filter((f) => d.labels[f] === 1);
  const query = $("search").value.trim().toLowerCase();
  const findings = Object.keys(d.labels);
  const select = $("finding");
  select.innerHTML = "";
  for (const f of findings) {
    const o = document.createElement("option");
    o.value = o.textContent = f;
    select.appendChild(o);
  }
  select.value = findings.find((f) => f.toLowerCase() === query) || positive[0] || findings[0] || "";
  showOverlay();
  const meta = $("meta");
  meta.innerHTML = "";
  for (const [k, v] of [["split", d.split], ["view", d.view], ["study", d.study_id],
                        ["positive findings", positive.join(", ") || "none"], ["boxes", d.boxes.length]]) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v ?? "";
    meta.append(dt, dd);
  }
  $("report").textContent = [d.findings, d.impression].filter(Boolean).join("\n\n");
  $("detail").scrollIntoView();
}

function showOverlay() {
  const id = $("detail-title").textContent;
  const finding = $("finding").value;
  if (!id || !finding) return;
  const params = new URLSearchParams({ finding });
  if ($("version").value) params.set("version", $("version").value);
  $("overlay").src = withToken(`/explain/${encodeURIComponent(id)}?${params}`);
}

// ---- the embedding map: the version's stored 2-D projection (/map), drawn by vega-embed -----
let vegaReady = null;
let mapView = null;
let mapHits = [];

function loadVega() {
  vegaReady = vegaReady || new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = withToken("/static/vega.js");
    script.onload = resolve;
    script.onerror = () => reject(new Error("could not load /static/vega.js"));
    document.head.appendChild(script);
  });
  return vegaReady;
}

function mapSpec(points) {
  const positive = "finding && indexof(', ' + datum.labels + ', ', ', ' + finding + ', ') >= 0";
  const hit = "indexof(hits, datum.image_id) >= 0";
  return {
    width: 340, height: 300, background: null,
    params: [{ name: "finding", value: $("map-colour").value }, { name: "hits", value: mapHits }],
    data: { values: points },
    transform: [{ calculate: `${positive} ? 'positive' : 'other'`, as: "status" },
                { calculate: `${hit} ? 1 : 0`, as: "hit" }],
    mark: { type: "circle", cursor: "pointer" },
    encoding: {
      x: { field: "x", type: "quantitative", axis: { title: null, labels: false, ticks: false } },
      y: { field: "y", type: "quantitative", axis: { title: null, labels: false, ticks: false } },
      color: { field: "status", type: "nominal", legend: { orient: "bottom", title: null },
               scale: { domain: ["positive", "other"], range: ["#d62728", "#9fb0c2"] } },
      size: { condition: { test: hit, value: 110 }, value: 40 },
      stroke: { condition: { test: hit, value: "#111" }, value: null },
      opacity: { condition: { test: "datum.status == 'positive'", value: 0.9 }, value: 0.55 },
      order: { field: "hit", type: "quantitative" },
      // not titled "image": vega-tooltip shows a value titled so as an <img src=value>
      tooltip: [{ field: "image_id", title: "image id" }, { field: "labels" }, { field: "split" }, { field: "view" }],
    },
  };
}

async function loadMap() {
  const params = new URLSearchParams({ method: $("map-method").value, limit: "2000" });
  if ($("version").value) params.set("version", $("version").value);
  $("map-status").textContent = "loading the map…";
  try {
    const [points] = await Promise.all([getJSON("/map?" + params), loadVega()]);
    if (mapView) { mapView.finalize(); mapView = null; }
    $("map").innerHTML = "";
    if (!points.length) {
      const v = $("version").value || "the version";
      $("map-status").textContent = `no projection stored for ${v}: run \`embedstore separability --version ${v}\``;
      return;
    }
    const result = await vegaEmbed("#map", mapSpec(points), { renderer: "svg", mode: "vega-lite", actions: false });
    mapView = result.view;
    window.embedstoreMap = mapView; // for tests and the console
    mapView.addEventListener("click", (_event, item) => {
      if (item && item.datum && item.datum.image_id) openDetail(item.datum.image_id);
    });
    const sample = points.length === Number(params.get("limit")) ? " (a seeded sample)" : "";
    $("map-status").textContent = `${points.length} test images${sample}; click a point to open it`;
  } catch (err) {
    $("map-status").textContent = "map: " + err.message;
  }
}

function mapSignals({ finding, hits }) {
  if (hits !== undefined) mapHits = hits;
  if (!mapView) return;
  if (finding !== undefined) mapView.signal("finding", finding);
  mapView.signal("hits", mapHits).runAsync();
}

$("search-form").addEventListener("submit", search);
$("finding").addEventListener("change", showOverlay);
$("close").addEventListener("click", () => { $("detail").hidden = true; });
$("version").addEventListener("change", loadMap);
$("map-method").addEventListener("change", loadMap);
$("map-colour").addEventListener("change", () => mapSignals({ finding: $("map-colour").value }));
Promise.all([loadVersions(), loadFindings()]).then(loadMap).catch((err) => status("error: " + err.message));
