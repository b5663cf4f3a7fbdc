// frugalvl app: exemplars drawn on the map (docs/app.md#exemplars). A drag draws a box; clicks place the
// corners of a polygon and a double-click (or Enter) closes it; Escape stops drawing. The server keeps them
// per session and image (routes/exemplars.py) and every run on the image uses them.
// Hooks into app.js: the events "frugalvl:ready" and "frugalvl:image", and state.drawing (no score popups).
"use strict";

const ex = { image: null, layer: null, mode: null, points: [], shape: null, guide: null, list: [] };

function exButtons() {
  $("ex-box").classList.toggle("active", ex.mode === "box");
  $("ex-polygon").classList.toggle("active", ex.mode === "polygon");
  const hints = { box: "Drag on the map to draw a box (Escape: stop).",
                  polygon: "Click the corners; double-click or Enter closes the polygon (Escape: stop)." };
  $("ex-hint").textContent = hints[ex.mode] || "";
  document.body.dataset.drawing = ex.mode || "";
}

function exStop() {
  const map = state.map;
  if (ex.shape) map.removeLayer(ex.shape);
  if (ex.guide) map.removeLayer(ex.guide);
  ex.shape = ex.guide = null; ex.points = []; ex.mode = null;
  state.drawing = false;
  if (map) { map.dragging.enable(); map.doubleClickZoom.enable(); map.getContainer().style.cursor = ""; }
  exButtons();
}

function exStart(mode) {
  if (!ex.image) { showMessage("open an image first, then draw examples on it"); return; }
  if (!$("ex-class").value.trim()) { showMessage("pick or type the class of the example first"); $("ex-class").focus(); return; }
  const again = ex.mode === mode;
  exStop();
  if (again) return;  // the button again: stop drawing
  showMessage("");
  ex.mode = mode; state.drawing = true;
  state.map.doubleClickZoom.disable();
  if (mode === "box") state.map.dragging.disable();
  state.map.getContainer().style.cursor = "crosshair";
  exButtons();
}

function exStyle(e) {
  return { pane: "exemplars", color: e.positive ? e.colour : "#d7191c", weight: 3, fillOpacity: e.positive ? 0.15 : 0.05,
           dashArray: e.positive ? null : "5 4" };
}

function exMapEvents(map) {
  map.createPane("exemplars").style.zIndex = 450;  // above the result layer, below popups
  ex.layer = L.layerGroup().addTo(map);
  map.on("mousedown", (e) => {
    if (ex.mode !== "box") return;
    ex.points = [e.latlng];
    ex.shape = L.rectangle([e.latlng, e.latlng], { pane: "exemplars", weight: 2, dashArray: "3 3" }).addTo(map);
  });
  map.on("mousemove", (e) => {
    if (ex.mode === "box" && ex.shape) ex.shape.setBounds([ex.points[0], e.latlng]);
    if (ex.mode === "polygon" && ex.points.length) {
      const line = [...ex.points, e.latlng];
      if (ex.guide) ex.guide.setLatLngs(line); else ex.guide = L.polyline(line, { pane: "exemplars", dashArray: "3 3" }).addTo(map);
    }
  });
  map.on("mouseup", (e) => {
    if (ex.mode !== "box" || !ex.shape) return;
    const a = ex.points[0], b = e.latlng;
    exSave("box", [[a.lat, a.lng], [b.lat, b.lng]]);
  });
  map.on("click", (e) => {
    if (ex.mode !== "polygon") return;
    const last = ex.points[ex.points.length - 1];
    if (last && map.latLngToContainerPoint(last).distanceTo(e.containerPoint) < 4) return;  // a double-click's clicks
    ex.points.push(e.latlng);
    if (ex.shape) ex.shape.setLatLngs(ex.points); else ex.shape = L.polygon(ex.points, { pane: "exemplars", weight: 2 }).addTo(map);
  });
  map.on("dblclick", exClosePolygon);
}

function exClosePolygon() {
  if (ex.mode !== "polygon") return;
  if (ex.points.length < 3) { showMessage("a polygon needs three corners at least: click around the example"); return; }
  exSave("polygon", ex.points.map((p) => [p.lat, p.lng]));
}

async function exSave(kind, points) {
  const body = { class: $("ex-class").value, positive: !$("ex-negative").checked, kind, points };
  exStop();  // one shape per click on a drawing button
  try { exShow(await postJSON(`/api/images/${ex.image.id}/exemplars`, body)); showMessage(""); }
  catch (err) { showMessage(err.message); }
}

async function exDelete(id) {
  try { exShow(await api(`/api/images/${ex.image.id}/exemplars/${id}`, { method: "DELETE" })); }
  catch (err) { showMessage(err.message); }
}

function exShow(listing) {
  ex.list = listing.exemplars;
  ex.layer.clearLayers();
  const list = $("ex-list");
  list.innerHTML = "";
  for (const e of ex.list) {
    const label = e.class + (e.positive ? "" : " (not this)");
    L.polygon(e.rings, exStyle(e)).bindTooltip(label).addTo(ex.layer);
    const li = document.createElement("li");
    li.innerHTML = `<span class="swatch"></span> <span class="name"></span> <button type="button" title="delete">✕</button>`;
    li.querySelector(".swatch").style.background = e.positive ? e.colour : "transparent";
    li.querySelector(".swatch").style.borderColor = e.positive ? "#333" : "#d7191c";
    li.querySelector(".name").textContent = label;
    li.dataset.id = e.id;
    li.querySelector("button").onclick = () => exDelete(e.id);
    list.appendChild(li);
  }
  $("ex-download").hidden = !ex.list.length;
  $("ex-download").href = listing.download;
  $("ex-count").textContent = ex.list.length ? `(${ex.list.length})` : "";
  exClasses();
}

function exClasses() {  // the vocabulary's classes (first synonym) and those of the exemplars, for the class box
  const names = $("vocabulary").value.replace(/\n/g, ";").split(";").map((c) => c.split(",")[0].trim()).filter(Boolean);
  const all = [...new Set([...names, ...ex.list.map((e) => e.class)])];
  const dl = $("ex-classes");
  dl.innerHTML = "";
  for (const n of all) option(dl, n, n);
}

document.addEventListener("frugalvl:image", async (event) => {
  ex.image = event.detail;
  ex.mode = null; ex.points = []; ex.shape = ex.guide = null; state.drawing = false;
  exMapEvents(state.map);  // app.js made a new map for the image
  exButtons();
  try { sessionStorage.setItem("frugalvl.image", ex.image.id); } catch (err) { /* storage off: no restore */ }
  try { exShow(await api(`/api/images/${ex.image.id}/exemplars`)); } catch (err) { showMessage(err.message); }
});

document.addEventListener("frugalvl:ready", async () => {
  $("ex-box").onclick = () => exStart("box");
  $("ex-polygon").onclick = () => exStart("polygon");
  $("ex-class").onfocus = exClasses;
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && ex.mode) exStop();
    if (e.key === "Enter" && ex.mode === "polygon") exClosePolygon();
  });
  let id = null;
  try { id = sessionStorage.getItem("frugalvl.image"); } catch (err) { return; }
  if (!id || state.image) return;
  let info;  // a page reload: the session still holds the image, and its exemplars
  try { info = await api(`/api/images/${encodeURIComponent(id)}`); } catch (err) { return; }
  if (!state.image) openImage(Promise.resolve(info));
});
