// frugalvl app: remote sources (an image URL, a STAC item URL, an XYZ or WMTS address) read over an area into the
// session by POST /api/sources, then shown and segmented like any opened image (openImage in app.js).
"use strict";

(function () {
  const box = document.getElementById("sources-box");
  if (!box) return;
  box.innerHTML = `
    <label>Remote source <small>an image URL (COG), a STAC item URL, <code>xyz+https://…/{z}/{x}/{y}.png</code> or <code>wmts+https://…?layer=…</code></small>
      <input id="source-url" type="text" placeholder="https://…/item.json"></label>
    <label>Area W,S,E,N <small>(degrees; shift-drag a box on the map, or use the map view)</small>
      <span class="row"><input id="source-bbox" type="text" placeholder="2.29,48.85,2.30,48.86">
        <button id="source-view" type="button" title="the map's visible area">view</button></span></label>
    <span class="row">
      <label class="inline">Zoom <input id="source-zoom" type="number" min="0" max="24" step="1" placeholder="17"></label>
      <button id="source-preview" type="button" title="show an XYZ service's tiles on the map">Preview</button>
      <button id="source-open" type="button">Open area</button></span>`;
  const el = (id) => document.getElementById(id);
  const fmt = (v) => Number(v).toFixed(6).replace(/0+$/, "").replace(/\.$/, "");

  function setBbox(bounds) {
    el("source-bbox").value = [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()].map(fmt).join(",");
  }

  function bbox() {
    const text = el("source-bbox").value.trim();
    if (!text) return null;
    const values = text.split(",").map(Number);
    if (values.length !== 4 || values.some((v) => !Number.isFinite(v))) throw new Error("the area is four numbers W,S,E,N");
    return values;
  }

  // a box drawn with shift-drag on a geographic map is the area (the hook fires for every new map)
  document.addEventListener("frugalvl:map", (e) => {
    e.detail.on("boxzoomend", (z) => setBbox(z.boxZoomBounds));
  });

  el("source-view").onclick = () => {
    if (!state.map || state.map.options.crs === L.CRS.Simple) { showMessage("open or preview a georeferenced source first"); return; }
    setBbox(state.map.getBounds());
  };

  el("source-preview").onclick = () => {
    const url = el("source-url").value.trim();
    if (!url.startsWith("xyz+http")) { showMessage("a preview shows xyz+http(s) services; open STAC items and WMTS by area"); return; }
    showMessage("");
    newMap(true);
    L.tileLayer(url.slice(4), { maxZoom: 22, noWrap: true }).addTo(state.map);
    const b = (() => { try { return bbox(); } catch (err) { return null; } })();
    if (b) state.map.fitBounds([[b[1], b[0]], [b[3], b[2]]]);
  };

  el("source-open").onclick = () => {
    let area;
    try { area = bbox(); } catch (err) { showMessage(err.message); return; }
    const zoom = el("source-zoom").value === "" ? null : Number(el("source-zoom").value);
    openImage(postJSON("/api/sources", { source: el("source-url").value.trim(), bbox: area, zoom }));
  };
})();
