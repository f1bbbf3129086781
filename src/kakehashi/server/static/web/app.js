// Kakehashi's web page: predict on your own images and watch the server. Talks only to its own origin.
"use strict";

const $ = (selector) => document.querySelector(selector);
const KEY_STORAGE = "kakehashi-api-key";
const FRIENDLY = {
  401: "The server needs an API key: enter it at the top right.",
  404: "The server does not know this model or version (it may have been unloaded).",
  413: "The file is too large for this server.",
  415: "This is not an image the server can read (JPEG, PNG, WebP, BMP, GIF or TIFF).",
  429: "The server is busy; try again in a moment.",
  503: "The model is not ready (or the server is shutting down).",
};
let files = [];
let previous = null; // last status reading, for rates and window percentiles

function headers(extra = {}) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  return fetch(path, { ...options, headers: headers(options.headers) }); // relative: same origin only
}

async function errorText(response) {
  let detail = "";
  try { detail = (await response.json()).error || ""; } catch (_) { /* not JSON */ }
  const friendly = FRIENDLY[response.status] || "The server could not answer.";
  return detail ? `${friendly} (${response.status}: ${detail})` : `${friendly} (${response.status})`;
}

function showPageError(text) {
  const box = $("#page-error");
  box.textContent = text || "";
  box.hidden = !text;
}

// -- models -----------------------------------------------------------------------------------------------

