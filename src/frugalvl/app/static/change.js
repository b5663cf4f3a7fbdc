// frugalvl app: change between two dates (docs/app.md#change-between-two-dates). Loaded after app.js,
// whose helpers it uses ($, api, postJSON, showMessage, seconds, newMap, clearResult, state); it adds its own
// panel, the swipe between the two dates and the change layer. No framework, Leaflet only.
"use strict";

const change = { images: new Map(), run: null, tracking: null, poll: null, layer: null, ratio: 0.5, swipe: null };

const CHANGE_FILES = {
  change: "change GeoTIFF", overlay: "overlay PNG", polygons: "polygons (GeoPackage)", transitions: "transitions CSV",
  record: "run record", fromto: "from→to GeoTIFF", before_labels: "first date labels", after_labels: "second date labels",
};

function changePanel() {
  const section = document.createElement("section");
  section.id = "change-section";
  section.innerHTML = `
    <h2>4 · Change between two dates</h2>
    <div class="muted">Open both dates above (sample, upload or server path), then pick them here. SegEarth-OV3 uses
      the classes, preset, prob_thd and SAM 3 of section 2 (none given: LEVIR-CD's background;building).</div>
    <label>First date <select id="change-before"></select></label>
    <label>Second date <select id="change-after"></select></label>
    <details><summary>Change settings</summary>
      <label>instance_iou_threshold <input id="instance_iou_threshold" type="number" step="0.05" min="0" max="1"
        placeholder="preset / 0.3"></label>
      <label>min_instance_area (px) <input id="min_instance_area" type="number" step="1" min="0"
        placeholder="preset / 0"></label>
    </details>
    <label><input id="change-semantic" type="checkbox" checked> what changed into what (from→to)</label>
    <div class="row"><button id="change-run" type="button" class="primary">Detect change</button>
      <button id="change-cancel" type="button" disabled>Cancel</button></div>
    <progress id="change-progress" max="1" value="0" hidden></progress>
    <div id="change-state" class="muted" aria-live="polite"></div>`;
  const result = document.createElement("section");
  result.id = "change-result";
  result.hidden = true;
  result.innerHTML = `
    <h2>Change</h2>
    <div id="change-downloads"></div>
    <div class="row">
      <label class="inline"><input type="radio" name="change-layer" value="change" checked> change</label>
      <label class="inline"><input type="radio" name="change-layer" value="fromto"> from→to</label></div>
    <label>Opacity <input id="change-opacity" type="range" min="0" max="1" step="0.05" value="0.8"></label>
    <div id="change-summary" class="muted"></div>
    <table id="change-table"><thead><tr><th></th><th>from</th><th>to</th><th>area</th></tr></thead><tbody></tbody></table>
    <div class="muted">Drag the slider on the map: the first date left of it, the second right.</div>`;
  const anchor = $("result");
  anchor.parentNode.insertBefore(section, anchor);
  anchor.parentNode.insertBefore(result, anchor.nextSibling);
  $("change-run").onclick = startChange;
  $("change-cancel").onclick = cancelChange;
  $("change-opacity").oninput = () => change.layer && change.layer.setOpacity(+$("change-opacity").value);
  for (const r of document.querySelectorAll("input[name=change-layer]")) r.onchange = () => setChangeLayer(r.value);
}

// every image the page opens (app.js announces it) can be a date
function rememberImage(info) {
  change.images.set(info.id, info);
  const label = `${info.name} (${info.width}×${info.height})`;
  for (const id of ["change-before", "change-after"]) {
    const o = document.createElement("option");
    o.value = info.id; o.textContent = label; $(id).appendChild(o);
  }
  const ids = [...change.images.keys()];
  $("change-after").value = info.id;
  $("change-before").value = ids.length > 1 ? ids[ids.length - 2] : info.id;
  $("change-result").hidden = true;  // the map now shows the new image
}

