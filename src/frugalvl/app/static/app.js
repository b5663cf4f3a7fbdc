// frugalvl app: the page talks to the JSON API of frugalvl.app.server; no framework, Leaflet only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { config: null, image: null, map: null, base: null, layer: null, run: null, hidden: new Set(), poll: null,
                tracking: null };

// Messages stay in view: the box sticks to the top of the panel however far it is scrolled.
function showMessage(text, kind) {
  const box = $("message");
  box.textContent = text || "";
  box.className = kind || "";
  box.hidden = !text;
  if (text && box.scrollIntoView) box.scrollIntoView({ block: "nearest" });
}

const seconds = (s) => (s >= 10 ? `${Math.round(s)} s` : `${Number(s).toFixed(1)} s`);

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  } catch (err) {
    throw new Error("the app server does not answer: is `frugalvl app` still running?");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || body.detail || `${response.status} ${response.statusText}`);
  return body;
}

const postJSON = (path, data) => api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(data) });

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; select.appendChild(o);
}

async function init() {
  state.config = await api("/api/config");
  const c = state.config;
  for (const s of c.samples) option($("sample"), s, s);
  for (const p of c.presets) option($("preset"), p.name, p.title);
  for (const [k, v] of Object.entries(c.methods)) option($("method"), k, v);
  for (const m of c.attention_modes) option($("attention"), m, m);
  $("clip").value = c.defaults.clip; $("upsampler").value = c.defaults.upsampler; $("sam3").value = c.defaults.sam3;
  $("path-box").hidden = !c.server_paths;
  $("open-sample").onclick = () => openImage(postJSON("/api/images/sample", { name: $("sample").value }));
  $("open-path").onclick = () => openImage(postJSON("/api/images/path", { path: $("path").value }));
  $("upload").onchange = uploadFile;
  $("preset").onchange = applyPreset;
  $("method").onchange = () => { document.body.classList.toggle("ov3", $("method").value === "segearth-ov3"); applyPreset(); };
  $("run").onclick = startRun;
  $("cancel").onclick = cancelRun;
  $("opacity").oninput = () => state.layer && state.layer.setOpacity(+$("opacity").value);
  newMap(false);
  document.dispatchEvent(new CustomEvent("frugalvl:ready"));  // hook: exemplars.js
}

function applyPreset() {
  const p = state.config.presets.find((x) => x.name === $("preset").value);
  const m = p && p[$("method").value];
  if (!m) return;
  $("vocabulary").value = m.classes;
  $("prob_thd").value = m.prob_thd ?? "";
}

function newMap(geo) {
  if (state.map) state.map.remove();
  const opts = geo ? { maxZoom: 22 } : { crs: L.CRS.Simple, minZoom: -6, maxZoom: 6, zoomSnap: 0.25 };
  state.map = L.map("map", Object.assign({ attributionControl: false, fadeAnimation: false }, opts));
  state.map.setView([0, 0], geo ? 2 : 0);
  state.map.on("click", pixelScores);
  state.base = state.layer = null;
  document.dispatchEvent(new CustomEvent("frugalvl:map", { detail: state.map }));  // hook: static/sources.js
  if (geo) {
    L.control.scale({ imperial: false }).addTo(state.map);
    const basemap = state.config && state.config.basemap;
    if (basemap) {  // an XYZ server the operator chose (frugalvl app --basemap): fetched by this browser
      L.tileLayer(basemap, { maxZoom: 19, attribution: "basemap: " + new URL(basemap.replace(/[{}]/g, "")).host })
        .addTo(state.map);
      L.control.attribution({ prefix: false }).addTo(state.map);
    }
  }
}

async function uploadFile() {
  const file = $("upload").files[0];
  if (!file) return;
  const limit = state.config.max_upload_mb * 1048576;
  if (file.size > limit) {
    showMessage(`${file.name} is larger than this server accepts (${state.config.max_upload_mb} MB)`);
    return;
  }
  const form = new FormData();
  form.append("file", file);
  await openImage(api("/api/images/upload", { method: "POST", body: form }));
  $("upload").value = "";
}

async function openImage(request) {
  showMessage("Opening…", "info");
  let info;
  try { info = await request; } catch (err) { showMessage(err.message); return; }
  showMessage("");
  state.image = info;
  clearResult();
  newMap(info.georeferenced);
  if (info.georeferenced) {
    state.base = L.tileLayer(`/api/images/${info.id}/tiles/{z}/{x}/{y}.png`, { maxZoom: 22, noWrap: true }).addTo(state.map);
    state.map.fitBounds(info.bounds);
  } else {
    const b = [[-info.height, 0], [0, info.width]];
    state.base = L.imageOverlay(`/api/images/${info.id}/image.png`, b).addTo(state.map);
    state.map.fitBounds(b);
  }
  const size = `${info.width}×${info.height} px`;
  $("image-info").textContent = `${info.name}: ${size}` + (info.crs ? `, ${info.crs}` : ", not georeferenced");
  document.body.dataset.image = info.id;
  document.dispatchEvent(new CustomEvent("frugalvl:image", { detail: info }));  // other panels (change.js, exemplars.js) listen
}

function clearResult() {
  if (state.layer) state.map.removeLayer(state.layer);
  state.layer = null; state.run = null; state.hidden = new Set();
  $("result").hidden = true;
  delete document.body.dataset.layer;
}

function options() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const text = (id) => ($(id).value.trim() === "" ? null : $(id).value.trim());
  const bounds = state.map.getBounds();
  return {
    image: state.image && state.image.id, method: $("method").value, vocabulary: $("vocabulary").value,
    preset: $("preset").value || null, prob_thd: num("prob_thd"), cls_lambda: num("cls_lambda"),
    attention: $("attention").value || null, clip: text("clip"), upsampler: text("upsampler"), sam3: text("sam3"),
    area: document.querySelector("input[name=area]:checked").value,
    bounds: [[bounds.getSouth(), bounds.getWest()], [bounds.getNorth(), bounds.getEast()]],
  };
}

