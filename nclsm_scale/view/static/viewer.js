// nclsm-scale view: OpenSeadragon over the run's OME-Zarr pyramids, fibre outlines by class, class edits.
"use strict";

const SLIDE = decodeURIComponent(location.pathname.replace(/^\/slide\//, ""));
const ENC = encodeURIComponent(SLIDE);
const $ = (id) => document.getElementById(id);
const MAIN_COLUMNS = [
  ["fibre_id", "fibre"], ["curation_class", "class"], ["reasons", "reasons"], ["confidence", "confidence"],
  ["not_judged", "not judged"], ["overridden", "overridden"], ["area_um2", "CSA (µm²)"],
  ["feret_min_um", "min Feret (µm)"], ["feret_max_um", "max Feret (µm)"], ["perimeter_um", "perimeter (µm)"],
  ["solidity", "solidity"], ["circularity", "circularity"], ["ellipse_aspect_ratio", "aspect ratio"],
  ["fold_fraction", "fold fraction"], ["fibre_type", "fibre type"],
];
const FILL_ALPHA = 56;
const SUMMARY_COLUMNS = ["n_fibres", "n_analysable", "pct_analysable", "n_overridden"];
const SUMMARY_TAIL = ["csa_um2_mean", "csa_um2_median", "feret_min_um_mean", "feret_min_um_median", "qc_flag"];

let info = null;
let viewer = null;
let selected = null;
let version = 0;
const hidden = new Set();
const hiddenReasons = new Set();

function fmt(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  return String(v);
}

function esc(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
}

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
                                          headers: {"Content-Type": "application/json"}};
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function status(text) { $("status").textContent = text; }

// -- tile sources: OpenSeadragon level L is pyramid level maxLevel - L ---------------------------------------------

function tileSource(layer) {
  const maxLevel = Math.ceil(Math.log2(Math.max(info.width, info.height)));
  return {
    width: info.width, height: info.height, tileSize: info.tile_px, tileOverlap: 0,
    minLevel: maxLevel - (info.levels.length - 1), maxLevel: maxLevel,
    getTileUrl: (level, x, y) => `/tiles/${ENC}/${layer}/${maxLevel - level}/${x}_${y}.`
      + `${layer === "image" ? info.image_ext : "png"}?${layerQuery(layer)}`,
  };
}

function layerQuery(layer) {
  if (layer === "image") {
    const on = info.channels.filter((c) => c.shown).map((c) => c.index);
    return `channels=${on.join(",")}`;
  }
  if (layer === "fibres") {
    const fill = $("fill-fibres").checked ? FILL_ALPHA : 0;
    return `hide=${[...hidden].join(",")}&hide_reasons=${[...hiddenReasons].join(",")}&fill=${fill}&v=${version}`;
  }
  return `v=${version}`;
}

function reloadLayer(index, layer) {
  const item = viewer.world.getItemAt(index);
  const opacity = item ? item.getOpacity() : 1;
  viewer.addTiledImage({tileSource: tileSource(layer), index: index, replace: true, opacity: opacity});
}

// -- side panel ------------------------------------------------------------------------------------------------

function renderClasses() {
  $("classes").innerHTML = info.classes.map((c) =>
    `<tr title="${esc(c.meaning)}"><td><label><input type="checkbox" data-class="${c.code}"
      ${hidden.has(c.code) ? "" : "checked"}> <i class="sw" style="background:rgb(${c.rgb})"></i>${c.code}</label></td>
      <td class="n" data-count="${c.code}">${c.n}</td><td class="meta">${esc(c.meaning)}</td></tr>`).join("");
  $("reasons").innerHTML = info.classes.filter((c) => c.code !== "AM" && c.code !== "QC").map((c) =>
    `<label title="${esc(c.meaning)}"><input type="checkbox" data-reason="${c.code}"
      ${hiddenReasons.has(c.code) ? "" : "checked"}> ${c.code} (${c.n_reason})</label>`).join("");
  $("class-select").innerHTML = info.classes.map((c) => `<option value="${c.code}">${c.code}: ${esc(c.meaning)}</option>`).join("");
}

function renderChannels() {
  $("channels").innerHTML = info.channels.map((c) =>
    `<label><input type="checkbox" data-channel="${c.index}" ${c.shown ? "checked" : ""}>
      <i class="sw" style="background:rgb(${c.rgb})"></i>${esc(c.name)}</label>`).join("");
}

function renderSummary() {
  const s = info.summary;
  const cols = [...SUMMARY_COLUMNS, ...info.classes.map((c) => `n_${c.code}`), ...SUMMARY_TAIL];
  $("summary").innerHTML = cols.filter((k) => k in s).map((k) =>
    `<tr><td>${k}</td><td class="n" data-col="${k}">${esc(fmt(s[k]))}</td></tr>`).join("");
  const edited = info.edited || [];
  $("pending").innerHTML = edited.length
    ? `<span class="pending">Edited, not yet in the tables: ${edited.map(esc).join(", ")}.</span>`
    : "Tables are up to date.";
  $("reaggregate").disabled = edited.length === 0;
}

function renderFibre(f) {
  if (!f) { $("fibre").textContent = "No fibre here."; $("edit").hidden = true; return; }
  const main = MAIN_COLUMNS.filter(([k]) => k in f).map(([k, label]) =>
    `<tr><td>${label}</td><td data-col="${k}">${esc(fmt(f[k]))}</td></tr>`).join("");
  const rest = Object.keys(f).filter((k) => !MAIN_COLUMNS.some(([m]) => m === k)).map((k) =>
    `<tr><td>${esc(k)}</td><td>${esc(fmt(f[k]))}</td></tr>`).join("");
  $("fibre").innerHTML = `<table>${main}</table><details><summary>all columns</summary><table>${rest}</table></details>`;
  $("class-select").value = f.curation_class;
  $("reasons-input").value = "";
  $("edit").hidden = false;
}

async function refreshInfo() {
  const old = info;
  info = await api(`/api/${ENC}/info`);
  if (old) info.channels = old.channels;  // keep the page's channel choice
  renderClasses();
  renderSummary();
}

// -- fibres under the pointer ------------------------------------------------------------------------------------

function imagePoint(position) {
  const p = viewer.world.getItemAt(0).viewerElementToImageCoordinates(position);
  return {x: Math.floor(p.x), y: Math.floor(p.y)};
}

async function fibreAt(p) {
  if (p.x < 0 || p.y < 0 || p.x >= info.width || p.y >= info.height) return null;
  return (await api(`/api/${ENC}/fibre?x=${p.x}&y=${p.y}`)).fibre;
}

async function select(p) {
  try {
    selected = await fibreAt(p);
    renderFibre(selected);
  } catch (e) { status(e.message); }
}

let hoverTimer = null;
function hover(event) {
  clearTimeout(hoverTimer);
  const tip = $("tip");
  const p = imagePoint(event.position);
  const um = info.pixel_size_um;
  $("where").textContent = `x ${p.x}, y ${p.y} px` + (um ? ` (${(p.x * um).toFixed(1)}, ${(p.y * um).toFixed(1)} µm)` : "");
  hoverTimer = setTimeout(async () => {
    let f = null;
    try { f = await fibreAt(p); } catch (e) { f = null; }
    if (!f) { tip.hidden = true; return; }
    tip.innerHTML = `#${f.fibre_id} <b>${esc(f.curation_class)}</b>` + (f.reasons ? ` (${esc(f.reasons)})` : "") +
      ` · CSA ${fmt(f.area_um2)} µm² · min Feret ${fmt(f.feret_min_um)} µm`;
    const r = viewer.element.getBoundingClientRect();
    tip.style.left = `${r.left + event.position.x + 14}px`;
    tip.style.top = `${r.top + event.position.y + 14}px`;
    tip.hidden = false;
  }, 120);
}

// -- edits -------------------------------------------------------------------------------------------------------

async function setClass(code) {
  if (!selected) return;
  const reasons = $("reasons-input").value.trim();
  try {
    const r = await api(`/api/${ENC}/class`, {fibre_id: selected.fibre_id, class: code,
                                               reasons: reasons === "" ? null : reasons});
    status(code === null ? `fibre ${r.fibre_id}: override forgotten` : `fibre ${r.fibre_id} set to ${code}`);
    version += 1;
    reloadLayer(2, "fibres");
    await refreshInfo();
    selected = (await api(`/api/${ENC}/fibre?x=${Math.round(selected.centroid_x_px)}&y=${Math.round(selected.centroid_y_px)}`)).fibre || selected;
    renderFibre(selected);
  } catch (e) { status(e.message); }
}

async function reaggregate() {
  $("reaggregate").disabled = true;
  status("re-aggregating: curate of the edited slides, then aggregate ...");
  try {
    const r = await api("/api/reaggregate", {});
    version += 1;
    reloadLayer(1, "folds");
    reloadLayer(2, "fibres");
    await refreshInfo();
    status(`re-aggregated ${r.slides.join(", ")} in ${r.seconds.toFixed(1)} s`);
  } catch (e) { status(e.message); renderSummary(); }
}

// -- start -------------------------------------------------------------------------------------------------------

async function start() {
  await refreshInfo();
  renderChannels();
  $("slide-select").innerHTML = info.slides.map((s) => `<option ${s === SLIDE ? "selected" : ""}>${esc(s)}</option>`).join("");
  $("slide-select").onchange = (e) => { location.href = `/slide/${encodeURIComponent(e.target.value)}`; };
  document.title = `${SLIDE} · nclsm-scale view`;
  viewer = OpenSeadragon({
    id: "osd", prefixUrl: "/static/openseadragon/images/",
    tileSources: [tileSource("image"), tileSource("folds"), tileSource("fibres")],
    showNavigator: true, maxZoomPixelRatio: 8, visibilityRatio: 0.5,
    drawer: "canvas",  // exact alpha blending of the transparent overlay tiles
    gestureSettingsMouse: {clickToZoom: false},
  });
  viewer.addHandler("canvas-click", (e) => { if (e.quick) select(imagePoint(e.position)); });
  new OpenSeadragon.MouseTracker({element: viewer.canvas, moveHandler: hover,
                                  leaveHandler: () => { $("tip").hidden = true; }});
  $("side").addEventListener("change", (e) => {
    const t = e.target;
    if (t.dataset.class) { t.checked ? hidden.delete(t.dataset.class) : hidden.add(t.dataset.class); reloadLayer(2, "fibres"); }
    if (t.dataset.reason) {
      t.checked ? hiddenReasons.delete(t.dataset.reason) : hiddenReasons.add(t.dataset.reason);
      reloadLayer(2, "fibres");
    }
    if (t.dataset.channel) { info.channels[+t.dataset.channel].shown = t.checked; reloadLayer(0, "image"); }
    if (t.id === "fill-fibres") reloadLayer(2, "fibres");
    if (t.id === "show-folds") viewer.world.getItemAt(1).setOpacity(t.checked ? 1 : 0);
  });
  $("set-class").onclick = () => setClass($("class-select").value);
  $("forget-class").onclick = () => setClass(null);
  $("reaggregate").onclick = reaggregate;
  window.nclsmViewer = viewer;  // for scripted checks
}

start().catch((e) => status(e.message));