function changeOptions() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const text = (id) => ($(id).value.trim() === "" ? null : $(id).value.trim());
  return {
    before: $("change-before").value || null, after: $("change-after").value || null,
    vocabulary: $("vocabulary").value, preset: $("preset").value || null, prob_thd: num("prob_thd"),
    sam3: text("sam3"), instance_iou_threshold: num("instance_iou_threshold"),
    min_instance_area: num("min_instance_area"), semantic: $("change-semantic").checked,
  };
}

async function startChange() {
  const body = changeOptions();
  if (!body.before || !body.after) { showMessage("open two images first: the first and the second date"); return; }
  showMessage("");
  let run;
  try { run = await postJSON("/api/change", body); } catch (err) { showMessage(err.message); return; }
  change.tracking = run.id;
  $("change-run").disabled = true; $("change-cancel").disabled = false; $("change-progress").hidden = false;
  trackChange(run);
}

async function cancelChange() {
  if (!change.tracking) return;
  try { await postJSON(`/api/change/${change.tracking}/cancel`, {}); } catch (err) { showMessage(err.message); }
}

function trackChange(run) {
  if (run.id !== change.tracking) return;
  document.body.dataset.change = run.state;
  $("change-progress").max = run.total || 1; $("change-progress").value = run.done;
  const over = ["done", "failed", "cancelled"].includes(run.state);
  const labels = { queued: "waiting…", loading: "loading SAM 3…", running: `date ${run.done} of ${run.total} scored`,
                   writing: "writing the files…", done: `done in ${seconds(run.seconds)}`, cancelled: "cancelled",
                   failed: "failed" };
  $("change-state").textContent = (!over && run.phase) || labels[run.state] || run.state;
  if (over) {
    $("change-run").disabled = false; $("change-cancel").disabled = true; $("change-progress").hidden = true;
    if (run.state === "failed") showMessage(run.error);
    if (run.state === "done") showChange(run);
    return;
  }
  clearTimeout(change.poll);
  change.poll = setTimeout(async () => {
    try { trackChange(await api(`/api/change/${run.id}`)); } catch (err) {
      showMessage(err.message); $("change-run").disabled = false; $("change-cancel").disabled = true;
    }
  }, 400);
}

const pixelBounds = (info) => [[-info.height, 0], [0, info.width]];  // CRS.Simple: lat = -row, lng = col

function dateLayer(info, first, options) {
  if (info.georeferenced && first.georeferenced) {
    return L.tileLayer(`/api/images/${info.id}/tiles/{z}/{x}/{y}.png`, Object.assign({ maxZoom: 22, noWrap: true }, options));
  }  // a plain image: over the first date's footprint (same size: the same grid)
  return L.imageOverlay(`/api/images/${info.id}/image.png`, first.georeferenced ? first.bounds : pixelBounds(first), options);
}

function changeUrl(run, layer) {
  const first = change.images.get(run.image);
  return first.georeferenced ? `/api/change/${run.id}/tiles/{z}/{x}/{y}.png?layer=${layer}`
                             : `/api/change/${run.id}/image.png?layer=${layer}`;
}

function showChange(run) {
  const first = change.images.get(run.image), second = change.images.get(run.after);
  change.run = run;
  clearResult();  // the segmentation result belongs to the old map
  newMap(first.georeferenced);
  state.image = first;  // a segmentation run now covers the first date
  const map = state.map;
  map.createPane("change-after").style.zIndex = 250;  // above the first date (tile pane: 200)
  state.base = dateLayer(first, first, {}).addTo(map);
  dateLayer(second, first, { pane: "change-after" }).addTo(map);
  map.fitBounds(first.georeferenced ? first.bounds : pixelBounds(first));
  addSwipe(map, first, second);
  $("change-result").hidden = false;
  const fromto = document.querySelector("input[name=change-layer][value=fromto]");
  fromto.disabled = !run.semantic;
  const chosen = run.semantic && fromto.checked ? "fromto" : "change";
  document.querySelector(`input[name=change-layer][value=${chosen}]`).checked = true;
  setChangeLayer(chosen);
  changeTable(run);
  const links = $("change-downloads");
  links.innerHTML = "";
  for (const kind of Object.keys(CHANGE_FILES).filter((k) => run.files.includes(k))) {
    const a = document.createElement("a");
    a.href = `/api/change/${run.id}/download/${kind}`; a.textContent = `⬇ ${CHANGE_FILES[kind]}`;
    a.setAttribute("download", ""); a.id = `change-download-${kind}`;
    links.appendChild(a);
  }
  if (links.scrollIntoView) links.scrollIntoView({ block: "nearest" });
}