async function startRun() {
  if (!state.image) { showMessage("open an image first: a sample, an upload or a server path"); return; }
  showMessage("");
  let run;
  // a refused setting leaves the current result (and a run in progress) as they are
  try { run = await postJSON("/api/runs", options()); } catch (err) { showMessage(err.message); return; }
  state.tracking = run.id;  // the shown result stays until this run has succeeded
  $("run").disabled = true; $("cancel").disabled = false;
  $("progress").hidden = false;
  track(run);
}

async function cancelRun() {
  const id = state.tracking || (state.run && state.run.id);
  if (!id) return;
  try { await postJSON(`/api/runs/${id}/cancel`, {}); } catch (err) { showMessage(err.message); }
}

function track(run) {
  if (state.tracking && run.id !== state.tracking) return;  // an older run's answer
  document.body.dataset.run = run.state;
  $("progress").max = run.total || 1; $("progress").value = run.done;
  const labels = { queued: "waiting…", loading: "loading the model…", running: `tile ${run.done} of ${run.total}`,
                   writing: "writing the files…", done: `done in ${seconds(run.seconds)}`, cancelled: "cancelled",
                   failed: "failed" };
  // the library's phases (loading CLIP …, encoding 240 text prompts …, assembling …) when it reports one
  $("run-state").textContent = (!["done", "failed", "cancelled"].includes(run.state) && run.phase) || labels[run.state] || run.state;
  if (["done", "failed", "cancelled"].includes(run.state)) {
    $("run").disabled = false; $("cancel").disabled = true; $("progress").hidden = true;
    if (run.state === "failed") showMessage(run.error);
    if (run.state === "done") { clearResult(); showResult(run); }
    return;
  }
  clearTimeout(state.poll);
  state.poll = setTimeout(async () => {
    try { track(await api(`/api/runs/${run.id}`)); } catch (err) {
      showMessage(err.message); $("run").disabled = false; $("cancel").disabled = true;
    }
  }, 400);
}

function resultUrl(run) {
  const hide = [...state.hidden].join(",");
  return state.image.georeferenced ? `/api/runs/${run.id}/tiles/{z}/{x}/{y}.png?hide=${hide}`
                                   : `/api/runs/${run.id}/image.png?hide=${hide}`;
}

function showResult(run) {
  state.run = run;
  const opacity = +$("opacity").value;
  state.layer = state.image.georeferenced
    ? L.tileLayer(resultUrl(run), { maxZoom: 22, noWrap: true, opacity })
    : L.imageOverlay(resultUrl(run), run.bounds, { opacity });
  state.layer.once("load", () => { document.body.dataset.layer = "ready"; });
  state.layer.addTo(state.map);
  if (run.notes && run.notes.length) showMessage(run.notes.join("; "), "info");
  const body = $("legend").querySelector("tbody");
  body.innerHTML = "";
  run.classes.forEach((c, i) => {
    const a = run.areas[i];
    const tr = document.createElement("tr");
    tr.innerHTML = `<td><input type="checkbox" checked data-class="${i}"></td>` +
      `<td><span class="swatch" style="background:${c.colour}"></span> <span class="name"></span></td>` +
      `<td class="num">${a.share}%</td><td class="num">${a.ha === null ? "–" : a.ha.toLocaleString()}</td>`;
    tr.querySelector(".name").textContent = c.name;
    tr.querySelector("input").onchange = (e) => toggleClass(i, e.target.checked, tr);
    body.appendChild(tr);
  });
  const links = $("downloads");
  links.innerHTML = "";
  const names = { labels: "label raster", vectors: "vectors (GeoPackage)", overlay: "overlay PNG" };
  for (const kind of run.files) {
    const a = document.createElement("a");
    a.href = `/api/runs/${run.id}/download/${kind}`; a.textContent = `⬇ ${names[kind] || kind}`;
    a.setAttribute("download", ""); a.id = `download-${kind}`;
    links.appendChild(a);
  }
  $("pixel").textContent = "Click the map to see every class's score there.";
  $("result").hidden = false;
  if (links.scrollIntoView) links.scrollIntoView({ block: "nearest" });  // the downloads in view, no scrolling
}

function toggleClass(index, on, row) {
  if (on) state.hidden.delete(index); else state.hidden.add(index);
  row.classList.toggle("off", !on);
  if (state.layer) state.layer.setUrl(resultUrl(state.run));
}

async function pixelScores(e) {
  if (!state.run || !state.layer || state.drawing) return;  // drawing: exemplars.js has the clicks
  let r;
  try { r = await api(`/api/runs/${state.run.id}/scores?lat=${e.latlng.lat}&lng=${e.latlng.lng}`); }
  catch (err) { showMessage(err.message); return; }
  const box = $("pixel");
  if (!r.inside) { box.textContent = "That point is outside the segmented area."; return; }
  const best = Math.max(...r.scores.map((s) => s.score));
  box.innerHTML = `<b>row ${r.row}, col ${r.col}</b>: <span class="lbl"></span><table></table>`;
  box.querySelector(".lbl").textContent = r.label_name;
  const table = box.querySelector("table");
  for (const s of r.scores) {
    const tr = table.insertRow();
    tr.insertCell().textContent = s.name;
    const cell = tr.insertCell();
    cell.textContent = s.score.toFixed(3);
    if (s.score === best) cell.style.fontWeight = "bold";
  }
}

window.addEventListener("error", (e) => showMessage(`page error: ${e.message}`));
init().catch((err) => showMessage(err.message));
