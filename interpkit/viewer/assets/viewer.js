// interpkit viewer: a grid of a store's samples with filters, sorting, a detail view and the view's
// state in the address. The data arrive through script tags (data/site.js, data/store-N.js) so the
// page works from file:// as well as from a server.
"use strict";

const viewer = { site: null, stores: [], shown: [], detail: null };

function interpkitSite(site) {
  viewer.site = site;
  site.stores.forEach((_, number) => {
    const script = document.createElement("script");
    script.src = `data/store-${number}.js`;
    document.body.appendChild(script);
  });
}

function interpkitStore(store) {
  viewer.stores[store.number] = store.columns;
  if (viewer.stores.filter(Boolean).length === viewer.site.stores.length) start();
}

const $ = (id) => document.getElementById(id);
const pad = (index) => String(index).padStart(6, "0");
const className = (index) => index === null || index === undefined ? "—"
  : (viewer.site.classes && viewer.site.classes[index] !== undefined ? viewer.site.classes[index] : String(index));
const number = (value) => value === null || value === undefined ? "—" : Number(value).toPrecision(4);

function option(select, value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  select.appendChild(element);
}

function start() {
  const { site } = viewer;
  const first = viewer.stores[0];
  const classes = new Set([...first.label, ...first.prediction].filter((c) => c !== null));
  for (const id of ["label", "prediction"]) {
    option($(id), "", "any");
    [...classes].sort((a, b) => a - b).forEach((c) => option($(id), String(c), className(c)));
  }
  option($("sort"), "index", "index");
  option($("sort"), "confidence", "confidence");
  option($("sort"), "concentration", "map concentration");
  option($("sort"), "score", "target score");
  site.stores.forEach((store, s) => store.metrics.forEach((metric) =>
    option($("sort"), `${s}:metric:${metric}`, site.stores.length > 1 ? `${metric} (${store.name})` : metric)));
  site.stores.forEach((store, s) => option($("store"), String(s), store.name));
  option($("store"), "image", "no map (images)");
  buildCards();
  readState();
  for (const id of ["label", "prediction", "correct", "sort", "direction", "store"]) {
    $(id).addEventListener("change", () => { update(); writeState(); });
  }
  $("close").addEventListener("click", () => closeDetail());
  $("previous").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => readState());
  viewer.ready = performance.now();  // when the grid is built (read by the benchmark)
}

function buildCards() {
  const grid = $("grid");
  const fragment = document.createDocumentFragment();
  for (let index = 0; index < viewer.site.length; index += 1) {
    const card = document.createElement("div");
    card.className = "card";
    card.tabIndex = 0;
    card.dataset.index = String(index);
    const image = document.createElement("img");
    image.loading = "lazy";
    image.decoding = "async";
    image.alt = `sample ${index}`;
    const caption = document.createElement("div");
    caption.className = "caption";
    card.append(image, caption);
    card.addEventListener("click", () => openDetail(index));
    fragment.appendChild(card);
  }
  grid.appendChild(fragment);
  viewer.cards = [...grid.children];
}

function wanted(index) {
  const columns = viewer.stores[0];
  const label = $("label").value;
  const prediction = $("prediction").value;
  const valid = columns.valid[index];
  if (label !== "" && String(columns.label[index]) !== label) return false;
  if (prediction !== "" && String(columns.prediction[index]) !== prediction) return false;
  const right = columns.label[index] !== null && columns.label[index] === columns.prediction[index];
  switch ($("correct").value) {
    case "right": return valid && right;
    case "wrong": return valid && columns.label[index] !== null && !right;
    case "failed": return !valid;
    default: return true;
  }
}

function sortValue(index) {
  const key = $("sort").value;
  if (key === "index") return index;
  const [store, column] = key.includes(":metric:") ? [Number(key.split(":")[0]), key.slice(key.indexOf(":") + 1)]
    : [Number($("store").value) || 0, key];
  const value = viewer.stores[store][column][index];
  return value === null || value === undefined ? null : value;
}

