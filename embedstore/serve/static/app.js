// The embedstore page: search, a grid of results, a detail view with boxes and a Grad-CAM overlay.
// Talks only to the server that served it; no network beyond it.
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

async function search(event) {
  if (event) event.preventDefault();
  const params = new URLSearchParams({ text: $("search").value.trim(), k: $("k").value });
  for (const name of ["split", "view", "version"]) if ($(name).value) params.set(name, $(name).value);
  status("searching…");
  try {
    const hits = await getJSON("/query?" + params);
    showResults(hits);
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

$("search-form").addEventListener("submit", search);
$("finding").addEventListener("change", showOverlay);
$("close").addEventListener("click", () => { $("detail").hidden = true; });
loadVersions().catch((err) => status("error: " + err.message));