function setChangeLayer(name) {
  const run = change.run;
  if (!run || !state.map) return;
  if (change.layer) state.map.removeLayer(change.layer);
  delete document.body.dataset.changeLayer;
  const first = change.images.get(run.image);
  const opacity = +$("change-opacity").value;
  // above both dates, whatever the swipe (the second date's pane lies over the tile pane)
  change.layer = first.georeferenced ? L.tileLayer(changeUrl(run, name), { maxZoom: 22, noWrap: true, opacity,
                                                                        pane: "overlayPane" })
                                     : L.imageOverlay(changeUrl(run, name), pixelBounds(first), { opacity });
  change.layer.once("load", () => { document.body.dataset.changeLayer = name; });
  change.layer.addTo(state.map);
}

function changeTable(run) {
  const s = run.summary;
  const area = (ha, px) => (ha === null ? `${px.toLocaleString()} px` : `${ha.toLocaleString()} ha`);
  $("change-summary").textContent = `changed: ${area(s.ha, s.changed_pixels)} (${s.share}% of the pixels with data)`;
  const body = $("change-table").querySelector("tbody");
  body.innerHTML = "";
  $("change-table").hidden = !run.semantic;
  for (const t of run.transitions) {
    const tr = body.insertRow();
    tr.insertCell().innerHTML = `<span class="swatch" style="background:${t.colour}"></span>`;
    tr.insertCell().textContent = t.from;
    tr.insertCell().textContent = t.to;
    const cell = tr.insertCell();
    cell.className = "num"; cell.textContent = area(t.ha, t.pixels);
  }
}

// The swipe: the second date's pane is clipped to the right of a slider drawn across the map.
function addSwipe(map, first, second) {
  const box = L.DomUtil.create("div", "change-swipe", map.getContainer());
  box.innerHTML = `<div class="change-divider"></div><span class="change-tag left"></span>` +
                  `<span class="change-tag right"></span><input id="change-swipe" type="range" min="0" max="1" step="0.001">`;
  box.querySelector(".left").textContent = `◀ ${first.name}`;
  box.querySelector(".right").textContent = `${second.name} ▶`;
  const range = box.querySelector("input");
  range.value = change.ratio;
  L.DomEvent.disableClickPropagation(box);
  L.DomEvent.on(range, "mousedown touchstart pointerdown", L.DomEvent.stopPropagation);
  range.oninput = () => { change.ratio = +range.value; clipSecond(map); };
  map.on("move zoomend resize", () => clipSecond(map));
  map.on("unload", () => box.remove());  // app.js makes a new map for a new image
  change.swipe = box;
  clipSecond(map);
}

function clipSecond(map) {
  const pane = map.getPane("change-after");
  if (!pane) return;
  const size = map.getSize();
  const nw = map.containerPointToLayerPoint([0, 0]);
  const se = map.containerPointToLayerPoint(size);
  const x = map.containerPointToLayerPoint([size.x * change.ratio, 0]).x;
  pane.style.clip = `rect(${nw.y}px, ${se.x}px, ${se.y}px, ${x}px)`;
  const divider = change.swipe && change.swipe.querySelector(".change-divider");
  if (divider) divider.style.left = `${size.x * change.ratio}px`;
  document.body.dataset.swipe = change.ratio.toFixed(3);
}

document.addEventListener("frugalvl:image", (e) => rememberImage(e.detail));
changePanel();