function update() {
  const direction = $("direction").value === "desc" ? -1 : 1;
  const chosen = [];
  for (let index = 0; index < viewer.site.length; index += 1) if (wanted(index)) chosen.push(index);
  const values = new Map(chosen.map((index) => [index, sortValue(index)]));
  chosen.sort((a, b) => {
    const x = values.get(a);
    const y = values.get(b);
    if (x === null || y === null) return x === y ? a - b : (x === null ? 1 : -1);  // missing values last
    return x === y ? a - b : (x < y ? -direction : direction);
  });
  viewer.shown = chosen;
  const store = $("store").value;
  const grid = $("grid");
  const columns = viewer.stores[store === "image" ? 0 : Number(store)];
  const fragment = document.createDocumentFragment();
  for (const card of viewer.cards) card.hidden = true;
  for (const index of chosen) {
    const card = viewer.cards[index];
    card.hidden = false;
    const valid = columns.valid[index];
    const wrong = valid && columns.label[index] !== null && columns.label[index] !== columns.prediction[index];
    card.classList.toggle("wrong", wrong);
    card.classList.toggle("failed", !valid);
    const source = store === "image" ? `images/${pad(index)}.jpg` : `maps/${store}/${pad(index)}.jpg`;
    const image = card.firstChild;
    if (image.getAttribute("src") !== source) image.setAttribute("src", source);
    const key = $("sort").value;
    const shownValue = key === "index" ? "" : ` · ${number(sortValue(index))}`;
    card.lastChild.textContent = `#${index} ${className(columns.label[index])} → ${className(columns.prediction[index])}`
      + ` (${number(columns.confidence[index])})${shownValue}`;
    fragment.appendChild(card);
  }
  grid.appendChild(fragment);  // the shown cards, in order, after the hidden ones
  $("count").textContent = `${chosen.length} of ${viewer.site.length} samples`;
}

function openDetail(index) {
  viewer.detail = index;
  const { site } = viewer;
  const first = viewer.stores[0];
  const file = site.files ? ` · ${site.files[index]}` : "";
  $("detail-title").textContent = `#${index}${file} · label ${className(first.label[index])}`;
  const panels = $("detail-panels");
  panels.replaceChildren();
  const figures = [["image", `images/${pad(index)}.jpg`, "image"]]
    .concat(site.stores.map((store, s) => [String(s), `maps/${s}/${pad(index)}.jpg`, store.name]));
  for (const [store, source, caption] of figures) {
    const figure = document.createElement("figure");
    const image = document.createElement("img");
    image.src = source;
    image.className = "detail-map";
    image.dataset.store = store;
    image.dataset.index = String(index);
    image.alt = caption;
    const text = document.createElement("figcaption");
    text.textContent = caption;
    figure.append(image, text);
    panels.appendChild(figure);
  }
  const table = $("detail-values");
  table.replaceChildren();
  const rows = [["", ...site.stores.map((store) => store.name)]];
  const names = ["prediction", "confidence", "target", "score", "concentration", "valid"];
  site.stores.forEach((store) => store.metrics.forEach((m) => { if (!names.includes(`metric:${m}`)) names.push(`metric:${m}`); }));
  for (const name of names) {
    rows.push([name.replace("metric:", ""), ...viewer.stores.map((columns) => {
      const value = columns[name] ? columns[name][index] : undefined;
      if (name === "target" || name === "prediction") return className(value);
      if (name === "valid") return value ? "yes" : `no: ${columns.failure[String(index)] || "failed"}`;
      return number(value);
    })]);
  }
  rows.forEach((cells, r) => {
    const row = table.insertRow();
    cells.forEach((cell) => {
      const element = document.createElement(r === 0 ? "th" : "td");
      element.textContent = cell;
      row.appendChild(element);
    });
  });
  $("detail").hidden = false;
  writeState();
}

function closeDetail() {
  const index = viewer.detail;
  viewer.detail = null;
  $("detail").hidden = true;
  writeState();
  if (index !== null) viewer.cards[index].focus();
}

function step(offset) {
  const position = viewer.shown.indexOf(viewer.detail);
  const next = viewer.shown[position + offset];
  if (next !== undefined) openDetail(next);
}

function onKey(event) {
  if (viewer.detail !== null) {
    if (event.key === "Escape") closeDetail();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    return;
  }
  const card = document.activeElement;
  if (!card || !card.classList || !card.classList.contains("card")) return;
  const position = viewer.shown.indexOf(Number(card.dataset.index));
  if (event.key === "Enter") openDetail(Number(card.dataset.index));
  else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const next = viewer.shown[position + (event.key === "ArrowRight" ? 1 : -1)];
    if (next !== undefined) { viewer.cards[next].focus(); event.preventDefault(); }
  }
}

const STATE = ["label", "prediction", "correct", "sort", "direction", "store"];

function writeState() {
  const state = new URLSearchParams();
  for (const id of STATE) state.set(id, $(id).value);
  if (viewer.detail !== null) state.set("detail", String(viewer.detail));
  const hash = `#${state.toString()}`;
  if (window.location.hash !== hash) history.replaceState(null, "", hash);
}

function readState() {
  const state = new URLSearchParams(window.location.hash.slice(1));
  for (const id of STATE) {
    const value = state.get(id);
    if (value !== null && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
  }
  update();
  const detail = Number.parseInt(state.get("detail"), 10);
  if (Number.isInteger(detail) && detail >= 0 && detail < viewer.site.length) openDetail(detail);
  else if (viewer.detail !== null) { viewer.detail = null; $("detail").hidden = true; }
}