async function loadModels() {
  const response = await api("/v2/repository/index", { method: "POST" });
  if (!response.ok) { showPageError(await errorText(response)); return; }
  showPageError("");
  const rows = await response.json();
  const ready = rows.filter((row) => row.state === "READY");
  const select = $("#model");
  const chosen = select.value;
  select.replaceChildren(...[...new Set(ready.map((row) => row.name))].map((name) => new Option(name, name)));
  if (chosen && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
  fillVersions(ready);
}

function fillVersions(ready) {
  const versions = ready.filter((row) => row.name === $("#model").value).map((row) => row.version);
  $("#version").replaceChildren(new Option("newest", ""), ...versions.map((v) => new Option(v, v)));
}

// -- predictions ------------------------------------------------------------------------------------------

function predictPath() {
  const model = encodeURIComponent($("#model").value);
  const version = $("#version").value;
  const base = version ? `/v1/models/${model}/versions/${encodeURIComponent(version)}` : `/v1/models/${model}`;
  const query = new URLSearchParams({ conf: $("#conf").value, iou: $("#iou").value });
  return `${base}/predict?${query}`;
}

async function predictAll() {
  if (!$("#model").value) { showPageError("No model is ready on this server yet."); return; }
  const results = $("#results");
  results.replaceChildren(...files.map(() => document.createElement("article")));
  await Promise.all(files.map((file, index) => predictOne(file, results.children[index])));
}

async function predictOne(file, card) {
  card.className = "card";
  const title = document.createElement("h3");
  title.textContent = file.name;
  card.append(title);
  const fail = (text) => {
    const error = document.createElement("p");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.textContent = `Could not predict ${file.name}: ${text}`;
    card.append(error);
  };
  let response;
  try {
    response = await api(predictPath(), {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
  } catch (_) { // the connection itself failed: e.g. the server refused a large upload and closed it
    fail("the server closed the connection before answering (is the file larger than it accepts?).");
    return;
  }
  if (!response.ok) { fail(await errorText(response)); return; }
  const image = (await response.json()).images[0];
  card.append(figure(file, image), detectionTable(image.results), timing(image.speed));
}

function figure(file, image) {
  const [height, width] = image.shape;
  const frame = document.createElement("div");
  frame.className = "frame";
  frame.style.cssText = `position: relative; display: inline-block; max-width: 100%; aspect-ratio: ${width} / ${height}`;
  const picture = document.createElement("img");
  picture.src = URL.createObjectURL(file);
  picture.alt = file.name;
  picture.style.cssText = "display: block; width: 100%; height: 100%; image-orientation: from-image";
  frame.append(picture);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.style.cssText = "position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none";
  frame.append(svg);
  image.results.forEach((result) => {
    if (!result.box) return;
    const colour = `hsl(${(result.class * 47) % 360} 85% 45%)`;
    if (result.segments && result.segments.x.length) {
      svg.append(shape("polygon", { class: "mask", "data-name": result.name, fill: colour, "fill-opacity": 0.35,
        points: result.segments.x.map((x, i) => `${x},${result.segments.y[i]}`).join(" ") }));
    }
    if (result.keypoints) drawSkeleton(svg, result.keypoints, colour);
    if ("x3" in result.box) { // an oriented box: its four corners
      const b = result.box;
      svg.append(shape("polygon", { class: "obb", "data-name": result.name, fill: "none", stroke: colour,
        "stroke-width": Math.max(2, width / 400), points: `${b.x1},${b.y1} ${b.x2},${b.y2} ${b.x3},${b.y3} ${b.x4},${b.y4}` }));
      frame.append(label(result, colour, (Math.min(b.x1, b.x2, b.x3, b.x4) / width) * 100,
        (Math.min(b.y1, b.y2, b.y3, b.y4) / height) * 100));
      return;
    }
    const { x1, y1, x2, y2 } = result.box;
    const box = document.createElement("div");
    box.className = "box";
    box.dataset.name = result.name;
    box.style.cssText = `position: absolute; left: ${(x1 / width) * 100}%; top: ${(y1 / height) * 100}%;` +
      `width: ${((x2 - x1) / width) * 100}%; height: ${((y2 - y1) / height) * 100}%; border: 2px solid ${colour}`;
    const text = label(result, colour, 0, 0);
    text.style.left = "-2px"; text.style.top = ""; text.style.bottom = "100%";
    box.append(text);
    frame.append(box);
  });
  return frame;
}

const SVG = "http://www.w3.org/2000/svg";
// COCO's 17-keypoint skeleton (pairs of keypoint indices), as Ultralytics draws it
const SKELETON = [[15, 13], [13, 11], [16, 14], [14, 12], [11, 12], [5, 11], [6, 12], [5, 6], [5, 7], [6, 8],
  [7, 9], [8, 10], [1, 2], [0, 1], [0, 2], [1, 3], [2, 4], [3, 5], [4, 6]];

function shape(kind, attributes) {
  const element = document.createElementNS(SVG, kind);
  Object.entries(attributes).forEach(([key, value]) => element.setAttribute(key, value));
  return element;
}

function label(result, colour, leftPercent, topPercent) {
  const text = document.createElement("span");
  text.className = "label";
  text.textContent = `${result.name} ${result.confidence.toFixed(2)}`;
  text.style.cssText = `position: absolute; left: ${leftPercent}%; top: ${topPercent}%; background: ${colour};` +
    "color: #fff; font-size: 12px; padding: 0 4px; white-space: nowrap";
  return text;
}

function drawSkeleton(svg, keypoints, colour) {
  const seen = (i) => keypoints.visible[i] > 0.5;
  if (keypoints.x.length === 17) {
    SKELETON.forEach(([a, b]) => {
      if (seen(a) && seen(b)) {
        svg.append(shape("line", { class: "bone", x1: keypoints.x[a], y1: keypoints.y[a], x2: keypoints.x[b],
          y2: keypoints.y[b], stroke: colour, "stroke-width": 3 }));
      }
    });
  }
  keypoints.x.forEach((x, i) => {
    if (seen(i)) svg.append(shape("circle", { class: "keypoint", cx: x, cy: keypoints.y[i], r: 4, fill: colour }));
  });
}

function detectionTable(results) {
  const table = document.createElement("table");
  table.className = "detections";
  // a pipeline's classify step gives detections a classification: its top class gets a column
  const classified = results.some((result) => result.classification);
  table.innerHTML = "<thead><tr><th>#</th><th>Class</th><th>Name</th><th>Confidence</th><th>x1</th><th>y1</th>" +
    `<th>x2</th><th>y2</th>${classified ? "<th>Classified as</th>" : ""}</tr></thead>`;
  const body = document.createElement("tbody");
  results.forEach((result, index) => {
    const row = body.insertRow();
    const box = result.box || {};
    const top = (result.classification || [])[0];
    [index + 1, result.class, result.name, result.confidence.toFixed(3),
      ...["x1", "y1", "x2", "y2"].map((k) => (k in box ? box[k].toFixed(1) : "")),
      ...(classified ? [top ? `${top.name} ${top.confidence.toFixed(2)}` : ""] : [])]
      .forEach((value) => { row.insertCell().textContent = value; });
  });
  if (!results.length) body.insertRow().insertCell().textContent = "Nothing found at this confidence.";
  table.append(body);
  return table;
}

const STAGES = { queue: "queue", preprocess: "pre-processing", inference: "inference", postprocess: "post-processing",
  detect: "detect", classify: "classify" };

function timing(speed) {
  // a model's queue, pre-processing, inference and post-processing; a pipeline's pre-processing, detect, classify
  const line = document.createElement("p");
  line.className = "timing";
  line.textContent = Object.entries(STAGES).filter(([key]) => speed[key] !== undefined && speed[key] !== null)
    .map(([key, name]) => `${name} ${speed[key]} ms`).join(" · ");
  return line;
}

// -- status -----------------------------------------------------------------------------------------------

function percentile(buckets, before, q) {
  const counts = buckets.map(([le, count], i) => [le, count - ((before && before[i]) ? before[i][1] : 0)]);
  const total = counts.length ? counts[counts.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const [le, count] of counts) {
    if (count >= rank) {
      const upper = Number.isFinite(le) ? le : lower;
      return (lower + (upper - lower) * ((rank - below) / Math.max(count - below, 1))) * 1000;
    }
    lower = le; below = count;
  }
  return null;
}

async function refreshStatus() {
  let status;
  try {
    const response = await api("/v1/status");
    if (!response.ok) { $("#server-state").textContent = await errorText(response); return; }
    status = await response.json();
  } catch (_) {
    $("#server-state").textContent = "unreachable";
    return;
  }
  const badge = $("#server-state");
  badge.textContent = status.ready ? "ready" : "not ready";
  badge.className = `badge ${status.ready ? "ready" : "not-ready"}`;
  const seconds = previous ? Math.max(status.time - previous.time, 1e-3) : null;
  const rows = status.models.map((model) => {
    const key = `${model.name}:${model.version}`;
    const now = status.figures[key];
    const then = previous && previous.figures[key];
    const total = (f) => (f ? Object.values(f.requests).reduce((a, b) => a + b, 0) : 0);
    const rate = now && then ? (total(now) - total(then)) / seconds : null;
    const p50 = now ? percentile(now.latency, then && then.latency, 0.5) : null;
    const p99 = now ? percentile(now.latency, then && then.latency, 0.99) : null;
    const batches = now ? Object.entries(now.batches).map(([size, count]) => `${size}×${count}`).join(" ") : "";
    const cells = [model.name, model.version || "", model.state, rate === null ? "" : rate.toFixed(1),
      p50 === null ? "" : p50.toFixed(1), p99 === null ? "" : p99.toFixed(1), now ? now.queue_depth : "", batches,
      now ? now.runtime : "", now ? now.precision : ""];
    const row = document.createElement("tr");
    row.dataset.model = model.name;
    cells.forEach((value, index) => {
      const cell = row.insertCell();
      cell.textContent = value;
      if (index === 2) { cell.className = `state-${value}`; if (model.reason) cell.title = model.reason; }
    });
    return row;
  });
  $("#models tbody").replaceChildren(...rows);
  previous = status;
}

// -- wiring -----------------------------------------------------------------------------------------------

function takeFiles(list) {
  files = [...list];
  if (files.length) predictAll();
}

function debounce(fn, ms) {
  let timer;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

window.addEventListener("DOMContentLoaded", () => {
  const key = $("#api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, key.value.trim());
    loadModels(); refreshStatus();
  });
  $("#files").addEventListener("change", (event) => takeFiles(event.target.files));
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault(); drop.classList.remove("over"); takeFiles(event.dataTransfer.files);
  });
  const rerun = debounce(() => { if (files.length) predictAll(); }, 250);
  for (const name of ["conf", "iou"]) {
    $(`#${name}`).addEventListener("input", () => {
      $(`#${name}-value`).textContent = Number($(`#${name}`).value).toFixed(2);
      rerun();
    });
  }
  $("#model").addEventListener("change", async () => { await loadModels(); rerun(); });
  $("#version").addEventListener("change", rerun);
  loadModels();
  refreshStatus();
  setInterval(refreshStatus, 2000);
});
